package replica

import (
	"fmt"
	"testing"
	"time"
)

// quietEverywhere waits until every running node of c holds its group
// quiet.
func (c *testCluster) quietEverywhere(timeout time.Duration) {
	c.t.Helper()
	waitUntil(c.t, "the idle group is quiet on every node", timeout, func() bool {
		for _, tn := range c.nodes {
			if tn.node != nil && !tn.node.host.Quiet(c.group) {
				return false
			}
		}
		return true
	})
}

// newQuietCluster starts a group of three (seeded with seed), commits one
// proposal and waits until the group is quiet everywhere; it returns the
// cluster and the group's leader.
func newQuietCluster(t *testing.T, seed uint64) (*testCluster, *testNode) {
	t.Helper()
	c := newTestCluster(t, 3, seed)
	lead := c.leader(5 * time.Second)
	if err := propose(lead.node.host, c.group, "before", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	c.quietEverywhere(5 * time.Second)
	return c, lead
}

// proposeThroughEach proposes "after-<id>" through every running node but
// except, and fails the test, saying when, if one is refused.
func (c *testCluster) proposeThroughEach(except *testNode, when string) {
	c.t.Helper()
	for _, tn := range c.nodes {
		if tn == except || tn.node == nil {
			continue
		}
		if err := propose(tn.node.host, c.group, fmt.Sprintf("after-%d", tn.id), 5*time.Second); err != nil {
			c.t.Fatalf("proposal on node %d %s: %v", tn.id, when, err)
		}
	}
}

// An idle group stops ticking on every node: no heartbeats go out (only
// one beacon per peer and tick, whatever the number of groups), and a
// proposal wakes it and commits as usual.
func TestIdleGroupGoesQuietAndAProposalWakesIt(t *testing.T) {
	c := newTestCluster(t, 3, 11)
	lead := c.leader(5 * time.Second)
	c.proposeEach(lead.node.host, "before-", 0, 5)
	c.quietEverywhere(5 * time.Second)
	before := c.net.sentIn(c.group)
	time.Sleep(500 * time.Millisecond) // 25 ticks
	if sent := c.net.sentIn(c.group) - before; sent != 0 {
		t.Fatalf("a quiet group sent %d messages in 25 ticks", sent)
	}
	if c.net.sentIn(beaconGroup) == 0 {
		t.Fatal("no beacon was sent")
	}
	// A proposal through a follower wakes the group on every node.
	var follower *testNode
	for _, tn := range c.nodes {
		if tn != lead {
			follower = tn
			break
		}
	}
	if err := propose(follower.node.host, c.group, "after", 5*time.Second); err != nil {
		t.Fatalf("proposal to a quiet group: %v", err)
	}
	if cmds := c.converged(5 * time.Second); len(cmds) != 6 {
		t.Fatalf("applied %d commands, want 6", len(cmds))
	}
	c.quietEverywhere(5 * time.Second) // and it goes quiet again
}

// A quiet group's followers count no election time, so when its leader is
// killed they learn it from its beacons stopping: they wake, elect a new
// leader, and the group takes proposals again.
func TestQuietGroupElectsANewLeaderWhenItsLeaderIsKilled(t *testing.T) {
	c, old := newQuietCluster(t, 12)
	c.stop(old)
	next := c.leader(10 * time.Second)
	if next == old {
		t.Fatal("a stopped node is still leader")
	}
	c.proposeThroughEach(old, "after the quiet leader's loss")
	c.start(old, nil)
	if cmds := c.converged(10 * time.Second); len(cmds) != 3 {
		t.Fatalf("applied %d commands, want 3", len(cmds))
	}
}

// A quiet group's leader frozen (it sends nothing, its connections stay
// up) is taken for dead the same way.
func TestQuietGroupElectsANewLeaderWhenItsLeaderIsCutOff(t *testing.T) {
	c, old := newQuietCluster(t, 13)
	c.net.isolate(old.id, true)
	waitUntil(t, "a new leader on the majority side", 10*time.Second, func() bool {
		for _, tn := range c.nodes {
			if tn != old {
				if st, ok := tn.node.host.Status(c.group); ok && st.IsLead {
					return true
				}
			}
		}
		return false
	})
	c.proposeThroughEach(old, "with the old leader cut off")
	c.net.healAll()
	if cmds := c.converged(10 * time.Second); len(cmds) != 3 {
		t.Fatalf("applied %d commands, want 3", len(cmds))
	}
}

// The quiet group's leader restarted within the election timeout (its
// beacons barely stop; it comes back with a new epoch and without knowing
// who leads): every node agrees on a leader again and the group takes
// proposals.
func TestQuietGroupWakesWhenAMemberRestarts(t *testing.T) {
	c, lead := newQuietCluster(t, 14)
	c.stop(lead)
	c.start(lead, nil)
	waitUntil(t, "every node knows the group's leader again", 10*time.Second, func() bool {
		var leader uint64
		for _, tn := range c.nodes {
			st, ok := tn.node.host.Status(c.group)
			if !ok || st.Leader == 0 || leader != 0 && st.Leader != leader {
				return false
			}
			leader = st.Leader
		}
		return true
	})
	if err := propose(lead.node.host, c.group, "after", 5*time.Second); err != nil {
		t.Fatalf("proposal through the restarted node: %v", err)
	}
	if cmds := c.converged(10 * time.Second); len(cmds) != 2 {
		t.Fatalf("applied %d commands, want 2", len(cmds))
	}
}
