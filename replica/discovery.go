package replica

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Defaults of DiscoveryConfig's zero values.
const (
	// DefaultDiscoveryInterval is how often the lookupds are asked.
	DefaultDiscoveryInterval = 5 * time.Second
	// DefaultForgetAfter is how long a node missing from every answer keeps
	// its address: longer than a lookupd restart or a node's reconnection,
	// and than the time after which the meta group replaces a replica, so a
	// member is never unreachable only because a lookupd forgot it.
	DefaultForgetAfter = 15 * time.Minute
	// DefaultMaxNodesReply bounds a /nodes reply (nsqd's default
	// --max-body-size, as for /channels).
	DefaultMaxNodesReply = 5 << 20
)

// DiscoveryConfig configures a Discovery. Zero values take the defaults above.
type DiscoveryConfig struct {
	// Lookupds returns the HTTP addresses (host:port) of the nsqlookupds to
	// ask; it is called before every poll. nsqd passes its lookup client's
	// HTTPAddresses, the addresses learnt from the lookupds' IDENTIFY replies.
	Lookupds func() []string
	// OnChange receives the new node map (NodeID → broadcast_address:tcp_port,
	// this node included) each time it changes, the first time after the
	// first poll that a lookupd answered. It is called on Run's goroutine,
	// one call at a time, and owns the map it is given.
	OnChange func(map[uint64]string)
	// Interval is the time between polls; it also bounds each poll.
	Interval time.Duration
	// ForgetAfter is how long a node that no answering lookupd lists keeps
	// its place in the map. Nodes are forgotten only after a poll that at
	// least one lookupd answered, so an outage of every lookupd changes
	// nothing.
	ForgetAfter time.Duration
	// HTTPClient makes the requests; nil means a client whose timeout is
	// Interval.
	HTTPClient *http.Client
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// MaxReplySize bounds the body of one /nodes reply.
	MaxReplySize int64
}

// Discovery learns the nodes of the cluster from nsqlookupd, the way
// consumers find producers: it polls GET /nodes on every lookupd, merges
// the answers, and maps each node's NodeID to the broadcast_address:tcp_port
// it registered, which is where its nsqd accepts "  R1" connections. A node
// is keyed by net.JoinHostPort(broadcast_address, tcp_port), the string
// NodeID hashes, so every node computes the same IDs.
//
// Discovery only maps IDs to addresses: which nodes belong to which group is
// agreed through Raft, not read from here.
type Discovery struct {
	cfg    DiscoveryConfig
	logger *slog.Logger
	http   *http.Client

	// run-goroutine state
	seen    map[string]time.Time // node address → when an answer last listed it
	failing map[string]bool      // lookupds whose last poll failed, to log changes once

	pollMu sync.Mutex // serialises polls (Run's and Refresh's); guards seen and failing

	mu        sync.Mutex // guards current, live and published
	current   map[uint64]string
	live      map[uint64]string // the nodes the last answered poll listed
	published bool              // OnChange has been called at least once
}

// NewDiscovery returns a Discovery; nothing is asked before Run.
func NewDiscovery(cfg DiscoveryConfig) *Discovery {
	if cfg.Lookupds == nil {
		panic("replica: DiscoveryConfig.Lookupds is nil")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultDiscoveryInterval
	}
	if cfg.ForgetAfter <= 0 {
		cfg.ForgetAfter = DefaultForgetAfter
	}
	if cfg.MaxReplySize <= 0 {
		cfg.MaxReplySize = DefaultMaxNodesReply
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: cfg.Interval}
	}
	return &Discovery{
		cfg:     cfg,
		logger:  logger.With("component", "replica-discovery"),
		http:    hc,
		seen:    make(map[string]time.Time),
		failing: make(map[string]bool),
		current: make(map[uint64]string),
	}
}

// Run polls at once and then every Interval until ctx is done; it returns
// after its last poll's requests have ended. Run must be called once.
func (d *Discovery) Run(ctx context.Context) {
	ticker := time.NewTicker(d.cfg.Interval)
	defer ticker.Stop()
	for {
		d.poll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// Live returns the nodes that the last poll any lookupd answered listed:
// the nodes registered now (nsqlookupd drops a node whose connection
// ends), unlike Nodes, which keeps a node for ForgetAfter.
func (d *Discovery) Live() map[uint64]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.live)
}

// Refresh polls now and reports whether a lookupd answered.
func (d *Discovery) Refresh(ctx context.Context) bool {
	return d.poll(ctx)
}

// Nodes returns a copy of the current node map.
func (d *Discovery) Nodes() map[uint64]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.current)
}

// poll asks every lookupd once and publishes the merged map if it changed.
// It reports whether a lookupd answered.
func (d *Discovery) poll(ctx context.Context) bool {
	d.pollMu.Lock()
	defer d.pollMu.Unlock()
	addrs := d.cfg.Lookupds()
	if len(addrs) == 0 {
		return false
	}
	pollCtx, cancel := context.WithTimeout(ctx, d.cfg.Interval)
	defer cancel()
	type result struct {
		nodes []string
		err   error
	}
	results := make([]result, len(addrs))
	var wg sync.WaitGroup
	for i, addr := range addrs {
		wg.Go(func() {
			nodes, err := d.queryNodes(pollCtx, addr)
			results[i] = result{nodes, err}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return false // shutting down: the failures say nothing of the lookupds
	}

	now := time.Now()
	answered := 0
	live := make(map[uint64]string)
	for i, r := range results {
		addr := addrs[i]
		if r.err != nil {
			if !d.failing[addr] {
				d.logger.Warn("cannot list nodes", "lookupd", addr, "err", r.err)
			} else {
				d.logger.Debug("cannot list nodes", "lookupd", addr, "err", r.err)
			}
			d.failing[addr] = true
			continue
		}
		if d.failing[addr] {
			d.logger.Info("listing nodes again", "lookupd", addr)
			delete(d.failing, addr)
		}
		answered++
		for _, n := range r.nodes {
			d.seen[n] = now
			live[NodeID(n)] = n
		}
	}
	if answered == 0 {
		return false
	}
	for n, at := range d.seen {
		if now.Sub(at) > d.cfg.ForgetAfter {
			delete(d.seen, n)
		}
	}
	next := make(map[uint64]string, len(d.seen))
	for n := range d.seen {
		next[NodeID(n)] = n
	}
	d.mu.Lock()
	d.live = live
	changed := !d.published || !maps.Equal(next, d.current)
	d.published = true
	if changed {
		d.current = next
	}
	d.mu.Unlock()
	if changed {
		d.logger.Info("nodes changed", "nodes", len(next))
		if d.cfg.OnChange != nil {
			d.cfg.OnChange(maps.Clone(next))
		}
	}
	return true
}

// nodeInfo is the part of a /nodes producer that locates a node.
type nodeInfo struct {
	BroadcastAddress string `json:"broadcast_address"`
	TCPPort          int    `json:"tcp_port"`
}

// nodesReply is a /nodes reply: {"producers":[...]} from NSQ 1.x (and
// Sluice), or {"status_code":200,"status_txt":"OK","data":{"producers":[...]}}
// from lookupds older than 1.0.
type nodesReply struct {
	StatusCode *int       `json:"status_code"`
	StatusTxt  string     `json:"status_txt"`
	Producers  []nodeInfo `json:"producers"`
	Data       *struct {
		Producers []nodeInfo `json:"producers"`
	} `json:"data"`
}

// queryNodes asks one lookupd for its nodes and returns their
// broadcast_address:tcp_port.
func (d *Discovery) queryNodes(ctx context.Context, addr string) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/nodes", nil)
	if err != nil {
		return nil, fmt.Errorf("lookupd %s: build request: %w", addr, err)
	}
	req.Header.Set("Accept", "application/vnd.nsq; version=1.0")
	resp, err := d.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("lookupd %s: GET /nodes: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("lookupd %s: GET /nodes: status %d", addr, resp.StatusCode)
	}
	limit := d.cfg.MaxReplySize
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("lookupd %s: read /nodes reply: %w", addr, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("lookupd %s: /nodes reply longer than %d bytes", addr, limit)
	}
	return parseNodes(data, addr)
}

// parseNodes decodes a /nodes reply body into node addresses, skipping
// producers without a usable address.
func parseNodes(data []byte, lookupd string) ([]string, error) {
	var reply nodesReply
	if err := json.Unmarshal(data, &reply); err != nil {
		return nil, fmt.Errorf("lookupd %s: decode /nodes reply: %w", lookupd, err)
	}
	if reply.StatusCode != nil && *reply.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("lookupd %s: /nodes reply status %d %s", lookupd, *reply.StatusCode, reply.StatusTxt)
	}
	producers := reply.Producers
	if producers == nil && reply.Data != nil {
		producers = reply.Data.Producers
	}
	nodes := make([]string, 0, len(producers))
	for _, p := range producers {
		if p.BroadcastAddress == "" || p.TCPPort <= 0 || p.TCPPort > 65535 {
			continue
		}
		nodes = append(nodes, net.JoinHostPort(p.BroadcastAddress, strconv.Itoa(p.TCPPort)))
	}
	return nodes, nil
}
