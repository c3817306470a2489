package nsqd

import (
	"net"
	"testing"

	"github.com/sluicemq/sluice/protocol"
)

// The hot paths allocate per batch, never per message: publishing a
// 200-message MPUB into a channel, and delivering then finishing 200
// messages, each cost a small constant number of allocations.
func TestHotPathsAllocatePerBatchNotPerMessage(t *testing.T) {
	n, topic, ch := startHotPathNSQD(t, 10_000_000, "allocs", "c")
	opts := n.opts

	const batch = 200
	bodies := make([][]byte, batch)
	for i := range bodies {
		bodies[i] = make([]byte, 100)
	}
	data := protocol.AppendMPUB(nil, "allocs", bodies)[len("MPUB allocs\n")+8:]

	pub := testing.AllocsPerRun(50, func() {
		if err := topic.putBatch(n.newBatch(data, batch), uint64(batch*100)); err != nil {
			t.Fatal(err)
		}
	})
	if pub > 10 {
		t.Errorf("publishing one %d-message batch allocates %.0f times; want a constant handful", batch, pub)
	}

	// a subscribed consumer without a connection: take and finish directly
	server, other := net.Pipe()
	defer other.Close()
	cl := &client{id: 1, nsqd: n, conn: server, msgTimeout: opts.MsgTimeout}
	if err := ch.addClient(cl, 0); err != nil {
		t.Fatal(err)
	}
	cl.state.Store(stateSubscribed)
	cl.readyCount.Store(batch)
	ids := make([]protocol.MessageID, 0, batch)
	collect := func(m *Message) bool {
		ids = append(ids, m.ID)
		return true
	}
	deliver := func() {
		ids = ids[:0]
		n := ch.take(cl, batch, collect)
		for _, id := range ids {
			if err := ch.finish(cl, id); err != nil {
				t.Fatal(err)
			}
		}
		if n != batch {
			t.Fatalf("took %d messages, want %d", n, batch)
		}
	}
	deliver() // warm the in-flight map
	consume := testing.AllocsPerRun(20, deliver)
	if consume > 10 {
		t.Errorf("delivering and finishing %d messages allocates %.0f times; want a constant handful", batch, consume)
	}
	t.Logf("allocations: publish %.0f per %d-message MPUB, deliver+FIN %.0f per %d messages", pub, batch, consume, batch)
}

// startHotPathNSQD starts a node in process (TCP on an ephemeral port, no
// HTTP, logging errors only) with --mem-queue-size memQueue, stopped when
// the test ends, and returns it with the named topic and, unless channel
// is "", its channel.
func startHotPathNSQD(tb testing.TB, memQueue int64, topic, channel string) (*NSQD, *Topic, *Channel) {
	tb.Helper()
	return startHotPathNSQDWith(tb, func(o *Options) { o.MemQueueSize = memQueue }, topic, channel)
}

// startHotPathNSQDWith is startHotPathNSQD with options of the caller's.
func startHotPathNSQDWith(tb testing.TB, mutate func(*Options), topic, channel string) (*NSQD, *Topic, *Channel) {
	tb.Helper()
	opts := NewOptions()
	opts.TCPAddress, opts.HTTPAddress = "127.0.0.1:0", ""
	opts.DataPath = tb.TempDir()
	opts.LogLevel = "error"
	mutate(opts)
	n, err := New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	if err := n.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(n.Exit)
	t, err := n.GetTopic(topic)
	if err != nil {
		tb.Fatal(err)
	}
	if channel == "" {
		return n, t, nil
	}
	ch, err := n.GetChannel(t, channel)
	if err != nil {
		tb.Fatal(err)
	}
	return n, t, ch
}
