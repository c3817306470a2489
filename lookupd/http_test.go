package lookupd

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"
)

type httpResult struct {
	status int
	body   string
	header http.Header
}

func doHTTP(t testing.TB, d *Daemon, method, path string) httpResult {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+d.HTTPAddr().String()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.nsq; version=1.0")
	client := &http.Client{
		Timeout:       5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return httpResult{resp.StatusCode, string(b), resp.Header}
}

// TestHTTPAPI walks every endpoint of §10 with exact status codes and bodies.
func TestHTTPAPI(t *testing.T) {
	d := startLookupd(t, nil)
	c := dialV1(t, d)
	c.identify("10.0.0.5", 4150, 4151)
	for _, l := range []string{"REGISTER orders archive", "REGISTER logs", "REGISTER orders tmp#ephemeral"} {
		if r := c.cmd(l); r != "OK" {
			t.Fatal(r)
		}
	}
	ra := c.LocalAddr().String()
	prod := fmt.Sprintf(`{"remote_address":"%s","hostname":"host-10.0.0.5","broadcast_address":"10.0.0.5","tcp_port":4150,"http_port":4151,"version":"1.3.0"}`, ra)

	steps := []struct {
		method, path string
		status       int
		body         string
	}{
		{"GET", "/info", 200, `{"version":"1.3.0"}`},
		{"GET", "/lookup?topic=orders", 200, `{"channels":["archive","tmp#ephemeral"],"producers":[` + prod + `]}`},
		{"GET", "/lookup?topic=nope", 404, `{"message":"TOPIC_NOT_FOUND"}`},
		{"GET", "/lookup?topic=bad!name", 404, `{"message":"TOPIC_NOT_FOUND"}`},
		{"GET", "/lookup", 400, `{"message":"MISSING_ARG_TOPIC"}`},
		{"GET", "/lookup?topic=%zz", 400, `{"message":"INVALID_REQUEST"}`},
		{"GET", "/lookup?topic=logs&topic=orders", 200, `{"channels":[],"producers":[` + prod + `]}`},
		{"GET", "/topics", 200, `{"topics":["logs","orders"]}`},
		{"GET", "/channels?topic=orders", 200, `{"channels":["archive","tmp#ephemeral"]}`},
		{"GET", "/channels?topic=nope", 200, `{"channels":[]}`},
		{"GET", "/channels", 400, `{"message":"MISSING_ARG_TOPIC"}`},
		{"GET", "/nodes", 200, `{"producers":[` + strings.TrimSuffix(prod, "}") + `,"tombstones":[false,false],"topics":["logs","orders"]}]}`},
		{"POST", "/topic/create", 400, `{"message":"MISSING_ARG_TOPIC"}`},
		{"POST", "/topic/create?topic=a!", 400, `{"message":"INVALID_ARG_TOPIC"}`},
		{"POST", "/topic/create?topic=new", 200, ``},
		{"POST", "/channel/create?topic=new", 400, `{"message":"MISSING_ARG_CHANNEL"}`},
		{"POST", "/channel/create?channel=c", 400, `{"message":"MISSING_ARG_TOPIC"}`},
		{"POST", "/channel/create?topic=new!&channel=c", 400, `{"message":"INVALID_ARG_TOPIC"}`},
		{"POST", "/channel/create?topic=new&channel=c!", 400, `{"message":"INVALID_ARG_CHANNEL"}`},
		{"POST", "/channel/create?topic=new&channel=cc", 200, ``},
		{"POST", "/channel/create?topic=other&channel=dd", 200, ``},
		{"GET", "/lookup?topic=new", 200, `{"channels":["cc"],"producers":[]}`},
		{"GET", "/topics", 200, `{"topics":["logs","new","orders","other"]}`},
		{"POST", "/channel/delete?topic=new&channel=zz", 404, `{"message":"CHANNEL_NOT_FOUND"}`},
		{"POST", "/channel/delete?topic=new", 400, `{"message":"MISSING_ARG_CHANNEL"}`},
		{"POST", "/channel/delete?topic=new&channel=cc", 200, ``},
		{"GET", "/channels?topic=new", 200, `{"channels":[]}`},
		{"POST", "/topic/delete", 400, `{"message":"MISSING_ARG_TOPIC"}`},
		{"POST", "/topic/delete?topic=nope", 200, ``},
		{"POST", "/topic/delete?topic=other", 200, ``},
		{"GET", "/channels?topic=other", 200, `{"channels":[]}`},
		{"GET", "/topic/delete?topic=new", 405, `{"message":"METHOD_NOT_ALLOWED"}`},
		{"GET", "/topic/tombstone?topic=new", 405, `{"message":"METHOD_NOT_ALLOWED"}`},
		{"POST", "/topic/tombstone", 400, `{"message":"MISSING_ARG_TOPIC"}`},
		{"POST", "/topic/tombstone?topic=orders", 400, `{"message":"MISSING_ARG_NODE"}`},
		{"POST", "/topic/tombstone?topic=orders&node=nope:1", 200, ``},
		{"GET", "/nope", 404, `{"message":"NOT_FOUND"}`},
		{"GET", "/ping", 200, `OK`},
	}
	for _, s := range steps {
		r := doHTTP(t, d, s.method, s.path)
		if r.status != s.status || r.body != s.body {
			t.Errorf("%s %s = %d %s\nwant %d %s", s.method, s.path, r.status, r.body, s.status, s.body)
		}
		wantNSQ := "nsq; version=1.0"
		if s.path == "/ping" {
			wantNSQ = ""
			if ct := r.header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
				t.Errorf("/ping content type %q", ct)
			}
		}
		if got := r.header.Get("X-NSQ-Content-Type"); got != wantNSQ {
			t.Errorf("%s %s: X-NSQ-Content-Type %q, want %q", s.method, s.path, got, wantNSQ)
		}
		if s.status == 200 && s.body == "" && (r.header.Get("Content-Type") != "" || r.header.Get("Content-Length") != "0") {
			t.Errorf("%s %s: empty 200 with headers %v", s.method, s.path, r.header)
		}
	}

	// /debug lists registrations with producers, keyed category:key:subkey.
	r := doHTTP(t, d, "GET", "/debug")
	for _, k := range []string{`"client::":[`, `"topic:orders:":[`, `"channel:orders:archive":[`, `"id":"` + ra + `"`, `"tombstoned":false`} {
		if !strings.Contains(r.body, k) {
			t.Errorf("/debug lacks %s: %s", k, r.body)
		}
	}
	if strings.Contains(r.body, `"topic:new:"`) {
		t.Errorf("/debug lists a registration without producers: %s", r.body)
	}
	if r := doHTTP(t, d, "GET", "/debug/pprof"); r.status != 200 || !strings.Contains(r.body, "goroutine") {
		t.Errorf("/debug/pprof: %d", r.status)
	}
	if r := doHTTP(t, d, "GET", "/debug/pprof/goroutine?debug=1"); r.status != 200 || !strings.Contains(r.body, "goroutine profile") {
		t.Errorf("/debug/pprof/goroutine: %d", r.status)
	}
}

// TestHTTPNodesTombstones: tombstones are parallel to topics in /nodes; a
// tombstoned node disappears from /lookup of that topic only, and comes back
// after --tombstone-lifetime; inactive producers are hidden from both.
func TestHTTPNodesTombstones(t *testing.T) {
	const lifetime = 500 * time.Millisecond
	d := startLookupd(t, func(o *Options) { o.TombstoneLifetime = lifetime })
	a := dialV1(t, d)
	a.identify("node-a", 4150, 4151)
	b := dialV1(t, d)
	b.identify("node-b", 4150, 4151)
	for _, c := range []*v1conn{a, b} {
		for _, topic := range []string{"t1", "t2", "t3"} {
			if r := c.cmd("REGISTER " + topic); r != "OK" {
				t.Fatal(r)
			}
		}
	}
	if r := doHTTP(t, d, "POST", "/topic/tombstone?topic=t2&node=node-a:4151"); r.status != 200 {
		t.Fatalf("tombstone: %d %s", r.status, r.body)
	}
	nodes := d.Registry().Nodes(time.Now())
	if len(nodes) != 2 {
		t.Fatalf("nodes %d", len(nodes))
	}
	for _, n := range nodes {
		for i, topic := range n.Topics {
			want := n.BroadcastAddress == "node-a" && topic == "t2"
			if n.Tombstones[i] != want {
				t.Errorf("node %s topic %s tombstoned=%v, want %v", n.BroadcastAddress, topic, n.Tombstones[i], want)
			}
		}
	}
	r := doHTTP(t, d, "GET", "/lookup?topic=t2")
	if strings.Contains(r.body, "node-a") || !strings.Contains(r.body, "node-b") {
		t.Fatalf("tombstoned lookup: %s", r.body)
	}
	if r := doHTTP(t, d, "GET", "/lookup?topic=t1"); !strings.Contains(r.body, "node-a") {
		t.Fatalf("other topic lost node-a: %s", r.body)
	}
	if r := doHTTP(t, d, "GET", "/nodes"); !strings.Contains(r.body, `"broadcast_address":"node-a"`) {
		t.Fatalf("/nodes must keep tombstoned node: %s", r.body)
	}
	waitFor(t, "tombstone to expire", func() bool {
		return strings.Contains(doHTTP(t, d, "GET", "/lookup?topic=t2").body, "node-a")
	})
}

func TestHTTPInactiveProducers(t *testing.T) {
	d := startLookupd(t, func(o *Options) { o.InactiveProducerTimeout = 300 * time.Millisecond })
	c := dialV1(t, d)
	c.identify("node-a", 4150, 4151)
	c.cmd("REGISTER t")
	waitFor(t, "producer hidden as inactive", func() bool {
		return doHTTP(t, d, "GET", "/lookup?topic=t").body == `{"channels":[],"producers":[]}` &&
			doHTTP(t, d, "GET", "/nodes").body == `{"producers":[]}`
	})
	// Hidden, not removed: a PING brings it back.
	if r := c.cmd("PING"); r != "OK" {
		t.Fatal(r)
	}
	if r := doHTTP(t, d, "GET", "/lookup?topic=t"); !strings.Contains(r.body, "node-a") {
		t.Fatalf("after PING: %s", r.body)
	}
}

// TestGoNSQConsumerDiscovery: go-nsq's ConnectToNSQLookupd finds the producer
// through /lookup and dials its broadcast_address:tcp_port.
func TestGoNSQConsumerDiscovery(t *testing.T) {
	d := startLookupd(t, nil)
	// A stand-in nsqd TCP port that records the V2 magic it receives.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	magic := make(chan string, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 4)
		if _, err := io.ReadFull(conn, b); err == nil {
			magic <- string(b)
		}
	}()
	c := dialV1(t, d)
	c.identify("127.0.0.1", ln.Addr().(*net.TCPAddr).Port, 1)
	c.cmd("REGISTER disco ch")

	cfg := nsq.NewConfig()
	cfg.LookupdPollInterval = time.Second
	consumer, err := nsq.NewConsumer("disco", "ch", cfg)
	if err != nil {
		t.Fatal(err)
	}
	consumer.SetLogger(nil, nsq.LogLevelError)
	consumer.AddHandler(nsq.HandlerFunc(func(*nsq.Message) error { return nil }))
	if err := consumer.ConnectToNSQLookupd(d.HTTPAddr().String()); err != nil {
		t.Fatal(err)
	}
	defer consumer.Stop()
	select {
	case m := <-magic:
		if m != "  V2" {
			t.Fatalf("magic %q", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("go-nsq consumer never dialled the registered producer")
	}
}

func TestMetrics(t *testing.T) {
	d := startLookupd(t, nil)
	c := dialV1(t, d)
	c.identify("node-a", 4150, 4151)
	c.cmd("REGISTER t1 c1")
	c.cmd("REGISTER t2")
	bad := dialV1(t, d)
	bad.cmd("NOPE")
	bad.expectClosed()
	d.Registry().CreateChannel("t3", "c3")

	r := doHTTP(t, d, "GET", "/metrics")
	if r.status != 200 {
		t.Fatalf("/metrics status %d", r.status)
	}
	for _, line := range []string{
		"nsqlookupd_producers 1",
		"nsqlookupd_active_producers 1",
		"nsqlookupd_topics 3",
		"nsqlookupd_channels 2",
		"nsqlookupd_connections_total 2",
		"nsqlookupd_protocol_errors_total 1",
		"nsqlookupd_peers_timed_out_total 0",
		"go_goroutines ",
	} {
		if !strings.Contains(r.body, "\n"+line) {
			t.Errorf("/metrics lacks %q", line)
		}
	}
}
