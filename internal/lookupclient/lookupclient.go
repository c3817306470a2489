// Package lookupclient is nsqd's side of the nsqd <-> nsqlookupd protocol
// (protocol.md §7.3): one long-lived registration connection per lookupd
// that identifies this nsqd, registers its topics and channels, PINGs, and
// reconnects with a full re-registration whenever the connection is lost.
//
// It knows nothing of nsqd's internals: nsqd passes its IDENTIFY data and a
// Snapshot function listing its current topics and channels, and calls
// Register/Unregister as topics and channels come and go.
//
// Goroutines: Run owns one goroutine per lookupd address; while connected,
// that goroutine owns a reader goroutine, so a connection closed by lookupd
// (e.g. a restart) is noticed at once rather than at the next PING as in
// NSQ. Reconnects back off exponentially from MinBackoff, with jitter, up
// to one PING interval.
//
//	c := lookupclient.New(lookupclient.Config{
//		Addresses: opts.NSQLookupdTCPAddresses,
//		Identify:  protocol.LookupIdentify{BroadcastAddress: ..., TCPPort: ..., HTTPPort: ..., Version: ...},
//		Snapshot:  n.registrations,
//		Logger:    logger,
//	})
//	go c.Run(ctx)              // returns after ctx is cancelled and every peer has stopped
//	c.Register("orders", "")   // topic created
//	c.Register("orders", "archive")
//	chans, err := c.Channels(ctx, "orders") // channel pre-creation (§5.2)
package lookupclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/sluicemq/sluice/protocol"
)

// Defaults of Config's zero values.
const (
	// DefaultPingInterval is nsqd's fixed PING period in NSQ 1.3.0.
	DefaultPingInterval = 15 * time.Second
	// DefaultTimeout is the dial, read and write timeout of every round trip.
	DefaultTimeout = time.Second
	// DefaultMinBackoff is the first reconnect delay after a failure; it
	// doubles per consecutive failure up to the PING interval, so a lookupd
	// that comes back is re-registered within one PING interval, like the
	// reference whose PING drives reconnection.
	DefaultMinBackoff = 250 * time.Millisecond
	// DefaultMaxReplySize bounds a reply (nsqd's default --max-body-size).
	DefaultMaxReplySize = 5 << 20
	// defaultHTTPTimeout bounds each /channels query.
	defaultHTTPTimeout = 5 * time.Second
)

// Registration is one topic, or one channel of a topic (Channel != ""), that
// nsqd currently has.
type Registration struct {
	Topic   string
	Channel string
}

// Config configures a Client. Zero durations take the defaults above.
type Config struct {
	// Addresses are the lookupd TCP addresses (host:port).
	Addresses []string
	// Identify is the IDENTIFY body sent on every (re)connection.
	Identify protocol.LookupIdentify
	// Snapshot returns nsqd's current topics and channels for the full
	// re-registration after each connect: for a topic with channels, one
	// Registration per channel (which registers the topic too); for a topic
	// without channels, one with Channel "". Nil means nothing to register.
	Snapshot func() []Registration
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger

	// PingInterval is how often each peer is PINGed (15 s in NSQ).
	PingInterval time.Duration
	// Timeout is the dial, write and read timeout of each round trip (1 s).
	Timeout time.Duration
	// MinBackoff is the first reconnect delay; later ones double up to
	// PingInterval, with jitter.
	MinBackoff time.Duration
	// MaxReplySize bounds the size of a reply from lookupd.
	MaxReplySize int32
	// HTTPClient is used by Channels; nil means a client with a 5 s timeout.
	HTTPClient *http.Client
}

// Client maintains one registration connection per lookupd address. All
// methods are safe for concurrent use.
type Client struct {
	cfg    Config
	logger *slog.Logger
	http   *http.Client

	// mu guards addrs, peers and runCtx/running.
	mu      sync.Mutex
	addrs   []string
	peers   map[string]*peer
	runCtx  context.Context
	running bool
	wg      sync.WaitGroup // peer goroutines
}

// New returns a Client; nothing is dialled until Run.
func New(cfg Config) *Client {
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MinBackoff > cfg.PingInterval {
		cfg.MinBackoff = cfg.PingInterval
	}
	if cfg.MaxReplySize <= 0 {
		cfg.MaxReplySize = DefaultMaxReplySize
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: defaultHTTPTimeout}
	}
	return &Client{
		cfg:    cfg,
		logger: logger,
		http:   hc,
		addrs:  dedupe(cfg.Addresses),
		peers:  make(map[string]*peer),
	}
}

// Run connects to every address (the first attempt immediately) and keeps
// the connections registered until ctx is cancelled; it then closes every
// connection (without UNREGISTER) and returns once all peer goroutines have
// exited. Run must be called at most once.
func (c *Client) Run(ctx context.Context) {
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		panic("lookupclient: Run called twice")
	}
	c.running, c.runCtx = true, ctx
	for _, a := range c.addrs {
		c.startPeerLocked(a)
	}
	c.mu.Unlock()

	<-ctx.Done()

	c.mu.Lock()
	for a, p := range c.peers {
		p.stop()
		delete(c.peers, a)
	}
	c.mu.Unlock()
	c.wg.Wait()
}

// SetAddresses replaces the lookupd address list: peers no longer listed are
// closed, new ones connected (with the full connect sequence).
func (c *Client) SetAddresses(addrs []string) {
	addrs = dedupe(addrs)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.addrs = addrs
	if !c.running || c.runCtx.Err() != nil {
		return
	}
	for a, p := range c.peers {
		if !slices.Contains(addrs, a) {
			p.stop()
			delete(c.peers, a)
		}
	}
	for _, a := range addrs {
		if _, ok := c.peers[a]; !ok {
			c.startPeerLocked(a)
		}
	}
}

// Addresses returns the configured lookupd TCP addresses.
func (c *Client) Addresses() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.addrs)
}

// Register sends "REGISTER topic[ channel]" to every peer, asynchronously
// and in call order per peer. A peer that is disconnected drops it: its
// next connect re-registers everything from Snapshot.
func (c *Client) Register(topic, channel string) {
	c.enqueue(command(protocol.LookupCmdRegister, topic, channel))
}

// Unregister sends "UNREGISTER topic[ channel]" to every peer, like Register.
func (c *Client) Unregister(topic, channel string) {
	c.enqueue(command(protocol.LookupCmdUnregister, topic, channel))
}

// HTTPAddresses returns broadcast_address:http_port of every current peer
// that has answered an IDENTIFY (the address stays known across
// reconnects), sorted.
func (c *Client) HTTPAddresses() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, p := range c.peers {
		if info := p.info.Load(); info != nil {
			out = append(out, net.JoinHostPort(info.BroadcastAddress, strconv.Itoa(info.HTTPPort)))
		}
	}
	slices.Sort(out)
	return out
}

// Channels asks every lookupd in HTTPAddresses for the channels of topic
// (GET /channels?topic=) and returns the sorted union. Lookupds that fail are
// reported in the error (joined), alongside the channels of the others.
//
// The lookupds are queried concurrently, so one that hangs costs the caller
// at most ctx's deadline (or the HTTP client's timeout), not that times the
// number of lookupds, and does not starve the queries of the others.
func (c *Client) Channels(ctx context.Context, topic string) ([]string, error) {
	addrs := c.HTTPAddresses()
	type result struct {
		chans []string
		err   error
	}
	results := make([]result, len(addrs))
	var wg sync.WaitGroup
	for i, addr := range addrs {
		wg.Go(func() {
			chans, err := c.queryChannels(ctx, addr, topic)
			results[i] = result{chans, err}
		})
	}
	wg.Wait()
	var (
		all  []string
		errs []error
	)
	for _, r := range results {
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		all = append(all, r.chans...)
	}
	slices.Sort(all)
	return slices.Compact(all), errors.Join(errs...)
}

func (c *Client) queryChannels(ctx context.Context, addr, topic string) ([]string, error) {
	u := "http://" + addr + "/channels?topic=" + url.QueryEscape(topic)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("lookupd %s: build request: %w", addr, err)
	}
	req.Header.Set("Accept", "application/vnd.nsq; version=1.0")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("lookupd %s: GET /channels: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("lookupd %s: GET /channels?topic=%s: status %d", addr, topic, resp.StatusCode)
	}
	// Bound what a broken or hostile lookupd can make nsqd buffer: read at
	// most MaxReplySize (+1 to detect an overlong body) before decoding.
	limit := int64(c.cfg.MaxReplySize)
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("lookupd %s: read /channels reply: %w", addr, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("lookupd %s: /channels reply longer than %d bytes", addr, limit)
	}
	var body struct {
		Channels []string `json:"channels"`
	}
	if err := json.Unmarshal(data, &body); err != nil {
		return nil, fmt.Errorf("lookupd %s: decode /channels reply: %w", addr, err)
	}
	return body.Channels, nil
}

func (c *Client) enqueue(cmd []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.peers {
		p.enqueue(cmd)
	}
}

func (c *Client) startPeerLocked(addr string) {
	ctx, cancel := context.WithCancel(c.runCtx)
	p := &peer{
		addr:   addr,
		cfg:    &c.cfg,
		logger: c.logger.With("lookupd", addr),
		cancel: cancel,
		wake:   make(chan struct{}, 1),
	}
	c.peers[addr] = p
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		p.run(ctx)
	}()
}

func command(name, topic, channel string) []byte {
	if channel == "" {
		return protocol.AppendLookupCommand(nil, name, topic)
	}
	return protocol.AppendLookupCommand(nil, name, topic, channel)
}

func dedupe(addrs []string) []string {
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		if a != "" && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}
