package replicatest

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/lookupdtest"
	"github.com/sluicemq/sluice/internal/testutil"
)

// TestReplicaBackOnAWipedDiskCatchesUpAndLosesNothing: a replica's disk is
// lost (kill -9, its data path emptied) and it comes back under the same
// address, with no spare node to replace it. The cluster still counts it a
// member of the meta group and of the topic's group; it rejoins both as
// amnesiac (it votes only once caught up: its empty log must not elect a
// leader lacking acknowledged messages), the leaders readmit it, and it
// holds every message again. Before this, the leader's first heartbeat made
// it panic (a commit past the end of its log).
func TestReplicaBackOnAWipedDiskCatchesUpAndLosesNothing(t *testing.T) {
	bin := testutil.BuildApp(t, "github.com/sluicemq/sluice/apps/nsqd")
	lk := lookupdtest.Start(t, nil)
	ns := startNodes(t, bin, lk, 3, false)
	dumpLogsOnFailure(t, ns)
	createReplicated(t, ns[0], "orders", 3)
	lead := waitLeader(t, ns, "orders", 20*time.Second)
	if code, body, err := lead.post("/channel/create?topic=orders&channel=c"); err != nil || code != 200 {
		t.Fatalf("channel/create: %d %s %v", code, body, err)
	}
	const before, during, after = 200, 50, 100
	publish := func(n *node, from, count int) {
		p := testutil.NewProducer(t, n.tcpAddr, nil)
		defer p.Stop()
		for i := from; i < from+count; i++ {
			if err := p.Publish("orders", []byte(fmt.Sprintf("m%04d", i))); err != nil {
				t.Fatalf("publish %d through %s: %v", i, n.name, err)
			}
		}
	}
	publish(lead, 0, before)
	depthIs := func(n *node, want int64) bool {
		ts, ok := n.topicStats("orders")
		return ok && channelDepth(ts, "c") == want
	}
	testutil.WaitFor(t, 20*time.Second, func() bool {
		for _, n := range ns {
			if !depthIs(n, before) {
				return false
			}
		}
		return true
	}, "every replica holds the %d messages", before)

	wiped := ns[0]
	if wiped == lead {
		wiped = ns[1]
	}
	wiped.kill9(t)
	if err := os.RemoveAll(wiped.dataPath); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(wiped.dataPath, 0o755); err != nil {
		t.Fatal(err)
	}
	wiped.start(t)
	back := time.Now()
	// Publishes through it once it holds the topic again. (Publishing
	// through it at once, before it knows the topic, now and then still
	// creates a plain topic of that name: see replica/DESIGN.md.)
	testutil.WaitFor(t, 60*time.Second, func() bool { return depthIs(wiped, before) },
		"%s, back on an empty disk, holds the %d messages", wiped.name, before)
	publish(wiped, before, during)
	testutil.WaitFor(t, 60*time.Second, func() bool { return depthIs(wiped, before+during) },
		"%s, back on an empty disk, holds the %d messages", wiped.name, before+during)
	t.Logf("%s caught up %v after its restart", wiped.name, time.Since(back))
	if !wiped.running() {
		t.Fatalf("%s exited: %v", wiped.name, wiped.exitList())
	}

	// The group works with it: publishes through it, every replica holds
	// them, and a consumer through nsqlookupd receives every message.
	publish(wiped, before+during, after)
	total := before + during + after
	testutil.WaitFor(t, 30*time.Second, func() bool {
		for _, n := range ns {
			if !depthIs(n, int64(total)) {
				return false
			}
		}
		return true
	}, "every replica holds the %d messages", total)
	col := &collector{}
	lookupdConsumer(t, lk, "orders", "c", 100, col)
	testutil.WaitFor(t, 30*time.Second, func() bool {
		for i := 0; i < total; i++ {
			if !col.has(fmt.Sprintf("m%04d", i)) {
				return false
			}
		}
		return true
	}, "all %d messages delivered", total)
}
