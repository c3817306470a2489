package admin

import (
	"maps"

	"github.com/sluicemq/sluice/protocol"
)

// Replicated topics (Sluice's nsqd, issue 11) as the admin shows them. A replicated topic
// lives on N nodes that agree on it through Raft. nsqd's /stats reports it on every replica
// with replicas (N), leader (the leader's broadcast_address:tcp_port, "" while there is
// none) and, on the leader only, replica_lag (how many log entries each replica is behind);
// a node without a replica does not list the topic. The admin's topic JSON carries the same
// keys, per node and aggregated, only for replicated topics, so a cluster that replicates
// nothing (or a cluster of NSQ nodes) keeps NSQ's shape.
//
// Every replica holds the whole topic and its channels, but only the leader delivers: the
// followers' channels stand by. So in an aggregate the figures of a replicated topic and of
// its channels (depth, messages, in flight, deferred, requeued, timed out, e2e latency) are
// one replica's, counted once: the leader's (see countedReplica); only connections add up
// over every replica (a consumer connected to a follower waits there and is served when
// that node leads). The rates and depth the sampler records follow the same rule.

// TopicReplica is a replicated topic's replication as one node reports it (Node set), or
// aggregated over its replicas (Node "*").
type TopicReplica struct {
	Replicas int `json:"replicas"`
	// Leader is the leader's broadcast_address:tcp_port, "" while there is none. In an
	// aggregate it is what every replica reports, or null when they disagree (an election
	// under way, a node cut off): the per-node entries tell who reports what.
	Leader *string `json:"leader"`
	// LeaderNode is the leader as the admin names nodes (its broadcast_address:http_port,
	// the key of /api/nodes/:node), when the replicas agree on it and it is among the nodes
	// reporting the topic. Aggregate only.
	LeaderNode string `json:"leader_node,omitempty"`
	// ReplicaLag is, per replica (broadcast_address:tcp_port), how many entries its log is
	// behind the leader's (the leader at 0), as the leader reports it: on the leader's own
	// entry and in the aggregate; absent when no node reporting is the leader.
	ReplicaLag map[string]uint64 `json:"replica_lag,omitempty"`
	// Address is the node's broadcast_address:tcp_port, its name in leader and
	// replica_lag; Role is "leader" when the node reports itself as the leader, else
	// "follower". Per node only.
	Address string `json:"address,omitempty"`
	Role    string `json:"role,omitempty"`
}

// Roles of a replica.
const (
	roleLeader   = "leader"
	roleFollower = "follower"
)

// topicReplicaOf converts one node's keys (addr: the node's broadcast_address:tcp_port);
// nil when the node reports none.
func topicReplicaOf(p *protocol.TopicReplicaStats, addr string) *TopicReplica {
	if p == nil {
		return nil
	}
	role := roleFollower
	if isLeaderReport(p, addr) {
		role = roleLeader
	}
	return &TopicReplica{Replicas: p.Replicas, Leader: ptr(p.Leader), ReplicaLag: maps.Clone(p.ReplicaLag), Address: addr, Role: role}
}

// isLeaderReport tells whether a node (addr) reports itself as the topic's leader: it
// names itself, or it reports the lag, which only the leader does.
func isLeaderReport(p *protocol.TopicReplicaStats, addr string) bool {
	return (addr != "" && p.Leader == addr) || p.ReplicaLag != nil
}

// mergeTopicReplicas aggregates the per-node replication of one topic (after markStandby);
// nil when no node reports the topic replicated.
func mergeTopicReplicas(nodes []*TopicStats) *TopicReplica {
	var agg *TopicReplica
	var leader setting[string]
	for _, n := range nodes {
		if n.TopicReplica == nil {
			continue
		}
		if agg == nil {
			agg = &TopicReplica{}
		}
		// The count is the meta group's, the same on every replica; a node still applying
		// a change may lag behind, and the larger figure is the newer.
		agg.Replicas = max(agg.Replicas, n.Replicas)
		leader.add(n.Leader)
	}
	if agg == nil {
		return nil
	}
	agg.Leader = leader.value()
	for _, n := range nodes {
		if n.TopicReplica == nil {
			continue
		}
		if agg.Leader != nil && *agg.Leader != "" && n.Address == *agg.Leader {
			agg.LeaderNode = n.Node
		}
		if !n.standby && n.Role == roleLeader {
			agg.ReplicaLag = maps.Clone(n.ReplicaLag)
		}
	}
	return agg
}

// replicaView is what choosing the counted replica needs from one node's report.
type replicaView struct {
	addr     string // the node's broadcast_address:tcp_port
	leader   string // the leader it reports
	messages int64  // the topic's message_count there
}

// countedReplica picks the replica whose figures stand for a replicated topic: the node the
// most replicas name as leader (a leader names itself), ties going to the one that applied
// the most messages; while no replica names one that is reporting (an election), the one
// that applied the most. -1 when vs is empty.
func countedReplica(vs []replicaView) int {
	best, bestVotes := -1, -1
	for i, v := range vs {
		votes := 0
		for _, w := range vs {
			if w.leader != "" && w.leader == v.addr {
				votes++
			}
		}
		if best < 0 || votes > bestVotes || (votes == bestVotes && v.messages > vs[best].messages) {
			best, bestVotes = i, votes
		}
	}
	return best
}

// markStandby marks, for every replicated topic among the per-node stats, the replicas
// whose figures are not counted in the aggregate (all but countedReplica's) and their
// channels.
func markStandby(perNode []*TopicStats) {
	byTopic := map[string][]*TopicStats{}
	for _, t := range perNode {
		if t.TopicReplica != nil {
			byTopic[t.TopicName] = append(byTopic[t.TopicName], t)
		}
	}
	for _, reps := range byTopic {
		vs := make([]replicaView, len(reps))
		for i, t := range reps {
			vs[i] = replicaView{addr: t.Address, messages: t.MessageCount}
			if t.Leader != nil {
				vs[i].leader = *t.Leader
			}
		}
		counted := countedReplica(vs)
		for i, t := range reps {
			t.standby = i != counted
			for _, c := range t.Channels {
				c.standby = t.standby
			}
		}
	}
}

// nodeTopic names a topic on a node (the node's admin address).
type nodeTopic struct{ node, topic string }

// standbyReplicas is markStandby for raw answers: the (node, topic) pairs whose figures are
// not counted.
func standbyReplicas(results []*nodeResult) map[nodeTopic]bool {
	type rep struct {
		node string
		view replicaView
	}
	byTopic := map[string][]rep{}
	for _, r := range results {
		for _, t := range r.Stats.Topics {
			if t.TopicReplicaStats != nil {
				byTopic[t.TopicName] = append(byTopic[t.TopicName], rep{r.Node, replicaView{r.Addr, t.Leader, t.MessageCount}})
			}
		}
	}
	out := map[nodeTopic]bool{}
	for topic, reps := range byTopic {
		vs := make([]replicaView, len(reps))
		for i, rp := range reps {
			vs[i] = rp.view
		}
		counted := countedReplica(vs)
		for i, rp := range reps {
			if i != counted {
				out[nodeTopic{rp.node, topic}] = true
			}
		}
	}
	return out
}
