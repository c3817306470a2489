package replica_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/sluicemq/sluice/internal/lookupdtest"
	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/nsqd"
	"github.com/sluicemq/sluice/replica"
)

// inbox is a Receiver that records message indexes per sender.
type inbox struct {
	mu  sync.Mutex
	got map[uint64][]uint64
}

func (b *inbox) Receive(msgs []replica.Envelope) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.got == nil {
		b.got = make(map[uint64][]uint64)
	}
	for _, e := range msgs {
		b.got[e.Msg.GetFrom()] = append(b.got[e.Msg.GetFrom()], e.Msg.GetIndex())
	}
}

func (b *inbox) from(id uint64) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return fmt.Sprint(b.got[id])
}

func heartbeat(from, to, index uint64) replica.Envelope {
	return replica.Envelope{Group: replica.MetaGroup, Msg: &raftpb.Message{
		Type: raftpb.MsgHeartbeat.Enum(), From: proto.Uint64(from), To: proto.Uint64(to), Index: proto.Uint64(index),
	}}
}

// replicaNode is an nsqd with replication wired the way nsqd will wire it:
// a transport on its TCP port, fed by discovery from its lookupds.
type replicaNode struct {
	h   *testutil.NSQDHandle
	id  uint64
	tr  *replica.TCPTransport
	rcv *inbox
}

func startReplicaNode(t *testing.T, lookupds ...string) *replicaNode {
	t.Helper()
	h := testutil.StartNSQD(t, func(o *nsqd.Options) { o.NSQLookupdTCPAddresses = lookupds })
	n := h.Server.(*nsqd.NSQD)
	// the ID of broadcast_address:tcp_port, as the other nodes find it in /nodes
	rn := &replicaNode{h: h, id: replica.NodeID(h.TCPAddr), rcv: new(inbox)}
	rn.tr = replica.NewTCPTransport(replica.TCPConfig{Self: rn.id, Receiver: rn.rcv, Logger: testutil.TestLogger()})
	n.SetReplicaHandler(rn.tr.ServeConn)
	d := replica.NewDiscovery(replica.DiscoveryConfig{
		Lookupds: n.LookupdHTTPAddresses,
		OnChange: rn.tr.SetPeers,
		Interval: 20 * time.Millisecond,
		Logger:   testutil.TestLogger(),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		rn.tr.Close()
	})
	return rn
}

// TestTransportOverNSQD: two nsqds with replication find each other through
// nsqlookupd and exchange Raft messages over their TCP ports, while V2
// clients keep working on the same ports.
func TestTransportOverNSQD(t *testing.T) {
	l := lookupdtest.Start(t, nil)
	a := startReplicaNode(t, l.TCPAddr().String())
	b := startReplicaNode(t, l.TCPAddr().String())
	for _, pair := range [][2]*replicaNode{{a, b}, {b, a}} {
		from, to := pair[0], pair[1]
		testutil.WaitFor(t, 10*time.Second, func() bool { return from.tr.Stats()[to.id].Addr == to.h.TCPAddr }, "discovery of %d by %d", to.id, from.id)
		for i := range uint64(3) {
			from.tr.Send(to.id, []replica.Envelope{heartbeat(from.id, to.id, i)})
		}
		testutil.WaitFor(t, 10*time.Second, func() bool { return to.rcv.from(from.id) == "[0 1 2]" }, "delivery to %d", to.id)
	}
	// V2 on the same port: a PUB to a new topic is answered. The peer's
	// replication port here is this test's transport, which never answers
	// the node's own questions, so the fresh node may refuse the topic
	// (retryable, naming why) until it gives up asking (settleWithinSilent).
	c := testutil.DialV2(t, a.h.TCPAddr)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c.Send("PUB still-nsq", []byte("hi"))
		f, err := c.ReadNonHeartbeat(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if f.Type == testutil.FrameTypeResponse && string(f.Data) == "OK" {
			break
		}
		if f.Type != testutil.FrameTypeError || !strings.Contains(string(f.Data), "E_PUB_FAILED") ||
			!strings.Contains(string(f.Data), "rejoining the cluster") || time.Now().After(deadline) {
			t.Fatalf("PUB answered %v %q, want OK (or, at first, a retryable refusal while the node settles)", f.Type, f.Data)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestTransportToNSQDWithoutReplication: an nsqd without replication
// answers the transport's connection with E_BAD_PROTOCOL; the transport
// notices, drops what it sent, and redials with backoff rather than in a
// tight loop.
func TestTransportToNSQDWithoutReplication(t *testing.T) {
	plain := testutil.StartNSQD(t, nil)
	var (
		mu    sync.Mutex
		dials []time.Time
	)
	var d net.Dialer
	tr := replica.NewTCPTransport(replica.TCPConfig{
		Self:     1,
		Receiver: new(inbox),
		Logger:   testutil.TestLogger(),
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			mu.Lock()
			dials = append(dials, time.Now())
			mu.Unlock()
			return d.DialContext(ctx, "tcp", addr)
		},
	})
	defer tr.Close()
	peer := replica.NodeID(plain.TCPAddr)
	tr.SetPeers(map[uint64]string{peer: plain.TCPAddr})
	i := uint64(0)
	testutil.WaitFor(t, 10*time.Second, func() bool {
		tr.Send(peer, []replica.Envelope{heartbeat(1, peer, i)})
		i++
		mu.Lock()
		defer mu.Unlock()
		return len(dials) >= 4
	}, "4 dials")
	mu.Lock()
	defer mu.Unlock()
	for k := 1; k < 4; k++ {
		want := replica.DefaultMinBackoff << (k - 1)
		if gap := dials[k].Sub(dials[k-1]); gap < want*9/10 {
			t.Errorf("dial %d came %v after the previous one, want at least %v", k, gap, want)
		}
	}
}
