package admin

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/sluicemq/sluice/nsqd"
)

// Durable topics show as durable, with their retention, in the topic API
// and the overview; other topics keep the JSON they had.
func TestAPIShowsDurableTopicsAndRetention(t *testing.T) {
	c := startCluster(t, 2)
	for _, n := range c.NSQDs {
		mustPost(t, n.HTTP, "/topic/create", url.Values{"topic": {"orders"}, "durable": {"true"}, "retention_time": {"2h"}})
		mustPost(t, n.HTTP, "/topic/create", url.Values{"topic": {"plain"}})
	}
	a := startAdmin(t, c, nil)
	waitFor(t, 10*time.Second, "topics visible", func() bool {
		code, body := call(t, http.MethodGet, a.url("/api/topics/orders"), nil, nil)
		return code == http.StatusOK && strings.Contains(string(body), `"durable":true`)
	})
	tp := apiGet[topicResp](t, a, "/api/topics/orders")
	if !tp.Durable || tp.RetentionTime != "2h0m0s" || tp.RetentionBytes == nil || *tp.RetentionBytes != 0 {
		t.Fatalf("durable topic: durable=%v retention_time=%q retention_bytes=%v", tp.Durable, tp.RetentionTime, tp.RetentionBytes)
	}
	for _, n := range tp.Nodes {
		if !n.Durable || n.RetentionTime != "2h0m0s" {
			t.Fatalf("node %s: %+v", n.Node, n)
		}
	}
	_, body := call(t, http.MethodGet, a.url("/api/topics/plain"), nil, nil)
	if strings.Contains(string(body), "durable") || strings.Contains(string(body), "retention") {
		t.Fatalf("non-durable topic JSON mentions durable keys: %s", body)
	}
	ov := apiGet[struct {
		Topics []overviewTopic `json:"topics"`
	}](t, a, "/api/overview")
	seen := 0
	for _, row := range ov.Topics {
		switch row.TopicName {
		case "orders":
			seen++
			if !row.Durable {
				t.Fatalf("overview row of a durable topic: %+v", row)
			}
		case "plain":
			seen++
			if row.Durable {
				t.Fatalf("overview row of a plain topic: %+v", row)
			}
		}
	}
	if seen != 2 {
		t.Fatalf("overview: %+v", ov.Topics)
	}
}

// The create form's durable option creates the topic durable on every node.
func TestAPICreatesDurableTopic(t *testing.T) {
	c := startCluster(t, 2)
	a := startAdmin(t, c, nil)
	code, b := call(t, http.MethodPost, a.url("/api/topics"), map[string]any{"topic": "ledger", "durable": true}, nil)
	if code != http.StatusOK {
		t.Fatalf("create durable topic: %d %s", code, b)
	}
	for _, n := range c.NSQDs {
		rt := nodeStatsOf(t, n.HTTP).topic("ledger")
		if rt == nil || !rt.Durable {
			t.Fatalf("topic on %s: %+v, want durable", n.HTTP, rt)
		}
	}
	code, b = call(t, http.MethodPost, a.url("/api/topics"), map[string]any{"topic": "x#ephemeral", "durable": true}, nil)
	if code != http.StatusBadRequest || !strings.Contains(string(b), "DURABLE") {
		t.Fatalf("durable ephemeral topic: %d %s", code, b)
	}
}

// startMixedDurableCluster starts two nsqds, node 0 with --durable --retention-time=1h
// --retention-bytes=1MiB, node 1 plain, with topic "events" on both (durable on node 0 only)
// and "plain" on node 1, and an admin that sees both topics on every node carrying them.
func startMixedDurableCluster(t *testing.T) (*testCluster, *Admin) {
	t.Helper()
	c := startClusterWith(t, 2, func(i int, o *nsqd.Options) {
		if i == 0 {
			o.Durable, o.RetentionTime, o.RetentionBytes = true, time.Hour, 1<<20
		}
	})
	for _, n := range c.NSQDs {
		mustPost(t, n.HTTP, "/topic/create", url.Values{"topic": {"events"}})
	}
	mustPost(t, c.NSQDs[1].HTTP, "/topic/create", url.Values{"topic": {"plain"}})
	a := startAdmin(t, c, nil)
	waitFor(t, 10*time.Second, "events on both nodes and plain in the admin", func() bool {
		var ev, pl topicResp
		return getJSONErr(a.url("/api/topics/events"), &ev) == nil && len(ev.Nodes) == 2 &&
			getJSONErr(a.url("/api/topics/plain"), &pl) == nil && len(pl.Nodes) == 1
	})
	return c, a
}

// A topic durable on one node of two is durable in the admin, with that node's retention;
// the per-node views say which node keeps it durably.
func TestAPITopicDurableOnOneNode(t *testing.T) {
	c, a := startMixedDurableCluster(t)
	n0, n1 := c.NSQDs[0].HTTP, c.NSQDs[1].HTTP

	tp := apiGet[topicResp](t, a, "/api/topics/events")
	if !tp.Durable || tp.RetentionTime != "1h0m0s" || tp.RetentionBytes == nil || *tp.RetentionBytes != 1<<20 {
		t.Fatalf("events: durable=%v retention_time=%q retention_bytes=%v, want true 1h0m0s 1048576",
			tp.Durable, tp.RetentionTime, tp.RetentionBytes)
	}
	// The per-node entries as JSON: node 1's has no durable keys at all.
	var raw struct {
		Nodes []map[string]json.RawMessage `json:"nodes"`
	}
	_, body := call(t, http.MethodGet, a.url("/api/topics/events"), nil, nil)
	if err := json.Unmarshal(body, &raw); err != nil || len(raw.Nodes) != 2 {
		t.Fatalf("events nodes: %v %s", err, body)
	}
	for _, n := range raw.Nodes {
		var node string
		_ = json.Unmarshal(n["node"], &node)
		switch node {
		case n0:
			if string(n["durable"]) != "true" || string(n["retention_time"]) != `"1h0m0s"` || string(n["retention_bytes"]) != "1048576" {
				t.Fatalf("durable node %s: %s", node, body)
			}
		case n1:
			for _, k := range []string{"durable", "retention_time", "retention_bytes"} {
				if _, ok := n[k]; ok {
					t.Fatalf("plain node %s has %q: %s", node, k, body)
				}
			}
		default:
			t.Fatalf("unexpected node %q", node)
		}
	}

	// The node pages: events is durable on node 0 only.
	for _, tc := range []struct {
		node    string
		durable bool
	}{{n0, true}, {n1, false}} {
		np := apiGet[struct {
			Topics []*TopicStats `json:"topics"`
		}](t, a, "/api/nodes/"+tc.node)
		found := false
		for _, ts := range np.Topics {
			if ts.TopicName == "events" {
				found = true
				if ts.Durable != tc.durable {
					t.Fatalf("node %s events durable=%v, want %v", tc.node, ts.Durable, tc.durable)
				}
			}
		}
		if !found {
			t.Fatalf("node %s page lacks events: %+v", tc.node, np.Topics)
		}
	}

	_, body = call(t, http.MethodGet, a.url("/api/topics/plain"), nil, nil)
	if strings.Contains(string(body), "durable") || strings.Contains(string(body), "retention") {
		t.Fatalf("plain topic JSON mentions durable keys: %s", body)
	}
}

// aggregateTopics shows retention only when every durable node agrees on it; a node where the
// topic is not durable has no retention and does not count.
func TestAggregateTopicsRetention(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	durable := func(node, rt string, rb int64) *TopicStats {
		return &TopicStats{Node: node, TopicName: "t", Durable: true, RetentionTime: rt, RetentionBytes: i64(rb)}
	}
	plain := func(node string) *TopicStats { return &TopicStats{Node: node, TopicName: "t"} }
	for _, tc := range []struct {
		name    string
		nodes   []*TopicStats
		durable bool
		rt      string
		rb      *int64
	}{
		{"no durable node", []*TopicStats{plain("a"), plain("b")}, false, "", nil},
		{"all agree", []*TopicStats{durable("a", "1h0m0s", 0), durable("b", "1h0m0s", 0)}, true, "1h0m0s", i64(0)},
		{"no retention, agreed", []*TopicStats{durable("a", "0s", 0), durable("b", "0s", 0)}, true, "0s", i64(0)},
		{"times differ", []*TopicStats{durable("a", "1h0m0s", 0), durable("b", "2h0m0s", 0)}, true, "", nil},
		{"bytes differ", []*TopicStats{durable("a", "0s", 10), durable("b", "0s", 20)}, true, "", nil},
		{"third node differs", []*TopicStats{durable("a", "0s", 10), durable("b", "0s", 10), durable("c", "1s", 10)}, true, "", nil},
		{"one durable node", []*TopicStats{plain("a"), durable("b", "1h0m0s", 5)}, true, "1h0m0s", i64(5)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			aggs := aggregateTopics(tc.nodes)
			if len(aggs) != 1 {
				t.Fatalf("%d aggregates", len(aggs))
			}
			g := aggs[0]
			if g.Durable != tc.durable || g.RetentionTime != tc.rt || !sameInt64(g.RetentionBytes, tc.rb) {
				t.Fatalf("durable=%v retention_time=%q retention_bytes=%v, want %v %q %v",
					g.Durable, g.RetentionTime, g.RetentionBytes, tc.durable, tc.rt, tc.rb)
			}
		})
	}
}

// The UI marks durable topics: a badge on the topics page, the node page and the topic page,
// which also shows the retention and each node's own; the create form makes durable topics.
func TestBrowserDurableTopic(t *testing.T) {
	c, a := startMixedDurableCluster(t)
	n0, n1 := c.NSQDs[0].HTTP, c.NSQDs[1].HTTP
	b := newBrowser(t)

	b.open(a.url("/"))
	// The pages have rendered (open waits for that), so a missing badge counts 0 at once.
	if ev, pl := b.count(`tr[data-topic="events"] .badge.durable`), b.count(`tr[data-topic="plain"] .badge.durable`); ev != 1 || pl != 0 {
		t.Fatalf("topics page: %d durable badges on events, %d on plain; want 1, 0", ev, pl)
	}
	if got := b.text(`tr[data-topic="events"] .badge.durable`); got != "durable" {
		t.Fatalf("topics page: events badge %q", got)
	}
	b.expectCleanConsole("topics")

	eventsURL := a.url("/topics/events")
	b.open(eventsURL)
	if d, r := b.count(`#paused .badge.durable`), b.count(`#paused .badge.retention`); d != 1 || r != 1 {
		t.Fatalf("topic page: %d durable and %d retention badges, want 1 each", d, r)
	}
	if got := b.text(`#paused .badge.durable`); got != "durable" {
		t.Fatalf("topic page badge %q", got)
	}
	if got, want := b.text(`#paused .badge.retention`), "keeps finished messages 1h0m0s or newest 1,048,576 bytes"; got != want {
		t.Fatalf("topic page retention %q, want %q", got, want)
	}
	if n := b.count(`#nodes-table td[data-k="retention"]`); n != 2 {
		t.Fatalf("topic page: %d node retention cells, want 2", n)
	}
	for node, want := range map[string]string{n0: "1h0m0s or newest 1,048,576 bytes", n1: "not durable"} {
		if got := b.text(`#nodes-table tr[data-node="` + node + `"] td[data-k="retention"]`); got != want {
			t.Fatalf("topic page node %s retention %q, want %q", node, got, want)
		}
	}
	b.expectCleanConsole("durable topic")
	b.screenshots(eventsURL, "topic-durable")

	b.open(a.url("/topics/plain"))
	if n := b.count(`#paused .badge`) + b.count(`#nodes-table td[data-k="retention"]`); n != 0 {
		t.Fatalf("plain topic page shows %d durable badges or retention cells", n)
	}

	for node, want := range map[string]int{n0: 1, n1: 0} {
		b.open(a.url("/nodes/" + node))
		if n := b.count(`#topics-table tr[data-topic="events"]:not([data-channel]) .badge.durable`); n != want {
			t.Fatalf("node page %s: events has %d durable badges, want %d", node, n, want)
		}
	}
	b.expectCleanConsole("node pages")

	// The create form's checkbox creates the topic durable on every node.
	b.open(a.url("/lookup"))
	b.do(chromedp.SendKeys(chromedp.CSS("#create-topic"), "ledger"), chromedp.Click(chromedp.CSS("#create-durable")))
	b.clickConfirm(`button[data-act="create"]`)
	waitFor(t, 10*time.Second, "ledger durable on both nodes", func() bool {
		for _, n := range c.NSQDs {
			if tp := nodeStatsOf(t, n.HTTP).topic("ledger"); tp == nil || !tp.Durable {
				return false
			}
		}
		return true
	})
	b.expectCleanConsole("create durable topic")
}
