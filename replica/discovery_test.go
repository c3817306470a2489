package replica_test

import (
	"context"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/lookupdtest"
	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/lookupd"
	"github.com/sluicemq/sluice/nsqd"
	"github.com/sluicemq/sluice/replica"
)

// startNSQD starts an nsqd registered with the given lookupds.
func startNSQD(t *testing.T, lookupds ...*lookupd.Daemon) *testutil.NSQDHandle {
	t.Helper()
	return testutil.StartNSQD(t, func(o *nsqd.Options) {
		for _, l := range lookupds {
			o.NSQLookupdTCPAddresses = append(o.NSQLookupdTCPAddresses, l.TCPAddr().String())
		}
	})
}

// fakeLookupd answers /nodes with whatever body() returns (status 500 when
// it returns ""), and records requests and their Accept headers.
type fakeLookupd struct {
	*httptest.Server
	requests atomic.Int64
	accept   atomic.Value // string
	body     atomic.Value // string
}

func startFakeLookupd(t *testing.T, body string) *fakeLookupd {
	f := &fakeLookupd{}
	f.body.Store(body)
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		f.accept.Store(r.Header.Get("Accept"))
		b := f.body.Load().(string)
		if r.URL.Path != "/nodes" || b == "" {
			http.Error(w, "nope", http.StatusInternalServerError)
			return
		}
		w.Write([]byte(b))
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeLookupd) addr() string { return strings.TrimPrefix(f.URL, "http://") }

// waitRequests waits until f has served n more requests: n more polls.
func (f *fakeLookupd) waitRequests(t *testing.T, n int64) {
	t.Helper()
	want := f.requests.Load() + n
	testutil.WaitFor(t, 10*time.Second, func() bool { return f.requests.Load() >= want }, "%d more polls", n)
}

// nodeMap is what Discovery should publish for these node addresses.
func nodeMap(addrs ...string) map[uint64]string {
	m := make(map[uint64]string)
	for _, a := range addrs {
		m[replica.NodeID(a)] = a
	}
	return m
}

// changes records OnChange calls.
type changes struct {
	mu    sync.Mutex
	calls []map[uint64]string
}

func (c *changes) onChange(m map[uint64]string) {
	c.mu.Lock()
	c.calls = append(c.calls, m)
	c.mu.Unlock()
}

func (c *changes) last() (map[uint64]string, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.calls) == 0 {
		return nil, 0
	}
	return c.calls[len(c.calls)-1], len(c.calls)
}

// TestDiscoveryMergesLookupds: the nodes registered with two real
// nsqlookupds, and those listed by a pre-1.0 lookupd that wraps its answer,
// are merged into one map despite a lookupd that fails; OnChange is called
// only when the map changes; a node that leaves is forgotten after
// ForgetAfter; when every lookupd fails, nothing is forgotten; Run returns
// when its context ends.
func TestDiscoveryMergesLookupds(t *testing.T) {
	l1, l2 := lookupdtest.Start(t, nil), lookupdtest.Start(t, nil)
	a := startNSQD(t, l1)
	b := startNSQD(t, l1, l2)
	c := startNSQD(t, l2)
	legacy := startFakeLookupd(t, `{"status_code":200,"status_txt":"OK","data":{"producers":[`+
		`{"remote_address":"10.9.9.9:5555","hostname":"old","broadcast_address":"10.9.9.9","tcp_port":4150,"http_port":4151,"version":"0.3.8"},`+
		`{"broadcast_address":"","tcp_port":4150},{"broadcast_address":"bad-port","tcp_port":0}]}}`)
	failing := startFakeLookupd(t, "")

	lookupds := []string{l1.HTTPAddr().String(), l2.HTTPAddr().String(), legacy.addr(), failing.addr()}
	var got changes
	d := replica.NewDiscovery(replica.DiscoveryConfig{
		Lookupds:    func() []string { return lookupds },
		OnChange:    got.onChange,
		Interval:    20 * time.Millisecond,
		ForgetAfter: 300 * time.Millisecond,
		Logger:      testutil.TestLogger(),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	defer func() { cancel(); <-done }()

	want := nodeMap(a.TCPAddr, b.TCPAddr, c.TCPAddr, "10.9.9.9:4150")
	testutil.WaitFor(t, 10*time.Second, func() bool {
		m, _ := got.last()
		return maps.Equal(m, want)
	}, "the merged map %v", want)
	if !maps.Equal(d.Nodes(), want) {
		t.Fatalf("Nodes() = %v, want %v", d.Nodes(), want)
	}
	if h, _ := legacy.accept.Load().(string); h != "application/vnd.nsq; version=1.0" {
		t.Fatalf("Accept header %q", h)
	}

	// no change, no call
	_, calls := got.last()
	legacy.waitRequests(t, 5)
	if _, n := got.last(); n != calls {
		t.Fatalf("OnChange called %d times without a change", n-calls)
	}

	// c leaves: forgotten after ForgetAfter
	c.Exit()
	want = nodeMap(a.TCPAddr, b.TCPAddr, "10.9.9.9:4150")
	testutil.WaitFor(t, 10*time.Second, func() bool {
		m, _ := got.last()
		return maps.Equal(m, want)
	}, "the map without the node that left")

	// every lookupd fails for longer than ForgetAfter: nothing is forgotten
	_, calls = got.last()
	l1.Exit()
	l2.Exit()
	legacy.body.Store("")
	start := time.Now()
	for time.Since(start) < 3*300*time.Millisecond {
		legacy.waitRequests(t, 1)
	}
	if m, n := got.last(); n != calls || !maps.Equal(m, want) {
		t.Fatalf("after every lookupd failed: %d more calls, map %v; want none and %v", n-calls, m, want)
	}

	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// TestDiscoveryPublishesEmpty: the first answered poll is published even
// when it lists no node, so the owner knows discovery works.
func TestDiscoveryPublishesEmpty(t *testing.T) {
	l := lookupdtest.Start(t, nil)
	var got changes
	d := replica.NewDiscovery(replica.DiscoveryConfig{
		Lookupds: func() []string { return []string{l.HTTPAddr().String()} },
		OnChange: got.onChange,
		Interval: 20 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testutil.WaitFor(t, 10*time.Second, func() bool { _, n := got.last(); return n == 1 }, "the first call")
	if m, _ := got.last(); len(m) != 0 {
		t.Fatalf("OnChange(%v), want an empty map", m)
	}
	n := startNSQD(t, l)
	testutil.WaitFor(t, 10*time.Second, func() bool {
		m, _ := got.last()
		return maps.Equal(m, nodeMap(n.TCPAddr))
	}, "the node %s", n.TCPAddr)
	if _, calls := got.last(); calls != 2 {
		t.Fatalf("%d calls, want 2", calls)
	}
}
