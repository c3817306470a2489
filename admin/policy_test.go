package admin

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/testutil"
)

// Message policies in the admin's API, against real nsqd nodes.

// publishHTTP publishes body to topic on the nsqd with /pub.
func publishHTTP(t *testing.T, httpAddr, topic, body string) {
	t.Helper()
	resp, err := http.Post("http://"+httpAddr+"/pub?topic="+url.QueryEscape(topic), "application/octet-stream", strings.NewReader(body))
	if err != nil {
		t.Fatalf("pub to %s: %v", httpAddr, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("pub to %s: status %d", httpAddr, resp.StatusCode)
	}
}

// nodeDeadLetters is an nsqd's own GET /channel/dead_letters.
type nodeDeadLetters struct {
	Count       int           `json:"count"`
	DeadLetters []*DeadLetter `json:"dead_letters"`
}

func deadLettersOn(t testing.TB, httpAddr, topic, channel string) nodeDeadLetters {
	t.Helper()
	var l nodeDeadLetters
	getJSON(t, "http://"+httpAddr+"/channel/dead_letters?"+url.Values{"topic": {topic}, "channel": {channel}}.Encode(), &l)
	return l
}

// deadLetterOne publishes body to topic on node n and has a raw TCP consumer of channel
// REQ it once, so a channel with max_attempts=1 dead-letters it at its next delivery. It
// returns the message's ID once the node lists it as a dead letter.
func deadLetterOne(t *testing.T, n *testNSQD, topic, channel, body string) string {
	t.Helper()
	publishHTTP(t, n.HTTP, topic, body)
	c := testutil.DialV2(t, n.TCP)
	defer c.Close()
	c.Subscribe(topic, channel)
	c.Ready(1)
	m := c.ExpectMessageWithin(5 * time.Second)
	if string(m.Body) != body {
		t.Fatalf("consumer got %q, want %q", m.Body, body)
	}
	// RDY 0 first: a consumer still ready when it closes may be sent the
	// next message, and that delivery counts as its one attempt
	c.Ready(0)
	c.Send("REQ "+m.ID+" 0", nil)
	waitFor(t, 10*time.Second, "message "+m.ID+" dead-lettered on "+n.HTTP, func() bool {
		for _, d := range deadLettersOn(t, n.HTTP, topic, channel).DeadLetters {
			if d.OriginalID == m.ID {
				return true
			}
		}
		return false
	})
	return m.ID
}

// rawKeys returns the keys of the JSON object at path in the admin's answer: the aggregate
// (path "") or the node entry for node.
func rawKeys(t *testing.T, a *Admin, apiPath, node string) map[string]json.RawMessage {
	t.Helper()
	var resp map[string]json.RawMessage
	getJSON(t, a.url(apiPath), &resp)
	if node == "" {
		return resp
	}
	var nodes []map[string]json.RawMessage
	if err := json.Unmarshal(resp["nodes"], &nodes); err != nil {
		t.Fatalf("%s nodes: %v", apiPath, err)
	}
	for _, n := range nodes {
		var addr string
		_ = json.Unmarshal(n["node"], &addr)
		if addr == node {
			return n
		}
	}
	t.Fatalf("%s has no node %s", apiPath, node)
	return nil
}

func TestAggregatedTopicPolicySumsCountersAndShowsOnlyAgreedSettings(t *testing.T) {
	pol := func(ttl string, depth int64, overflow string, expired, dropped, rejected int64) *TopicPolicy {
		return &TopicPolicy{TTL: &ttl, MaxDepth: &depth, Overflow: &overflow, ExpiredCount: expired, DroppedCount: dropped, RejectedCount: rejected}
	}
	node := func(name string, p *TopicPolicy) *TopicStats {
		return &TopicStats{Node: name, TopicName: "t", TopicPolicy: p}
	}
	for _, tc := range []struct {
		name  string
		nodes []*TopicStats
		want  *TopicPolicy // nil settings: differ
	}{
		{"no node sets one", []*TopicStats{node("a", nil), node("b", nil)}, nil},
		{"all agree", []*TopicStats{node("a", pol("1m0s", 10, "reject", 1, 2, 3)), node("b", pol("1m0s", 10, "reject", 4, 5, 6))},
			pol("1m0s", 10, "reject", 5, 7, 9)},
		{"ttl differs", []*TopicStats{node("a", pol("1m0s", 10, "reject", 0, 0, 1)), node("b", pol("2m0s", 10, "reject", 0, 0, 1))},
			&TopicPolicy{MaxDepth: ptr(int64(10)), Overflow: ptr("reject"), RejectedCount: 2}},
		{"overflow differs", []*TopicStats{node("a", pol("", 10, "reject", 0, 0, 0)), node("b", pol("", 10, "drop_oldest", 0, 0, 0))},
			&TopicPolicy{TTL: ptr(""), MaxDepth: ptr(int64(10))}},
		{"a node without a policy sets none", []*TopicStats{node("a", pol("1m0s", 0, "reject", 3, 0, 0)), node("b", nil)},
			&TopicPolicy{MaxDepth: ptr(int64(0)), ExpiredCount: 3}},
		{"one node, its policy", []*TopicStats{node("a", pol("1m0s", 5, "drop_oldest", 1, 1, 0))}, pol("1m0s", 5, "drop_oldest", 1, 1, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			aggs := aggregateTopics(tc.nodes)
			if len(aggs) != 1 {
				t.Fatalf("%d aggregates", len(aggs))
			}
			got, _ := json.Marshal(aggs[0].TopicPolicy)
			want, _ := json.Marshal(tc.want)
			if string(got) != string(want) {
				t.Fatalf("aggregate policy %s, want %s", got, want)
			}
		})
	}
}

func TestAggregatedChannelPolicySumsCountersAndShowsOnlyAgreedSettings(t *testing.T) {
	pol := func(attempts int, dlq, ttl string, dead, expired int64) *ChannelPolicy {
		return &ChannelPolicy{MaxAttempts: &attempts, DeadLetterTopic: &dlq, TTL: &ttl, DeadLetteredCount: dead, ExpiredCount: expired}
	}
	node := func(name string, p *ChannelPolicy) *ChannelStats {
		return &ChannelStats{Node: name, TopicName: "t", ChannelName: "c", ChannelPolicy: p}
	}
	for _, tc := range []struct {
		name  string
		nodes []*ChannelStats
		want  *ChannelPolicy
	}{
		{"no node enforces one", []*ChannelStats{node("a", nil)}, nil},
		{"all agree", []*ChannelStats{node("a", pol(3, "t.dlq", "", 1, 0)), node("b", pol(3, "t.dlq", "", 2, 0))}, pol(3, "t.dlq", "", 3, 0)},
		{"max attempts differ", []*ChannelStats{node("a", pol(3, "t.dlq", "", 1, 0)), node("b", pol(5, "t.dlq", "", 0, 1))},
			&ChannelPolicy{DeadLetterTopic: ptr("t.dlq"), TTL: ptr(""), DeadLetteredCount: 1, ExpiredCount: 1}},
		{"a node without a policy sets none", []*ChannelStats{node("a", nil), node("b", pol(0, "", "1h0m0s", 0, 4))},
			&ChannelPolicy{MaxAttempts: ptr(0), DeadLetterTopic: ptr(""), ExpiredCount: 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			aggs := aggregateChannels(tc.nodes)
			got, _ := json.Marshal(aggs[0].ChannelPolicy)
			want, _ := json.Marshal(tc.want)
			if string(got) != string(want) {
				t.Fatalf("aggregate policy %s, want %s", got, want)
			}
		})
	}
}

// Two nodes: "bounded" rejects past max_depth=2 on both (rejections add up), "mixed" has a
// different TTL per node, "half" a policy on one node only, "plain" none; channel "work" of
// "bounded" has max_attempts=1 on both nodes and one dead letter on each.
func TestAPIShowsPolicySettingsAndCountersPerNodeAndAggregated(t *testing.T) {
	c := startCluster(t, 2)
	n0, n1 := c.NSQDs[0], c.NSQDs[1]
	for i, n := range c.NSQDs {
		mustPost(t, n.HTTP, "/topic/create", url.Values{"topic": {"bounded"}, "max_depth": {"2"}})
		mustPost(t, n.HTTP, "/channel/create", url.Values{"topic": {"bounded"}, "channel": {"work"}, "max_attempts": {"1"}})
		mustPost(t, n.HTTP, "/topic/create", url.Values{"topic": {"mixed"}, "ttl": {[]string{"1h", "2h"}[i]}})
		mustPost(t, n.HTTP, "/topic/create", url.Values{"topic": {"plain"}})
		mustPost(t, n.HTTP, "/channel/create", url.Values{"topic": {"plain"}, "channel": {"c"}})
	}
	mustPost(t, n0.HTTP, "/topic/create", url.Values{"topic": {"half"}, "ttl": {"30m"}})
	mustPost(t, n1.HTTP, "/topic/create", url.Values{"topic": {"half"}})

	// One dead letter per node; then the depth limit: 2 fit, the rest are refused.
	deadLetterOne(t, n0, "bounded", "work", "d0")
	deadLetterOne(t, n1, "bounded", "work", "d1")
	for i, n := range c.NSQDs {
		for j := range 2 + i + 1 {
			resp, err := http.Post("http://"+n.HTTP+"/pub?topic=bounded", "text/plain", strings.NewReader("m"))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if ok := resp.StatusCode == http.StatusOK; ok != (j < 2) {
				t.Fatalf("publish %d to %s: status %d", j, n.HTTP, resp.StatusCode)
			}
		}
	}
	a := startAdmin(t, c, nil)
	waitFor(t, 10*time.Second, "every topic on both nodes in the admin", func() bool {
		for _, name := range []string{"bounded", "mixed", "half", "plain"} {
			var tp topicResp
			if getJSONErr(a.url("/api/topics/"+name), &tp) != nil || len(tp.Nodes) != 2 {
				return false
			}
		}
		return true
	})

	tp := apiGet[topicResp](t, a, "/api/topics/bounded")
	if p := tp.TopicPolicy; p == nil || *p.TTL != "" || *p.MaxDepth != 2 || *p.Overflow != "reject" || p.RejectedCount != 3 || p.ExpiredCount != 0 || p.DroppedCount != 0 {
		t.Fatalf("bounded policy %+v, want max_depth 2 reject, 3 rejected", p)
	}
	for _, n := range tp.Nodes {
		want := map[string]int64{n0.HTTP: 1, n1.HTTP: 2}[n.Node]
		if n.TopicPolicy == nil || *n.MaxDepth != 2 || n.RejectedCount != want {
			t.Fatalf("bounded on %s: %+v, want %d rejected", n.Node, n.TopicPolicy, want)
		}
	}
	work := tp.Channels[0]
	if work.ChannelName != "work" || work.ChannelPolicy == nil || *work.MaxAttempts != 1 || *work.DeadLetterTopic != "bounded.dlq" || work.DeadLetteredCount != 2 {
		t.Fatalf("work in the topic's channels: %+v", work.ChannelPolicy)
	}
	ch := apiGet[channelResp](t, a, "/api/topics/bounded/work")
	if p := ch.ChannelPolicy; p == nil || *p.MaxAttempts != 1 || *p.DeadLetterTopic != "bounded.dlq" || *p.TTL != "" || p.DeadLetteredCount != 2 || p.ExpiredCount != 0 {
		t.Fatalf("work policy %+v", p)
	}
	for _, n := range ch.Nodes {
		if n.ChannelPolicy == nil || n.DeadLetteredCount != 1 {
			t.Fatalf("work on %s: %+v", n.Node, n.ChannelPolicy)
		}
	}

	// Settings the nodes differ on are null in the aggregate, each node's own in Nodes.
	mixed := rawKeys(t, a, "/api/topics/mixed", "")
	if string(mixed["ttl"]) != "null" || string(mixed["max_depth"]) != "0" || string(mixed["overflow"]) != `"reject"` {
		t.Fatalf("mixed: ttl %s max_depth %s overflow %s", mixed["ttl"], mixed["max_depth"], mixed["overflow"])
	}
	for node, want := range map[string]string{n0.HTTP: `"1h0m0s"`, n1.HTTP: `"2h0m0s"`} {
		if got := rawKeys(t, a, "/api/topics/mixed", node)["ttl"]; string(got) != want {
			t.Fatalf("mixed on %s: ttl %s, want %s", node, got, want)
		}
	}
	// A node without a policy does not enforce the other's: the TTL differs.
	half := rawKeys(t, a, "/api/topics/half", "")
	if string(half["ttl"]) != "null" {
		t.Fatalf("half: ttl %s, want null", half["ttl"])
	}
	if _, ok := rawKeys(t, a, "/api/topics/half", n1.HTTP)["ttl"]; ok {
		t.Fatalf("half on %s (no policy) has policy keys", n1.HTTP)
	}

	// Nothing set: NSQ's shape, no policy key anywhere.
	for _, path := range []string{"/api/topics/plain", "/api/topics/plain/c"} {
		_, body := call(t, http.MethodGet, a.url(path), nil, nil)
		for _, k := range []string{"ttl", "max_depth", "overflow", "expired_count", "dropped_count", "rejected_count", "max_attempts", "dead_letter_topic", "dead_lettered_count"} {
			if strings.Contains(string(body), `"`+k+`"`) {
				t.Fatalf("%s mentions %q: %s", path, k, body)
			}
		}
	}
}

func TestAPIConfigChangesSettingsOnEveryNodeAndReturnsNSQDRefusals(t *testing.T) {
	c := startCluster(t, 2)
	for _, n := range c.NSQDs {
		mustPost(t, n.HTTP, "/topic/create", url.Values{"topic": {"jobs"}})
	}
	// The channel exists on node 0 only: node 1 is left alone, not given the channel.
	mustPost(t, c.NSQDs[0].HTTP, "/channel/create", url.Values{"topic": {"jobs"}, "channel": {"work"}})
	waitFor(t, 10*time.Second, "jobs on both nodes in nsqlookupd", func() bool {
		var resp struct {
			Producers []json.RawMessage `json:"producers"`
		}
		return getJSONErr("http://"+c.LookupdHTTP+"/lookup?topic=jobs", &resp) == nil && len(resp.Producers) == 2
	})
	sink := newNotificationSink(t)
	a := startAdmin(t, c, func(o *Options) { o.NotificationHTTPEndpoint = sink.srv.URL })

	code, body := call(t, http.MethodPost, a.url("/api/topics/jobs"), map[string]any{"action": "config", "ttl": "10m", "max_depth": 50, "overflow": "drop_oldest"}, nil)
	if code != http.StatusOK || decode[messageResponse](t, body).Message != "" {
		t.Fatalf("topic config: %d %s", code, body)
	}
	for _, n := range c.NSQDs {
		tp := nodeStatsOf(t, n.HTTP).topic("jobs")
		if tp.TopicPolicyStats == nil || tp.TTL != "10m0s" || tp.MaxDepth != 50 || tp.Overflow != "drop_oldest" {
			t.Fatalf("jobs on %s: %+v", n.HTTP, tp.TopicPolicyStats)
		}
	}
	code, body = call(t, http.MethodPost, a.url("/api/topics/jobs/work"), map[string]any{"action": "config", "max_attempts": "4", "dead_letter_topic": "jobs-dead", "ttl": "1h"}, nil)
	if code != http.StatusOK || decode[messageResponse](t, body).Message != "" {
		t.Fatalf("channel config: %d %s", code, body)
	}
	// The channel's TTL is the shorter of its own and the topic's.
	if ch := nodeStatsOf(t, c.NSQDs[0].HTTP).channel("jobs", "work"); ch.ChannelPolicyStats == nil || ch.MaxAttempts != 4 || ch.DeadLetterTopic != "jobs-dead" || ch.TTL != "10m0s" {
		t.Fatalf("work on node 0: %+v", ch.ChannelPolicyStats)
	}
	if ch := nodeStatsOf(t, c.NSQDs[1].HTTP).channel("jobs", "work"); ch != nil {
		t.Fatalf("channel config created work on node 1: %+v", ch)
	}

	// Values nsqd refuses: 400 with nsqd's message, which names the parameter; nothing changes.
	for _, tc := range []struct {
		path string
		body map[string]any
		want string
	}{
		{"/api/topics/jobs", map[string]any{"action": "config", "ttl": "soon"}, "INVALID_TTL"},
		{"/api/topics/jobs", map[string]any{"action": "config", "max_depth": -1}, "INVALID_MAX_DEPTH"},
		{"/api/topics/jobs", map[string]any{"action": "config", "overflow": "explode"}, "INVALID_OVERFLOW"},
		{"/api/topics/jobs/work", map[string]any{"action": "config", "max_attempts": 70000}, "INVALID_MAX_ATTEMPTS"},
		{"/api/topics/jobs/work", map[string]any{"action": "config", "dead_letter_topic": "jobs"}, "INVALID_DEAD_LETTER_TOPIC"},
		{"/api/topics/jobs/work", map[string]any{"action": "config", "ttl": "-1s"}, "INVALID_TTL"},
	} {
		code, body := call(t, http.MethodPost, a.url(tc.path), tc.body, nil)
		if code != http.StatusBadRequest || !strings.HasPrefix(decode[messageResponse](t, body).Message, tc.want+": ") {
			t.Fatalf("%s %v: %d %s, want 400 %s: ...", tc.path, tc.body, code, body, tc.want)
		}
	}
	// The admin's own checks: settings of the other kind, none at all, a value that is no
	// string or number.
	for _, tc := range []struct {
		path string
		body map[string]any
		want string
	}{
		{"/api/topics/jobs", map[string]any{"action": "config", "max_attempts": 3}, "INVALID_ARG"},
		{"/api/topics/jobs/work", map[string]any{"action": "config"}, "MISSING_ARG_SETTINGS"},
		{"/api/topics/jobs", map[string]any{"action": "config", "ttl": true}, "INVALID_ARG_TTL"},
		{"/api/topics/jobs", map[string]any{"action": "redrive"}, "INVALID_ACTION"},
	} {
		code, body := call(t, http.MethodPost, a.url(tc.path), tc.body, nil)
		if code != http.StatusBadRequest || !strings.HasPrefix(decode[messageResponse](t, body).Message, tc.want) {
			t.Fatalf("%s %v: %d %s, want 400 %s", tc.path, tc.body, code, body, tc.want)
		}
	}
	if code, body := call(t, http.MethodPost, a.url("/api/topics/jobs/nowhere"), map[string]any{"action": "config", "max_attempts": 2}, nil); code != http.StatusNotFound || !strings.Contains(string(body), "CHANNEL_NOT_FOUND") {
		t.Fatalf("config of a channel no node has: %d %s", code, body)
	}
	for _, n := range c.NSQDs {
		if tp := nodeStatsOf(t, n.HTTP).topic("jobs"); tp.TTL != "10m0s" || tp.MaxDepth != 50 || tp.Overflow != "drop_oldest" {
			t.Fatalf("a refused config changed jobs on %s: %+v", n.HTTP, tp.TopicPolicyStats)
		}
	}

	// Clearing: "0" removes the TTL and the bound.
	code, body = call(t, http.MethodPost, a.url("/api/topics/jobs"), map[string]any{"action": "config", "ttl": "0", "max_depth": "0"}, nil)
	if code != http.StatusOK {
		t.Fatalf("clear topic policy: %d %s", code, body)
	}
	if tp := nodeStatsOf(t, c.NSQDs[1].HTTP).topic("jobs"); tp.TopicPolicyStats != nil && (tp.TTL != "" || tp.MaxDepth != 0) {
		t.Fatalf("jobs after clearing: %+v", tp.TopicPolicyStats)
	}

	// Accepted changes are notified, refusals are not.
	waitFor(t, 5*time.Second, "three notifications", func() bool { return len(sink.all()) >= 3 })
	time.Sleep(100 * time.Millisecond) // a refusal's notification, were there one, would be queued by now
	var got []string
	for _, n := range sink.all() {
		got = append(got, n.Action+" "+n.Topic+"/"+n.Channel)
	}
	if want := []string{"configure_topic jobs/", "configure_channel jobs/work", "configure_topic jobs/"}; !slices.Equal(got, want) {
		t.Fatalf("notifications %v, want %v", got, want)
	}
}

func TestAPICreateSetsPoliciesOnEveryNodeOrRefusesBeforeRegistering(t *testing.T) {
	c := startCluster(t, 2)
	a := startAdmin(t, c, nil)
	code, body := call(t, http.MethodPost, a.url("/api/topics"), map[string]any{"topic": "orders", "channel": "billing",
		"ttl": "30m", "max_depth": 1000, "overflow": "reject", "max_attempts": 5, "dead_letter_topic": "orders-dead", "channel_ttl": "10m"}, nil)
	if code != http.StatusOK || decode[messageResponse](t, body).Message != "" {
		t.Fatalf("create with settings: %d %s", code, body)
	}
	for _, n := range c.NSQDs {
		st := nodeStatsOf(t, n.HTTP)
		tp, ch := st.topic("orders"), st.channel("orders", "billing")
		if tp == nil || tp.TopicPolicyStats == nil || tp.TTL != "30m0s" || tp.MaxDepth != 1000 {
			t.Fatalf("orders on %s: %+v", n.HTTP, tp)
		}
		if ch == nil || ch.ChannelPolicyStats == nil || ch.MaxAttempts != 5 || ch.DeadLetterTopic != "orders-dead" || ch.TTL != "10m0s" {
			t.Fatalf("billing on %s: %+v", n.HTTP, ch)
		}
	}
	waitFor(t, 10*time.Second, "orders in nsqlookupd", func() bool { return slices.Contains(c.lookupdTopics(t), "orders") })

	// A refused topic setting creates nothing, not even the registration.
	code, body = call(t, http.MethodPost, a.url("/api/topics"), map[string]any{"topic": "never", "max_depth": "lots"}, nil)
	if code != http.StatusBadRequest || !strings.HasPrefix(decode[messageResponse](t, body).Message, "INVALID_MAX_DEPTH: ") {
		t.Fatalf("create with a bad max_depth: %d %s", code, body)
	}
	// A refused channel setting leaves the topic and says so.
	code, body = call(t, http.MethodPost, a.url("/api/topics"), map[string]any{"topic": "half", "channel": "c", "max_attempts": -3}, nil)
	if msg := decode[messageResponse](t, body).Message; code != http.StatusBadRequest || !strings.HasPrefix(msg, "INVALID_MAX_ATTEMPTS: ") || !strings.Contains(msg, "channel c was not") {
		t.Fatalf("create with a bad max_attempts: %d %s", code, body)
	}
	if code, body := call(t, http.MethodPost, a.url("/api/topics"), map[string]any{"topic": "lonely", "max_attempts": 2}, nil); code != http.StatusBadRequest || !strings.Contains(string(body), "MISSING_CHANNEL") {
		t.Fatalf("channel settings without a channel: %d %s", code, body)
	}
	for _, n := range c.NSQDs {
		st := nodeStatsOf(t, n.HTTP)
		if st.topic("never") != nil || st.topic("half") == nil || st.channel("half", "c") != nil || st.topic("lonely") != nil {
			t.Fatalf("after refused creates, %s has never=%v half=%v half/c=%v lonely=%v", n.HTTP,
				st.topic("never") != nil, st.topic("half") != nil, st.channel("half", "c") != nil, st.topic("lonely") != nil)
		}
	}
	if slices.Contains(c.lookupdTopics(t), "never") {
		t.Fatal("a refused create registered the topic in nsqlookupd")
	}
}

func TestAPIListsDeadLettersOfEveryNodeNewestFirst(t *testing.T) {
	c := startCluster(t, 2)
	n0, n1 := c.NSQDs[0], c.NSQDs[1]
	for _, n := range c.NSQDs {
		mustPost(t, n.HTTP, "/topic/create", url.Values{"topic": {"jobs"}})
		mustPost(t, n.HTTP, "/channel/create", url.Values{"topic": {"jobs"}, "channel": {"work"}, "max_attempts": {"1"}})
		mustPost(t, n.HTTP, "/channel/create", url.Values{"topic": {"jobs"}, "channel": {"clean"}, "max_attempts": {"1"}})
	}
	// Oldest to newest: a on node 0, b on node 1, c on node 0. Every message also reaches
	// channel "clean", where nobody consumes it: it has no dead letter.
	ids := []string{deadLetterOne(t, n0, "jobs", "work", "a"), deadLetterOne(t, n1, "jobs", "work", "b"), deadLetterOne(t, n0, "jobs", "work", "c")}
	a := startAdmin(t, c, nil)
	type listing struct {
		Count       int              `json:"count"`
		DeadLetters []*DeadLetter    `json:"dead_letters"`
		Nodes       []deadLetterNode `json:"nodes"`
		Message     string           `json:"message"`
	}
	waitFor(t, 10*time.Second, "jobs on both nodes in nsqlookupd", func() bool {
		var l listing
		return getJSONErr(a.url("/api/topics/jobs/work/dead_letters"), &l) == nil && l.Count == 3
	})
	l := apiGet[listing](t, a, "/api/topics/jobs/work/dead_letters")
	if l.Count != 3 || len(l.DeadLetters) != 3 || l.Message != "" {
		t.Fatalf("dead letters: %+v", l)
	}
	for i, want := range []struct{ id, node string }{{ids[2], n0.HTTP}, {ids[1], n1.HTTP}, {ids[0], n0.HTTP}} {
		d := l.DeadLetters[i]
		if d.OriginalID != want.id || d.Node != want.node || d.Reason != "max_attempts" || d.Attempts != 1 || d.DeadLetterTopic != "jobs.dlq" ||
			d.Topic != "jobs" || d.Channel != "work" || d.BodySize != 1 || d.ID == "" {
			t.Fatalf("row %d: %+v, want original id %s from %s", i, d, want.id, want.node)
		}
	}
	if want := []deadLetterNode{{n0.HTTP, 2, 2}, {n1.HTTP, 1, 1}}; !slices.Equal(sortedNodes(l.Nodes), sortedNodes(want)) {
		t.Fatalf("per-node counts %+v, want %+v", l.Nodes, want)
	}
	l = apiGet[listing](t, a, "/api/topics/jobs/work/dead_letters?limit=1")
	if l.Count != 3 || len(l.DeadLetters) != 1 || l.DeadLetters[0].OriginalID != ids[2] {
		t.Fatalf("limit=1: %+v", l)
	}
	l = apiGet[listing](t, a, "/api/topics/jobs/clean/dead_letters")
	if l.Count != 0 || l.DeadLetters == nil || len(l.DeadLetters) != 0 {
		t.Fatalf("a channel without dead letters: %+v", l)
	}
	for _, bad := range []string{"/api/topics/jobs/work/dead_letters?limit=-1", "/api/topics/jobs/work/dead_letters?limit=5000", "/api/topics/bad%20name/work/dead_letters"} {
		if code, body := call(t, http.MethodGet, a.url(bad), nil, nil); code != http.StatusBadRequest {
			t.Fatalf("%s: %d %s", bad, code, body)
		}
	}
}

func sortedNodes(n []deadLetterNode) []deadLetterNode {
	out := slices.Clone(n)
	slices.SortFunc(out, func(a, b deadLetterNode) int { return strings.Compare(a.Node, b.Node) })
	return out
}

// Redrive against real nodes: the dead letters go back into the channel on every node and
// the answer counts them.
func TestAPIRedriveMovesDeadLettersBackOnEveryNode(t *testing.T) {
	c := startCluster(t, 2)
	for _, n := range c.NSQDs {
		mustPost(t, n.HTTP, "/topic/create", url.Values{"topic": {"jobs"}})
		mustPost(t, n.HTTP, "/channel/create", url.Values{"topic": {"jobs"}, "channel": {"work"}, "max_attempts": {"1"}})
	}
	deadLetterOne(t, c.NSQDs[0], "jobs", "work", "a")
	deadLetterOne(t, c.NSQDs[0], "jobs", "work", "b")
	deadLetterOne(t, c.NSQDs[1], "jobs", "work", "c")
	sink := newNotificationSink(t)
	a := startAdmin(t, c, func(o *Options) { o.NotificationHTTPEndpoint = sink.srv.URL })
	waitFor(t, 10*time.Second, "jobs on both nodes in nsqlookupd", func() bool {
		var resp struct {
			Producers []json.RawMessage `json:"producers"`
		}
		return getJSONErr("http://"+c.LookupdHTTP+"/lookup?topic=jobs", &resp) == nil && len(resp.Producers) == 2
	})
	code, body := call(t, http.MethodPost, a.url("/api/topics/jobs/work"), map[string]any{"action": "redrive"}, nil)
	waitFor(t, 5*time.Second, "the redrive notification", func() bool { return len(sink.all()) == 1 })
	if n := sink.all()[0]; n.Action != "redrive_channel" || n.Topic != "jobs" || n.Channel != "work" {
		t.Fatalf("notification %+v", n)
	}
	resp := decode[redriveResponse](t, body)
	if code != http.StatusOK || resp.Moved != 3 || resp.Message != "" {
		t.Fatalf("redrive: %d %s, want 200 and 3 moved", code, body)
	}
	for i, n := range c.NSQDs {
		if l := deadLettersOn(t, n.HTTP, "jobs", "work"); l.Count != 0 {
			t.Fatalf("%s still lists %d dead letters", n.HTTP, l.Count)
		}
		want := int64([]int{2, 1}[i])
		waitFor(t, 5*time.Second, "the redriven messages back in work", func() bool {
			return nodeStatsOf(t, n.HTTP).channel("jobs", "work").Depth == want
		})
	}
}
