// Command nsq_to_http consumes a topic and sends every message to HTTP
// endpoints (NSQ's nsq_to_http): POST with the body, or GET with the body
// substituted into the URL. A message is finished only after a 2xx answer;
// any failure (connection error, timeout, non-2xx) requeues it.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nsqio/go-nsq"
	"github.com/sluicemq/sluice/clients"
	"github.com/sluicemq/sluice/internal/cli"
	"github.com/sluicemq/sluice/protocol"
)

const name = "nsq_to_http"

// downFor is how long a failed endpoint is skipped in hostpool and
// epsilon-greedy modes (unless every endpoint is down).
const downFor = 5 * time.Second

func main() { cli.Main(run) }

type options struct {
	topic, channel string
	cons           clients.ConsumerFlags
	http           clients.HTTPClientFlags
	getAddrs       clients.StringsFlag
	postAddrs      clients.StringsFlag
	headers        clients.StringsFlag
	contentType    string
	mode           string
	concurrency    int
	sample         float64
	statusEvery    int
}

func run(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	var o options
	t := cli.New(name, stdout, stderr)
	fs := t.Flags
	o.cons.Register(fs)
	o.http.Register(fs, 20*time.Second)
	fs.StringVar(&o.channel, "channel", "nsq_to_http", "nsq channel")
	fs.StringVar(&o.contentType, "content-type", "application/octet-stream", "the Content-Type used for POST requests")
	fs.Var(&o.getAddrs, "get", "HTTP address to make a GET request to. '%s' will be printf replaced with data (may be given multiple times)")
	fs.Var(&o.headers, "header", "Custom header for HTTP requests (may be given multiple times)")
	fs.StringVar(&o.mode, "mode", "hostpool", "the upstream request mode options: round-robin, hostpool (default), epsilon-greedy, multicast (every endpoint)")
	fs.IntVar(&o.concurrency, "n", 100, "number of concurrent publishers")
	fs.Var(&o.postAddrs, "post", "HTTP address to make a POST request to.  data will be in the body (may be given multiple times)")
	fs.Float64Var(&o.sample, "sample", 1.0, "% of messages to publish (float b/w 0 -> 1)")
	fs.IntVar(&o.statusEvery, "status-every", 250, "the # of requests between logging status (per handler), 0 disables")
	fs.StringVar(&o.topic, "topic", "", "nsq topic")
	if code, done := t.Parse(args); done {
		return code
	}
	return t.Exit(forward(ctx, o, t.Logger()))
}

type mode int

const (
	modeHostPool mode = iota
	modeRoundRobin
	modeEpsilonGreedy
	modeMulticast
)

func parseMode(s string) (mode, error) {
	switch s {
	case "hostpool":
		return modeHostPool, nil
	case "round-robin":
		return modeRoundRobin, nil
	case "epsilon-greedy":
		return modeEpsilonGreedy, nil
	case "multicast":
		return modeMulticast, nil
	}
	return 0, fmt.Errorf("invalid --mode %q (want round-robin, hostpool, epsilon-greedy or multicast)", s)
}

func forward(ctx context.Context, o options, logger *slog.Logger) error {
	switch {
	case o.topic == "" || o.channel == "":
		return errors.New("--topic and --channel are required")
	case !protocol.IsValidTopicName(o.topic):
		return fmt.Errorf("invalid --topic %q", o.topic)
	case !protocol.IsValidChannelName(o.channel):
		return fmt.Errorf("invalid --channel %q", o.channel)
	case len(o.cons.NSQDAddrs) == 0 && len(o.cons.LookupdAddrs) == 0:
		return errors.New("--nsqd-tcp-address or --lookupd-http-address required")
	case len(o.cons.NSQDAddrs) > 0 && len(o.cons.LookupdAddrs) > 0:
		return errors.New("use --nsqd-tcp-address or --lookupd-http-address not both")
	case len(o.getAddrs) == 0 && len(o.postAddrs) == 0:
		return errors.New("--get or --post required")
	case len(o.getAddrs) > 0 && len(o.postAddrs) > 0:
		return errors.New("use --get or --post not both")
	case o.sample > 1.0 || o.sample < 0:
		return fmt.Errorf("invalid --sample %v: must be between 0.0 and 1.0", o.sample)
	case o.concurrency < 1:
		return fmt.Errorf("invalid -n %d", o.concurrency)
	case o.cons.MaxInFlight < 1:
		return fmt.Errorf("invalid --max-in-flight %d", o.cons.MaxInFlight)
	}
	m, err := parseMode(o.mode)
	if err != nil {
		return err
	}
	hdr := make(http.Header)
	for _, h := range o.headers {
		k, v, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(k) == "" {
			return fmt.Errorf("invalid --header %q (want \"Name: value\")", h)
		}
		hdr.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	method, addrs := http.MethodPost, []string(o.postAddrs)
	if len(o.getAddrs) > 0 {
		method, addrs = http.MethodGet, o.getAddrs
	}
	eps := make([]*endpoint, len(addrs))
	for i, a := range addrs {
		if !strings.Contains(a, "://") {
			a = "http://" + a
		}
		if _, err := url.Parse(strings.ReplaceAll(a, "%s", "x")); err != nil {
			return fmt.Errorf("invalid endpoint %q: %w", addrs[i], err)
		}
		eps[i] = &endpoint{url: a}
	}
	cfg, err := o.cons.Config(cli.UserAgent(name))
	if err != nil {
		return err
	}
	f := &forwarder{
		method: method, contentType: o.contentType, header: hdr, mode: m, eps: eps,
		sample: o.sample, statusEvery: int64(o.statusEvery), logger: logger,
		hc: o.http.Client(), userAgent: cfg.UserAgent,
	}
	c, err := clients.StartConsumer(clients.ConsumerOptions{
		Topic: o.topic, Channel: o.channel, Config: cfg,
		NSQDAddrs: o.cons.NSQDAddrs, LookupdAddrs: o.cons.LookupdAddrs,
		Handler: f, Concurrency: o.concurrency, Logger: logger,
	})
	if err != nil {
		return err
	}
	<-ctx.Done()
	if err := clients.StopConsumers([]*nsq.Consumer{c}); err != nil {
		logger.Warn("consumer did not stop cleanly", "err", err)
	}
	return nil
}

// endpoint is one --get/--post address with its health.
type endpoint struct {
	url       string
	downUntil atomic.Int64 // unix nanos; skipped until then after a failure
	latency   atomic.Int64 // EWMA of successful request times, nanoseconds
}

// forwarder is the go-nsq handler; its fields are read-only after creation
// except the atomics.
type forwarder struct {
	method, contentType, userAgent string
	header                         http.Header
	mode                           mode
	eps                            []*endpoint
	sample                         float64
	statusEvery                    int64
	logger                         *slog.Logger
	hc                             *http.Client

	next     atomic.Uint64
	requests atomic.Int64
	mu       sync.Mutex // guards total
	total    time.Duration
}

// HandleMessage delivers m; a nil return finishes it, an error requeues it.
func (f *forwarder) HandleMessage(m *nsq.Message) error {
	if f.sample < 1.0 && rand.Float64() > f.sample {
		return nil // not sampled: finished without sending
	}
	switch f.mode {
	case modeMulticast:
		var errs []error
		for _, ep := range f.eps {
			if err := f.send(ep, m.Body); err != nil {
				errs = append(errs, err)
			}
		}
		return f.failed(m, errors.Join(errs...))
	case modeRoundRobin:
		ep := f.eps[int(f.next.Add(1)-1)%len(f.eps)]
		return f.failed(m, f.send(ep, m.Body))
	default:
		var errs []error
		for _, ep := range f.order() {
			err := f.send(ep, m.Body)
			if err == nil {
				return nil
			}
			errs = append(errs, err)
		}
		return f.failed(m, errors.Join(errs...))
	}
}

func (f *forwarder) failed(m *nsq.Message, err error) error {
	if err != nil {
		f.logger.Warn("delivery failed, requeueing", "id", string(m.ID[:]), "attempts", m.Attempts, "err", err)
	}
	return err
}

// order returns the endpoints to try for hostpool/epsilon-greedy: those not
// marked down, starting at the next round-robin position (epsilon-greedy:
// mostly the fastest first), then the down ones as a last resort.
func (f *forwarder) order() []*endpoint {
	now := time.Now().UnixNano()
	k := len(f.eps)
	start := int(f.next.Add(1)-1) % k
	up := make([]*endpoint, 0, k)
	var down []*endpoint
	for i := 0; i < k; i++ {
		ep := f.eps[(start+i)%k]
		if ep.downUntil.Load() > now {
			down = append(down, ep)
		} else {
			up = append(up, ep)
		}
	}
	if f.mode == modeEpsilonGreedy && len(up) > 1 && rand.Float64() >= 0.1 {
		best := 0
		for i, ep := range up {
			if ep.latency.Load() < up[best].latency.Load() {
				best = i
			}
		}
		up[0], up[best] = up[best], up[0]
	}
	return append(up, down...)
}

// send makes one request; any outcome but a 2xx status is an error.
func (f *forwarder) send(ep *endpoint, body []byte) error {
	start := time.Now()
	var req *http.Request
	var err error
	if f.method == http.MethodGet {
		u := ep.url
		if strings.Contains(u, "%s") {
			u = fmt.Sprintf(u, url.QueryEscape(string(body)))
		}
		req, err = http.NewRequest(http.MethodGet, u, nil)
	} else {
		req, err = http.NewRequest(http.MethodPost, ep.url, bytes.NewReader(body))
		if err == nil {
			req.Header.Set("Content-Type", f.contentType)
		}
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", f.method, ep.url, err)
	}
	req.Header.Set("User-Agent", f.userAgent)
	for k, vs := range f.header {
		req.Header[k] = vs
	}
	resp, err := f.hc.Do(req)
	if err != nil {
		ep.downUntil.Store(time.Now().Add(downFor).UnixNano())
		return err // names method and URL
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		ep.downUntil.Store(time.Now().Add(downFor).UnixNano())
		return fmt.Errorf("%s %s: got status %s", f.method, req.URL.Redacted(), resp.Status)
	}
	d := time.Since(start)
	old := ep.latency.Load()
	ep.latency.Store(old + (int64(d)-old)/8)
	ep.downUntil.Store(0)
	if n := f.requests.Add(1); f.statusEvery > 0 {
		f.mu.Lock()
		f.total += d
		total := f.total
		f.mu.Unlock()
		if n%f.statusEvery == 0 {
			f.logger.Info("status", "requests", n, "avg_ms", float64(total.Microseconds())/float64(n)/1000)
		}
	}
	return nil
}
