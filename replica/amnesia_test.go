package replica

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicemq/sluice/store"
)

// A voter that comes back on a wiped disk under its old ID has forgotten
// its log. The scenario: C acknowledged entries with the leader L while B
// lagged (cut off); C's disk is lost and it restarts empty; L becomes
// unreachable. B and C alone: if C grants B its vote, B leads without the
// entries L and C had committed, and they are lost.
func TestWipedVoterGivesNoVoteUntilItHasCaughtUp(t *testing.T) {
	t.Run("without the guard the lagging node is elected", func(t *testing.T) {
		_, b, c, _, acked := wipedVoterScenario(t, false)
		lead := leaderAmong(t, 5*time.Second, b, c)
		if lead != b {
			t.Fatalf("node %d leads, want the lagging node %d", lead.id, b.id)
		}
		for _, d := range proposed(b.machine) {
			if slices.Contains(acked, d) {
				t.Fatalf("the lagging node holds %q: the scenario lost nothing", d)
			}
		}
	})
	t.Run("with the guard nothing acknowledged is lost", func(t *testing.T) {
		l, b, c, net, acked := wipedVoterScenario(t, true)
		// No leader while only B and C can talk: C withholds its vote
		// and B's log is ahead of C's.
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) {
			for _, dn := range []*diskNode{b, c} {
				if st, ok := dn.mn.host.Status("orders"); ok && st.IsLead {
					t.Fatalf("node %d was elected by a node that forgot its log", dn.id)
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		// L returns: it leads again and C catches up from it.
		net.isolate(l.id, false)
		lead := leaderAmong(t, 10*time.Second, l, b, c)
		for i := 0; i < 10; i++ {
			d := fmt.Sprintf("after-%d", i)
			proposeDecided(t, lead, d)
			acked = append(acked, d)
		}
		waitApplied(t, acked, l, b, c)
		// C votes again once caught up: cut the leader off, and the two
		// others elect one of them.
		net.isolate(lead.id, true)
		var rest []*diskNode
		for _, dn := range []*diskNode{l, b, c} {
			if dn != lead {
				rest = append(rest, dn)
			}
		}
		leaderAmong(t, 10*time.Second, rest...)
	})
}

// A follower's disk is lost while the leader stays: the leader still counts
// the entries the follower had and would never send them again (and its
// heartbeats would commit past the end of the follower's empty log, which
// makes Raft panic). The follower asks the leader to readmit it, and
// catches up.
func TestWipedFollowerIsReadmittedAndCatchesUp(t *testing.T) {
	net := newMemNet(2)
	ids := []uint64{1, 2, 3}
	nodes := startDiskGroup(t, net, ids)
	l := leaderAmong(t, 5*time.Second, nodes...)
	var acked []string
	publish := func(tag string, n int) {
		for i := 0; i < n; i++ {
			d := fmt.Sprintf("%s-%d", tag, i)
			proposeDecided(t, l, d)
			acked = append(acked, d)
		}
	}
	publish("before", 20)
	waitApplied(t, acked, nodes...)
	var c *diskNode
	for _, dn := range nodes {
		if dn != l {
			c = dn
			break
		}
	}
	stopDiskNode(net, c)
	var asked atomic.Int32
	c.fs, c.machine, c.amnesiac = store.NewMemFS(), &modelMachine{}, true
	c.onAmnesia = func(leader uint64) {
		asked.Add(1)
		net.mu.Lock()
		mn := net.nodes[leader]
		net.mu.Unlock()
		if mn != nil {
			go mn.host.Readmit("orders", c.id)
		}
	}
	startDiskNode(t, net, c, ids)
	publish("after", 10)
	waitApplied(t, acked, nodes...)
	if asked.Load() == 0 {
		t.Fatal("the wiped follower never asked to be readmitted")
	}
	if st, _ := l.mn.host.Status("orders"); len(st.Voters) != 3 {
		t.Fatalf("voters %v after the readmission, want 3", st.Voters)
	}
	// It votes again: with the leader cut off the two others elect one.
	net.isolate(l.id, true)
	var rest []*diskNode
	for _, dn := range nodes {
		if dn != l {
			rest = append(rest, dn)
		}
	}
	leaderAmong(t, 10*time.Second, rest...)
}

// wipedVoterScenario runs the scenario up to the point where only B and C
// can talk, C restarted on an empty disk (amnesiac or not). It returns L,
// B, C, the network and what L acknowledged while B lagged.
func wipedVoterScenario(t *testing.T, guard bool) (l, b, c *diskNode, net *memNet, acked []string) {
	t.Helper()
	net = newMemNet(1)
	ids := []uint64{1, 2, 3}
	nodes := startDiskGroup(t, net, ids)
	l = leaderAmong(t, 5*time.Second, nodes...)
	for _, dn := range nodes {
		if dn == l {
			continue
		}
		if b == nil {
			b = dn
		} else {
			c = dn
		}
	}
	net.isolate(b.id, true)
	for i := 0; i < 20; i++ {
		d := fmt.Sprintf("acked-%d", i)
		proposeDecided(t, l, d)
		acked = append(acked, d)
	}
	// C's disk is lost; L is cut off before C is back, so that C cannot
	// catch up from it; B is reachable again.
	stopDiskNode(net, c)
	net.mu.Lock()
	for _, link := range [][2]uint64{{l.id, b.id}, {b.id, l.id}, {l.id, c.id}, {c.id, l.id}} {
		net.cut[link] = true
	}
	net.cut[[2]uint64{b.id, c.id}], net.cut[[2]uint64{c.id, b.id}] = false, false
	net.mu.Unlock()
	c.fs, c.machine, c.amnesiac = store.NewMemFS(), &modelMachine{}, guard
	startDiskNode(t, net, c, ids) // a replica opened again on an empty disk bootstraps
	return l, b, c, net, acked
}

// leaderAmong waits for one of nodes to lead the group.
func leaderAmong(t *testing.T, timeout time.Duration, nodes ...*diskNode) *diskNode {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, dn := range nodes {
			if dn.mn == nil {
				continue
			}
			if st, ok := dn.mn.host.Status("orders"); ok && st.IsLead {
				return dn
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	var ids []string
	for _, dn := range nodes {
		ids = append(ids, fmt.Sprint(dn.id))
	}
	t.Fatalf("none of nodes %s leads within %v", strings.Join(ids, ", "), timeout)
	return nil
}

// waitApplied waits until every node has applied exactly want.
func waitApplied(t *testing.T, want []string, nodes ...*diskNode) {
	t.Helper()
	want = slices.Clone(want)
	slices.Sort(want)
	deadline := time.Now().Add(10 * time.Second)
	for {
		done := true
		for _, dn := range nodes {
			got := proposed(dn.machine)
			slices.Sort(got)
			if !slices.Equal(got, want) {
				done = false
				if time.Now().After(deadline) {
					t.Fatalf("node %d applied %d commands, want the %d acknowledged", dn.id, len(got), len(want))
				}
			}
		}
		if done {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A meta learner (a node beyond the meta group's three voters) that holds
// a replica loses its disk. Its meta leader still counts the placement
// entries it had, and ignores its rejections of appends it cannot take
// (Raft takes them for stale): it would never learn the placement again,
// nor settle (Cluster.Settled), had the leader not readmitted it as a
// learner. It settles holding its replica, which catches up.
func TestWipedMetaLearnerIsReadmittedAndSettlesHoldingItsReplica(t *testing.T) {
	tc := newTestCl(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, err := tc.nodes[400].cluster.CreateTopic(ctx, "orders", Assignment{Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !a.Has(400) {
		t.Fatalf("assignment %+v: want the creator among the members", a)
	}
	waitUntil(t, "node 400 is a meta learner", 15*time.Second, func() bool {
		st, ok := tc.nodes[100].cluster.host.Status(MetaGroup)
		return ok && slices.Contains(st.Learners, 400) && len(st.Voters) == 3
	})
	for i := 0; i < 20; i++ {
		if err := tc.nodes[100].cluster.Publish(ctx, "orders", []byte(fmt.Sprintf("m%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "node 400 holds every message", 15*time.Second, func() bool {
		return len(applied(tc.nodes[400].topics.machine("orders"))) == 20
	})

	cn := tc.nodes[400]
	tc.wipe(cn)
	tc.start(cn)
	settlesHolding(t, cn, "orders", 20*time.Second)
	if err := tc.nodes[100].cluster.Publish(ctx, "orders", []byte("after")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the wiped learner's replica holds every message again", 20*time.Second, func() bool {
		return len(applied(cn.topics.machine("orders"))) == 21
	})
	if st, _ := cn.cluster.host.Status(MetaGroup); !slices.Contains(st.Learners, 400) {
		t.Fatalf("meta membership %+v after the readmission: want node 400 a learner", st)
	}
}

// A voter loses its disk and comes back while another member is frozen
// (SIGSTOP: it holds connections open and answers nothing). The meta
// leader invites the wiped node, which looks for the group; a question to
// the frozen node hangs for a whole request timeout. Meanwhile a publish
// waits on Settled. The node must not settle as one that holds nothing
// (it would take a publish for a new plain topic under its replica's
// name): it settles once its replica is open, after the frozen node
// thaws and the groups take it back.
func TestWipedVoterSettlesOnlyWithItsReplicaWhileAPeerIsFrozen(t *testing.T) {
	tc := newTestCl(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := tc.nodes[100].cluster.CreateTopic(ctx, "orders", Assignment{Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if err := tc.nodes[100].cluster.Publish(ctx, "orders", []byte(fmt.Sprintf("m%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "every replica holds the 10 messages", 15*time.Second, func() bool {
		for _, cn := range tc.nodes {
			if len(applied(cn.topics.machine("orders"))) != 10 {
				return false
			}
		}
		return true
	})
	metaLeader := func() uint64 {
		for id, cn := range tc.nodes {
			if st, ok := cn.cluster.host.Status(MetaGroup); ok && st.IsLead {
				return id
			}
		}
		return 0
	}
	waitUntil(t, "a meta leader", 15*time.Second, func() bool { return metaLeader() != 0 })
	// The frozen node is asked before the leader when ids are sorted: the
	// leader must not be node 100.
	if metaLeader() == 100 {
		tc.net.isolate(100, true)
		waitUntil(t, "a meta leader other than node 100", 15*time.Second, func() bool {
			l := metaLeader()
			return l != 0 && l != 100
		})
		tc.net.healAll()
	}
	lead := metaLeader()
	frozen, wiped := uint64(100), uint64(200)
	if lead == 200 {
		wiped = 300
	}

	cn := tc.nodes[wiped]
	tc.wipe(cn)
	tc.freeze(frozen, true)
	thawed := make(chan struct{})
	go func() {
		defer close(thawed)
		time.Sleep(6 * time.Second)
		tc.freeze(frozen, false)
	}()
	t.Cleanup(func() { <-thawed })
	tc.start(cn)
	t.Logf("node %d wiped, node %d frozen, meta leader %d", wiped, frozen, lead)
	settlesHolding(t, cn, "orders", 45*time.Second)
	waitUntil(t, "the wiped voter's replica holds every message again", 30*time.Second, func() bool {
		return len(applied(cn.topics.machine("orders"))) == 10
	})
}

// settlesHolding fails the test unless the wiped node cn settles
// (Cluster.Settled) within timeout with its replica of topic open: a node
// that settled without it would take a publish to topic for a new plain
// topic.
func settlesHolding(t *testing.T, cn *clusterNode, topic string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if !cn.cluster.Settled(ctx) {
		t.Fatalf("the wiped node %d did not settle: it never learnt the placement again", cn.id)
	}
	if _, ok := cn.cluster.TopicStatus(topic); !ok {
		t.Fatalf("the wiped node %d settled without its replica of %s open", cn.id, topic)
	}
}
