package admin

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rawCall sends method u with a raw body and the given headers, returning status and body.
func rawCall(t *testing.T, method, u, body string, header map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body == "" {
		req.Body, req.ContentLength = http.NoBody, 0
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAPIMutationsRefuseCrossSite checks the CSRF defences of the mutating API: what an HTML
// form or a "simple" cross-site request can send (no JSON Content-Type) is 415, a request the
// browser marks cross-site is 403, a GET never acts, and none of them changes anything; the
// JSON requests scripts and the UI send still work, as does a DELETE without a body.
func TestAPIMutationsRefuseCrossSite(t *testing.T) {
	c := startCluster(t, 1)
	n := c.NSQDs[0].HTTP
	const topic, channel = "csrf", "work"
	mustPost(t, n, "/topic/create", url.Values{"topic": {topic}})
	mustPost(t, n, "/channel/create", url.Values{"topic": {topic}, "channel": {channel}})
	waitFor(t, 10*time.Second, "the topic in nsqlookupd", func() bool { return contains(c.lookupdTopics(t), topic) })
	sink := newNotificationSink(t)
	a := startAdmin(t, c, func(o *Options) { o.NotificationHTTPEndpoint = sink.srv.URL })
	chPath := a.url("/api/topics/" + topic + "/" + channel)
	pause := `{"action":"pause"}`

	for _, tc := range []struct {
		name, method, u, body string
		header                map[string]string
		code                  int
	}{
		{"text/plain form", http.MethodPost, chPath, pause, map[string]string{"Content-Type": "text/plain"}, http.StatusUnsupportedMediaType},
		{"urlencoded form", http.MethodPost, chPath, "action=pause", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, http.StatusUnsupportedMediaType},
		{"multipart form", http.MethodPost, chPath, "--x\r\n\r\n--x--", map[string]string{"Content-Type": "multipart/form-data; boundary=x"}, http.StatusUnsupportedMediaType},
		{"no content type", http.MethodPost, chPath, pause, nil, http.StatusUnsupportedMediaType},
		{"json lookalike", http.MethodPost, chPath, pause, map[string]string{"Content-Type": "application/jsonp"}, http.StatusUnsupportedMediaType},
		{"cross-site json", http.MethodPost, chPath, pause, map[string]string{"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"create as text", http.MethodPost, a.url("/api/topics"), `{"topic":"evil"}`, map[string]string{"Content-Type": "text/plain"}, http.StatusUnsupportedMediaType},
		{"delete with text body", http.MethodDelete, a.url("/api/topics/" + topic), `{}`, map[string]string{"Content-Type": "text/plain"}, http.StatusUnsupportedMediaType},
		{"cross-site delete", http.MethodDelete, a.url("/api/topics/" + topic), "", map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"tombstone as form", http.MethodDelete, a.url("/api/nodes/" + n), `{"topic":"` + topic + `"}`, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, http.StatusUnsupportedMediaType},
		{"GET never acts", http.MethodGet, chPath + "?action=pause", "", nil, http.StatusOK},
	} {
		code, body := rawCall(t, tc.method, tc.u, tc.body, tc.header)
		if code != tc.code {
			t.Fatalf("%s: %d %s, want %d", tc.name, code, body, tc.code)
		}
	}
	st := nodeStatsOf(t, n)
	if st.topic(topic) == nil || st.channel(topic, channel).Paused || st.topic("evil") != nil {
		t.Fatalf("a refused request changed the node: %+v", st.topic(topic))
	}
	if got := sink.all(); len(got) != 0 {
		t.Fatalf("refused requests were notified: %+v", got)
	}

	// What scripts and the UI send.
	if code, body := rawCall(t, http.MethodPost, chPath, pause, map[string]string{"Content-Type": "application/json; charset=utf-8", "Sec-Fetch-Site": "same-origin"}); code != http.StatusOK {
		t.Fatalf("JSON pause: %d %s", code, body)
	}
	if !nodeStatsOf(t, n).channel(topic, channel).Paused {
		t.Fatal("JSON pause did not pause the channel")
	}
	if code, body := rawCall(t, http.MethodDelete, chPath, "", nil); code != http.StatusOK {
		t.Fatalf("DELETE without body: %d %s", code, body)
	}
	if nodeStatsOf(t, n).channel(topic, channel) != nil {
		t.Fatal("DELETE did not delete the channel")
	}

	// An ephemeral channel's '#' travels %-escaped in the path.
	const eph = "tmp#ephemeral"
	if code, body := rawCall(t, http.MethodPost, a.url("/api/topics"), `{"topic":"`+topic+`","channel":"`+eph+`"}`, map[string]string{"Content-Type": "application/json"}); code != http.StatusOK {
		t.Fatalf("create ephemeral channel: %d %s", code, body)
	}
	if code, body := rawCall(t, http.MethodPost, a.url("/api/topics/"+topic+"/"+url.PathEscape(eph)), pause, map[string]string{"Content-Type": "application/json"}); code != http.StatusOK {
		t.Fatalf("pause ephemeral channel: %d %s", code, body)
	}
	if ch := nodeStatsOf(t, n).channel(topic, eph); ch == nil || !ch.Paused {
		t.Fatalf("ephemeral channel not paused: %+v", ch)
	}
	if code, body := rawCall(t, http.MethodGet, a.url("/api/topics/"+topic+"/"+url.PathEscape(eph)), "", nil); code != http.StatusOK || !strings.Contains(body, `"channel_name":"tmp#ephemeral"`) {
		t.Fatalf("read ephemeral channel: %d %s", code, body)
	}

	// Names are checked before anything goes upstream.
	if code, body := rawCall(t, http.MethodPost, a.url("/api/topics/bad%20name"), pause, map[string]string{"Content-Type": "application/json"}); code != http.StatusBadRequest || !strings.Contains(body, "INVALID_TOPIC") {
		t.Fatalf("invalid topic: %d %s", code, body)
	}
	// The tombstone's node comes from the URL: an address the cluster does not know is never contacted.
	var hits atomic.Int32
	stranger := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { hits.Add(1) }))
	defer stranger.Close()
	strangerAddr := strings.TrimPrefix(stranger.URL, "http://")
	if code, body := rawCall(t, http.MethodDelete, a.url("/api/nodes/"+strangerAddr), `{"topic":"`+topic+`"}`, map[string]string{"Content-Type": "application/json"}); code != http.StatusNotFound || !strings.Contains(body, "NODE_NOT_FOUND") {
		t.Fatalf("tombstone of an unknown node: %d %s", code, body)
	}
	if hits.Load() != 0 {
		t.Fatalf("the admin contacted an unknown node %d times", hits.Load())
	}

	// Browser hardening headers on pages and API answers.
	for _, p := range []string{"/", "/api/topics", "/static/app.js"} {
		resp, err := http.Get(a.url(p))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Fatalf("%s: Content-Security-Policy %q", p, csp)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("X-Frame-Options") != "DENY" {
			t.Fatalf("%s: headers %v", p, resp.Header)
		}
	}
}

// TestAPIReadOnlyRules checks the --admin-user rule's edges: only the configured
// --acl-http-header counts, a repeated header names nobody, and options that would let an
// anonymous request act are refused at startup.
func TestAPIReadOnlyRules(t *testing.T) {
	c := startCluster(t, 1)
	n := c.NSQDs[0].HTTP
	const topic = "ro"
	mustPost(t, n, "/topic/create", url.Values{"topic": {topic}})
	waitFor(t, 10*time.Second, "the topic in nsqlookupd", func() bool { return contains(c.lookupdTopics(t), topic) })
	a := startAdmin(t, c, func(o *Options) {
		o.AdminUsers = []string{"boss"}
		o.ACLHTTPHeader = "X-Auth-User"
	})
	u := a.url("/api/topics/" + topic)
	pause := func(h http.Header) int {
		req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(`{"action":"pause"}`))
		req.Header = h
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for name, h := range map[string]http.Header{
		"no header":            {},
		"default header":       {"X-Forwarded-User": {"boss"}},
		"other user":           {"X-Auth-User": {"mallory"}},
		"repeated header":      {"X-Auth-User": {"mallory", "boss"}},
		"repeated admin first": {"X-Auth-User": {"boss", "mallory"}},
		"empty user":           {"X-Auth-User": {""}},
	} {
		if code := pause(h); code != http.StatusForbidden {
			t.Fatalf("%s: %d, want 403", name, code)
		}
	}
	if nodeStatsOf(t, n).topic(topic).Paused {
		t.Fatal("a refused request paused the topic")
	}
	if code := pause(http.Header{"X-Auth-User": {"boss"}}); code != http.StatusOK {
		t.Fatalf("admin: %d", code)
	}
	if !nodeStatsOf(t, n).topic(topic).Paused {
		t.Fatal("admin pause did not pause the topic")
	}

	for name, mutate := range map[string]func(*Options){
		"empty admin user":     func(o *Options) { o.AdminUsers = []string{"boss", ""} },
		"admin without header": func(o *Options) { o.AdminUsers = []string{"boss"}; o.ACLHTTPHeader = "" },
		"no request timeout":   func(o *Options) { o.HTTPClientRequestTimeout = 0 },
		"no connect timeout":   func(o *Options) { o.HTTPClientConnectTimeout = 0 },
	} {
		o := NewOptions()
		o.NSQLookupdHTTPAddresses = []string{c.LookupdHTTP}
		mutate(o)
		if _, err := New(o); err == nil {
			t.Fatalf("%s: New accepted the options", name)
		}
	}
}

// TestAPIConfigIgnoresForwardedFor checks that /config's CIDR rule looks at the connection's
// address only: headers a client can set are never trusted.
func TestAPIConfigIgnoresForwardedFor(t *testing.T) {
	c := startCluster(t, 1)
	outside := startAdmin(t, c, func(o *Options) { o.AllowConfigFromCIDR = "192.0.2.0/24" })
	spoof := map[string]string{"X-Forwarded-For": "192.0.2.7", "X-Real-IP": "192.0.2.7", "Forwarded": "for=192.0.2.7"}
	for _, m := range []string{http.MethodGet, http.MethodPut} {
		body := ""
		if m == http.MethodPut {
			body = `["127.0.0.1:1"]`
		}
		if code, b := rawCall(t, m, outside.url("/config/nsqlookupd_http_addresses"), body, spoof); code != http.StatusForbidden {
			t.Fatalf("%s with a spoofed X-Forwarded-For: %d %s", m, code, b)
		}
	}
	if got := outside.cluster.lookupdAddrs(); len(got) != 1 || got[0] != c.LookupdHTTP {
		t.Fatalf("refused PUT changed the lookupds: %v", got)
	}
	inside := startAdmin(t, c, func(o *Options) { o.AllowConfigFromCIDR = "127.0.0.1/32" })
	if code, b := rawCall(t, http.MethodGet, inside.url("/config/nsqlookupd_http_addresses"), "",
		map[string]string{"X-Forwarded-For": "203.0.113.9"}); code != http.StatusOK {
		t.Fatalf("loopback client with a foreign X-Forwarded-For: %d %s", code, b)
	}
}

// TestNotificationSlowEndpoint points the notifications at an endpoint that never answers
// the first one: the actions still answer at once, the hung POST is abandoned after the
// upstream timeouts, and the next notification is delivered.
func TestNotificationSlowEndpoint(t *testing.T) {
	c := startCluster(t, 1)
	n := c.NSQDs[0].HTTP
	const topic = "notify"
	mustPost(t, n, "/topic/create", url.Values{"topic": {topic}})
	waitFor(t, 10*time.Second, "the topic in nsqlookupd", func() bool { return contains(c.lookupdTopics(t), topic) })

	release := make(chan struct{})
	var mu sync.Mutex
	var seen []time.Time
	var delivered []string
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, time.Now())
		first := len(seen) == 1
		mu.Unlock()
		if first {
			select { // hang until the admin gives up (or the test ends)
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		mu.Lock()
		delivered = append(delivered, string(body))
		mu.Unlock()
	}))
	defer sink.Close()
	defer close(release)

	a := startAdmin(t, c, func(o *Options) {
		o.NotificationHTTPEndpoint = sink.URL
		o.HTTPClientConnectTimeout = time.Second
		o.HTTPClientRequestTimeout = 2 * time.Second // a notification POST gets 3 s
	})
	start := time.Now()
	for _, action := range []string{"pause", "unpause"} {
		t0 := time.Now()
		code, b := call(t, http.MethodPost, a.url("/api/topics/"+topic), map[string]string{"action": action}, nil)
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", action, code, b)
		}
		if d := time.Since(t0); d > 2*time.Second {
			t.Fatalf("%s answered after %v: the hung notification endpoint held it up", action, d)
		}
	}
	waitFor(t, 10*time.Second, "the second notification", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(delivered) == 1
	})
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || !strings.Contains(delivered[0], `"action":"unpause_topic"`) {
		t.Fatalf("endpoint saw %d requests, delivered %q", len(seen), delivered)
	}
	if wait := seen[1].Sub(start); wait < 2*time.Second || wait > 8*time.Second {
		t.Fatalf("second notification sent %v after the actions, want after the 3 s timeout of the first", wait)
	}
}

// TestCheckNodeAddr checks which registered addresses the admin is willing to call.
func TestCheckNodeAddr(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:4151", "nsqd-1.internal:4151", "[::1]:4151"} {
		if err := checkNodeAddr(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "host", "host:", ":4151", "evil/x?:4151", "a@b:4151", "h#x:4151", "h:0", "h:70000", "h:http",
		xssPayload + ":4151", "h\n:4151"} {
		if err := checkNodeAddr(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
