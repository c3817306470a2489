package lookupd

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// httpConn is a raw HTTP/1.1 client connection to the lookupd.
type httpConn struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dialHTTP(t testing.TB, d *Daemon) *httpConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", d.HTTPAddr().String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &httpConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (h *httpConn) send(raw string) {
	h.t.Helper()
	h.c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(h.c, raw); err != nil {
		h.t.Fatalf("write: %v", err)
	}
}

// response reads one response: its head as sent (Date's value replaced by
// DATE) and its body.
func (h *httpConn) response() (head, body string) {
	h.t.Helper()
	h.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var sb strings.Builder
	length := -1
	for {
		line, err := h.br.ReadString('\n')
		if err != nil {
			h.t.Fatalf("read response head (%q so far): %v", sb.String(), err)
		}
		if v, ok := strings.CutPrefix(line, "Date: "); ok {
			if _, err := time.Parse(http.TimeFormat, strings.TrimSpace(v)); err != nil {
				h.t.Errorf("Date %q: %v", v, err)
			}
			line = "Date: DATE\r\n"
		}
		if v, ok := strings.CutPrefix(line, "Content-Length: "); ok {
			length, _ = strconv.Atoi(strings.TrimSpace(v))
		}
		sb.WriteString(line)
		if line == "\r\n" {
			break
		}
	}
	if length < 0 { // the answer ends with the connection
		b, _ := io.ReadAll(h.br)
		return sb.String(), string(b)
	}
	b := make([]byte, length)
	if _, err := io.ReadFull(h.br, b); err != nil {
		h.t.Fatalf("read body: %v", err)
	}
	return sb.String(), string(b)
}

func (h *httpConn) roundTrip(raw string) (head, body string) {
	h.t.Helper()
	h.send(raw)
	return h.response()
}

// expectClosed checks the lookupd closed the connection.
func (h *httpConn) expectClosed() {
	h.t.Helper()
	h.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := h.br.ReadByte(); err == nil {
		h.t.Fatalf("connection still open: read %q", b)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		h.t.Fatal("connection still open")
	}
}

func get(target string, headers ...string) string {
	return "GET " + target + " HTTP/1.1\r\nHost: lookupd.test\r\n" + strings.Join(headers, "") + "\r\n"
}

// registerProducer identifies a registration connection as broadcast
// address bcast and registers topic with channels.
func registerProducer(t *testing.T, d *Daemon, bcast, topic string, channels ...string) *v1conn {
	t.Helper()
	c := dialV1(t, d)
	c.identify(bcast, 4150, 4151)
	if r := c.cmd("REGISTER " + topic); r != "OK" {
		t.Fatalf("REGISTER %s: %q", topic, r)
	}
	for _, ch := range channels {
		if r := c.cmd("REGISTER " + topic + " " + ch); r != "OK" {
			t.Fatalf("REGISTER %s %s: %q", topic, ch, r)
		}
	}
	return c
}

// A /lookup answered by the front has the bytes net/http sends for the
// same request (which the front hands over when, say, it carries a
// Connection header).
func TestLookupAnswerBytesSameOnFrontAndNetHTTP(t *testing.T) {
	d := startLookupd(t, nil)
	registerProducer(t, d, "10.0.0.1", "orders", "billing", "audit")
	registerProducer(t, d, "10.0.0.2", "orders", "billing")

	front := dialHTTP(t, d)
	before := d.front.served.Load()
	fHead, fBody := front.roundTrip(get("/lookup?topic=orders", "User-Agent: test\r\n"))
	if got := d.front.served.Load() - before; got != 1 {
		t.Fatalf("front answered %d requests, want 1", got)
	}
	std := dialHTTP(t, d)
	sHead, sBody := std.roundTrip(get("/lookup?topic=orders", "Connection: keep-alive\r\n", "User-Agent: test\r\n"))
	if got := d.front.served.Load() - before; got != 1 {
		t.Fatalf("front answered a request with a Connection header")
	}
	if fHead != sHead || fBody != sBody {
		t.Fatalf("front:\n%s%s\nnet/http:\n%s%s", fHead, fBody, sHead, sBody)
	}
	wantHead := "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(fBody)) +
		"\r\nContent-Type: application/json; charset=utf-8\r\nX-Nsq-Content-Type: nsq; version=1.0\r\nDate: DATE\r\n\r\n"
	if fHead != wantHead {
		t.Errorf("head %q, want %q", fHead, wantHead)
	}
	var ans struct {
		Channels  []string `json:"channels"`
		Producers []struct {
			RemoteAddress    string `json:"remote_address"`
			Hostname         string `json:"hostname"`
			BroadcastAddress string `json:"broadcast_address"`
			TCPPort          int    `json:"tcp_port"`
			HTTPPort         int    `json:"http_port"`
			Version          string `json:"version"`
		} `json:"producers"`
	}
	if err := json.Unmarshal([]byte(fBody), &ans); err != nil {
		t.Fatal(err)
	}
	if strings.Join(ans.Channels, ",") != "audit,billing" || len(ans.Producers) != 2 ||
		ans.Producers[0].Hostname != "host-10.0.0.1" && ans.Producers[1].Hostname != "host-10.0.0.1" ||
		ans.Producers[0].TCPPort != 4150 || ans.Producers[0].Version != "1.3.0" {
		t.Errorf("answer %s", fBody)
	}
	// The key order and spelling of NSQ's /lookup.
	if !regexp.MustCompile(`^\{"channels":\["audit","billing"\],"producers":\[\{"remote_address":"127\.0\.0\.1:\d+","hostname":"host-10\.0\.0\.[12]","broadcast_address":"10\.0\.0\.[12]","tcp_port":4150,"http_port":4151,"version":"1\.3\.0"\},\{`).MatchString(fBody) {
		t.Errorf("answer %s", fBody)
	}
}

// Every request the front does not answer itself gets net/http's answer,
// on the same connection, which net/http then keeps serving.
func TestHTTPFrontHandsOverOtherRequests(t *testing.T) {
	d := startLookupd(t, nil)
	registerProducer(t, d, "10.0.0.1", "orders", "billing")
	_, want := dialHTTP(t, d).roundTrip(get("/lookup?topic=orders"))

	cases := []struct {
		name, req, status, body string
		closes                  bool
	}{
		{"unknown topic", get("/lookup?topic=nope"), "404 Not Found", `{"message":"TOPIC_NOT_FOUND"}`, false},
		{"no topic", get("/lookup?channel=x"), "400 Bad Request", `{"message":"MISSING_ARG_TOPIC"}`, false},
		{"bad escape", get("/lookup?topic=a%zz"), "400 Bad Request", `{"message":"INVALID_REQUEST"}`, false},
		{"escaped name", get("/lookup?topic=%6Frders"), "200 OK", want, false},
		{"empty topic", get("/lookup?topic="), "404 Not Found", `{"message":"TOPIC_NOT_FOUND"}`, false},
		{"connection close", get("/lookup?topic=orders", "Connection: close\r\n"), "200 OK", want, true},
		{"HTTP/1.0", "GET /lookup?topic=orders HTTP/1.0\r\n\r\n", "200 OK", want, true},
		{"other path", get("/topics"), "200 OK", `{"topics":["orders"]}`, false},
		{"create", "POST /topic/create?topic=fresh HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", "200 OK", "", false},
		{"body", "GET /lookup?topic=orders HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", "200 OK", want, false},
		{"HEAD-less case", get("/LOOKUP?topic=orders"), "301 Moved Permanently", "", false},
		{"no Host", "GET /lookup?topic=orders HTTP/1.1\r\n\r\n", "400 Bad Request", "", true},
		{"two Hosts", "GET /lookup?topic=orders HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "400 Bad Request", "", true},
		{"folded header", get("/lookup?topic=orders", "X-A: 1\r\n 2\r\n"), "200 OK", want, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialHTTP(t, d)
			before := d.front.served.Load()
			head, body := c.roundTrip(tc.req)
			if !strings.HasPrefix(head, "HTTP/1.") || !strings.Contains(strings.SplitN(head, "\r\n", 2)[0], tc.status) {
				t.Fatalf("status line of %q", head)
			}
			if tc.body != "" && body != tc.body || tc.body == "" && tc.status == "200 OK" && body != "" {
				t.Errorf("body %q, want %q", body, tc.body)
			}
			if d.front.served.Load() != before {
				t.Errorf("the front answered %q itself", tc.req)
			}
			if tc.closes {
				c.expectClosed()
				return
			}
			// net/http keeps serving the connection, /lookup included.
			if _, again := c.roundTrip(get("/lookup?topic=orders")); again != want {
				t.Errorf("then /lookup: %q", again)
			}
			if d.front.served.Load() != before {
				t.Error("a handed-over connection came back to the front")
			}
		})
	}
}

// The front reads the query as url.ParseQuery does: the first topic
// parameter counts, other parameters are ignored.
func TestHTTPFrontQueryParameters(t *testing.T) {
	d := startLookupd(t, nil)
	registerProducer(t, d, "10.0.0.1", "orders", "billing")
	c := dialHTTP(t, d)
	_, want := c.roundTrip(get("/lookup?topic=orders"))
	before := d.front.served.Load()
	for _, target := range []string{"/lookup?topic=orders&topic=nope", "/lookup?x=1&topic=orders", "/lookup?&topic=orders&", "/lookup?topicx=nope&topic=orders"} {
		if _, body := c.roundTrip(get(target)); body != want {
			t.Errorf("%s: %q, want %q", target, body, want)
		}
	}
	if got := d.front.served.Load() - before; got != 4 {
		t.Errorf("front answered %d of 4", got)
	}
}

// Requests sent together are answered in order, across a hand-over too.
func TestHTTPFrontPipelinedRequests(t *testing.T) {
	d := startLookupd(t, nil)
	registerProducer(t, d, "10.0.0.1", "a", "x")
	registerProducer(t, d, "10.0.0.1", "b", "y")
	c := dialHTTP(t, d)
	_, wantA := c.roundTrip(get("/lookup?topic=a"))
	_, wantB := c.roundTrip(get("/lookup?topic=b"))
	before := d.front.served.Load()
	c.send(get("/lookup?topic=a") + get("/lookup?topic=b") + get("/lookup?topic=a"))
	for i, want := range []string{wantA, wantB, wantA} {
		if _, body := c.response(); body != want {
			t.Errorf("answer %d: %q, want %q", i, body, want)
		}
	}
	if got := d.front.served.Load() - before; got != 3 {
		t.Errorf("front answered %d of 3", got)
	}
	c.send(get("/lookup?topic=b") + get("/lookup?topic=none") + get("/lookup?topic=a"))
	for i, want := range []string{wantB, `{"message":"TOPIC_NOT_FOUND"}`, wantA} {
		if _, body := c.response(); body != want {
			t.Errorf("answer %d: %q, want %q", i, body, want)
		}
	}
}

func lookupProducers(t *testing.T, c *httpConn, topic string) (int, []string) {
	t.Helper()
	head, body := c.roundTrip(get("/lookup?topic=" + topic))
	code, _ := strconv.Atoi(head[len("HTTP/1.1 ") : len("HTTP/1.1 ")+3])
	if code != http.StatusOK {
		return code, nil
	}
	var ans struct {
		Channels  []string `json:"channels"`
		Producers []struct {
			BroadcastAddress string `json:"broadcast_address"`
		} `json:"producers"`
	}
	if err := json.Unmarshal([]byte(body), &ans); err != nil {
		t.Fatal(err)
	}
	out := []string{"channels=" + strings.Join(ans.Channels, ",")}
	for _, p := range ans.Producers {
		out = append(out, p.BroadcastAddress)
	}
	return code, out
}

// The cached answers follow every change: registrations, unregistrations,
// tombstones and their end, producers turning inactive and active again,
// deletions.
func TestLookupAnswerFollowsRegistryChanges(t *testing.T) {
	d := startLookupd(t, func(o *Options) {
		o.TombstoneLifetime = 300 * time.Millisecond
		o.InactiveProducerTimeout = 600 * time.Millisecond
	})
	p1 := registerProducer(t, d, "10.0.0.1", "orders", "billing")
	p2 := registerProducer(t, d, "10.0.0.2", "orders")
	c := dialHTTP(t, d)
	expect := func(what string, code int, want ...string) {
		t.Helper()
		gotCode, got := lookupProducers(t, c, "orders")
		if gotCode != code || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: %d %v, want %d %v", what, gotCode, got, code, want)
		}
	}
	eventually := func(what string, want ...string) {
		t.Helper()
		waitFor(t, what, func() bool {
			_, got := lookupProducers(t, c, "orders")
			return fmt.Sprint(got) == fmt.Sprint(want)
		})
	}
	expect("registered", 200, "channels=billing", "10.0.0.1", "10.0.0.2")
	expect("again (cached)", 200, "channels=billing", "10.0.0.1", "10.0.0.2")
	if r := p2.cmd("REGISTER orders audit"); r != "OK" {
		t.Fatal(r)
	}
	expect("channel added", 200, "channels=audit,billing", "10.0.0.1", "10.0.0.2")
	if r := p1.cmd("UNREGISTER orders"); r != "OK" {
		t.Fatal(r)
	}
	expect("producer unregistered", 200, "channels=audit,billing", "10.0.0.2")
	if r := p1.cmd("REGISTER orders"); r != "OK" {
		t.Fatal(r)
	}
	expect("producer back", 200, "channels=audit,billing", "10.0.0.1", "10.0.0.2")

	resp, err := http.Post("http://"+d.HTTPAddr().String()+"/topic/tombstone?topic=orders&node=10.0.0.1:4151", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	expect("tombstoned", 200, "channels=audit,billing", "10.0.0.2")
	// Both keep pinging until the tombstone ends: then 10.0.0.1 is back.
	eventually("tombstone ended", "channels=audit,billing", "10.0.0.1", "10.0.0.2")

	// 10.0.0.1 stops pinging: it turns inactive; its PING brings it back.
	waitFor(t, "10.0.0.1 inactive", func() bool {
		if r := p2.cmd("PING"); r != "OK" {
			t.Fatal(r)
		}
		_, got := lookupProducers(t, c, "orders")
		return fmt.Sprint(got) == fmt.Sprint([]string{"channels=audit,billing", "10.0.0.2"})
	})
	if r := p1.cmd("PING"); r != "OK" {
		t.Fatal(r)
	}
	if r := p2.cmd("PING"); r != "OK" {
		t.Fatal(r)
	}
	expect("10.0.0.1 pinged", 200, "channels=audit,billing", "10.0.0.1", "10.0.0.2")

	p2.Close()
	eventually("10.0.0.2 disconnected", "channels=audit,billing", "10.0.0.1")
	resp, err = http.Post("http://"+d.HTTPAddr().String()+"/topic/delete?topic=orders", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	expect("deleted", 404)
}

// Exit closes connections the front serves, idle or not, and returns.
func TestHTTPFrontConnectionsCloseAtExit(t *testing.T) {
	opts := NewOptions()
	opts.TCPAddress, opts.HTTPAddress = "127.0.0.1:0", "127.0.0.1:0"
	d, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	registerProducer(t, d, "10.0.0.1", "orders")
	idle := dialHTTP(t, d)
	idle.roundTrip(get("/lookup?topic=orders"))
	handed := dialHTTP(t, d)
	handed.roundTrip(get("/ping"))
	fresh := dialHTTP(t, d)
	done := make(chan struct{})
	go func() { d.Exit(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Exit did not return")
	}
	for _, c := range []*httpConn{idle, handed, fresh} {
		c.expectClosed()
	}
}

// BenchmarkHTTPLookupRaw: one keep-alive connection sending GET /lookup and
// reading the answer, through the front and, for comparison, through
// net/http (a Connection header hands the connection over).
func BenchmarkHTTPLookupRaw(b *testing.B) {
	d := startLookupd(b, nil)
	for i := 0; i < 3; i++ {
		d.Registry().AddPeer(PeerInfo{ID: fmt.Sprintf("127.0.0.1:%d", 5000+i), RemoteAddress: fmt.Sprintf("127.0.0.1:%d", 5000+i),
			Hostname: "h", BroadcastAddress: fmt.Sprintf("10.0.0.%d", i), TCPPort: 4150, HTTPPort: 4151, Version: "1.3.0"}, time.Now())
		for _, ch := range []string{"a", "b"} {
			d.Registry().Register(fmt.Sprintf("127.0.0.1:%d", 5000+i), "orders", ch)
		}
	}
	for _, path := range []struct{ name, extra string }{{"front", ""}, {"net-http", "Connection: keep-alive\r\n"}} {
		b.Run(path.name, func(b *testing.B) {
			c := dialHTTP(b, d)
			req := []byte(get("/lookup?topic=orders", path.extra))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := c.c.Write(req); err != nil {
					b.Fatal(err)
				}
				// Read the answer without allocating: head lines, then
				// Content-Length bytes of body.
				length := -1
				for {
					line, err := c.br.ReadSlice('\n')
					if err != nil {
						b.Fatal(err)
					}
					if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
						length, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
					}
					if len(line) == 2 {
						break
					}
				}
				if n, err := c.br.Discard(length); err != nil || n != length || length < 100 {
					b.Fatalf("body of %d bytes: %v", length, err)
				}
			}
		})
	}
}
