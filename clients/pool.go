package clients

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nsqio/go-nsq"
)

// Mode selects how a Pool picks the node for a publish.
type Mode int

const (
	// HostPool tries the healthy nodes in round-robin order and fails over
	// to the next one on error (NSQ's "hostpool", the tools' default).
	HostPool Mode = iota
	// RoundRobin is HostPool under NSQ's other name: successive publishes go
	// to successive nodes; a failed node is skipped until it recovers.
	RoundRobin
	// EpsilonGreedy sends most publishes to the node with the lowest recent
	// latency and a few (epsilon) to a random healthy node to keep measuring.
	EpsilonGreedy
)

// ParseMode maps NSQ's --mode values ("round-robin", "hostpool",
// "epsilon-greedy") to a Mode.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "round-robin":
		return RoundRobin, nil
	case "hostpool", "":
		return HostPool, nil
	case "epsilon-greedy":
		return EpsilonGreedy, nil
	}
	return 0, fmt.Errorf("invalid mode %q (want round-robin, hostpool or epsilon-greedy)", s)
}

const (
	// DefaultHealthInterval is how often a Pool pings its nodes.
	DefaultHealthInterval = time.Second
	// epsilon is the share of EpsilonGreedy publishes sent to a random node.
	epsilon = 0.1
)

// PoolOptions configures a Pool.
type PoolOptions struct {
	// Addrs are the nsqd TCP addresses (host:port); at least one.
	Addrs []string
	// Config is the go-nsq configuration every node's Producer uses; nil
	// means nsq.NewConfig().
	Config *nsq.Config
	// Mode selects the node for Publish (default HostPool).
	Mode Mode
	// HealthInterval is the period of the background health check (NOP via
	// Producer.Ping on every node); 0 means DefaultHealthInterval.
	HealthInterval time.Duration
	// Logger receives pool events and go-nsq's own logs; nil discards.
	Logger *slog.Logger
}

// Pool publishes to a set of nsqd nodes through one go-nsq Producer per node.
// A node whose publish or health ping fails is marked down and skipped; the
// health checker marks it up again once a ping succeeds. Publish fails over
// to the other nodes before reporting an error, so a message is reported
// published only once one nsqd acknowledged it.
//
// A Pool is safe for concurrent use. Stop it to release its connections.
type Pool struct {
	nodes  []*poolNode
	mode   Mode
	logger *slog.Logger
	next   atomic.Uint64

	cancel context.CancelFunc
	wg     sync.WaitGroup // the health checker
	once   sync.Once
}

// poolNode is one nsqd of a Pool. up and latency are atomics: Publish reads
// them on every call without a lock.
type poolNode struct {
	addr    string
	p       *nsq.Producer
	up      atomic.Bool
	latency atomic.Int64 // EWMA of publish round trips, nanoseconds
}

// NewPool creates the producers and starts the health checker. It does not
// connect: go-nsq producers connect on first use, and the first health check
// runs immediately.
func NewPool(opts PoolOptions) (*Pool, error) {
	if len(opts.Addrs) == 0 {
		return nil, errors.New("pool: no nsqd addresses")
	}
	cfg := opts.Config
	if cfg == nil {
		cfg = nsq.NewConfig()
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	interval := opts.HealthInterval
	if interval <= 0 {
		interval = DefaultHealthInterval
	}
	p := &Pool{mode: opts.Mode, logger: logger}
	seen := make(map[string]bool)
	for _, addr := range opts.Addrs {
		if seen[addr] {
			continue
		}
		seen[addr] = true
		prod, err := nsq.NewProducer(addr, cfg)
		if err != nil {
			p.stopProducers()
			return nil, fmt.Errorf("pool: producer for %s: %w", addr, err)
		}
		prod.SetLogger(NSQLogger{L: logger.With("nsqd", addr)}, NSQLogLevel(logger))
		n := &poolNode{addr: addr, p: prod}
		n.up.Store(true) // optimistic until proven otherwise
		p.nodes = append(p.nodes, n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.wg.Add(1)
	go p.healthLoop(ctx, interval)
	return p, nil
}

// Addrs returns the node addresses in configuration order.
func (p *Pool) Addrs() []string {
	out := make([]string, len(p.nodes))
	for i, n := range p.nodes {
		out[i] = n.addr
	}
	return out
}

// Healthy returns the addresses of the nodes currently marked up.
func (p *Pool) Healthy() []string {
	var out []string
	for _, n := range p.nodes {
		if n.up.Load() {
			out = append(out, n.addr)
		}
	}
	return out
}

// Publish sends body to topic on one node, failing over to the others. It
// returns nil once a node acknowledged the message, or an error joining
// every node's failure.
func (p *Pool) Publish(topic string, body []byte) error {
	return p.do(func(prod *nsq.Producer) error { return prod.Publish(topic, body) })
}

// MultiPublish sends bodies to topic as one MPUB on one node, failing over
// like Publish.
func (p *Pool) MultiPublish(topic string, bodies [][]byte) error {
	return p.do(func(prod *nsq.Producer) error { return prod.MultiPublish(topic, bodies) })
}

// DeferredPublish sends body to topic with a delivery delay, failing over
// like Publish.
func (p *Pool) DeferredPublish(topic string, delay time.Duration, body []byte) error {
	return p.do(func(prod *nsq.Producer) error { return prod.DeferredPublish(topic, delay, body) })
}

// PublishAll sends body to topic on every node (fan-out, as to_nsq does with
// several --nsqd-tcp-address). It returns an error joining the failures of
// the nodes that did not acknowledge.
func (p *Pool) PublishAll(topic string, body []byte) error {
	var errs []error
	for _, n := range p.nodes {
		if err := p.publishOn(n, func(prod *nsq.Producer) error { return prod.Publish(topic, body) }); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Stop stops the health checker and every producer (waiting for in-flight
// publishes). It is idempotent.
func (p *Pool) Stop() {
	p.once.Do(func() {
		p.cancel()
		p.wg.Wait()
		p.stopProducers()
	})
}

func (p *Pool) stopProducers() {
	for _, n := range p.nodes {
		n.p.Stop()
	}
}

// do runs op on nodes in the order the mode prefers: healthy nodes first,
// then the nodes marked down (a down node may have recovered since the last
// health check; trying it beats failing the publish).
func (p *Pool) do(op func(*nsq.Producer) error) error {
	order := p.order()
	var errs []error
	for _, n := range order {
		err := p.publishOn(n, op)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
		if isPermanent(err) {
			break // the same command fails on every node (bad topic, too big)
		}
	}
	return errors.Join(errs...)
}

// isPermanent tells whether err is nsqd rejecting the command itself
// (E_BAD_TOPIC, E_BAD_MESSAGE, E_INVALID, ...), which another node would
// reject too. Other errors, E_PUB_FAILED included, are the node's problem.
func isPermanent(err error) bool {
	var e nsq.ErrProtocol
	if !errors.As(err, &e) {
		return false
	}
	return strings.HasPrefix(e.Reason, "E_BAD_") || strings.HasPrefix(e.Reason, "E_INVALID")
}

func (p *Pool) publishOn(n *poolNode, op func(*nsq.Producer) error) error {
	start := time.Now()
	err := op(n.p)
	if err != nil {
		if !isPermanent(err) && n.up.Swap(false) {
			p.logger.Warn("nsqd marked down", "nsqd", n.addr, "err", err)
		}
		return fmt.Errorf("nsqd %s: %w", n.addr, err)
	}
	n.observe(time.Since(start))
	if !n.up.Swap(true) {
		p.logger.Info("nsqd marked up", "nsqd", n.addr)
	}
	return nil
}

func (n *poolNode) observe(d time.Duration) {
	old := n.latency.Load()
	if old == 0 {
		n.latency.Store(int64(d))
		return
	}
	n.latency.Store(old + (int64(d)-old)/8)
}

// order returns every node once: the up nodes in the mode's preference,
// then the down ones.
func (p *Pool) order() []*poolNode {
	k := len(p.nodes)
	start := int(p.next.Add(1)-1) % k
	up := make([]*poolNode, 0, k)
	var down []*poolNode
	for i := 0; i < k; i++ {
		n := p.nodes[(start+i)%k]
		if n.up.Load() {
			up = append(up, n)
		} else {
			down = append(down, n)
		}
	}
	if p.mode == EpsilonGreedy && len(up) > 1 && rand.Float64() >= epsilon {
		best := 0
		for i, n := range up {
			if n.latency.Load() < up[best].latency.Load() {
				best = i
			}
		}
		up[0], up[best] = up[best], up[0]
	}
	return append(up, down...)
}

// healthLoop pings every node each interval and records the result. It is
// owned by the Pool and exits when Stop cancels ctx.
func (p *Pool) healthLoop(ctx context.Context, interval time.Duration) {
	defer p.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		for _, n := range p.nodes {
			if ctx.Err() != nil {
				return
			}
			err := n.p.Ping()
			switch {
			case err != nil && n.up.Swap(false):
				p.logger.Warn("nsqd marked down", "nsqd", n.addr, "err", err)
			case err == nil && !n.up.Swap(true):
				p.logger.Info("nsqd marked up", "nsqd", n.addr)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
