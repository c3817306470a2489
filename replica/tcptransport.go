package replica

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of TCPConfig's zero values.
const (
	// DefaultQueueSize is how many envelopes may wait for one peer. Raft
	// sends a few messages per group per tick; this absorbs bursts of
	// thousands of groups without holding stale messages for long.
	DefaultQueueSize = 4096
	// DefaultQueueBytes bounds the encoded bytes waiting for one peer.
	DefaultQueueBytes = 64 << 20
	// DefaultMaxFrameSize is the largest frame sent or accepted; a single
	// message larger than that (less its framing) is dropped at Send.
	DefaultMaxFrameSize = 64 << 20
	// DefaultMinBackoff is the delay after a first failed dial; it doubles
	// per consecutive failure up to DefaultMaxBackoff.
	DefaultMinBackoff = 100 * time.Millisecond
	// DefaultMaxBackoff caps the delay between dials to one peer.
	DefaultMaxBackoff = 2 * time.Second
	// DefaultDialTimeout bounds one dial.
	DefaultDialTimeout = 2 * time.Second
	// DefaultWriteTimeout bounds one flush to a peer: a peer that takes no
	// bytes for that long is disconnected and its queued messages dropped.
	DefaultWriteTimeout = 5 * time.Second
	// DefaultHelloTimeout bounds the wait for an inbound connection's hello.
	DefaultHelloTimeout = 10 * time.Second

	// frameTarget is the payload size at which the writer starts a new
	// frame: big enough to batch thousands of heartbeats, small enough that
	// the receiver's Receive calls stay short.
	frameTarget = 1 << 20
	// writeBufferSize and readBufferSize size each connection's buffers.
	writeBufferSize = 64 << 10
	readBufferSize  = 64 << 10
	// keepReadBuffer is the largest frame buffer a connection keeps between
	// frames; larger frames get a buffer of their own.
	keepReadBuffer = 1 << 20
)

// ErrTransportClosed is returned by operations on a closed TCPTransport.
var ErrTransportClosed = errors.New("replica transport closed")

// TCPConfig configures a TCPTransport. Zero values take the defaults above.
type TCPConfig struct {
	// Self is this node's ID (NodeID of its broadcast_address:tcp_port).
	// It is sent in the hello of every connection this node dials, and
	// inbound connections addressed to another ID are refused.
	Self uint64
	// Receiver takes every batch received by ServeConn. Required.
	Receiver Receiver
	// Dial opens a connection to a peer's nsqd TCP address; nil means a
	// net.Dialer. ctx carries the dial timeout and is cancelled by Close.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Secure, if set, runs on every connection dialled, once the magic
	// has been sent on it in the clear (the listener needs it to tell the
	// protocols apart), and returns the connection to send the hello and
	// the frames on: a TLS client, whose handshake it completes within
	// ctx. The accepting side must do the same after reading the magic.
	Secure func(ctx context.Context, conn net.Conn, addr string) (net.Conn, error)
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// OnUnknownPeer, if set, is told of a Send to a node that is not a
	// peer (a node just started that discovery has not listed yet), so
	// that discovery can look again. It must not block.
	OnUnknownPeer func(id uint64)

	// QueueSize and QueueBytes bound the envelopes, and their encoded
	// bytes, waiting for one peer; Send drops what does not fit.
	QueueSize  int
	QueueBytes int
	// MaxFrameSize is the largest frame sent or accepted.
	MaxFrameSize int
	// MinBackoff and MaxBackoff bound the delay between dials to a peer.
	MinBackoff, MaxBackoff time.Duration
	// DialTimeout, WriteTimeout and HelloTimeout bound a dial, a flush and
	// the wait for an inbound hello.
	DialTimeout, WriteTimeout, HelloTimeout time.Duration
}

func (c *TCPConfig) setDefaults() {
	if c.QueueSize <= 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.QueueBytes <= 0 {
		c.QueueBytes = DefaultQueueBytes
	}
	if c.MaxFrameSize <= 0 {
		c.MaxFrameSize = DefaultMaxFrameSize
	}
	// a hello must always fit
	c.MaxFrameSize = max(c.MaxFrameSize, helloMaxSize)
	if c.MinBackoff <= 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	c.MaxBackoff = max(c.MaxBackoff, c.MinBackoff)
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.HelloTimeout <= 0 {
		c.HelloTimeout = DefaultHelloTimeout
	}
	if c.Dial == nil {
		var d net.Dialer
		c.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// PeerStats are one peer's counters since it became known.
type PeerStats struct {
	// Addr is the peer's address from SetPeers ("" for a node that only
	// dialled this one).
	Addr string
	// Connected tells whether the outbound connection is up.
	Connected bool
	// Sent counts envelopes written and flushed to the peer; Dropped those
	// that never were (queue full, peer unreachable, write failed, or the
	// message could not be encoded). Sent+Dropped+queued = Send's total.
	Sent, Dropped uint64
	// Received counts envelopes received from the peer, over every inbound
	// connection it opened; Inbound is how many of those are open now.
	Received uint64
	Inbound  int
}

// TCPTransport carries Raft messages over nsqd's TCP port (DESIGN.md,
// "Transport"; the frame format is in frame.go). It dials each peer once,
// lazily, and keeps one outbound connection per peer; the peer's messages
// to this node arrive over the connection the peer dialled, which nsqd
// hands to ServeConn. All methods are safe for concurrent use.
//
// Wiring, in nsqd after Start (self is NodeID of the node's
// broadcast_address:tcp_port, as registered with nsqlookupd):
//
//	tr := replica.NewTCPTransport(replica.TCPConfig{Self: self, Receiver: host})
//	n.SetReplicaHandler(tr.ServeConn)
//	d := replica.NewDiscovery(replica.DiscoveryConfig{
//		Lookupds: n.LookupdHTTPAddresses,
//		OnChange: tr.SetPeers,
//	})
//	go d.Run(ctx)
//	...
//	cancel(); <wait for Run>; tr.Close()   // at exit, before the data is closed
//
// Goroutines: one writer per peer (started by SetPeers, stopped when the
// peer is removed or by Close), which owns the peer's outbound connection
// and, while it is up, one goroutine watching it for a close by the peer.
// ServeConn runs on its caller's goroutine. Close waits for all of them.
//
// Locks: TCPTransport.mu, peer.mu and inbound.deliver are never held
// together; Receive is called holding only its sender's inbound.deliver.
type TCPTransport struct {
	cfg    TCPConfig
	logger *slog.Logger

	// mu guards closed, peers, inbound and from.
	mu      sync.RWMutex
	closed  bool
	peers   map[uint64]*peer
	inbound map[net.Conn]uint64 // connections in ServeConn → sender (0 before its hello)
	from    map[uint64]*inbound

	unknownDrops atomic.Uint64
	writers      sync.WaitGroup // peer writers
	serving      sync.WaitGroup // ServeConn calls
	closeOnce    sync.Once
}

// inbound is what the transport knows of one sender's connections.
//
// A sender has one connection at a time; when it reconnects, the new
// connection supersedes the old one, which is closed and delivers nothing
// more: what the old one still held is dropped rather than delivered after
// the new one's messages, so a sender's messages stay in order across
// reconnects.
type inbound struct {
	id       uint64
	received atomic.Uint64
	latest   atomic.Uint64 // generation of the newest connection
	// deliver serializes the sender's Receive calls: a new connection's
	// first batch waits for a batch the old one is delivering.
	deliver sync.Mutex

	// guarded by TCPTransport.mu
	conns  int
	newest net.Conn
}

// errSuperseded ends a connection whose sender has opened a newer one.
var errSuperseded = errors.New("superseded by a newer connection from the same peer")

// NewTCPTransport returns a transport with no peers; SetPeers adds them.
func NewTCPTransport(cfg TCPConfig) *TCPTransport {
	if cfg.Receiver == nil {
		panic("replica: TCPConfig.Receiver is nil")
	}
	cfg.setDefaults()
	return &TCPTransport{
		cfg:     cfg,
		logger:  cfg.Logger.With("component", "replica-transport"),
		peers:   make(map[uint64]*peer),
		inbound: make(map[net.Conn]uint64),
		from:    make(map[uint64]*inbound),
	}
}

// SetPeers replaces the peer set: node ID → "host:port" of its nsqd TCP
// port. New peers are dialled when the first message for them is sent;
// peers no longer listed, or listed at another address, are stopped, their
// connection closed and their queued messages dropped. Self and ID 0 are
// ignored. After Close it does nothing.
func (t *TCPTransport) SetPeers(peers map[uint64]string) {
	var stopped []*peer
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	for id, p := range t.peers {
		if addr, ok := peers[id]; !ok || addr != p.addr {
			delete(t.peers, id)
			stopped = append(stopped, p)
		}
	}
	for id, addr := range peers {
		if id == 0 || id == t.cfg.Self || addr == "" {
			continue
		}
		if _, ok := t.peers[id]; ok {
			continue
		}
		p := newPeer(t, id, addr)
		t.peers[id] = p
		t.writers.Add(1)
		go func() {
			defer t.writers.Done()
			p.run()
		}()
	}
	t.mu.Unlock()
	for _, p := range stopped {
		p.stop()
	}
}

// Send queues msgs for node to and returns at once (see Transport). It
// encodes the messages before returning, so the caller may reuse them.
// Messages for an unknown peer, or that do not fit in the peer's queue, are
// dropped and counted.
func (t *TCPTransport) Send(to uint64, msgs []Envelope) {
	if len(msgs) == 0 {
		return
	}
	t.mu.RLock()
	p := t.peers[to]
	t.mu.RUnlock()
	if p == nil {
		t.unknownDrops.Add(uint64(len(msgs)))
		if t.cfg.OnUnknownPeer != nil && to != t.cfg.Self {
			t.cfg.OnUnknownPeer(to)
		}
		return
	}
	p.enqueue(msgs)
}

// UnknownPeerDrops counts envelopes Send dropped because their destination
// was not a peer (never set, removed, Self, or the transport closed).
func (t *TCPTransport) UnknownPeerDrops() uint64 { return t.unknownDrops.Load() }

// Stats returns the counters of every current peer and of every node
// connected to this one.
func (t *TCPTransport) Stats() map[uint64]PeerStats {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make(map[uint64]PeerStats, len(t.peers)+len(t.from))
	for id, p := range t.peers {
		out[id] = PeerStats{
			Addr:      p.addr,
			Connected: p.connected.Load(),
			Sent:      p.sent.Load(),
			Dropped:   p.dropped.Load(),
		}
	}
	for id, in := range t.from {
		s := out[id]
		s.Received = in.received.Load()
		s.Inbound = in.conns
		out[id] = s
	}
	return out
}

// ServeConn serves one inbound peer connection whose "  R1" magic has been
// read: it reads the hello, then delivers each frame's batch to the
// Receiver, until the connection fails, breaks the protocol or is closed.
// It closes conn before returning. nsqd calls it on the connection's own
// goroutine (NSQD.SetReplicaHandler(t.ServeConn)); Close closes conn and
// waits for ServeConn to return.
func (t *TCPTransport) ServeConn(conn net.Conn) {
	err := t.serveConn(conn)
	log := t.logger.With("remote_addr", conn.RemoteAddr().String())
	switch {
	case errors.Is(err, ErrTransportClosed), errors.Is(err, net.ErrClosed):
	case errors.Is(err, io.EOF), errors.Is(err, errSuperseded):
		log.Debug("peer connection ended", "err", err)
	default:
		log.Warn("peer connection ended", "err", err)
	}
}

// serveConn is ServeConn returning why the connection ended.
func (t *TCPTransport) serveConn(conn net.Conn) error {
	defer conn.Close()
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return ErrTransportClosed
	}
	t.inbound[conn] = 0
	t.serving.Add(1)
	t.mu.Unlock()
	defer t.serving.Done()

	var in *inbound
	defer func() {
		t.mu.Lock()
		delete(t.inbound, conn)
		if in != nil {
			in.conns--
			if in.newest == conn {
				in.newest = nil
			}
			// forget senders that are neither connected nor peers, so
			// hellos with made-up IDs cannot grow the map
			if _, peer := t.peers[in.id]; in.conns == 0 && !peer {
				delete(t.from, in.id)
			}
		}
		t.mu.Unlock()
	}()

	r := bufio.NewReaderSize(conn, readBufferSize)
	conn.SetReadDeadline(time.Now().Add(t.cfg.HelloTimeout))
	from, err := t.readHello(r)
	if err != nil {
		return err
	}
	conn.SetReadDeadline(time.Time{})
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return ErrTransportClosed
	}
	t.inbound[conn] = from
	if p := t.peers[from]; p != nil && !p.connected.Load() {
		p.peerUp() // it is back: dial it now rather than after a backoff
	}
	in = t.from[from]
	if in == nil {
		in = &inbound{id: from}
		t.from[from] = in
	}
	in.conns++
	gen := in.latest.Add(1)
	old := in.newest
	in.newest = conn
	t.mu.Unlock()
	if old != nil {
		old.Close()
	}
	t.logger.Debug("peer connected", "peer", from, "remote_addr", conn.RemoteAddr().String())

	var buf []byte
	for {
		size, err := readFrameSize(r, t.cfg.MaxFrameSize)
		if err != nil {
			return t.readError(in, gen, from, err)
		}
		payload, err := readPayload(r, size, buf)
		if err != nil {
			return t.readError(in, gen, from, fmt.Errorf("frame of %d bytes: %w", size, err))
		}
		if cap(payload) <= keepReadBuffer {
			buf = payload
		}
		batch, err := decodeBatch(payload)
		if err != nil {
			return fmt.Errorf("peer %d: %w", from, err)
		}
		in.deliver.Lock()
		if in.latest.Load() != gen {
			in.deliver.Unlock()
			return fmt.Errorf("peer %d: %w", from, errSuperseded)
		}
		in.received.Add(uint64(len(batch)))
		t.cfg.Receiver.Receive(batch)
		in.deliver.Unlock()
	}
}

// readError explains why reading from a sender's connection failed.
func (t *TCPTransport) readError(in *inbound, gen, from uint64, err error) error {
	if in.latest.Load() != gen {
		return fmt.Errorf("peer %d: %w", from, errSuperseded)
	}
	return fmt.Errorf("peer %d: read: %w", from, err)
}

// readHello reads and checks the hello frame; it returns the sender's ID.
func (t *TCPTransport) readHello(r io.Reader) (uint64, error) {
	size, err := readFrameSize(r, helloMaxSize)
	if err != nil {
		return 0, fmt.Errorf("read hello: %w", err)
	}
	p, err := readPayload(r, size, nil)
	if err != nil {
		return 0, fmt.Errorf("read hello: %w", err)
	}
	from, to, err := parseHello(p)
	if err != nil {
		return 0, err
	}
	if from == t.cfg.Self {
		return 0, frameErrorf("hello from node %d, which is this node", from)
	}
	if to != 0 && to != t.cfg.Self {
		return 0, frameErrorf("hello from node %d addressed to node %d, this is node %d", from, to, t.cfg.Self)
	}
	return from, nil
}

// Close stops every peer writer, closes every connection, outbound and
// inbound, and returns once every goroutine the transport started has
// exited and every ServeConn call has returned (so a Receive in progress
// is waited for). Later Sends drop; it is idempotent.
func (t *TCPTransport) Close() {
	t.closeOnce.Do(func() {
		t.mu.Lock()
		t.closed = true
		peers := t.peers
		t.peers = make(map[uint64]*peer)
		for conn := range t.inbound {
			conn.Close()
		}
		t.mu.Unlock()
		for _, p := range peers {
			p.stop()
		}
		t.writers.Wait()
		t.serving.Wait()
	})
}

var _ Transport = (*TCPTransport)(nil)
