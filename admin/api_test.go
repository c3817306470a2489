package admin

import (
	"encoding/json"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func decode[T any](t *testing.T, body []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return v
}

func apiGet[T any](t *testing.T, a *Admin, path string) T {
	t.Helper()
	code, body := call(t, http.MethodGet, a.url(path), nil, nil)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	return decode[T](t, body)
}

type topicResp struct {
	TopicStats
	Message string `json:"message"`
}

type channelResp struct {
	ChannelStats
	Message string `json:"message"`
}

// TestAPIReadsMatchNodeStats checks every read endpoint against the nodes' own /stats.
func TestAPIReadsMatchNodeStats(t *testing.T) {
	s := startScenario(t)
	a := startAdmin(t, s.c, nil)
	n0, n1 := s.c.NSQDs[0].HTTP, s.c.NSQDs[1].HTTP
	st0, st1 := nodeStatsOf(t, n0), nodeStatsOf(t, n1)

	topics := apiGet[struct {
		Topics  []string `json:"topics"`
		Message string   `json:"message"`
	}](t, a, "/api/topics")
	if !slices.Equal(topics.Topics, []string{scTopic}) || topics.Message != "" {
		t.Fatalf("/api/topics = %+v", topics)
	}

	tp := apiGet[topicResp](t, a, "/api/topics/"+scTopic)
	wantDepth := st0.topic(scTopic).Depth + st1.topic(scTopic).Depth
	if tp.Node != "*" || tp.TopicName != scTopic || tp.MessageCount != 17 || tp.Depth != wantDepth || len(tp.Nodes) != 2 || len(tp.Channels) != 2 {
		t.Fatalf("/api/topics/%s = %+v", scTopic, tp.TopicStats)
	}
	byNode := map[string]int64{tp.Nodes[0].Node: tp.Nodes[0].MessageCount, tp.Nodes[1].Node: tp.Nodes[1].MessageCount}
	if byNode[n0] != 10 || byNode[n1] != 7 {
		t.Fatalf("per-node message counts %v, want %s=10 %s=7", byNode, n0, n1)
	}
	arch := tp.Channels[0]
	if arch.ChannelName != scArchive || arch.Depth != 17 || arch.MessageCount != 17 || arch.ClientCount != 0 {
		t.Fatalf("archive aggregate = %+v", arch)
	}

	ch := apiGet[channelResp](t, a, "/api/topics/"+scTopic+"/"+scBilling)
	if ch.MessageCount != 17 || ch.Depth != 0 || ch.InFlightCount != 0 || ch.ClientCount != 2 || len(ch.Clients) != 2 || len(ch.Nodes) != 2 {
		t.Fatalf("billing = %+v", ch.ChannelStats)
	}
	var finished int64
	for _, c := range ch.Clients {
		if c.UserAgent != "sluice-admin-test-consumer/1.0" || (c.Node != n0 && c.Node != n1) || c.Version != "V2" {
			t.Fatalf("client = %+v", c)
		}
		finished += c.FinishCount
	}
	if finished != 17 {
		t.Fatalf("clients finished %d, want 17", finished)
	}
	if ch.E2E == nil || len(ch.E2E.Percentiles) != 2 || ch.E2E.Percentiles[0].Quantile != 0.99 {
		t.Fatalf("billing e2e = %+v", ch.E2E)
	}
	if code, body := call(t, http.MethodGet, a.url("/api/topics/"+scTopic+"/nope"), nil, nil); code != http.StatusNotFound || !strings.Contains(string(body), "CHANNEL_NOT_FOUND") {
		t.Fatalf("unknown channel: %d %s", code, body)
	}
	if code, body := call(t, http.MethodGet, a.url("/api/topics/nope"), nil, nil); code != http.StatusNotFound || !strings.Contains(string(body), "TOPIC_NOT_FOUND") {
		t.Fatalf("unknown topic: %d %s", code, body)
	}

	nodes := apiGet[struct {
		Nodes []NodeView `json:"nodes"`
	}](t, a, "/api/nodes")
	if len(nodes.Nodes) != 2 {
		t.Fatalf("/api/nodes = %+v", nodes)
	}
	for _, n := range nodes.Nodes {
		addr := n.HTTPAddr()
		st := map[string]*nodeStats{n0: st0, n1: st1}[addr]
		if st == nil || n.Version != st.Version || n.OutOfDate || !n.Reachable || n.TopicCount != 1 || n.ChannelCount != 2 ||
			n.ConsumerCount != 1 || n.StartTime != st.StartTime || len(n.Topics) != 1 || n.Topics[0] != (ProducerTopic{Topic: scTopic}) {
			t.Fatalf("node %s = %+v", addr, n)
		}
	}

	node := apiGet[struct {
		Node          string        `json:"node"`
		Topics        []*TopicStats `json:"topics"`
		TotalMessages int64         `json:"total_messages"`
		TotalClients  int64         `json:"total_clients"`
	}](t, a, "/api/nodes/"+n1)
	if node.Node != n1 || node.TotalMessages != 7 || node.TotalClients != 1 || len(node.Topics) != 1 {
		t.Fatalf("/api/nodes/%s = %+v", n1, node)
	}
	if code, body := call(t, http.MethodGet, a.url("/api/nodes/127.0.0.1:1"), nil, nil); code != http.StatusNotFound || !strings.Contains(string(body), "NODE_NOT_FOUND") {
		t.Fatalf("unknown node: %d %s", code, body)
	}

	counter := apiGet[struct {
		Stats map[string]counterStat `json:"stats"`
		Total int64                  `json:"total"`
	}](t, a, "/api/counter")
	if len(counter.Stats) != 4 || counter.Total != 34 || counter.Stats[scTopic+":"+scArchive+":"+n0].MessageCount != 10 {
		t.Fatalf("/api/counter = %+v", counter)
	}

	lookup := apiGet[struct {
		Topics []lookupTopic `json:"topics"`
	}](t, a, "/api/lookup")
	if len(lookup.Topics) != 1 || !slices.Equal(lookup.Topics[0].Channels, []string{scArchive, scBilling}) || len(lookup.Topics[0].Producers) != 2 {
		t.Fatalf("/api/lookup = %+v", lookup)
	}

	if code, body := call(t, http.MethodGet, a.url("/ping"), nil, nil); code != http.StatusOK || string(body) != "OK" {
		t.Fatalf("/ping: %d %q", code, body)
	}
	if code, _ := call(t, http.MethodGet, a.url("/api/nope"), nil, nil); code != http.StatusNotFound {
		t.Fatalf("unknown API path: %d", code)
	}

	// Direct mode sees the same figures.
	d := startAdmin(t, s.c, func(o *Options) {
		o.NSQLookupdHTTPAddresses = nil
		o.NSQDHTTPAddresses = []string{n0, n1}
	})
	dtp := apiGet[topicResp](t, d, "/api/topics/"+scTopic)
	if dtp.MessageCount != 17 || len(dtp.Nodes) != 2 || len(dtp.Channels) != 2 {
		t.Fatalf("direct mode topic = %+v", dtp.TopicStats)
	}
}

// TestAPIActionsAndNotifications drives every action through the API and checks the nodes,
// nsqlookupd and the notifications a real HTTP server receives.
func TestAPIActionsAndNotifications(t *testing.T) {
	s := startScenario(t)
	sink := newNotificationSink(t)
	a := startAdmin(t, s.c, func(o *Options) { o.NotificationHTTPEndpoint = sink.srv.URL + "/notify" })
	n0, n1 := s.c.NSQDs[0].HTTP, s.c.NSQDs[1].HTTP
	both := []string{n0, n1}
	ok := func(method, path string, body any) {
		t.Helper()
		code, b := call(t, method, a.url(path), body, nil)
		if code != http.StatusOK || decode[messageResponse](t, b).Message != "" {
			t.Fatalf("%s %s: %d %s", method, path, code, b)
		}
	}
	channelIs := func(nodes []string, what string, cond func(*rawChannel) bool) {
		t.Helper()
		for _, n := range nodes {
			if c := nodeStatsOf(t, n).channel(scTopic, scArchive); !cond(c) {
				t.Fatalf("%s on %s: %+v", what, n, c)
			}
		}
	}

	ok(http.MethodPost, "/api/topics/"+scTopic+"/"+scArchive, map[string]string{"action": "pause"})
	channelIs(both, "paused", func(c *rawChannel) bool { return c.Paused })
	ok(http.MethodPost, "/api/topics/"+scTopic+"/"+scArchive, map[string]string{"action": "unpause"})
	channelIs(both, "unpaused", func(c *rawChannel) bool { return !c.Paused })
	ok(http.MethodPost, "/api/topics/"+scTopic+"/"+scArchive, map[string]string{"action": "empty"})
	channelIs(both, "emptied", func(c *rawChannel) bool { return c.Depth == 0 && c.MessageCount > 0 })

	ok(http.MethodPost, "/api/topics/"+scTopic, map[string]string{"action": "pause"})
	for _, n := range both {
		if !nodeStatsOf(t, n).topic(scTopic).Paused {
			t.Fatalf("topic not paused on %s", n)
		}
	}
	ok(http.MethodPost, "/api/topics/"+scTopic, map[string]string{"action": "unpause"})
	for _, n := range both {
		if nodeStatsOf(t, n).topic(scTopic).Paused {
			t.Fatalf("topic still paused on %s", n)
		}
	}

	if code, b := call(t, http.MethodPost, a.url("/api/topics/"+scTopic), map[string]string{"action": "explode"}, nil); code != http.StatusBadRequest || !strings.Contains(string(b), "INVALID_ACTION") {
		t.Fatalf("invalid action: %d %s", code, b)
	}
	if code, b := call(t, http.MethodPost, a.url("/api/topics"), map[string]string{"topic": "bad topic!"}, nil); code != http.StatusBadRequest || !strings.Contains(string(b), "INVALID_TOPIC") {
		t.Fatalf("invalid topic: %d %s", code, b)
	}

	// Create goes to nsqlookupd (topic and channel registrations).
	code, b := call(t, http.MethodPost, a.url("/api/topics"), map[string]string{"topic": "created", "channel": "c1"},
		map[string]string{"Authorization": "Basic " + basicAuth("alice", "pw")})
	if code != http.StatusOK {
		t.Fatalf("create: %d %s", code, b)
	}
	if !slices.Contains(s.c.lookupdTopics(t), "created") {
		t.Fatalf("lookupd topics %v lack created", s.c.lookupdTopics(t))
	}
	var chans struct {
		Channels []string `json:"channels"`
	}
	getJSON(t, "http://"+s.c.LookupdHTTP+"/channels?topic=created", &chans)
	if !slices.Equal(chans.Channels, []string{"c1"}) {
		t.Fatalf("lookupd channels of created = %v", chans.Channels)
	}

	ok(http.MethodDelete, "/api/topics/"+scTopic+"/"+scArchive, nil)
	channelIs(both, "deleted", func(c *rawChannel) bool { return c == nil })

	ok(http.MethodDelete, "/api/nodes/"+n1, map[string]string{"topic": scTopic})
	if nodeStatsOf(t, n1).topic(scTopic) != nil {
		t.Fatalf("topic still on %s after tombstone", n1)
	}

	ok(http.MethodDelete, "/api/topics/"+scTopic, nil)
	if nodeStatsOf(t, n0).topic(scTopic) != nil {
		t.Fatalf("topic still on %s after delete", n0)
	}
	waitFor(t, 5*time.Second, "topic gone from nsqlookupd", func() bool { return !slices.Contains(s.c.lookupdTopics(t), scTopic) })

	want := []Notification{
		{Action: "pause_channel", Topic: scTopic, Channel: scArchive},
		{Action: "unpause_channel", Topic: scTopic, Channel: scArchive},
		{Action: "empty_channel", Topic: scTopic, Channel: scArchive},
		{Action: "pause_topic", Topic: scTopic},
		{Action: "unpause_topic", Topic: scTopic},
		{Action: "create_topic", Topic: "created", User: "alice"},
		{Action: "create_channel", Topic: "created", Channel: "c1", User: "alice"},
		{Action: "delete_channel", Topic: scTopic, Channel: scArchive},
		{Action: "tombstone_topic_producer", Topic: scTopic, Node: n1},
		{Action: "delete_topic", Topic: scTopic},
	}
	waitFor(t, 5*time.Second, "every notification", func() bool { return len(sink.all()) >= len(want) })
	got := sink.all()
	if len(got) != len(want) {
		t.Fatalf("got %d notifications, want %d: %+v", len(got), len(want), got)
	}
	host, _ := os.Hostname()
	for i, w := range want {
		g := got[i]
		if g.Action != w.Action || g.Topic != w.Topic || g.Channel != w.Channel || g.Node != w.Node || g.User != w.User ||
			g.RemoteIP != "127.0.0.1" || g.Via != host || g.URL == "" || g.UserAgent == "" || time.Since(time.Unix(g.Timestamp, 0)) > time.Minute {
			t.Fatalf("notification %d = %+v, want %+v", i, g, w)
		}
	}
}

func basicAuth(user, pw string) string {
	return b64(user + ":" + pw)
}

// TestAPIReadOnlyUsers checks --admin-user: others are refused with 403 and nothing changes.
func TestAPIReadOnlyUsers(t *testing.T) {
	s := startScenario(t)
	sink := newNotificationSink(t)
	a := startAdmin(t, s.c, func(o *Options) {
		o.AdminUsers = []string{"boss"}
		o.NotificationHTTPEndpoint = sink.srv.URL
	})
	path := a.url("/api/topics/" + scTopic + "/" + scArchive)
	for _, hdr := range []map[string]string{nil, {"X-Forwarded-User": "mallory"}} {
		code, b := call(t, http.MethodPost, path, map[string]string{"action": "pause"}, hdr)
		if code != http.StatusForbidden || !strings.Contains(string(b), "FORBIDDEN") {
			t.Fatalf("non-admin %v pause: %d %s", hdr, code, b)
		}
		if code, _ := call(t, http.MethodDelete, a.url("/api/topics/"+scTopic), nil, hdr); code != http.StatusForbidden {
			t.Fatalf("non-admin delete: %d", code)
		}
	}
	settings := apiGet[struct {
		IsAdmin bool `json:"is_admin"`
	}](t, a, "/api/settings")
	if settings.IsAdmin {
		t.Fatal("anonymous user reported as admin")
	}
	for _, n := range s.c.NSQDs {
		if nodeStatsOf(t, n.HTTP).channel(scTopic, scArchive).Paused {
			t.Fatalf("refused action paused the channel on %s", n.HTTP)
		}
	}
	if code, b := call(t, http.MethodPost, path, map[string]string{"action": "pause"}, map[string]string{"X-Forwarded-User": "boss"}); code != http.StatusOK {
		t.Fatalf("admin pause: %d %s", code, b)
	}
	for _, n := range s.c.NSQDs {
		if !nodeStatsOf(t, n.HTTP).channel(scTopic, scArchive).Paused {
			t.Fatalf("admin action did not pause the channel on %s", n.HTTP)
		}
	}
	waitFor(t, 5*time.Second, "one notification", func() bool { return len(sink.all()) == 1 })
	if got := sink.all(); got[0].Action != "pause_channel" {
		t.Fatalf("notifications = %+v", got)
	}
}

// TestAPIConfig checks GET/PUT /config/:opt and its CIDR restriction.
func TestAPIConfig(t *testing.T) {
	c := startCluster(t, 1)
	a := startAdmin(t, c, nil)
	code, b := call(t, http.MethodGet, a.url("/config/nsqlookupd_http_addresses"), nil, nil)
	if code != http.StatusOK || string(b) != `["`+c.LookupdHTTP+`"]` {
		t.Fatalf("GET lookupds: %d %s", code, b)
	}
	if code, b := call(t, http.MethodGet, a.url("/config/nope"), nil, nil); code != http.StatusBadRequest || !strings.Contains(string(b), "INVALID_OPTION") {
		t.Fatalf("GET unknown: %d %s", code, b)
	}
	if code, b := call(t, http.MethodPut, a.url("/config/nsqlookupd_http_addresses"), []string{c.LookupdHTTP, "127.0.0.1:1"}, nil); code != http.StatusOK ||
		string(b) != `["`+c.LookupdHTTP+`","127.0.0.1:1"]` {
		t.Fatalf("PUT lookupds: %d %s", code, b)
	}
	// A dead lookupd is reported as a warning, not an error.
	topics := apiGet[struct {
		Message string `json:"message"`
	}](t, a, "/api/topics")
	if !strings.Contains(topics.Message, "127.0.0.1:1") {
		t.Fatalf("warning %q does not name the dead lookupd", topics.Message)
	}

	r := startAdmin(t, c, func(o *Options) { o.AllowConfigFromCIDR = "10.0.0.0/8" })
	if code, _ := call(t, http.MethodGet, r.url("/config/nsqlookupd_http_addresses"), nil, nil); code != http.StatusForbidden {
		t.Fatalf("GET from outside the CIDR: %d", code)
	}
}

// TestNodeDownWarning kills one nsqd: the API still answers, with a warning naming it.
func TestNodeDownWarning(t *testing.T) {
	s := startScenario(t)
	a := startAdmin(t, s.c, func(o *Options) { o.SampleInterval = 200 * time.Millisecond })
	dead := s.c.NSQDs[1].HTTP
	waitFor(t, 5*time.Second, "both nodes sampled", func() bool {
		return len(a.sampler.series(SeriesKey{Topic: scTopic}, 0).T) >= 2
	})
	s.c.kill(1)
	waitFor(t, 10*time.Second, "a warning naming the dead node", func() bool {
		tp := apiGet[topicResp](t, a, "/api/topics/"+scTopic)
		return strings.Contains(tp.Message, dead) && tp.MessageCount == 10
	})
	nodes := apiGet[struct {
		Nodes   []NodeView `json:"nodes"`
		Message string     `json:"message"`
	}](t, a, "/api/nodes")
	if len(nodes.Nodes) != 2 || !strings.Contains(nodes.Message, dead) {
		t.Fatalf("/api/nodes after kill = %+v", nodes)
	}
	for _, n := range nodes.Nodes {
		if (n.HTTPAddr() == dead) == n.Reachable {
			t.Fatalf("node %s reachable=%v", n.HTTPAddr(), n.Reachable)
		}
	}
}
