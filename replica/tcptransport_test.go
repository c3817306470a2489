package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicemq/sluice/protocol"
)

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// collector is a Receiver that records what it receives; while gate is
// non-nil, Receive blocks until gate is closed.
type collector struct {
	mu   sync.Mutex
	got  []Envelope
	gate chan struct{}
}

func (c *collector) Receive(msgs []Envelope) {
	c.mu.Lock()
	gate := c.gate
	c.mu.Unlock()
	if gate != nil {
		<-gate
	}
	c.mu.Lock()
	c.got = append(c.got, msgs...)
	c.mu.Unlock()
}

func (c *collector) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got)
}

// indexes returns the Index of every message received from node from with
// group group, in arrival order.
func (c *collector) indexes(from uint64, group string) []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []uint64
	for _, e := range c.got {
		if e.Msg.GetFrom() == from && e.Group == group {
			out = append(out, e.Msg.GetIndex())
		}
	}
	return out
}

// node is a transport serving inbound connections on its own 127.0.0.1
// listener, the way nsqd does after reading the magic.
type node struct {
	id   uint64
	addr string
	tr   *TCPTransport
	rcv  *collector
	ln   net.Listener
	wg   sync.WaitGroup
	// errs receives why each inbound connection ended
	errs chan error
}

func startNode(t *testing.T, mutate func(*TCPConfig)) *node {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &node{addr: ln.Addr().String(), rcv: new(collector), ln: ln, errs: make(chan error, 100)}
	n.id = NodeID(n.addr)
	cfg := TCPConfig{Self: n.id, Receiver: n.rcv, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}
	if mutate != nil {
		mutate(&cfg)
	}
	n.tr = NewTCPTransport(cfg)
	n.serve()
	t.Cleanup(n.stop)
	return n
}

func (n *node) serve() {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for {
			conn, err := n.ln.Accept()
			if err != nil {
				return
			}
			n.wg.Add(1)
			go func() {
				defer n.wg.Done()
				var magic [4]byte
				if _, err := io.ReadFull(conn, magic[:]); err != nil || string(magic[:]) != protocol.MagicR1 {
					conn.Close()
					return
				}
				err := n.tr.serveConn(conn)
				select {
				case n.errs <- err:
				default:
				}
			}()
		}
	}()
}

// stop closes the listener and the transport and waits for everything.
func (n *node) stop() {
	n.ln.Close()
	n.tr.Close()
	n.wg.Wait()
}

// queuedFor is how many envelopes wait for peer id.
func (t *TCPTransport) queuedFor(id uint64) int {
	t.mu.RLock()
	p := t.peers[id]
	t.mu.RUnlock()
	if p == nil {
		return 0
	}
	return p.queued()
}

func peersOf(nodes ...*node) map[uint64]string {
	m := make(map[uint64]string)
	for _, n := range nodes {
		m[n.id] = n.addr
	}
	return m
}

// checkNoTransportGoroutines fails if goroutines of a transport are still
// running after timeout (a hand-written goleak).
func checkNoTransportGoroutines(t *testing.T) {
	t.Helper()
	var stacks string
	ok := func() bool {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		stacks = ""
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "replica.(*peer)") || strings.Contains(g, "replica.(*TCPTransport)") {
				stacks += g + "\n\n"
			}
		}
		return stacks == ""
	}
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("transport goroutines still running:\n%s", stacks)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func envs(from, to uint64, group string, first, n int) []Envelope {
	out := make([]Envelope, n)
	for i := range out {
		out[i] = Envelope{Group: group, Msg: testMsg(from, to, uint64(first+i), "")}
	}
	return out
}

func wantSequence(t *testing.T, got []uint64, first, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("received %d messages, want %d", len(got), n)
	}
	for i, idx := range got {
		if idx != uint64(first+i) {
			t.Fatalf("message %d has index %d, want %d (out of order)", i, idx, first+i)
		}
	}
}

// TestTransportExchangesInOrder: three nodes send to each other, in batches
// of every size, over two groups; everyone receives everything, in order.
func TestTransportExchangesInOrder(t *testing.T) {
	nodes := []*node{startNode(t, nil), startNode(t, nil), startNode(t, nil)}
	for _, n := range nodes {
		n.tr.SetPeers(peersOf(nodes...)) // includes itself, which is ignored
	}
	const total = 3000
	var wg sync.WaitGroup
	for _, from := range nodes {
		for _, to := range nodes {
			if from == to {
				continue
			}
			wg.Go(func() {
				drained := 0
				for sent, batch := 0, 1; sent < total; batch = batch%50 + 1 {
					k := min(batch, total-sent)
					msgs := envs(from.id, to.id, "orders", sent, k)
					msgs = append(msgs, envs(from.id, to.id, MetaGroup, sent, k)...)
					from.tr.Send(to.id, msgs)
					sent += k
					if sent-drained >= 500 { // let the writer drain, so nothing is dropped
						drained = sent
						for from.tr.queuedFor(to.id) > 0 {
							time.Sleep(time.Millisecond)
						}
					}
				}
			})
		}
	}
	wg.Wait()
	for _, to := range nodes {
		waitFor(t, 10*time.Second, "all messages received", func() bool { return to.rcv.len() == 2*2*total })
		for _, from := range nodes {
			if from == to {
				continue
			}
			wantSequence(t, to.rcv.indexes(from.id, "orders"), 0, total)
			wantSequence(t, to.rcv.indexes(from.id, MetaGroup), 0, total)
		}
	}
	for _, n := range nodes {
		for _, p := range nodes {
			if p == n {
				continue
			}
			s := n.tr.Stats()[p.id]
			if s.Addr != p.addr || !s.Connected || s.Sent != 2*total || s.Dropped != 0 || s.Received != 2*total || s.Inbound != 1 {
				t.Errorf("stats of %d at %d: %+v", p.id, n.id, s)
			}
		}
	}
	for _, n := range nodes {
		n.stop()
	}
	checkNoTransportGoroutines(t)
}

// TestTransportPeerDownThenUp: messages for a peer that refuses connections
// are dropped and counted, dials back off exponentially up to MaxBackoff,
// and once the peer listens again the messages sent after the reconnect
// arrive in order.
func TestTransportPeerDownThenUp(t *testing.T) {
	// reserve an address, then leave nothing listening on it
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	peerID := NodeID(addr)

	var (
		dialMu sync.Mutex
		dials  []time.Time
	)
	var d net.Dialer
	const minB, maxB = 20 * time.Millisecond, 160 * time.Millisecond
	a := startNode(t, func(c *TCPConfig) {
		c.MinBackoff, c.MaxBackoff = minB, maxB
		c.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
			dialMu.Lock()
			dials = append(dials, time.Now())
			dialMu.Unlock()
			return d.DialContext(ctx, "tcp", addr)
		}
	})
	a.tr.SetPeers(map[uint64]string{peerID: addr})
	dialCount := func() int {
		dialMu.Lock()
		defer dialMu.Unlock()
		return len(dials)
	}
	index := 0
	send := func() {
		a.tr.Send(peerID, envs(a.id, peerID, "orders", index, 1))
		index++
	}
	// Send keeps the writer dialling; 8 dials cover 20, 40, 80, 160, 160 ms
	waitFor(t, 10*time.Second, "8 dial attempts", func() bool {
		send()
		return dialCount() >= 8
	})
	s := a.tr.Stats()[peerID]
	if s.Connected || s.Sent != 0 || s.Dropped == 0 {
		t.Fatalf("stats while the peer is down: %+v", s)
	}
	dialMu.Lock()
	for i := 1; i < 8; i++ {
		gap := dials[i].Sub(dials[i-1])
		want := min(minB<<(i-1), maxB)
		if gap < want*9/10 {
			t.Errorf("dial %d came %v after the previous one, want at least %v", i, gap, want)
		}
		if gap > maxB+time.Second {
			t.Errorf("dial %d came %v after the previous one, backoff is capped at %v", i, gap, maxB)
		}
	}
	dialMu.Unlock()

	// the peer comes up on the same address
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addr, err)
	}
	b := &node{id: peerID, addr: addr, rcv: new(collector), ln: ln, errs: make(chan error, 100)}
	b.tr = NewTCPTransport(TCPConfig{Self: peerID, Receiver: b.rcv})
	b.serve()
	defer b.stop()
	waitFor(t, 10*time.Second, "the first message after the reconnect", func() bool {
		send()
		return b.rcv.len() > 0
	})
	first := int(b.rcv.indexes(a.id, "orders")[0])
	for range 100 {
		send()
	}
	waitFor(t, 10*time.Second, "the messages after the reconnect", func() bool { return b.rcv.len() == index-first })
	wantSequence(t, b.rcv.indexes(a.id, "orders"), first, index-first)
	if s := a.tr.Stats()[peerID]; !s.Connected || s.Sent != uint64(index-first) {
		t.Fatalf("stats after the reconnect: %+v (sent since reconnect %d)", s, index-first)
	}
}

// TestTransportSlowReceiver: a peer whose Receiver is stuck stops reading;
// Send keeps returning at once, the queue fills and the overflow is dropped
// and counted; the stuck write times out and the sender reconnects. Once
// the receiver resumes, later messages get through, and what is delivered
// is in the order sent.
func TestTransportSlowReceiver(t *testing.T) {
	gate := make(chan struct{})
	b := startNode(t, nil)
	b.rcv.gate = gate
	a := startNode(t, func(c *TCPConfig) { c.QueueSize = 64; c.WriteTimeout = 300 * time.Millisecond })
	a.tr.SetPeers(peersOf(b))
	payload := strings.Repeat("p", 64<<10)
	var slowest time.Duration
	index := 0
	waitFor(t, 20*time.Second, "drops", func() bool {
		for range 16 {
			start := time.Now()
			a.tr.Send(b.id, []Envelope{{Group: "orders", Msg: testMsg(a.id, b.id, uint64(index), payload)}})
			slowest = max(slowest, time.Since(start))
			index++
		}
		return a.tr.Stats()[b.id].Dropped > 0
	})
	if slowest > 500*time.Millisecond {
		t.Errorf("a Send took %v with a stuck peer", slowest)
	}
	s := a.tr.Stats()[b.id]
	if s.Dropped == 0 || s.Sent+s.Dropped > uint64(index) {
		t.Errorf("stats with a stuck peer: %+v after %d sends", s, index)
	}
	// the stuck write times out and a reconnects, while b's first
	// connection is still stuck in Receive
	waitFor(t, 20*time.Second, "a reconnect", func() bool {
		a.tr.Send(b.id, []Envelope{{Group: "orders", Msg: testMsg(a.id, b.id, uint64(index), "")}})
		index++
		return b.tr.Stats()[a.id].Inbound >= 2
	})
	b.rcv.mu.Lock()
	b.rcv.gate = nil
	b.rcv.mu.Unlock()
	close(gate)
	before := b.rcv.len()
	waitFor(t, 20*time.Second, "messages after the receiver resumed", func() bool {
		a.tr.Send(b.id, []Envelope{{Group: "orders", Msg: testMsg(a.id, b.id, uint64(index), "")}})
		index++
		return b.rcv.len() > before
	})
	got := b.rcv.indexes(a.id, "orders")
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("message %d has index %d after %d: out of order", i, got[i], got[i-1])
		}
	}
	a.stop()
	b.stop()
	checkNoTransportGoroutines(t)
}

// TestTransportCloseStopsEverything: Close with a connected peer, a peer in
// backoff, a dial that hangs and an inbound connection returns promptly and
// leaves no goroutine behind; afterwards Send drops and ServeConn refuses.
func TestTransportCloseStopsEverything(t *testing.T) {
	b := startNode(t, nil)
	dialing := make(chan struct{}, 1)
	a := startNode(t, func(c *TCPConfig) {
		c.DialTimeout = time.Hour
		var d net.Dialer
		c.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
			if addr == "hang:1" {
				dialing <- struct{}{}
				<-ctx.Done() // a black hole: only Close ends it
				return nil, ctx.Err()
			}
			return d.DialContext(ctx, "tcp", addr)
		}
	})
	a.tr.SetPeers(map[uint64]string{b.id: b.addr, 1001: "hang:1", 1002: "127.0.0.1:1"})
	b.tr.SetPeers(peersOf(a))
	a.tr.Send(b.id, envs(a.id, b.id, "orders", 0, 5))
	b.tr.Send(a.id, envs(b.id, a.id, "orders", 0, 5))
	a.tr.Send(1001, envs(a.id, 1001, "orders", 0, 1))
	a.tr.Send(1002, envs(a.id, 1002, "orders", 0, 1))
	<-dialing
	waitFor(t, 5*time.Second, "deliveries", func() bool { return a.rcv.len() == 5 && b.rcv.len() == 5 })
	waitFor(t, 5*time.Second, "the unreachable peer's drop", func() bool { return a.tr.Stats()[1002].Dropped == 1 })

	done := make(chan struct{})
	go func() { a.tr.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	a.tr.Close() // idempotent
	a.tr.Send(b.id, envs(a.id, b.id, "orders", 5, 3))
	if got := a.tr.UnknownPeerDrops(); got != 3 {
		t.Fatalf("UnknownPeerDrops after Close = %d, want 3", got)
	}
	c1, c2 := net.Pipe()
	defer c2.Close()
	if err := a.tr.serveConn(c1); !errors.Is(err, ErrTransportClosed) {
		t.Fatalf("serveConn after Close: %v", err)
	}
	// b notices that a's connection is gone
	waitFor(t, 5*time.Second, "b's inbound connection closed", func() bool { return b.tr.Stats()[a.id].Inbound == 0 })
	b.stop()
	a.stop()
	checkNoTransportGoroutines(t)
}

// TestSetPeersRemovesPeer: a removed peer's connection is closed and
// messages for it count as unknown; re-adding it reconnects.
func TestSetPeersRemovesPeer(t *testing.T) {
	b := startNode(t, nil)
	a := startNode(t, nil)
	a.tr.SetPeers(peersOf(b))
	a.tr.Send(b.id, envs(a.id, b.id, "orders", 0, 1))
	waitFor(t, 5*time.Second, "delivery", func() bool { return b.rcv.len() == 1 })
	a.tr.SetPeers(nil)
	waitFor(t, 5*time.Second, "the connection closed", func() bool { return b.tr.Stats()[a.id].Inbound == 0 })
	if _, ok := a.tr.Stats()[b.id]; ok {
		t.Fatal("a removed peer is still in Stats")
	}
	a.tr.Send(b.id, envs(a.id, b.id, "orders", 1, 2))
	if got := a.tr.UnknownPeerDrops(); got != 2 {
		t.Fatalf("UnknownPeerDrops = %d, want 2", got)
	}
	a.tr.SetPeers(peersOf(b))
	a.tr.Send(b.id, envs(a.id, b.id, "orders", 3, 1))
	waitFor(t, 5*time.Second, "delivery after re-adding", func() bool { return b.rcv.len() == 2 })
	if got := b.rcv.indexes(a.id, "orders"); fmt.Sprint(got) != "[0 3]" {
		t.Fatalf("received %v, want [0 3]", got)
	}
}

// TestSendDropsWhatCannotBeFramed: messages that cannot be encoded, or do
// not fit in a frame, are dropped and counted; the rest of the batch goes.
func TestSendDropsWhatCannotBeFramed(t *testing.T) {
	b := startNode(t, nil)
	a := startNode(t, func(c *TCPConfig) { c.MaxFrameSize = 64 << 10 })
	a.tr.SetPeers(peersOf(b))
	a.tr.Send(b.id, []Envelope{
		{Group: "orders", Msg: testMsg(a.id, b.id, 1, "")},
		{Group: "", Msg: testMsg(a.id, b.id, 2, "")},
		{Group: "orders", Msg: nil},
		{Group: "orders", Msg: testMsg(a.id, b.id, 4, strings.Repeat("x", 64<<10))},
		{Group: "orders", Msg: testMsg(a.id, b.id, 5, "")},
	})
	waitFor(t, 5*time.Second, "delivery", func() bool { return b.rcv.len() == 2 })
	if got := fmt.Sprint(b.rcv.indexes(a.id, "orders")); got != "[1 5]" {
		t.Fatalf("received %s, want [1 5]", got)
	}
	if s := a.tr.Stats()[b.id]; s.Sent != 2 || s.Dropped != 3 {
		t.Fatalf("stats %+v, want 2 sent, 3 dropped", s)
	}
}
