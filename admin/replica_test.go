package admin

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// replicaKeys are the keys a replicated topic adds to the admin's topic JSON (per node or
// aggregated); none may appear on other topics.
var replicaKeys = []string{"replicas", "leader", "leader_node", "replica_lag", "address", "role"}

// noReplicaKeys fails when obj carries any of replicaKeys.
func noReplicaKeys(t *testing.T, what string, obj map[string]json.RawMessage) {
	t.Helper()
	for _, k := range replicaKeys {
		if v, ok := obj[k]; ok {
			t.Fatalf("%s has %q (%s); a topic that is not replicated has no replica keys", what, k, v)
		}
	}
}

// replicaTopicResp is /api/topics/:topic of a replicated topic.
type replicaTopicResp struct {
	TopicName    string            `json:"topic_name"`
	MessageCount int64             `json:"message_count"`
	Replicas     int               `json:"replicas"`
	Leader       *string           `json:"leader"`
	LeaderNode   string            `json:"leader_node"`
	ReplicaLag   map[string]uint64 `json:"replica_lag"`
	Nodes        []struct {
		Node         string            `json:"node"`
		MessageCount int64             `json:"message_count"`
		Replicas     int               `json:"replicas"`
		Leader       *string           `json:"leader"`
		Address      string            `json:"address"`
		Role         string            `json:"role"`
		ReplicaLag   map[string]uint64 `json:"replica_lag"`
	} `json:"nodes"`
	Channels []struct {
		ChannelName string `json:"channel_name"`
		Depth       int64  `json:"depth"`
		Nodes       []struct {
			Node  string `json:"node"`
			Depth int64  `json:"depth"`
			Role  string `json:"role"`
		} `json:"nodes"`
	} `json:"channels"`
	Message string `json:"message"`
}

// The create form's replicas: one POST /topic/create?replicas=3 to one nsqd, the topic
// then on 3 nodes that agree on a leader; the channel given is created through one replica
// and is on all of them. The admin's answers carry replicas, leader, leader_node and
// replica_lag, each node's role, and count the replicated messages once.
func TestAPICreatesReplicatedTopicThroughOneNode(t *testing.T) {
	rc := startReplicaCluster(t, 3)
	a := rc.startAdmin(t)
	mustPost(t, rc.NSQDs[0].HTTP, "/topic/create", url.Values{"topic": {"plain"}})

	start := time.Now()
	code, body := call(t, http.MethodPost, a.url("/api/topics"), map[string]any{"topic": "orders", "replicas": 3, "channel": "billing"}, nil)
	if code != http.StatusOK || decode[messageResponse](t, body).Message != "" {
		t.Fatalf("create replicated topic: %d %s", code, body)
	}
	t.Logf("replicated create answered in %v", time.Since(start).Round(time.Millisecond))
	calls := rc.createCalls()
	if len(calls) != 1 || !strings.Contains(calls[0], "replicas=3") || !strings.Contains(calls[0], "topic=orders") {
		t.Fatalf("POST /topic/create sent to the nsqds: %q, want one with topic=orders&replicas=3", calls)
	}
	var channelCalls int
	for _, s := range rc.proxies {
		channelCalls += len(s.calls("POST /channel/create"))
	}
	if channelCalls != 1 {
		t.Fatalf("%d POST /channel/create sent to the nsqds, want 1 (nsqd creates it on the other replicas)", channelCalls)
	}
	leader := rc.waitReplicated(t, "orders", 3)
	waitFor(t, 10*time.Second, "billing on every replica", func() bool {
		for _, n := range rc.NSQDs {
			if nodeStatsOf(t, n.HTTP).channel("orders", "billing") == nil {
				return false
			}
		}
		return true
	})

	// 5 messages published to a follower (forwarded to the leader), applied on every replica.
	follower := (leader + 1) % 3
	p := newProducer(t, rc.NSQDs[follower].TCP)
	for i := range 5 {
		if err := p.Publish("orders", []byte(fmt.Sprint("m", i))); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	waitFor(t, 10*time.Second, "5 messages on every replica, lag 0", func() bool {
		for i, n := range rc.NSQDs {
			if nodeStatsOf(t, n.HTTP).topic("orders").MessageCount != 5 {
				return false
			}
			if r := rc.nodeReplica(t, i, "orders"); i == leader && (len(r.ReplicaLag) != 3 || slices.Max(slices.Collect(maps.Values(r.ReplicaLag))) != 0) {
				return false
			}
		}
		return true
	})

	tp := apiGet[replicaTopicResp](t, a, "/api/topics/orders")
	lead := rc.NSQDs[leader]
	if tp.Replicas != 3 || tp.Leader == nil || *tp.Leader != lead.TCP || tp.LeaderNode != rc.proxies[leader].addr {
		t.Fatalf("orders: replicas=%d leader=%v leader_node=%q, want 3 %s %s", tp.Replicas, deref2(tp.Leader), tp.LeaderNode, lead.TCP, rc.proxies[leader].addr)
	}
	if want := map[string]uint64{rc.NSQDs[0].TCP: 0, rc.NSQDs[1].TCP: 0, rc.NSQDs[2].TCP: 0}; !maps.Equal(tp.ReplicaLag, want) {
		t.Fatalf("orders replica_lag %v, want %v", tp.ReplicaLag, want)
	}
	if tp.MessageCount != 5 {
		t.Fatalf("orders message_count %d, want 5: every replica holds the same 5, counted once", tp.MessageCount)
	}
	if len(tp.Nodes) != 3 {
		t.Fatalf("orders on %d nodes, want 3", len(tp.Nodes))
	}
	for _, n := range tp.Nodes {
		i := slices.IndexFunc(rc.proxies, func(s *nsqdSpy) bool { return s.addr == n.Node })
		wantRole := map[bool]string{true: "leader", false: "follower"}[i == leader]
		if i < 0 || n.Address != rc.NSQDs[i].TCP || n.Role != wantRole || n.Replicas != 3 || n.Leader == nil || *n.Leader != lead.TCP || n.MessageCount != 5 {
			t.Fatalf("node %s: %+v, want address %s role %s", n.Node, n, rc.NSQDs[max(i, 0)].TCP, wantRole)
		}
		if (n.ReplicaLag != nil) != (i == leader) {
			t.Fatalf("node %s (%s) replica_lag %v: only the leader reports it", n.Node, n.Role, n.ReplicaLag)
		}
	}
	if len(tp.Channels) != 1 || tp.Channels[0].Depth != 5 || len(tp.Channels[0].Nodes) != 3 {
		t.Fatalf("orders channels %+v, want billing with depth 5 (the leader's) on 3 nodes", tp.Channels)
	}
	chr := apiGet[struct {
		Depth int64 `json:"depth"`
		Nodes []struct {
			Node string `json:"node"`
			Role string `json:"role"`
		} `json:"nodes"`
	}](t, a, "/api/topics/orders/billing")
	roles := map[string]int{}
	for _, n := range chr.Nodes {
		roles[n.Role]++
	}
	if chr.Depth != 5 || roles["leader"] != 1 || roles["follower"] != 2 {
		t.Fatalf("billing: depth %d, roles %v; want 5, one leader and two followers", chr.Depth, roles)
	}

	// The node page of a follower marks its replica.
	np := apiGet[struct {
		Topics []*TopicStats `json:"topics"`
	}](t, a, "/api/nodes/"+rc.proxies[follower].addr)
	if i := slices.IndexFunc(np.Topics, func(ts *TopicStats) bool { return ts.TopicName == "orders" }); i < 0 ||
		np.Topics[i].TopicReplica == nil || np.Topics[i].Role != "follower" || np.Topics[i].Replicas != 3 {
		t.Fatalf("follower's node page: %+v", np.Topics)
	}

	// The overview counts the replicated topic once and carries its keys; the plain topic
	// keeps NSQ's shape everywhere.
	var ov struct {
		Topics []map[string]json.RawMessage `json:"topics"`
	}
	getJSON(t, a.url("/api/overview"), &ov)
	for _, row := range ov.Topics {
		switch string(row["topic_name"]) {
		case `"orders"`:
			if string(row["replicas"]) != "3" || string(row["leader"]) != `"`+lead.TCP+`"` || string(row["message_count"]) != "5" || string(row["channel_depth"]) != "5" {
				t.Fatalf("overview orders row: %v", row)
			}
		case `"plain"`:
			noReplicaKeys(t, "overview plain row", row)
		}
	}
	plain := rawKeys(t, a, "/api/topics/plain", "")
	noReplicaKeys(t, "plain topic", plain)
	noReplicaKeys(t, "plain topic's node", rawKeys(t, a, "/api/topics/plain", rc.proxies[0].addr))

	// The sampler counts the replicated topic once too: depth 5, not 15.
	before := len(a.sampler.series(SeriesKey{Topic: "orders"}, 0).T)
	waitFor(t, 10*time.Second, "two new samples", func() bool { return len(a.sampler.series(SeriesKey{Topic: "orders"}, 0).T) >= before+2 })
	if s := a.sampler.series(SeriesKey{Topic: "orders"}, 0); s.Depth[len(s.Depth)-1] != 5 {
		t.Fatalf("sampled depth of orders %v, want 5 last", s.Depth)
	}

	// One replica cannot be tombstoned: nsqd would delete the topic on every replica.
	code, body = call(t, http.MethodDelete, a.url("/api/nodes/"+rc.proxies[follower].addr), map[string]any{"topic": "orders"}, nil)
	if code != http.StatusBadRequest || !strings.Contains(string(body), "REPLICATED_TOPIC") {
		t.Fatalf("tombstone a replica: %d %s, want 400 REPLICATED_TOPIC", code, body)
	}
	for _, s := range rc.proxies {
		if calls := s.calls("POST /topic/delete"); len(calls) > 0 {
			t.Fatalf("tombstone reached nsqd %s: %q", s.addr, calls)
		}
	}

	// Created again with another count: nsqd's 409, in its words, through one node again.
	code, body = call(t, http.MethodPost, a.url("/api/topics"), map[string]any{"topic": "orders", "replicas": "2"}, nil)
	if code != http.StatusConflict || !strings.Contains(string(body), "TOPIC_EXISTS") {
		t.Fatalf("create orders with replicas=2: %d %s, want 409 TOPIC_EXISTS", code, body)
	}
	if calls := rc.createCalls(); len(calls) != 2 {
		t.Fatalf("creates sent: %q, want 2 (one per request)", calls)
	}
}

// More replicas than nodes: nsqd's 503 REPLICATION_FAILED reaches the user as nsqd says it.
func TestAPIReplicatedCreateFailureInNSQDWords(t *testing.T) {
	rc := startReplicaCluster(t, 3)
	a := rc.startAdmin(t)
	code, body := call(t, http.MethodPost, a.url("/api/topics"), map[string]any{"topic": "wide", "replicas": 5}, nil)
	msg := decode[messageResponse](t, body).Message
	if code != http.StatusServiceUnavailable || !strings.HasPrefix(msg, "REPLICATION_FAILED: ") || !strings.Contains(msg, "(nsqd 127.0.0.1:") {
		t.Fatalf("replicas=5 on 3 nodes: %d %s, want 503 with nsqd's REPLICATION_FAILED message", code, body)
	}
	if calls := rc.createCalls(); len(calls) != 1 {
		t.Fatalf("creates sent: %q, want 1", calls)
	}
	for i := range rc.NSQDs {
		if r := rc.nodeReplica(t, i, "wide"); r != nil {
			t.Fatalf("nsqd %d lists wide: %+v", i, r)
		}
	}
}

// replicas must be an integer from 1 to 7, on a durable, non-ephemeral topic: anything else
// is nsqadmin's 400 naming the parameter, and nothing reaches a node.
func TestAPIReplicasValidation(t *testing.T) {
	rc := startReplicaCluster(t, 1)
	a := rc.startAdmin(t)
	for _, tc := range []struct {
		name string
		body map[string]any
		want string
	}{
		{"abc", map[string]any{"topic": "t", "replicas": "abc"}, "INVALID_ARG_REPLICAS: replicas must be an integer from 1 to 7"},
		{"zero", map[string]any{"topic": "t", "replicas": 0}, "INVALID_ARG_REPLICAS: replicas must be an integer from 1 to 7"},
		{"eight", map[string]any{"topic": "t", "replicas": 8}, "INVALID_ARG_REPLICAS: replicas must be an integer from 1 to 7"},
		{"eight as text", map[string]any{"topic": "t", "replicas": "8"}, "INVALID_ARG_REPLICAS"},
		{"negative", map[string]any{"topic": "t", "replicas": -1}, "INVALID_ARG_REPLICAS"},
		{"fraction", map[string]any{"topic": "t", "replicas": 2.5}, "INVALID_ARG_REPLICAS"},
		{"bool", map[string]any{"topic": "t", "replicas": true}, "INVALID_ARG_REPLICAS"},
		{"not durable", map[string]any{"topic": "t", "replicas": 3, "durable": false}, "INVALID_ARG_REPLICAS: replicated topics are durable"},
		{"ephemeral", map[string]any{"topic": "t#ephemeral", "replicas": 3}, "INVALID_ARG_REPLICAS: ephemeral topics are never replicated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := call(t, http.MethodPost, a.url("/api/topics"), tc.body, nil)
			if msg := decode[messageResponse](t, body).Message; code != http.StatusBadRequest || !strings.HasPrefix(msg, tc.want) {
				t.Fatalf("%v: %d %s, want 400 %s...", tc.body, code, body, tc.want)
			}
		})
	}
	for _, s := range rc.proxies {
		if len(s.calls("POST")) > 0 {
			t.Fatalf("refused creates reached nsqd %s: %q", s.addr, s.calls("POST"))
		}
	}
	// Empty (the form's blank field) or null: not replicated, created as before.
	for i, v := range []any{"", nil} {
		topic := fmt.Sprint("unreplicated", i)
		code, body := call(t, http.MethodPost, a.url("/api/topics"), map[string]any{"topic": topic, "durable": true, "replicas": v}, nil)
		if code != http.StatusOK {
			t.Fatalf("replicas=%v: %d %s", v, code, body)
		}
		if rt := nodeStatsOf(t, rc.NSQDs[0].HTTP).topic(topic); rt == nil || !rt.Durable || rt.TopicReplicaStats != nil {
			t.Fatalf("replicas=%v: topic on the node %+v, want durable, not replicated", v, rt)
		}
	}
}

// nsqd keeps message policies per node: settings given with replicas reach every replica.
func TestAPIReplicatedCreateSetsPoliciesOnEveryReplica(t *testing.T) {
	rc := startReplicaCluster(t, 3)
	a := rc.startAdmin(t)
	code, body := call(t, http.MethodPost, a.url("/api/topics"), map[string]any{"topic": "jobs", "replicas": 3, "ttl": "10m",
		"channel": "work", "max_attempts": 4}, nil)
	if code != http.StatusOK || decode[messageResponse](t, body).Message != "" {
		t.Fatalf("create: %d %s", code, body)
	}
	if calls := rc.createCalls(); len(calls) != 1 {
		t.Fatalf("creates sent: %q, want 1", calls)
	}
	rc.waitReplicated(t, "jobs", 3)
	for _, n := range rc.NSQDs {
		st := nodeStatsOf(t, n.HTTP)
		tp, ch := st.topic("jobs"), st.channel("jobs", "work")
		if tp == nil || tp.TopicPolicyStats == nil || tp.TTL != "10m0s" || ch == nil || ch.ChannelPolicyStats == nil || ch.MaxAttempts != 4 {
			t.Fatalf("nsqd %s: topic %+v channel %+v, want ttl 10m0s and max_attempts 4", n.HTTP, tp, ch)
		}
	}
	tp := rawKeys(t, a, "/api/topics/jobs", "")
	if string(tp["ttl"]) != `"10m0s"` || string(tp["replicas"]) != "3" {
		t.Fatalf("jobs: ttl %s replicas %s", tp["ttl"], tp["replicas"])
	}
}

func deref2(p *string) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestAPIStepDownHandsTheLeadershipToAnotherReplica(t *testing.T) {
	rc := startReplicaCluster(t, 3)
	a := rc.startAdmin(t)
	mustPost(t, rc.NSQDs[0].HTTP, "/topic/create", url.Values{"topic": {"orders"}, "replicas": {"3"}})
	mustPost(t, rc.NSQDs[0].HTTP, "/topic/create", url.Values{"topic": {"plain"}})
	leader := rc.waitReplicated(t, "orders", 3)
	for range 2 {
		code, body := call(t, http.MethodPost, a.url("/api/topics/orders"), map[string]any{"action": "step-down"}, nil)
		if code != http.StatusOK || decode[messageResponse](t, body).Message != "" {
			t.Fatalf("step-down: %d %s", code, body)
		}
		leader = rc.waitNewLeader(t, "orders", 3, leader)
	}
	var stepDowns int
	for _, s := range rc.proxies {
		stepDowns += len(s.calls("POST /topic/step-down?topic=orders"))
	}
	if stepDowns != 2 {
		t.Fatalf("%d POST /topic/step-down sent to the nsqds for 2 step-downs, want one each", stepDowns)
	}
	code, body := call(t, http.MethodPost, a.url("/api/topics/plain"), map[string]any{"action": "step-down"}, nil)
	if code != http.StatusBadRequest || !strings.Contains(string(body), "NOT_REPLICATED") {
		t.Fatalf("step-down of a plain topic: %d %s, want 400 NOT_REPLICATED", code, body)
	}
	code, body = call(t, http.MethodPost, a.url("/api/topics/orders/billing"), map[string]any{"action": "step-down"}, nil)
	if code != http.StatusBadRequest || !strings.Contains(string(body), "INVALID_ACTION") {
		t.Fatalf("step-down of a channel: %d %s, want 400 INVALID_ACTION", code, body)
	}
}
