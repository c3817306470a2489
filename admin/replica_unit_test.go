package admin

import (
	"maps"
	"testing"
	"time"

	"github.com/sluicemq/sluice/protocol"
)

// replicaNode is one node's entry of replicated topic "t" as topicsOf makes it: addr is its
// broadcast_address:tcp_port, leader what it reports, lag its replica_lag (the leader's).
func replicaNode(node, addr, leader string, msgs, chanDepth int64, lag map[string]uint64) *TopicStats {
	r := &nodeResult{Node: node, Addr: addr, Stats: &nodeStats{Topics: []*rawTopic{{
		TopicName: "t", MessageCount: msgs,
		Channels:          []*rawChannel{{ChannelName: "c", Depth: chanDepth, MessageCount: msgs, ClientCount: 1}},
		TopicReplicaStats: &protocol.TopicReplicaStats{Replicas: 3, Leader: leader, ReplicaLag: lag},
	}}}}
	return topicsOf(r, time.Now())[0]
}

func TestAggregateReplicatedTopic(t *testing.T) {
	lag := map[string]uint64{"a:1": 0, "b:1": 2, "c:1": 0}
	for _, tc := range []struct {
		name       string
		nodes      []*TopicStats
		leader     *string
		leaderNode string
		lag        map[string]uint64
		msgs       int64 // the counted replica's
		roles      map[string]string
	}{
		{"agreed", []*TopicStats{
			replicaNode("a", "a:1", "a:1", 10, 4, lag), replicaNode("b", "b:1", "a:1", 8, 9, nil), replicaNode("c", "c:1", "a:1", 10, 9, nil)},
			ptr("a:1"), "a", lag, 10, map[string]string{"a": "leader", "b": "follower", "c": "follower"}},
		{"election under way", []*TopicStats{
			replicaNode("a", "a:1", "", 10, 4, nil), replicaNode("b", "b:1", "", 12, 5, nil), replicaNode("c", "c:1", "", 11, 6, nil)},
			ptr(""), "", nil, 12, map[string]string{"a": "follower", "b": "follower", "c": "follower"}},
		{"a stale leader cut off", []*TopicStats{
			replicaNode("a", "a:1", "a:1", 10, 4, map[string]uint64{"a:1": 0, "b:1": 0, "c:1": 0}),
			replicaNode("b", "b:1", "b:1", 14, 3, map[string]uint64{"a:1": 4, "b:1": 0, "c:1": 0}),
			replicaNode("c", "c:1", "b:1", 14, 3, nil)},
			nil, "", map[string]uint64{"a:1": 4, "b:1": 0, "c:1": 0}, 14, map[string]string{"a": "leader", "b": "leader", "c": "follower"}},
		{"leader not reporting", []*TopicStats{
			replicaNode("b", "b:1", "a:1", 9, 1, nil), replicaNode("c", "c:1", "a:1", 10, 2, nil)},
			ptr("a:1"), "", nil, 10, map[string]string{"b": "follower", "c": "follower"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			aggs := aggregateTopics(tc.nodes)
			if len(aggs) != 1 || aggs[0].TopicReplica == nil {
				t.Fatalf("aggregates %+v", aggs)
			}
			g := aggs[0]
			if !sameString(g.Leader, tc.leader) || g.LeaderNode != tc.leaderNode || g.Replicas != 3 || !maps.Equal(g.ReplicaLag, tc.lag) {
				t.Fatalf("replicas %d leader %v leader_node %q lag %v, want 3 %v %q %v", g.Replicas, deref2(g.Leader), g.LeaderNode, g.ReplicaLag,
					deref2(tc.leader), tc.leaderNode, tc.lag)
			}
			if g.MessageCount != tc.msgs || g.ClientCount != len(tc.nodes) {
				t.Fatalf("message_count %d client_count %d, want %d (one replica's) and %d (every replica's)", g.MessageCount, g.ClientCount, tc.msgs, len(tc.nodes))
			}
			var counted *TopicStats
			for _, n := range g.Nodes {
				if n.Role != tc.roles[n.Node] || n.Role != n.Channels[0].Role {
					t.Fatalf("node %s role %q (channel %q), want %q", n.Node, n.Role, n.Channels[0].Role, tc.roles[n.Node])
				}
				if !n.standby {
					counted = n
				}
			}
			c := g.Channels[0]
			if counted == nil || c.Depth != counted.Channels[0].Depth || c.ClientCount != len(tc.nodes) || len(c.Nodes) != len(tc.nodes) {
				t.Fatalf("channel depth %d clients %d, want the counted replica's depth and every replica's clients", c.Depth, c.ClientCount)
			}
		})
	}
}

// A topic that is not replicated beside one that is: it keeps its sums and no replica keys.
func TestAggregatePlainTopicUnchanged(t *testing.T) {
	plain := func(node string, msgs int64) *TopicStats {
		return topicsOf(&nodeResult{Node: node, Addr: node + ":1", Stats: &nodeStats{Topics: []*rawTopic{{TopicName: "p", MessageCount: msgs}}}}, time.Now())[0]
	}
	aggs := aggregateTopics([]*TopicStats{plain("a", 3), plain("b", 4), replicaNode("a", "a:1", "a:1", 10, 0, nil)})
	if len(aggs) != 2 || aggs[0].TopicName != "p" || aggs[0].MessageCount != 7 || aggs[0].TopicReplica != nil || aggs[0].Nodes[0].TopicReplica != nil {
		t.Fatalf("plain aggregate %+v", aggs[0])
	}
}

func TestCountedReplica(t *testing.T) {
	for _, tc := range []struct {
		name string
		vs   []replicaView
		want int
	}{
		{"none", nil, -1},
		{"named by all", []replicaView{{"a", "b", 1}, {"b", "b", 1}, {"c", "b", 1}}, 1},
		{"majority over a stale self-named leader", []replicaView{{"a", "a", 9}, {"b", "b", 5}, {"c", "b", 5}}, 1},
		{"tie goes to the most applied", []replicaView{{"a", "a", 5}, {"b", "b", 6}}, 1},
		{"no leader: the most applied", []replicaView{{"a", "", 5}, {"b", "", 7}, {"c", "", 6}}, 1},
		{"unknown address never matches an empty leader", []replicaView{{"", "", 5}, {"b", "", 7}}, 1},
	} {
		if got := countedReplica(tc.vs); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}

// The sampler's history counts a replicated topic once, and a leader change does not make
// the new leader's whole count look like one interval's traffic.
func TestHistoryCountsReplicatedTopicOnce(t *testing.T) {
	h := NewHistory(time.Minute, time.Second)
	rep := func(node, leader string, at time.Time, msgs, depth int64) *nodeResult {
		return &nodeResult{Node: node, Addr: node + ":1", At: at, Stats: &nodeStats{Topics: []*rawTopic{{
			TopicName: "t", MessageCount: msgs, Channels: []*rawChannel{chanWith("c", msgs, depth, 0, 0)},
			TopicReplicaStats: &protocol.TopicReplicaStats{Replicas: 3, Leader: leader},
		}}}}
	}
	round := func(at time.Time, leader string, msgs, depth int64) {
		h.record(at, []*nodeResult{rep("a", leader, at, msgs, depth), rep("b", leader, at, msgs, depth), rep("c", leader, at, msgs, depth)})
	}
	t0 := time.Unix(2_000_000, 0)
	round(t0, "a:1", 100, 10)
	round(t0.Add(time.Second), "a:1", 110, 12)
	s := h.Series(SeriesKey{Topic: "t"}, 0)
	approx(t, "topic in", s.In[1], 10)
	if s.Depth[1] != 12 {
		t.Fatalf("topic depth %d, want 12 (one replica's)", s.Depth[1])
	}
	round(t0.Add(2*time.Second), "b:1", 120, 12) // b leads now
	s = h.Series(SeriesKey{Topic: "t"}, 0)
	approx(t, "topic in after the leader changed", s.In[2], 10)
	approx(t, "cluster in after the leader changed", h.Series(SeriesKey{}, 0).In[2], 10)
}

func sameString(a, b *string) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }
