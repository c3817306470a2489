// Command nsq_stat polls /stats of every nsqd carrying a topic and prints a
// periodic table of one channel's rates, depths and counters, summed over all
// nsqds (NSQ's nsq_stat).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/sluicemq/sluice/clients"
	"github.com/sluicemq/sluice/internal/cli"
	"github.com/sluicemq/sluice/protocol"
)

const name = "nsq_stat"

// headerEvery is how many rows are printed between two headers.
const headerEvery = 25

func main() { cli.Main(run) }

type options struct {
	topic, channel string
	nsqdAddrs      clients.StringsFlag
	lookupdAddrs   clients.StringsFlag
	interval       time.Duration
	count          countFlag
	http           clients.HTTPClientFlags
}

// countFlag is --count: unset means "forever".
type countFlag struct {
	n   int
	set bool
}

func (c *countFlag) String() string {
	if !c.set {
		return ""
	}
	return strconv.Itoa(c.n)
}

func (c *countFlag) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return fmt.Errorf("must be a positive integer")
	}
	c.n, c.set = n, true
	return nil
}

func run(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	var o options
	t := cli.New(name, stdout, stderr)
	fs := t.Flags
	fs.Lookup("version").Usage = "print version" // sic, as NSQ's nsq_stat
	o.http.Register(fs, 5*time.Second)
	fs.StringVar(&o.topic, "topic", "", "NSQ topic")
	fs.StringVar(&o.channel, "channel", "", "NSQ channel")
	fs.Var(&o.count, "count", "number of reports")
	fs.DurationVar(&o.interval, "interval", 2*time.Second, "duration of time between polling/printing output")
	fs.Var(&o.lookupdAddrs, "lookupd-http-address", clients.LookupdHTTPAddressUsage)
	fs.Var(&o.nsqdAddrs, "nsqd-http-address", "nsqd HTTP address (may be given multiple times)")
	if code, done := t.Parse(args); done {
		return code
	}
	return t.Exit(stat(ctx, o, stdout))
}

// sample is one poll's figures for the channel, summed over every nsqd.
type sample struct {
	topicMessages                           int64 // topic message_count
	depth, backendDepth, inFlight, deferred int64
	requeued, timedOut, messages            int64
	clients                                 int64
}

// finished are the messages that left the channel for good (egress).
func (s sample) finished() int64 { return s.messages - s.depth - s.inFlight - s.deferred }

func stat(ctx context.Context, o options, w io.Writer) error {
	switch {
	case o.topic == "" || o.channel == "":
		return errors.New("--topic and --channel are required")
	case len(o.nsqdAddrs) == 0 && len(o.lookupdAddrs) == 0:
		return errors.New("--nsqd-http-address or --lookupd-http-address required")
	case len(o.nsqdAddrs) > 0 && len(o.lookupdAddrs) > 0:
		return errors.New("use --nsqd-http-address or --lookupd-http-address not both")
	case o.interval <= 0:
		return fmt.Errorf("invalid --interval %v", o.interval)
	}
	hc := o.http.Client()
	prev, err := poll(ctx, hc, o)
	if err != nil {
		return err
	}
	t := time.NewTicker(o.interval)
	defer t.Stop()
	for rows := 0; !o.count.set || rows < o.count.n; rows++ {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		cur, err := poll(ctx, hc, o)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if rows%headerEvery == 0 {
			fmt.Fprintln(w, "------rate------+----------------depth----------------+--------------metadata---------------")
			fmt.Fprintln(w, "ingress  egress |   total     mem    disk inflt   def |     req     t-o         msgs clients")
		}
		secs := o.interval.Seconds()
		fmt.Fprintf(w, "%7d %7d | %7d %7d %7d %5d %5d | %7d %7d %12d %7d\n",
			int64(float64(cur.topicMessages-prev.topicMessages)/secs),
			int64(float64(cur.finished()-prev.finished())/secs),
			cur.depth, cur.depth-cur.backendDepth, cur.backendDepth, cur.inFlight, cur.deferred,
			cur.requeued, cur.timedOut, cur.messages, cur.clients)
		prev = cur
	}
	return nil
}

// poll finds the nsqds (given, or the topic's producers in lookupd) and sums
// the channel's figures over them.
func poll(ctx context.Context, hc *http.Client, o options) (sample, error) {
	addrs := []string(o.nsqdAddrs)
	if len(o.lookupdAddrs) > 0 {
		ps, err := clients.LookupProducers(ctx, hc, o.lookupdAddrs, o.topic)
		if err != nil {
			return sample{}, fmt.Errorf("failed to get topic producers: %w", err)
		}
		addrs = addrs[:0:0]
		for _, p := range ps {
			addrs = append(addrs, p.HTTPAddress())
		}
	}
	var s sample
	found := false
	for _, a := range addrs {
		var resp protocol.StatsResponse
		q := "/stats?format=json&include_clients=false&include_mem=false&topic=" + url.QueryEscape(o.topic) + "&channel=" + url.QueryEscape(o.channel)
		if err := clients.GetJSON(ctx, hc, clients.HTTPURL(a, q), &resp); err != nil {
			return sample{}, fmt.Errorf("failed to get nsqd stats: %w", err)
		}
		for _, tp := range resp.Topics {
			if tp.TopicName != o.topic {
				continue
			}
			s.topicMessages += tp.MessageCount
			for _, ch := range tp.Channels {
				if ch.ChannelName != o.channel {
					continue
				}
				found = true
				s.depth += ch.Depth
				s.backendDepth += ch.BackendDepth
				s.inFlight += ch.InFlightCount
				s.deferred += ch.DeferredCount
				s.requeued += ch.RequeueCount
				s.timedOut += ch.TimeoutCount
				s.messages += ch.MessageCount
				s.clients += int64(ch.ClientCount)
			}
		}
	}
	if !found {
		return sample{}, fmt.Errorf("failed to find channel(%s) in stats metadata for topic(%s)", o.channel, o.topic)
	}
	return s, nil
}
