package replica

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// readIndexWithin asks h for a read index of group, bounded by timeout.
func readIndexWithin(h *Host, group string, timeout time.Duration) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return h.ReadIndex(ctx, group)
}

func pendingReads(h *Host, group string) int {
	g := h.group(group)
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.reads)
}

func TestReadIndexOnTheLeaderCoversEveryCommittedEntry(t *testing.T) {
	c := newTestCluster(t, 3, 11)
	lead := c.leader(5 * time.Second)
	c.proposeEach(lead.node.host, "w", 0, 10)
	st, _ := lead.node.host.Status(c.group)
	idx, err := readIndexWithin(lead.node.host, c.group, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if idx < st.Commit {
		t.Fatalf("read index %d is below the commit %d before the call", idx, st.Commit)
	}
	if n := pendingReads(lead.node.host, c.group); n != 0 {
		t.Fatalf("%d read requests left behind", n)
	}
}

// A follower that missed writes (cut off while they were committed) gets
// from the leader an index covering them, and once it has applied up to
// it, its machine holds every one.
func TestReadIndexOnALaggingFollowerComesFromTheLeaderAndCoversWhatItMissed(t *testing.T) {
	c := newTestCluster(t, 3, 12)
	lead := c.leader(5 * time.Second)
	var behind *testNode
	for _, tn := range c.nodes {
		if tn != lead {
			behind = tn
			break
		}
	}
	c.net.isolate(behind.id, true)
	c.proposeEach(lead.node.host, "w", 0, 20)
	st, _ := lead.node.host.Status(c.group)
	target := st.Commit
	if a, _ := behind.machine.snapshot(); a >= target {
		t.Fatalf("the cut off follower applied %d, not behind the commit %d", a, target)
	}
	c.net.isolate(behind.id, false)
	idx, err := readIndexWithin(behind.node.host, c.group, 10*time.Second)
	if err != nil {
		t.Fatalf("read index on the follower after the heal: %v", err)
	}
	if idx < target {
		t.Fatalf("read index %d is below the commit %d made before the call", idx, target)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := behind.node.host.WaitApplied(ctx, c.group, idx); err != nil {
		t.Fatal(err)
	}
	_, cmds := behind.machine.snapshot()
	if len(cmds) != 20 {
		t.Fatalf("the follower applied %d commands at the read index, want 20", len(cmds))
	}
	if n := pendingReads(behind.node.host, c.group); n != 0 {
		t.Fatalf("%d read requests left behind", n)
	}
}

// Without a quorum no read index is given: not by a follower whose
// leader is gone, not by a leader cut off from its followers (it may
// still believe it leads); the call ends with its context.
func TestReadIndexWithoutQuorumFailsWhenTheContextEnds(t *testing.T) {
	c := newTestCluster(t, 3, 13)
	lead := c.leader(5 * time.Second)
	c.net.isolate(lead.id, true)
	_, err := readIndexWithin(lead.node.host, c.group, time.Second)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read index on a leader cut off from its followers: %v, want the deadline", err)
	}
	if n := pendingReads(lead.node.host, c.group); n != 0 {
		t.Fatalf("%d read requests left behind", n)
	}
	var others []*testNode
	for _, tn := range c.nodes {
		if tn != lead {
			others = append(others, tn)
		}
	}
	c.stop(others[1])
	_, err = readIndexWithin(others[0].node.host, c.group, time.Second)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read index on a follower with no quorum: %v, want the deadline", err)
	}
	if n := pendingReads(others[0].node.host, c.group); n != 0 {
		t.Fatalf("%d read requests left behind", n)
	}
	// quorum back: it answers
	c.net.isolate(lead.id, false)
	if _, err := readIndexWithin(others[0].node.host, c.group, 10*time.Second); err != nil {
		t.Fatalf("read index once two of three are back: %v", err)
	}
}

func TestWaitAppliedEndsWhenTheGroupIsRemoved(t *testing.T) {
	c := newTestCluster(t, 3, 14)
	lead := c.leader(5 * time.Second)
	h := lead.node.host
	errc := make(chan error, 1)
	go func() { errc <- h.WaitApplied(context.Background(), c.group, 1<<40) }()
	h.RemoveGroup(c.group)
	select {
	case err := <-errc:
		if !errors.Is(err, ErrNoGroup) {
			t.Fatalf("WaitApplied after removal: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitApplied did not end when the group was removed")
	}
}

// A meta member cut off while a topic placed on it is created elsewhere
// answers, once it is back, with the assignment the meta group committed,
// never "not known" (its own copy still lags then); on its own it cannot
// confirm and says so.
func TestLaggingMetaMemberAnswersTheCommittedAssignment(t *testing.T) {
	t.Run("voter", func(t *testing.T) { laggingMetaMember(t, 3) })
	// the fourth node is a learner of the meta group: its read index too
	// goes to the leader
	t.Run("learner", func(t *testing.T) { laggingMetaMember(t, 4) })
}

// laggingMetaMember runs the test on n nodes, cutting off the last.
func laggingMetaMember(t *testing.T, n int) {
	tc := newTestCl(t, n)
	last := uint64(n * 100)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := tc.nodes[100].cluster.CreateTopic(ctx, "first", Assignment{Replicas: n}); err != nil {
		t.Fatal(err)
	}
	lagging := tc.nodes[last]
	waitUntil(t, "the node to cut off runs the meta group", 10*time.Second, func() bool {
		_, ok := lagging.cluster.Assignment("first")
		return ok
	})
	if st, _ := lagging.cluster.host.Status(MetaGroup); n > MetaVoters && !slices.Contains(st.Learners, last) {
		t.Fatalf("node %d is not a meta learner: %+v", last, st)
	}
	tc.net.isolate(last, true)
	// (made again when refused while the meta group elects a leader: the
	// cut off node may have led it)
	var a Assignment
	waitUntil(t, "the topic is created without the cut off node", 30*time.Second, func() bool {
		var err error
		a, err = tc.nodes[100].cluster.CreateTopic(ctx, "orders", Assignment{Replicas: n})
		return err == nil
	})
	if !a.Has(last) {
		t.Fatalf("assignment %+v: as many replicas as nodes must include the cut off node", a)
	}
	if _, ok := lagging.cluster.Assignment("orders"); ok {
		t.Fatal("the cut off node learnt the placement: it does not lag")
	}
	// Cut off, it cannot confirm anything about a topic it does not know.
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	_, ok, err := lagging.cluster.CurrentAssignment(short, "orders")
	cancelShort()
	if !errors.Is(err, ErrMetaUnconfirmed) || ok {
		t.Fatalf("current assignment on the cut off node: ok=%v err=%v, want ErrMetaUnconfirmed", ok, err)
	}
	// Back: the very first answer is the committed one.
	tc.net.isolate(last, false)
	got, ok, err := lagging.cluster.CurrentAssignment(ctx, "orders")
	if err != nil {
		t.Fatalf("current assignment after the heal: %v", err)
	}
	if !ok || !got.Has(last) || got.Replicas != n {
		t.Fatalf("current assignment after the heal: %+v known=%v, want %+v", got, ok, a)
	}
	// A name the meta group never placed is confirmed unknown.
	if _, ok, err := lagging.cluster.CurrentAssignment(ctx, "plain"); ok || err != nil {
		t.Fatalf("current assignment of a name never placed: known=%v err=%v", ok, err)
	}
}

// A cluster whose meta group was never formed answers at once from what
// it has: nothing is replicated.
func TestCurrentAssignmentWithoutMetaGroupIsNotKnown(t *testing.T) {
	tc := newTestCl(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, ok, err := tc.nodes[100].cluster.CurrentAssignment(ctx, "orders"); ok || err != nil {
		t.Fatalf("current assignment with no meta group: known=%v err=%v", ok, err)
	}
}
