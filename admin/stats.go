package admin

import (
	"net"
	"sort"
	"strconv"
	"time"

	"github.com/sluicemq/sluice/protocol"
)

// This file holds the shapes of nsqd's /stats (as read from the nodes) and of the
// aggregated views the admin API serves (§11.4), plus the pure functions that merge the
// former into the latter.

// E2ELatency and Percentile are nsqd's e2e_processing_latency shapes
// (protocol.md §9.5), shared with the /stats schema.
type (
	E2ELatency = protocol.E2ELatency
	Percentile = protocol.Percentile
)

// ClientStats is a connection as nsqd reports it, plus the admin's Node and Connected.
type ClientStats struct {
	Node                          string        `json:"node"`
	RemoteAddress                 string        `json:"remote_address"`
	Version                       string        `json:"version"`
	ClientID                      string        `json:"client_id"`
	Hostname                      string        `json:"hostname"`
	UserAgent                     string        `json:"user_agent"`
	ConnectTS                     int64         `json:"connect_ts"`
	Connected                     time.Duration `json:"connected"`
	InFlightCount                 int64         `json:"in_flight_count"`
	ReadyCount                    int64         `json:"ready_count"`
	FinishCount                   int64         `json:"finish_count"`
	RequeueCount                  int64         `json:"requeue_count"`
	MessageCount                  int64         `json:"message_count"`
	SampleRate                    int32         `json:"sample_rate"`
	Deflate                       bool          `json:"deflate"`
	Snappy                        bool          `json:"snappy"`
	Authed                        bool          `json:"authed"`
	AuthIdentity                  string        `json:"auth_identity"`
	AuthIdentityURL               string        `json:"auth_identity_url"`
	TLS                           bool          `json:"tls"`
	TLSCipherSuite                string        `json:"tls_cipher_suite"`
	TLSVersion                    string        `json:"tls_version"`
	TLSNegotiatedProtocol         string        `json:"tls_negotiated_protocol"`
	TLSNegotiatedProtocolIsMutual bool          `json:"tls_negotiated_protocol_is_mutual"`
	PubCounts                     []PubCount    `json:"pub_counts,omitempty"`
}

// PubCount is how many messages a producer published to one topic.
type PubCount struct {
	Topic string `json:"topic"`
	Count int64  `json:"count"`
}

// ChannelStats is a channel on one node (Node set) or aggregated over nodes (Node "*").
type ChannelStats struct {
	Node          string          `json:"node"`
	Hostname      string          `json:"hostname"`
	TopicName     string          `json:"topic_name"`
	ChannelName   string          `json:"channel_name"`
	Depth         int64           `json:"depth"`
	MemoryDepth   int64           `json:"memory_depth"`
	BackendDepth  int64           `json:"backend_depth"`
	InFlightCount int64           `json:"in_flight_count"`
	DeferredCount int64           `json:"deferred_count"`
	RequeueCount  int64           `json:"requeue_count"`
	TimeoutCount  int64           `json:"timeout_count"`
	MessageCount  int64           `json:"message_count"`
	ClientCount   int             `json:"client_count"`
	Nodes         []*ChannelStats `json:"nodes"`
	Clients       []*ClientStats  `json:"clients"`
	Paused        bool            `json:"paused"`
	E2E           *E2ELatency     `json:"e2e_processing_latency"`
	// Message policies (Sluice): present only when a node enforces one; see ChannelPolicy.
	*ChannelPolicy
	// Role is, per node of a replicated topic, the node's role for the topic: "leader" or
	// "follower" (whose channel stands by); absent otherwise. See TopicReplica.
	Role string `json:"role,omitempty"`

	standby bool // a follower's: not counted in the aggregate (markStandby)
}

// TopicStats is a topic on one node (Node set) or aggregated over nodes (Node "*").
type TopicStats struct {
	Node         string          `json:"node"`
	Hostname     string          `json:"hostname"`
	TopicName    string          `json:"topic_name"`
	Depth        int64           `json:"depth"`
	MemoryDepth  int64           `json:"memory_depth"`
	BackendDepth int64           `json:"backend_depth"`
	MessageCount int64           `json:"message_count"`
	InFlight     int64           `json:"in_flight_count"`
	ClientCount  int             `json:"client_count"`
	Nodes        []*TopicStats   `json:"nodes"`
	Channels     []*ChannelStats `json:"channels"`
	Paused       bool            `json:"paused"`
	E2E          *E2ELatency     `json:"e2e_processing_latency"`
	// Durable topics only: durable on any node; the retention settings
	// when every durable node agrees on them (a node where the topic is not
	// durable has none and is not counted; the per-node Nodes tell).
	Durable        bool   `json:"durable,omitempty"`
	RetentionTime  string `json:"retention_time,omitempty"`
	RetentionBytes *int64 `json:"retention_bytes,omitempty"`
	// Message policies (Sluice): present only when a node sets one; see TopicPolicy.
	*TopicPolicy
	// Replicated topics (Sluice): present only when a node reports the topic replicated;
	// see TopicReplica.
	*TopicReplica

	standby bool // a follower's: not counted in the aggregate (markStandby)
}

// nodeStats is the JSON body of nsqd's GET /stats?format=json (§9.5).
type nodeStats struct {
	Version   string         `json:"version"`
	Health    string         `json:"health"`
	StartTime int64          `json:"start_time"`
	Topics    []*rawTopic    `json:"topics"`
	Producers []*ClientStats `json:"producers"`
}

type rawTopic struct {
	TopicName    string        `json:"topic_name"`
	Channels     []*rawChannel `json:"channels"`
	Depth        int64         `json:"depth"`
	BackendDepth int64         `json:"backend_depth"`
	MessageCount int64         `json:"message_count"`
	Paused       bool          `json:"paused"`
	E2E          *E2ELatency   `json:"e2e_processing_latency"`

	Durable        bool    `json:"durable"`
	RetentionTime  *string `json:"retention_time"`
	RetentionBytes *int64  `json:"retention_bytes"`
	// nil unless the node reports the policy keys
	*protocol.TopicPolicyStats
	// nil unless the topic is replicated
	*protocol.TopicReplicaStats
}

type rawChannel struct {
	ChannelName   string         `json:"channel_name"`
	Depth         int64          `json:"depth"`
	BackendDepth  int64          `json:"backend_depth"`
	InFlightCount int64          `json:"in_flight_count"`
	DeferredCount int64          `json:"deferred_count"`
	MessageCount  int64          `json:"message_count"`
	RequeueCount  int64          `json:"requeue_count"`
	TimeoutCount  int64          `json:"timeout_count"`
	ClientCount   int            `json:"client_count"`
	Clients       []*ClientStats `json:"clients"`
	Paused        bool           `json:"paused"`
	E2E           *E2ELatency    `json:"e2e_processing_latency"`
	// nil unless the node reports the policy keys
	*protocol.ChannelPolicyStats
}

// nodeResult is one node's /stats answer as fetched by the admin.
type nodeResult struct {
	Node     string // broadcast_address:http_port
	Addr     string // broadcast_address:tcp_port: the node's name among replicas
	Hostname string
	Stats    *nodeStats
	At       time.Time // when the answer arrived
}

// topicsOf converts a node's raw stats into per-node TopicStats with per-node channels.
func topicsOf(r *nodeResult, now time.Time) []*TopicStats {
	var out []*TopicStats
	for _, rt := range r.Stats.Topics {
		ts := &TopicStats{
			Node: r.Node, Hostname: r.Hostname, TopicName: rt.TopicName,
			Depth: rt.Depth, BackendDepth: rt.BackendDepth, MemoryDepth: rt.Depth - rt.BackendDepth,
			MessageCount: rt.MessageCount, Paused: rt.Paused, E2E: rt.E2E,
			Channels: []*ChannelStats{}, Nodes: []*TopicStats{},
			Durable: rt.Durable, RetentionBytes: rt.RetentionBytes,
			TopicPolicy:  topicPolicyOf(rt.TopicPolicyStats),
			TopicReplica: topicReplicaOf(rt.TopicReplicaStats, r.Addr),
		}
		if rt.RetentionTime != nil {
			ts.RetentionTime = *rt.RetentionTime
		}
		for _, rc := range rt.Channels {
			cs := channelOf(r, rt.TopicName, rc, now)
			if ts.TopicReplica != nil {
				cs.Role = ts.Role
			}
			ts.Channels = append(ts.Channels, cs)
			ts.InFlight += cs.InFlightCount
			ts.ClientCount += cs.ClientCount
		}
		out = append(out, ts)
	}
	return out
}

func channelOf(r *nodeResult, topic string, rc *rawChannel, now time.Time) *ChannelStats {
	cs := &ChannelStats{
		Node: r.Node, Hostname: r.Hostname, TopicName: topic, ChannelName: rc.ChannelName,
		Depth: rc.Depth, BackendDepth: rc.BackendDepth, MemoryDepth: rc.Depth - rc.BackendDepth,
		InFlightCount: rc.InFlightCount, DeferredCount: rc.DeferredCount, RequeueCount: rc.RequeueCount,
		TimeoutCount: rc.TimeoutCount, MessageCount: rc.MessageCount, ClientCount: rc.ClientCount,
		Paused: rc.Paused, E2E: rc.E2E, Clients: []*ClientStats{}, Nodes: []*ChannelStats{},
		ChannelPolicy: channelPolicyOf(rc.ChannelPolicyStats),
	}
	for _, c := range rc.Clients {
		cc := *c
		cc.Node = r.Node
		cc.Connected = connectedFor(cc.ConnectTS, now)
		cs.Clients = append(cs.Clients, &cc)
	}
	return cs
}

func connectedFor(connectTS int64, now time.Time) time.Duration {
	if connectTS <= 0 {
		return 0
	}
	d := now.Sub(time.Unix(connectTS, 0)).Truncate(time.Second)
	return max(d, 0)
}

// aggregateTopics merges per-node topic stats into one TopicStats per topic (Node "*"),
// each with its per-node breakdown in Nodes and its channels aggregated; sorted by name.
// A replicated topic's figures are one replica's, its connections every replica's (see
// TopicReplica).
func aggregateTopics(perNode []*TopicStats) []*TopicStats {
	markStandby(perNode)
	byName := map[string]*TopicStats{}
	var names []string
	for _, t := range perNode {
		agg, ok := byName[t.TopicName]
		if !ok {
			agg = &TopicStats{Node: "*", TopicName: t.TopicName, Nodes: []*TopicStats{}}
			byName[t.TopicName] = agg
			names = append(names, t.TopicName)
		}
		agg.Nodes = append(agg.Nodes, t)
	}
	sort.Strings(names)
	out := make([]*TopicStats, 0, len(names))
	for _, name := range names {
		agg := byName[name]
		sort.Slice(agg.Nodes, func(i, j int) bool { return agg.Nodes[i].Node < agg.Nodes[j].Node })
		var chans []*ChannelStats
		var e2es []*E2ELatency
		agreed := true
		for _, t := range agg.Nodes {
			if t.Durable {
				if !agg.Durable {
					agg.RetentionTime, agg.RetentionBytes = t.RetentionTime, t.RetentionBytes
				} else if agg.RetentionTime != t.RetentionTime || !sameInt64(agg.RetentionBytes, t.RetentionBytes) {
					agreed = false
				}
				agg.Durable = true
			}
			agg.ClientCount += t.ClientCount
			agg.Paused = agg.Paused || t.Paused
			chans = append(chans, t.Channels...)
			if t.standby {
				continue
			}
			agg.Depth += t.Depth
			agg.MemoryDepth += t.MemoryDepth
			agg.BackendDepth += t.BackendDepth
			agg.MessageCount += t.MessageCount
			agg.InFlight += t.InFlight
			e2es = append(e2es, t.E2E)
		}
		if !agreed {
			agg.RetentionTime, agg.RetentionBytes = "", nil
		}
		agg.TopicPolicy = mergeTopicPolicies(agg.Nodes)
		agg.TopicReplica = mergeTopicReplicas(agg.Nodes)
		agg.E2E = mergeE2E(e2es)
		agg.Channels = aggregateChannels(chans)
		out = append(out, agg)
	}
	return out
}

// aggregateChannels merges per-node channel stats into one ChannelStats per (topic, channel).
// The channels of a replicated topic's followers (marked by markStandby) add their
// connections only.
func aggregateChannels(perNode []*ChannelStats) []*ChannelStats {
	type key struct{ topic, channel string }
	byKey := map[key]*ChannelStats{}
	var keys []key
	for _, c := range perNode {
		k := key{c.TopicName, c.ChannelName}
		agg, ok := byKey[k]
		if !ok {
			agg = &ChannelStats{Node: "*", TopicName: c.TopicName, ChannelName: c.ChannelName,
				Nodes: []*ChannelStats{}, Clients: []*ClientStats{}}
			byKey[k] = agg
			keys = append(keys, k)
		}
		agg.Nodes = append(agg.Nodes, c)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].topic != keys[j].topic {
			return keys[i].topic < keys[j].topic
		}
		return keys[i].channel < keys[j].channel
	})
	out := make([]*ChannelStats, 0, len(keys))
	for _, k := range keys {
		agg := byKey[k]
		sort.Slice(agg.Nodes, func(i, j int) bool { return agg.Nodes[i].Node < agg.Nodes[j].Node })
		var e2es []*E2ELatency
		for _, c := range agg.Nodes {
			agg.ClientCount += c.ClientCount
			agg.Paused = agg.Paused || c.Paused
			agg.Clients = append(agg.Clients, c.Clients...)
			if c.standby {
				continue
			}
			agg.Depth += c.Depth
			agg.MemoryDepth += c.MemoryDepth
			agg.BackendDepth += c.BackendDepth
			agg.InFlightCount += c.InFlightCount
			agg.DeferredCount += c.DeferredCount
			agg.RequeueCount += c.RequeueCount
			agg.TimeoutCount += c.TimeoutCount
			agg.MessageCount += c.MessageCount
			e2es = append(e2es, c.E2E)
		}
		sort.Slice(agg.Clients, func(i, j int) bool {
			if agg.Clients[i].Node != agg.Clients[j].Node {
				return agg.Clients[i].Node < agg.Clients[j].Node
			}
			return agg.Clients[i].RemoteAddress < agg.Clients[j].RemoteAddress
		})
		agg.E2E = mergeE2E(e2es)
		agg.ChannelPolicy = mergeChannelPolicies(agg.Nodes)
		out = append(out, agg)
	}
	return out
}

// mergeE2E combines latency summaries: counts add up and each quantile's value is the
// count-weighted mean of the nodes' values (a plain mean when no node has a count).
func mergeE2E(in []*E2ELatency) *E2ELatency {
	out := &E2ELatency{}
	type acc struct {
		weighted, plain, weight float64
		n                       int
	}
	accs := map[float64]*acc{}
	var qs []float64
	for _, e := range in {
		if e == nil {
			continue
		}
		out.Count += e.Count
		for _, p := range e.Percentiles {
			a, ok := accs[p.Quantile]
			if !ok {
				a = &acc{}
				accs[p.Quantile] = a
				qs = append(qs, p.Quantile)
			}
			a.weighted += p.Value * float64(e.Count)
			a.weight += float64(e.Count)
			a.plain += p.Value
			a.n++
		}
	}
	if len(qs) == 0 {
		return out
	}
	sort.Sort(sort.Reverse(sort.Float64Slice(qs)))
	for _, q := range qs {
		a := accs[q]
		v := a.plain / float64(a.n)
		if a.weight > 0 {
			v = a.weighted / a.weight
		}
		out.Percentiles = append(out.Percentiles, Percentile{Quantile: q, Value: v})
	}
	return out
}

// nodeAddr is how the admin names an nsqd: broadcast_address:http_port.
func nodeAddr(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}

func sameInt64(a, b *int64) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }
