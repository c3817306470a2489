package admin

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nsqio/go-nsq"
	"github.com/sluicemq/sluice/nsqd"
)

// xssPayload is what a hostile client or node puts in every free-text field it controls.
const xssPayload = `<img src=x onerror=window.__xss=1>`

// registerFakeNode registers a node that does not exist in nsqlookupd over its TCP protocol,
// with hostname and broadcast_address set to payload and topic registered; the registration
// lasts until the test ends.
func registerFakeNode(t *testing.T, lookupdTCP, payload, topic string) {
	t.Helper()
	conn, err := net.Dial("tcp", lookupdTCP)
	if err != nil {
		t.Fatalf("dial nsqlookupd: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	body, _ := json.Marshal(map[string]any{"broadcast_address": payload, "hostname": payload,
		"tcp_port": 1, "http_port": 2, "version": "1.3.0"})
	w := bufio.NewWriter(conn)
	w.WriteString("  V1IDENTIFY\n")
	_ = binary.Write(w, binary.BigEndian, int32(len(body)))
	w.Write(body)
	w.WriteString("REGISTER " + topic + "\n")
	if err := w.Flush(); err != nil {
		t.Fatalf("register fake node: %v", err)
	}
}

// noXSS checks the page ran no injected script and built no element from the payload.
func (b *browser) noXSS(page string) {
	b.t.Helper()
	if v := run(b, chromedp.Evaluate[string]("String(window.__xss)")); v != "undefined" {
		b.t.Fatalf("%s: injected script ran (window.__xss = %s)", page, v)
	}
	if n := b.count("#app img, #warning img, #app [onerror]"); n != 0 {
		b.t.Fatalf("%s: %d elements were built from untrusted strings", page, n)
	}
}

// TestBrowserUntrustedStrings has clients and a node put HTML into every field they control
// (IDENTIFY client_id, hostname, user_agent; lookupd hostname and broadcast_address) and
// checks each page shows it as text and runs nothing. The channel is ephemeral, so its
// name carries a '#', which must survive the links and the API paths.
func TestBrowserUntrustedStrings(t *testing.T) {
	// The auth server names every connection with the payload; the consumer's identity URL
	// is a javascript: URL (never a link), the producer's a real one (a link).
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		idURL := "javascript:window.__xss=1"
		if r.URL.Query().Get("secret") == "producer" {
			idURL = "https://id.example/u?name=" + url.QueryEscape(xssPayload)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"ttl": 3600, "identity": xssPayload, "identity_url": idURL,
			"authorizations": []map[string]any{{"topic": ".*", "channels": []string{".*"}, "permissions": []string{"subscribe", "publish"}}}})
	}))
	t.Cleanup(auth.Close)
	c := startClusterWith(t, 1, func(_ int, o *nsqd.Options) { o.AuthHTTPAddresses = []string{strings.TrimPrefix(auth.URL, "http://")} })
	n := c.NSQDs[0]
	const topic, channel = "xss", "live#ephemeral"
	mustPost(t, n.HTTP, "/topic/create", url.Values{"topic": {topic}})

	cfg := nsq.NewConfig()
	cfg.ClientID, cfg.Hostname, cfg.UserAgent, cfg.AuthSecret = xssPayload, xssPayload, xssPayload, "consumer"
	consumer, err := nsq.NewConsumer(topic, channel, cfg)
	if err != nil {
		t.Fatal(err)
	}
	consumer.SetLogger(nil, nsq.LogLevelError)
	consumer.AddHandler(&countingHandler{})
	if err := consumer.ConnectToNSQD(n.TCP); err != nil {
		t.Fatalf("consumer connect: %v", err)
	}
	t.Cleanup(func() {
		consumer.Stop()
		<-consumer.StopChan
	})
	pcfg := nsq.NewConfig()
	pcfg.ClientID, pcfg.Hostname, pcfg.UserAgent, pcfg.AuthSecret = xssPayload, xssPayload, xssPayload, "producer"
	producer, err := nsq.NewProducer(n.TCP, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	producer.SetLogger(nil, nsq.LogLevelError)
	t.Cleanup(producer.Stop)
	if err := producer.Publish(topic, []byte("hi")); err != nil {
		t.Fatalf("publish: %v", err)
	}
	registerFakeNode(t, c.LookupdTCP, xssPayload, topic)
	waitFor(t, 10*time.Second, "the fake node and the consumer", func() bool {
		st := nodeStatsOf(t, n.HTTP).channel(topic, channel)
		var nodes struct {
			Producers []json.RawMessage `json:"producers"`
		}
		return st != nil && len(st.Clients) == 1 && st.Clients[0].ClientID == xssPayload &&
			getJSONErr("http://"+c.LookupdHTTP+"/nodes", &nodes) == nil && len(nodes.Producers) == 2
	})

	a := startAdmin(t, c, nil)
	b := newBrowser(t)

	// Topic page: the ephemeral channel is listed and its link leads to its page.
	b.open(a.url("/topics/" + topic))
	b.noXSS("topic")
	chanLink := `#channels-table tr[data-channel="` + channel + `"] a`
	if got := b.text(chanLink); got != channel {
		t.Fatalf("topic page channel link text %q", got)
	}
	if href := run(b, chromedp.Evaluate[string]("document.querySelector('"+chanLink+"').getAttribute('href')")); !strings.HasSuffix(href, "/live%23ephemeral") {
		t.Fatalf("channel link href %q does not escape '#'", href)
	}
	b.do(chromedp.Click(chromedp.CSS(chanLink)))
	b.waitLoaded()

	// Channel page: every client field shows the payload as text.
	if got := b.text("h1"); !strings.Contains(got, channel) {
		t.Fatalf("channel page heading %q", got)
	}
	row := `#clients-table tr[data-client] `
	waitFor(t, 15*time.Second, "the client row", func() bool { return b.count(`#clients-table tr[data-client]`) == 1 })
	b.noXSS("channel")
	for _, k := range []string{"client_id", "hostname", "user_agent", "auth"} {
		if got := b.text(row + `td[data-k="` + k + `"]`); got != xssPayload {
			t.Fatalf("channel page %s shows %q, want the payload as text", k, got)
		}
	}
	if n := b.count(row + `td[data-k="auth"] a, a[href^="javascript"], a[href^="JAVASCRIPT"]`); n != 0 {
		t.Fatalf("channel page made %d links from a javascript: identity URL", n)
	}
	b.expectCleanConsole("channel")

	// Node page: the publisher's fields.
	b.open(a.url("/nodes/" + n.HTTP))
	prow := `#publishers-table tr[data-client] `
	for _, k := range []string{"client_id", "hostname", "user_agent", "auth"} {
		if got := b.text(prow + `td[data-k="` + k + `"]`); got != xssPayload {
			t.Fatalf("node page publisher %s shows %q", k, got)
		}
	}
	if href := run(b, chromedp.Evaluate[string](`document.querySelector('`+prow+`td[data-k="auth"] a').getAttribute("href")`)); href != "https://id.example/u?name="+url.QueryEscape(xssPayload) {
		t.Fatalf("publisher identity link %q", href)
	}
	b.noXSS("node")
	b.expectCleanConsole("node")

	// Nodes page: the fake node's hostname and broadcast address come from nsqlookupd.
	b.open(a.url("/nodes"))
	if got := b.count(`#nodes-table tr[data-node]`); got != 2 {
		t.Fatalf("nodes page shows %d nodes, want 2", got)
	}
	fake := `#nodes-table tr[data-node="` + strings.ReplaceAll(xssPayload, `"`, `\"`) + `:2"] `
	if got := b.text(fake + `td[data-k="hostname"]`); got != xssPayload {
		t.Fatalf("nodes page fake hostname %q", got)
	}
	if got := b.text(fake + `td[data-k="broadcast_address"]`); got != xssPayload {
		t.Fatalf("nodes page fake broadcast address %q", got)
	}
	b.noXSS("nodes")
	b.expectCleanConsole("nodes")

	// Topics and lookup pages.
	b.open(a.url("/"))
	if got := b.text(`#topics-table tr[data-topic="` + topic + `"] td[data-k="channels"]`); got != channel {
		t.Fatalf("topics page channels %q", got)
	}
	b.noXSS("topics")
	b.expectCleanConsole("topics")
	b.open(a.url("/lookup"))
	if got := b.text(`#lookup-table tr[data-topic="` + topic + `"] td[data-k="producers"]`); !strings.Contains(got, xssPayload) {
		t.Fatalf("lookup page producers %q do not show the fake node as text", got)
	}
	b.noXSS("lookup")
	b.expectCleanConsole("lookup")
	b.open(a.url("/counter"))
	if got := b.number(`.counter`); got != 1 {
		t.Fatalf("counter shows %d, want 1", got)
	}
	b.noXSS("counter")
	b.expectCleanConsole("counter")

	// A malformed address shows "Not found" instead of breaking the app.
	b.open(a.url("/topics/%E0%A4"))
	if got := b.text("h1"); got != "Not found" {
		t.Fatalf("malformed path heading %q", got)
	}
	b.expectCleanConsole("malformed path")
}

// TestBrowserEmptyCluster opens every page of an admin over a lookupd with no node, and over
// a cluster whose only node has no topic: each page renders its empty state, without errors.
func TestBrowserEmptyCluster(t *testing.T) {
	empty := startCluster(t, 0)
	bare := startCluster(t, 1)
	ae := startAdmin(t, empty, nil)
	ab := startAdmin(t, bare, func(o *Options) { o.BasePath = "/ops" })
	b := newBrowser(t)

	for _, c := range []struct{ path, sel, want string }{
		{"/", "#topics-table", "No topics."},
		{"/nodes", "#nodes-table", "No nodes."},
		{"/lookup", "#lookup-table", "No registrations."},
		{"/counter", ".counter", "0"},
	} {
		b.open(ae.url(c.path))
		if got := b.text(c.sel); got != c.want {
			t.Fatalf("empty cluster %s: %s shows %q, want %q", c.path, c.sel, got, c.want)
		}
		b.expectCleanConsole("empty cluster " + c.path)
	}

	node := bare.NSQDs[0].HTTP
	// The base path without its trailing slash leads to the topics page.
	b.open(ab.url("/ops"))
	if got := b.text("#topics-table"); got != "No topics." {
		t.Fatalf("node without topics, /ops: %q", got)
	}
	b.open(ab.url("/ops/nodes"))
	if got := b.count(`#nodes-table tr[data-node="` + node + `"]`); got != 1 {
		t.Fatalf("nodes page lacks %s", node)
	}
	b.do(chromedp.Click(chromedp.CSS(`#nodes-table tr[data-node="` + node + `"] a`)))
	b.waitLoaded()
	if got := b.text("#topics-table"); got != "No topics on this node." {
		t.Fatalf("node page topics %q", got)
	}
	if got := b.text("#publishers-table"); got != "No publishers connected." {
		t.Fatalf("node page publishers %q", got)
	}
	if got := b.number(`#figures [data-k="topic_count"]`); got != 0 {
		t.Fatalf("node page topic count %d", got)
	}
	b.expectCleanConsole("node without topics")
}

// startFakePolicyNSQD starts an nsqd stand-in that speaks only the HTTP the admin reads, for
// what a real nsqd never says: every free-text field of topic's message policy, of its
// channel's and of the channel's dead letter is the payload (nsqd checks topic names, but a
// hostile node can send anything, the dead-letter topic included). It answers
// /channel/redrive with one message moved and counts the calls.
func startFakePolicyNSQD(t *testing.T, topic, channel string) (string, *atomic.Int32) {
	t.Helper()
	var redrives atomic.Int32
	var port int
	e2e := map[string]any{"count": 0, "percentiles": nil}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /info", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"version": "1.3.0", "broadcast_address": "127.0.0.1", "hostname": xssPayload,
			"http_port": port, "tcp_port": 1})
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		ch := map[string]any{"channel_name": channel, "depth": 0, "backend_depth": 0, "in_flight_count": 0, "deferred_count": 0,
			"message_count": 1, "requeue_count": 1, "timeout_count": 0, "client_count": 0, "clients": []any{}, "paused": false,
			"e2e_processing_latency": e2e, "max_attempts": 2, "dead_letter_topic": xssPayload, "ttl": xssPayload,
			"dead_lettered_count": 1, "expired_count": 0}
		tp := map[string]any{"topic_name": topic, "channels": []any{ch}, "depth": 0, "backend_depth": 0, "message_count": 1,
			"message_bytes": 4, "paused": false, "e2e_processing_latency": e2e, "ttl": xssPayload, "max_depth": 5,
			"overflow": xssPayload, "expired_count": 1, "dropped_count": 2, "rejected_count": 3}
		_ = json.NewEncoder(w).Encode(map[string]any{"version": "1.3.0", "health": "OK", "start_time": 1, "topics": []any{tp}, "producers": nil})
	})
	mux.HandleFunc("GET /channel/dead_letters", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"count": 1, "dead_letters": []any{map[string]any{
			"id": xssPayload, "dead_letter_topic": xssPayload, "topic": topic, "channel": channel, "attempts": 2,
			"reason": xssPayload, "time": xssPayload, "timestamp": 1_700_000_000_000_000_000, "original_id": xssPayload, "body_size": 4}}})
	})
	mux.HandleFunc("POST /channel/redrive", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("topic") != topic || r.URL.Query().Get("channel") != channel {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"message":"CHANNEL_NOT_FOUND"}`))
			return
		}
		redrives.Add(1)
		_, _ = w.Write([]byte(`{"moved":1}`))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	port = srv.Listener.Addr().(*net.TCPAddr).Port
	return srv.Listener.Addr().String(), &redrives
}

// TestBrowserUntrustedPolicyAndDeadLetterFields has a node put HTML into every policy setting
// and dead-letter field it reports and checks the topic and channel pages show it as text,
// link the dead-letter topic safely, fill the edit form with it as a value, and run nothing;
// Redrive, against the same node, reports what it moved.
func TestBrowserUntrustedPolicyAndDeadLetterFields(t *testing.T) {
	const topic, channel = "jobs", "work"
	addr, redrives := startFakePolicyNSQD(t, topic, channel)
	a := startAdmin(t, &testCluster{}, func(o *Options) { // direct mode: no nsqlookupd
		o.NSQLookupdHTTPAddresses = nil
		o.NSQDHTTPAddresses = []string{addr}
	})
	b := newBrowser(t)

	b.open(a.url("/topics/" + topic))
	b.noXSS("topic with a hostile policy")
	for sel, want := range map[string]string{
		`#policy [data-k="ttl"]`:                                                   xssPayload,
		`#policy [data-k="max_depth"]`:                                             "5, then " + xssPayload,
		`#nodes-table tr[data-node="` + addr + `"] td[data-k="ttl"]`:               xssPayload,
		`#channels-table tr[data-channel="work"] td[data-k="dead_lettered_count"]`: "1",
	} {
		if got := b.cell(sel); got != want {
			t.Fatalf("topic page %s shows %q, want %q", sel, got, want)
		}
	}
	b.expectCleanConsole("topic with a hostile policy")

	b.open(a.url("/topics/" + topic + "/" + channel))
	waitFor(t, 10*time.Second, "the dead letter row", func() bool { return b.count(`#dead-letters tr[data-id]`) == 1 })
	b.noXSS("channel with hostile dead letters")
	for sel, want := range map[string]string{
		`#policy [data-k="ttl"]`:                                                   xssPayload,
		`#policy [data-k="dead_letter_topic"]`:                                     xssPayload,
		`#nodes-table tr[data-node="` + addr + `"] td[data-k="dead_letter_topic"]`: xssPayload,
	} {
		if got := b.cell(sel); got != want {
			t.Fatalf("channel page %s shows %q, want %q", sel, got, want)
		}
	}
	for _, k := range []string{"id", "original_id", "reason", "time", "dead_letter_topic"} {
		if got := b.cell(`#dead-letters tr[data-id] td[data-k="` + k + `"]`); got != xssPayload {
			t.Fatalf("dead letter %s shows %q, want the payload as text", k, got)
		}
	}
	if got := b.cell(`#dead-letters tr[data-id] td[data-k="timestamp"]`); got != "2023-11-14 22:13:20Z" {
		t.Fatalf("dead letter timestamp %q", got)
	}
	// The dead-letter topic links to its page with the name %-escaped in the path.
	wantHref := "/topics/" + url.PathEscape(xssPayload)
	for _, sel := range []string{`#policy [data-k="dead_letter_topic"] a`, `#dead-letters tr[data-id] td[data-k="dead_letter_topic"] a`} {
		href := run(b, chromedp.Evaluate[string](`document.querySelector('`+sel+`').getAttribute("href")`))
		if decoded, err := url.PathUnescape(href); err != nil || decoded != "/topics/"+xssPayload || strings.ContainsAny(href, `<>"`) {
			t.Fatalf("%s href %q, want %q", sel, href, wantHref)
		}
	}
	// The edit form holds the payload as a value, not as markup.
	b.do(chromedp.Click(chromedp.CSS(`#policy-edit summary`)))
	if v := run(b, chromedp.Evaluate[string](`document.getElementById("channel-policy-dead_letter_topic").value`)); v != xssPayload {
		t.Fatalf("edit form dead-letter topic %q", v)
	}
	b.noXSS("channel edit form")
	b.expectCleanConsole("channel with hostile dead letters")

	b.clickConfirm(`button[data-act="redrive"]`)
	if got := b.waitText("#redrive-result", "the redrive result", func(s string) bool { return s != "" }); got != "Redrive moved 1 dead letter back into jobs/work." {
		t.Fatalf("redrive result %q", got)
	}
	if n := redrives.Load(); n != 1 {
		t.Fatalf("the node got %d redrives, want 1", n)
	}
	b.noXSS("after redrive")
	b.expectCleanConsole("redrive")
}
