package lookupd

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicemq/sluice/protocol"
)

// A new connection from the same ip:port replaces the old peer entirely: it
// inherits neither registrations nor tombstones, and the old connection's
// handle can no longer add, remove or touch anything.
func TestRegistrySameAddressReconnect(t *testing.T) {
	r := newTestRegistry()
	old := r.AddPeer(peer("a:1", "ha", 4151), t0)
	old.Register("gone", "ch")
	old.Register("t", "")
	r.Tombstone("t", "ha:4151", t0)

	cur := r.AddPeer(peer("a:1", "ha", 4151), t0.Add(time.Second))
	if _, p, ok := r.Lookup("gone", t0); !ok || len(p) != 0 {
		t.Fatalf("old connection's registration survived: found=%v producers=%q", ok, ids(p))
	}
	if !cur.Register("t", "") {
		t.Fatal("new handle cannot register")
	}
	if _, p, _ := r.Lookup("t", t0.Add(2*time.Second)); !reflect.DeepEqual(ids(p), []string{"a:1"}) {
		t.Fatalf("new connection inherited the old tombstone: producers %q", ids(p))
	}
	if old.Register("x", "c") || old.Unregister("t", "") || old.Touch(t0) {
		t.Fatal("superseded handle still acts")
	}
	if old.Remove() {
		t.Fatal("superseded handle removed its successor")
	}
	if _, p, _ := r.Lookup("t", t0.Add(2*time.Second)); len(p) != 1 {
		t.Fatalf("successor lost its registration: %q", ids(p))
	}
	if _, _, ok := r.Lookup("x", t0); ok {
		t.Fatal("superseded handle created a registration")
	}
	want := map[string][]string{"a:1": {"t=false"}}
	if n := nodeTopics(r.Nodes(t0.Add(2 * time.Second))); !reflect.DeepEqual(n, want) {
		t.Fatalf("nodes %v, want %v", n, want)
	}
	if !cur.Remove() || len(r.Nodes(t0)) != 0 {
		t.Fatal("current handle did not remove itself")
	}
}

// REGISTERs racing the removal of their connection leave nothing behind:
// a removed handle cannot register again.
func TestRegistryRegisterRacingRemove(t *testing.T) {
	r := newTestRegistry()
	for i := range 200 {
		h := r.AddPeer(peer(fmt.Sprintf("p:%d", i), "h", 4151), t0)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				h.Register(fmt.Sprintf("t%d", j), "c")
			}
		}()
		h.Remove()
		wg.Wait()
		if h.Register("late", "c") {
			t.Fatal("removed handle registered")
		}
	}
	if n := len(r.Nodes(t0)); n != 0 {
		t.Fatalf("%d peers left", n)
	}
	if d := r.Debug(); len(d) != 0 {
		t.Fatalf("producers left behind: %v", d)
	}
}

// dialFrom connects to d's TCP port from a fixed local port (port 0: any).
func dialFrom(t *testing.T, d *Daemon, port int) *v1conn {
	t.Helper()
	dl := net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port},
		Timeout:   2 * time.Second,
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
	c, err := dl.Dial("tcp", d.TCPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.Write([]byte(protocol.MagicV1))
	return &v1conn{t: t, Conn: c}
}

// An nsqd whose connection was reset reconnects from the same ip:port
// before lookupd's goroutine for the old connection has cleaned up. The old
// goroutine's cleanup must not remove the new connection's registrations,
// and the new connection must not inherit the old one's.
func TestTCPReconnectFromSameAddress(t *testing.T) {
	closing := make(chan string, 1)
	release := make(chan struct{})
	d := startLookupd(t, nil)
	var once sync.Once
	d.testHookPeerClose = func(id string) {
		once.Do(func() { // only the first (old) connection waits
			closing <- id
			<-release
		})
	}

	a := dialFrom(t, d, 0)
	port := a.LocalAddr().(*net.TCPAddr).Port
	a.identify("127.0.0.1", 4150, 4151)
	if r := a.cmd("REGISTER old ch"); r != "OK" {
		t.Fatalf("REGISTER: %q", r)
	}
	// Reset (no TIME_WAIT), so the port is free at once.
	a.Conn.(*net.TCPConn).SetLinger(0)
	a.Close()
	id := <-closing // the old connection's goroutine is about to clean up

	b := dialFrom(t, d, port)
	if b.LocalAddr().String() != id {
		t.Fatalf("reconnected from %s, want %s", b.LocalAddr(), id)
	}
	b.identify("127.0.0.1", 4150, 4151)
	if r := b.cmd("REGISTER new ch"); r != "OK" {
		t.Fatalf("REGISTER: %q", r)
	}
	close(release)
	waitFor(t, "old connection closed", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return len(d.conns) == 1
	})
	if got := producerIDs(d, "new"); !reflect.DeepEqual(got, []string{id}) {
		t.Fatalf("new connection's registration lost: producers %q", got)
	}
	if got := producerIDs(d, "old"); len(got) != 0 {
		t.Fatalf("old connection's registration still listed: %q", got)
	}
	if r := b.cmd("PING"); r != "OK" {
		t.Fatalf("PING: %q", r)
	}
}

// An IDENTIFY announcing a large body is read as it arrives: a peer that
// announces 5 MiB and then sends a few bytes does not make lookupd
// allocate 5 MiB.
func TestTCPIdentifySizeNotPreallocated(t *testing.T) {
	d := startLookupd(t, nil)
	const conns = 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range conns {
		c := dialV1(t, d)
		msg := append([]byte("IDENTIFY\n"), sizePrefix(protocol.MaxLookupIdentifySize)...)
		c.send(append(msg, `{"broadcast_address"`...))
		c.Conn.(*net.TCPConn).CloseWrite()
		if r := c.mustReply(); r != "E_BAD_BODY IDENTIFY failed to read body" {
			t.Fatalf("reply %q", r)
		}
	}
	runtime.ReadMemStats(&after)
	grew := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d truncated 5 MiB IDENTIFYs allocated %d KiB in total", conns, grew>>10)
	if grew > 16<<20 {
		t.Fatalf("%d truncated IDENTIFYs allocated %d MiB", conns, grew>>20)
	}
}

// With 10,000 topics, /debug and /nodes answers are megabytes. Clients that
// do not read them must not stall registrations: no handler may hold the
// registry lock while writing to the network.
func TestHTTPSlowReaderDoesNotBlockRegistry(t *testing.T) {
	d := startLookupd(t, nil)
	r := d.Registry()
	for p := range 3 {
		h := r.AddPeer(peer(fmt.Sprintf("10.0.0.%d:4000", p), "h", 4151), time.Now())
		for i := range 10000 {
			h.Register(fmt.Sprintf("topic-%05d-with-a-longish-name", i), "")
		}
	}
	for _, path := range []string{"/debug", "/nodes", "/topics", "/debug", "/nodes"} {
		c, err := net.Dial("tcp", d.HTTPAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.(*net.TCPConn).SetReadBuffer(4096)
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
		// Read the status line only, so the handler has started writing,
		// then leave the rest (megabytes) unread.
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReaderSize(c, 64).ReadString('\n')
		if err != nil || !strings.Contains(line, "200") {
			t.Fatalf("%s: status line %q, %v", path, line, err)
		}
	}
	c := dialV1(t, d)
	c.identify("127.0.0.1", 4150, 4151)
	start := time.Now()
	for i := range 50 {
		if rep := c.cmd(fmt.Sprintf("REGISTER fresh%d", i)); rep != "OK" {
			t.Fatalf("REGISTER: %q", rep)
		}
	}
	r.CreateTopic("created")
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("registrations took %v while slow HTTP readers were pending", el)
	}
	res := doHTTP(t, d, "GET", "/lookup?topic=fresh49")
	var body struct {
		Producers []json.RawMessage `json:"producers"`
	}
	if err := json.Unmarshal([]byte(res.body), &body); err != nil || len(body.Producers) != 1 {
		t.Fatalf("/lookup: %d %s", res.status, res.body)
	}
}

// A client that stops reading a large answer loses its connection after
// the write timeout instead of pinning a connection and a goroutine forever.
func TestHTTPWriteTimeoutReleasesSlowReader(t *testing.T) {
	d, err := New(func() *Options {
		o := NewOptions()
		o.TCPAddress, o.HTTPAddress, o.BroadcastAddress = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1"
		return o
	}())
	if err != nil {
		t.Fatal(err)
	}
	d.httpWriteTimeout = 300 * time.Millisecond
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Exit)
	h := d.Registry().AddPeer(peer("10.0.0.1:4000", "h", 4151), time.Now())
	for i := range 20000 {
		h.Register(fmt.Sprintf("topic-%05d-with-a-longish-name", i), "")
	}
	c, err := net.Dial("tcp", d.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(c, "GET /debug HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(time.Second) // stay past the write timeout without reading
	// The server has given up on the response and closed the connection
	// (its kernel may still be draining the send buffer to us, slowly): a
	// graceful shutdown finds no active connection. Without the deadline,
	// Shutdown waits its full 5 s for the blocked response.
	start := time.Now()
	d.Exit()
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("Exit took %v: the response to a non-reading client was still being written", el)
	}
}

// A parameter that is present but empty is not "missing" (reference
// behaviour, checked against nsqlookupd 1.3.0): only an absent one is.
func TestHTTPEmptyVersusMissingParams(t *testing.T) {
	d := startLookupd(t, nil)
	for _, tc := range []struct {
		method, path string
		status       int
		body         string
	}{
		{"GET", "/lookup?topic=", 404, `{"message":"TOPIC_NOT_FOUND"}`},
		{"GET", "/lookup?topic", 404, `{"message":"TOPIC_NOT_FOUND"}`},
		{"GET", "/channels?topic=", 200, `{"channels":[]}`},
		{"POST", "/topic/create?topic=", 400, `{"message":"INVALID_ARG_TOPIC"}`},
		{"POST", "/topic/delete?topic=", 200, ``},
		{"POST", "/channel/create?topic=t&channel=", 400, `{"message":"INVALID_ARG_CHANNEL"}`},
		{"POST", "/channel/create?topic=&channel=c", 400, `{"message":"INVALID_ARG_TOPIC"}`},
		{"POST", "/channel/delete?topic=t&channel=", 400, `{"message":"INVALID_ARG_CHANNEL"}`},
		{"POST", "/channel/delete?topic=&channel=c", 400, `{"message":"INVALID_ARG_TOPIC"}`},
		{"POST", "/topic/tombstone?topic=&node=x:1", 200, ``},
		{"POST", "/topic/tombstone?topic=t&node=", 200, ``},
		{"POST", "/topic/tombstone?topic=t&node", 200, ``},
		{"POST", "/channel/create?topic=t", 400, `{"message":"MISSING_ARG_CHANNEL"}`},
		{"POST", "/topic/tombstone?topic=t", 400, `{"message":"MISSING_ARG_NODE"}`},
	} {
		res := doHTTP(t, d, tc.method, tc.path)
		if res.status != tc.status || res.body != tc.body {
			t.Errorf("%s %s = %d %s, want %d %s", tc.method, tc.path, res.status, res.body, tc.status, tc.body)
		}
	}
	if got := d.Registry().Topics(); len(got) != 0 {
		t.Fatalf("topics created: %q", got)
	}
}
