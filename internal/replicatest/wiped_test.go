package replicatest

import (
	"fmt"
	"maps"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"

	"github.com/sluicemq/sluice/internal/lookupdtest"
	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/lookupd"
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
	lk, ns, lead := startOrders(t)
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
	// Publishes through it once it holds the topic again (publishing
	// through it at once, before it knows the topic, may be refused, to
	// be retried: TestWipedNodeNeverTakesItsReplicatedTopicForAPlainOne).
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

// TestWipedNodeNeverTakesItsReplicatedTopicForAPlainOne: publishes reach a
// replica back on an empty disk from the moment it answers, before it has
// learnt from the cluster that it holds the topic: over TCP (PUB, a
// go-nsq producer that retries what was refused) and over HTTP (/pub),
// with /topic/create and SUB besides.
// The node must not create a plain topic of that name meanwhile (it would
// keep its replica from opening there: "exists on this node and is not
// replicated"); it may refuse a publish (the producer retries) or hand it
// to the group. In the end it holds the replicated topic, every replica
// holds every acknowledged message, and a consumer receives them all.
func TestWipedNodeNeverTakesItsReplicatedTopicForAPlainOne(t *testing.T) {
	lk, ns, lead := startOrders(t)
	led := newLedger()
	p := testutil.NewProducer(t, lead.tcpAddr, nil)
	for i := range 50 {
		b := fmt.Sprintf("before-%03d", i)
		led.attempt([]string{b})
		if err := p.Publish("orders", []byte(b)); err != nil {
			t.Fatalf("publish %s through %s: %v", b, lead.name, err)
		}
		led.ack([]string{b})
	}
	p.Stop()

	var wiped, slow *node
	for _, n := range ns {
		switch {
		case n == lead:
		case wiped == nil:
			wiped = n
		default:
			slow = n
		}
	}
	wiped.kill9(t)
	if err := os.RemoveAll(wiped.dataPath); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(wiped.dataPath, 0o755); err != nil {
		t.Fatal(err)
	}
	// The third node is frozen for the first seconds after the restart:
	// without it neither group can take the wiped node back in (its votes
	// are withheld, its empty log acknowledges nothing), so it stays for
	// a while a node that does not know what it holds.
	slow.freeze(t)
	thawed := make(chan struct{})
	go func() {
		defer close(thawed)
		time.Sleep(6 * time.Second)
		slow.thaw(t)
	}()
	t.Cleanup(func() { <-thawed })
	wiped.start(t)

	// From now on: a watcher of its /stats that records a plain "orders"
	// if one shows, /topic/create and SUB through it, and a TCP and an
	// HTTP publisher.
	const each = 40
	plain := watchPlain(t, wiped, "orders")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	// What else creates a topic: /topic/create and a SUB (on a
	// channel of its own, so that c keeps every message for the count).
	var creates, subs atomic.Int64
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			if code, _, err := wiped.post("/topic/create?topic=orders"); err == nil && code == http.StatusOK {
				creates.Add(1)
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			cons, err := nsq.NewConsumer("orders", "probe", testutil.NewConfig())
			if err != nil {
				panic(err) // only a bad config fails here
			}
			cons.SetLogger(testutil.GoNSQLogger())
			cons.AddHandler(nsq.HandlerFunc(func(*nsq.Message) error { return nil }))
			if cons.ConnectToNSQD(wiped.tcpAddr) == nil {
				subs.Add(1)
			}
			testutil.StopConsumer(t, cons)
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	refused := publishRetrying(t, wiped, "orders", led, each, 90*time.Second)
	close(stop)
	wg.Wait()
	t.Logf("meanwhile %d /topic/create and %d SUB through %s succeeded", creates.Load(), subs.Load(), wiped.name)
	t.Logf("publishes refused while %s rejoined: tcp %d, http %d (%v)", wiped.name, refused[0], refused[1], led.errKinds())
	if s := plain.stop(); s != "" {
		t.Fatalf("%s, back on an empty disk, showed a plain (not replicated) topic orders: %s", wiped.name, s)
	}
	if b, err := os.ReadFile(wiped.logPath); err == nil && strings.Contains(string(b), "not replicated") {
		t.Fatalf("%s refused its replica of orders: a plain topic of that name was in the way", wiped.name)
	}
	// (A publish given up by its producer may have been committed all the
	// same: the replicas hold at least what was acknowledged.)
	total := int64(led.ackCount())
	testutil.WaitFor(t, 60*time.Second, func() bool {
		var depth int64 = -1
		for _, n := range ns {
			ts, ok := n.topicStats("orders")
			if !ok || ts.Replicas == nil || channelDepth(ts, "c") < total || depth >= 0 && channelDepth(ts, "c") != depth {
				return false
			}
			depth = channelDepth(ts, "c")
		}
		return true
	}, "every replica (%s back on an empty disk too) holds the same messages, at least the %d acknowledged", wiped.name, total)
	lookupdConsumer(t, lk, "orders", "c", 100, led)
	testutil.WaitFor(t, 30*time.Second, func() bool { return len(led.missing()) == 0 },
		"every acknowledged message delivered")
}

func (l *ledger) ackCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// errKinds returns how many publish errors of each kind were seen.
func (l *ledger) errKinds() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.pubErrs)
}

// startOrders starts nsqlookupd and 3 nsqd of the built binary, creates the
// topic orders with 3 replicas and its channel c through the leader, and
// returns the daemons and that leader.
func startOrders(t *testing.T) (lk *lookupd.Daemon, ns []*node, lead *node) {
	t.Helper()
	bin := testutil.BuildApp(t, "github.com/sluicemq/sluice/apps/nsqd")
	lk = lookupdtest.Start(t, nil)
	ns = startNodes(t, bin, lk, 3, false, "--log-level=info")
	dumpLogsOnFailure(t, ns)
	createReplicated(t, ns[0], "orders", 3)
	lead = waitLeader(t, ns, "orders", 20*time.Second)
	if code, body, err := lead.post("/channel/create?topic=orders&channel=c"); err != nil || code != 200 {
		t.Fatalf("channel/create: %d %s %v", code, body, err)
	}
	return lk, ns, lead
}
