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
	opts := NewOptions()
	opts.TCPAddress, opts.HTTPAddress = "127.0.0.1:0", ""
	opts.DataPath = t.TempDir()
	opts.MemQueueSize = 10_000_000
	n, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	defer n.Exit()
	topic, err := n.GetTopic("allocs")
	if err != nil {
		t.Fatal(err)
	}
	ch, err := n.GetChannel(topic, "c")
	if err != nil {
		t.Fatal(err)
	}

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
