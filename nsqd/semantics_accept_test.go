package nsqd_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/nsqd"
)

// TestCompetingConsumers: two consumers of one channel share its messages;
// each message reaches exactly one of them (§5.1).
func TestCompetingConsumers(t *testing.T) {
	const n = 2000
	h := testutil.StartNSQD(t, nil)
	createChannel(t, h, "compete", "c")
	got := newIndexedCounter(n)
	for range 2 {
		cfg := testutil.NewConfig()
		cfg.MaxInFlight = 5
		testutil.NewConsumer(t, h.TCPAddr, "compete", "c", cfg, got)
	}
	testutil.WaitFor(t, 5*time.Second, func() bool {
		cs := channelStats(t, h, "compete", "c")
		return cs != nil && cs.ClientCount == 2
	}, "2 consumers subscribed")
	p := testutil.NewProducer(t, h.TCPAddr, nil)
	mpubAll(t, p, "compete", 0, n, 200)
	testutil.WaitFor(t, 30*time.Second, func() bool { return got.total.Load() >= n }, "%d deliveries", n)
	got.check(t, "channel c", 0)
	testutil.WaitFor(t, 5*time.Second, func() bool { return channelStats(t, h, "compete", "c").InFlightCount == 0 }, "nothing in flight")
	cs := channelStats(t, h, "compete", "c")
	var sum uint64
	for _, cl := range cs.Clients {
		sum += cl.FinishCount
	}
	if sum != n || got.total.Load() != n {
		t.Fatalf("clients finished %d, handler saw %d, want %d each", sum, got.total.Load(), n)
	}
}

// TestDisconnectedConsumerInFlight: messages in flight to a consumer that
// disconnects without FIN are redelivered to another consumer, attempts 2
// (immediately or at their timeout, §5.4).
func TestDisconnectedConsumerInFlight(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	createChannel(t, h, "gone", "c")
	a := subscribe(t, h, "gone", "c", map[string]any{"msg_timeout": 1000})
	a.Ready(5)
	pub := testutil.DialV2(t, h.TCPAddr)
	pub.Send("MPUB gone", testutil.MPUBBody(bodies("g", 0, 5)))
	pub.ExpectOK()
	held := map[string]bool{}
	for range 5 {
		held[string(a.ExpectMessage().Body)] = true
	}
	a.Close()
	b := subscribe(t, h, "gone", "c", nil)
	b.Ready(10)
	for range 5 {
		m := b.ExpectMessageWithin(5 * time.Second)
		if !held[string(m.Body)] || m.Attempts != 2 {
			t.Fatalf("got %q attempts %d, want one of the held messages with attempts 2", m.Body, m.Attempts)
		}
		delete(held, string(m.Body))
		b.Finish(m.ID)
	}
	b.ExpectNothing(300 * time.Millisecond)
}

// TestEphemeralOverflowDrops: an ephemeral channel keeps at most
// --mem-queue-size messages and silently drops the rest; publishes succeed (§5.10).
func TestEphemeralOverflowDrops(t *testing.T) {
	h := testutil.StartNSQD(t, func(o *nsqd.Options) { o.MemQueueSize = 10 })
	createChannel(t, h, "ephdrop", "e%23ephemeral")
	createChannel(t, h, "ephdrop", "durable")
	pub := testutil.DialV2(t, h.TCPAddr)
	for i := range 30 {
		pub.Publish("ephdrop", []byte(strconv.Itoa(i)))
	}
	testutil.WaitFor(t, 5*time.Second, func() bool {
		s := testutil.GetStats(t, h.HTTPAddr, "&topic=ephdrop")
		e, d := s.Channel("ephdrop", "e#ephemeral"), s.Channel("ephdrop", "durable")
		return e != nil && d != nil && d.Depth == 30
	}, "durable channel holding 30")
	s := testutil.GetStats(t, h.HTTPAddr, "&topic=ephdrop")
	if e := s.Channel("ephdrop", "e#ephemeral"); e.Depth != 10 || e.BackendDepth != 0 {
		t.Fatalf("ephemeral channel depth=%d backend_depth=%d, want 10, 0", e.Depth, e.BackendDepth)
	}
	if tp := s.Topic("ephdrop"); tp.MessageCount != 30 {
		t.Fatalf("topic message_count %d, want 30", tp.MessageCount)
	}
}
