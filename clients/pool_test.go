package clients_test

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"
	"github.com/sluicemq/sluice/clients"
	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/nsqd"
)

func topicCount(t *testing.T, h *testutil.NSQDHandle, topic string) int {
	t.Helper()
	tp := testutil.GetStats(t, h.HTTPAddr, "&topic="+topic).Topic(topic)
	if tp == nil {
		return 0
	}
	return int(tp.MessageCount)
}

func newPool(t *testing.T, mode clients.Mode, addrs ...string) *clients.Pool {
	t.Helper()
	p, err := clients.NewPool(clients.PoolOptions{Addrs: addrs, Mode: mode, HealthInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestRoundRobinSplitsEvenly(t *testing.T) {
	a, b := testutil.StartNSQD(t, nil), testutil.StartNSQD(t, nil)
	p := newPool(t, clients.RoundRobin, a.TCPAddr, b.TCPAddr)
	for i := 0; i < 10; i++ {
		if err := p.Publish("rr", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.MultiPublish("rr", [][]byte{[]byte("1"), []byte("2")}); err != nil {
		t.Fatal(err)
	}
	if err := p.DeferredPublish("rr", time.Second, []byte("d")); err != nil {
		t.Fatal(err)
	}
	if na, nb := topicCount(t, a, "rr"), topicCount(t, b, "rr"); na+nb != 13 || (na != 5 && na != 7 && na != 6) {
		t.Fatalf("split %d/%d of 13", na, nb)
	}
}

// A dead node costs no message: publishes fail over, the node is marked
// down by the health check, and comes back up once it listens again.
func TestFailoverAndRecovery(t *testing.T) {
	live := testutil.StartNSQD(t, nil)
	deadAddr := freeAddr(t)
	p := newPool(t, clients.HostPool, deadAddr, live.TCPAddr)
	for i := 0; i < 20; i++ {
		if err := p.Publish("fo", []byte("x")); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if n := topicCount(t, live, "fo"); n != 20 {
		t.Fatalf("live node got %d, want 20", n)
	}
	testutil.WaitFor(t, 5*time.Second, func() bool { return len(p.Healthy()) == 1 }, "dead node marked down")
	if h := p.Healthy(); h[0] != live.TCPAddr {
		t.Fatalf("healthy = %v", h)
	}
	revived := testutil.StartNSQD(t, func(o *nsqd.Options) { o.TCPAddress = deadAddr })
	testutil.WaitFor(t, 10*time.Second, func() bool { return len(p.Healthy()) == 2 }, "revived node marked up")
	for i := 0; i < 10; i++ {
		if err := p.Publish("fo", []byte("y")); err != nil {
			t.Fatal(err)
		}
	}
	if n := topicCount(t, revived, "fo"); n == 0 {
		t.Fatalf("revived node got no publishes")
	}
	if total := topicCount(t, revived, "fo") + topicCount(t, live, "fo"); total != 30 {
		t.Fatalf("total %d, want 30", total)
	}
}

func TestAllNodesDown(t *testing.T) {
	p := newPool(t, clients.HostPool, freeAddr(t), freeAddr(t))
	err := p.Publish("t", []byte("x"))
	if err == nil {
		t.Fatal("publish with every node down succeeded")
	}
	var oe *net.OpError
	if !errors.As(err, &oe) {
		t.Errorf("error %v does not wrap the dial error", err)
	}
}

// nsqd rejecting the command is not a node failure: no failover, no
// node marked down.
func TestProtocolErrorIsNotFailover(t *testing.T) {
	a, b := testutil.StartNSQD(t, nil), testutil.StartNSQD(t, nil)
	p := newPool(t, clients.RoundRobin, a.TCPAddr, b.TCPAddr)
	err := p.Publish("bad!topic", []byte("x"))
	var pe nsq.ErrProtocol
	if !errors.As(err, &pe) {
		t.Fatalf("error %v, want nsq.ErrProtocol", err)
	}
	if len(p.Healthy()) != 2 {
		t.Fatalf("healthy = %v", p.Healthy())
	}
}

func TestPublishAllFansOut(t *testing.T) {
	a, b := testutil.StartNSQD(t, nil), testutil.StartNSQD(t, nil)
	p := newPool(t, clients.HostPool, a.TCPAddr, b.TCPAddr, a.TCPAddr)
	if got := len(p.Addrs()); got != 2 {
		t.Fatalf("duplicate address kept: %v", p.Addrs())
	}
	for i := 0; i < 3; i++ {
		if err := p.PublishAll("all", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if na, nb := topicCount(t, a, "all"), topicCount(t, b, "all"); na != 3 || nb != 3 {
		t.Fatalf("fan-out %d/%d, want 3/3", na, nb)
	}
}

func TestEpsilonGreedyDelivers(t *testing.T) {
	a, b := testutil.StartNSQD(t, nil), testutil.StartNSQD(t, nil)
	p := newPool(t, clients.EpsilonGreedy, a.TCPAddr, b.TCPAddr)
	for i := 0; i < 50; i++ {
		if err := p.Publish("eg", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if total := topicCount(t, a, "eg") + topicCount(t, b, "eg"); total != 50 {
		t.Fatalf("total %d, want 50", total)
	}
}

func TestParseMode(t *testing.T) {
	for s, want := range map[string]clients.Mode{"round-robin": clients.RoundRobin, "hostpool": clients.HostPool, "epsilon-greedy": clients.EpsilonGreedy} {
		if m, err := clients.ParseMode(s); err != nil || m != want {
			t.Errorf("ParseMode(%q) = %v, %v", s, m, err)
		}
	}
	if _, err := clients.ParseMode("random"); err == nil {
		t.Error("ParseMode(random) succeeded")
	}
}
