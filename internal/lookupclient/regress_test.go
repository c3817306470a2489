package lookupclient

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sluicemq/sluice/protocol"
)

// fakeLookupd is a scripted V1 server: it accepts connections, counts them,
// and hands each to serve (run on its own goroutine; the conn is closed
// when serve returns or the test ends).
type fakeLookupd struct {
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
}

func startFake(t *testing.T, serve func(c net.Conn)) *fakeLookupd {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeLookupd{ln: ln}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.accepted.Add(1)
			f.mu.Lock()
			f.conns = append(f.conns, c)
			f.mu.Unlock()
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer c.Close()
				serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *fakeLookupd) addr() string { return f.ln.Addr().String() }

// answerIdentify reads the magic and IDENTIFY and replies with a lookupd
// description advertising httpAddr; it reports whether that worked.
func answerIdentify(c net.Conn, r *bufio.Reader, httpAddr string) bool {
	var magic [4]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil {
		return false
	}
	if line, err := r.ReadString('\n'); err != nil || line != "IDENTIFY\n" {
		return false
	}
	if _, err := protocol.ReadLookupReply(r, 1<<20); err != nil { // [size][body]
		return false
	}
	host, port, _ := net.SplitHostPort(httpAddr)
	p, _ := strconv.Atoi(port)
	b, _ := json.Marshal(protocol.LookupIdentifyReply{BroadcastAddress: host, Hostname: "fake", HTTPPort: p, TCPPort: 1, Version: "1.3.0"})
	return protocol.WriteLookupReply(c, b) == nil
}

// answerOK replies OK to every command line until the connection ends.
func answerOK(c net.Conn, r *bufio.Reader) {
	for {
		if _, err := r.ReadString('\n'); err != nil {
			return
		}
		if protocol.WriteLookupReply(c, protocol.LookupOK) != nil {
			return
		}
	}
}

// runClient runs c until the end of the test and checks Run returns
// promptly after cancel.
func runClient(t *testing.T, c *Client) (cancel func()) {
	t.Helper()
	ctx, cancelCtx := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	stop := func() {
		cancelCtx()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			t.Fatal("Run did not return within 2s of cancel")
		}
	}
	t.Cleanup(func() {
		cancelCtx()
		<-done
	})
	return stop
}

// A lookupd that accepts, answers IDENTIFY and drops the connection at once
// must be retried with growing backoff, not every MinBackoff forever.
func TestFlappingLookupdBacksOff(t *testing.T) {
	f := startFake(t, func(c net.Conn) {
		answerIdentify(c, bufio.NewReader(c), "127.0.0.1:1")
	})
	c := New(Config{
		Addresses:    []string{f.addr()},
		Identify:     identify,
		PingInterval: 2 * time.Second,
		MinBackoff:   20 * time.Millisecond,
	})
	stop := runClient(t, c)
	time.Sleep(1500 * time.Millisecond) // observation window: count reconnects within it
	stop()
	// Backoff 20, 40, 80, ... ms with jitter in [d/2, d]: at most ~9
	// connections fit in 1.5 s. A fixed 20 ms pause would allow ~100.
	n := f.accepted.Load()
	t.Logf("%d connections to a flapping lookupd in 1.5s", n)
	if n < 2 || n > 12 {
		t.Fatalf("%d connections in 1.5s, want 2..12", n)
	}
}

// A lookupd that accepts but never answers: IDENTIFY times out, and Run
// cancelled while the round trip is blocked returns at once, closing the
// connection (no goroutine or socket left behind).
func TestSilentLookupdAndCancelDuringIdentify(t *testing.T) {
	closed := make(chan struct{}, 16)
	f := startFake(t, func(c net.Conn) {
		io.Copy(io.Discard, c) // never answers; returns when the client closes
		closed <- struct{}{}
	})
	base := runtime.NumGoroutine()
	c := New(Config{
		Addresses:    []string{f.addr()},
		Identify:     identify,
		Timeout:      time.Minute, // the round trip would block for a minute
		PingInterval: time.Minute,
	})
	stop := runClient(t, c)
	waitFor(t, 5*time.Second, "connection accepted", func() bool { return f.accepted.Load() == 1 })
	start := time.Now()
	stop()
	if el := time.Since(start); el > time.Second {
		t.Fatalf("Run took %v to return", el)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("client did not close its connection")
	}
	waitFor(t, 5*time.Second, "client goroutines gone", func() bool { return runtime.NumGoroutine() <= base })
}

// Replacing the address list over and over leaves exactly one connection
// per listed lookupd and no goroutines behind.
func TestSetAddressesChurnNoLeak(t *testing.T) {
	d1 := startLookupd(t, "127.0.0.1:0")
	d2 := startLookupd(t, "127.0.0.1:0")
	a1, a2 := d1.TCPAddr().String(), d2.TCPAddr().String()
	base := runtime.NumGoroutine()
	f := &fakeNSQD{regs: map[Registration]bool{{"t", "c"}: true}}
	c := New(Config{Identify: identify, Snapshot: f.snapshot, PingInterval: time.Second, MinBackoff: 10 * time.Millisecond})
	stop := runClient(t, c)
	lists := [][]string{{a1}, {a2}, {a1, a2}, {}, {a2, a1}, {a1}}
	for i := range 100 {
		c.SetAddresses(lists[i%len(lists)])
	}
	c.SetAddresses([]string{a1, a2})
	one := func() bool {
		return len(d1.Registry().Nodes(time.Now())) == 1 && len(d2.Registry().Nodes(time.Now())) == 1 &&
			reflect.DeepEqual(producers(d1, "t"), []string{identify.BroadcastAddress}) &&
			reflect.DeepEqual(producers(d2, "t"), []string{identify.BroadcastAddress})
	}
	waitFor(t, 10*time.Second, "one registered connection per lookupd", one)
	c.SetAddresses(nil)
	waitFor(t, 10*time.Second, "no connections", func() bool {
		return len(d1.Registry().Nodes(time.Now())) == 0 && len(d2.Registry().Nodes(time.Now())) == 0
	})
	stop()
	waitFor(t, 5*time.Second, "client goroutines gone", func() bool { return runtime.NumGoroutine() <= base })
}

func TestBackoffBoundsHugeInterval(t *testing.T) {
	p := &peer{cfg: &Config{MinBackoff: time.Second, PingInterval: math.MaxInt64}}
	for _, n := range []int{1, 2, 40, 62, 63, 64, 100, 1000} {
		d := p.backoff(n)
		lo := time.Duration(math.MaxInt64) / 2
		if n <= 40 {
			lo = time.Second << (n - 1) / 2
		}
		if d < lo || d <= 0 {
			t.Fatalf("backoff(%d) = %v, want >= %v (no overflow)", n, d, lo)
		}
	}
}

// startHTTPLookupd is a fake lookupd whose IDENTIFY reply points to the
// HTTP handler h, so Channels queries h.
func startHTTPLookupd(t *testing.T, h http.HandlerFunc) string {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	httpAddr := strings.TrimPrefix(srv.URL, "http://")
	f := startFake(t, func(c net.Conn) {
		r := bufio.NewReader(c)
		if answerIdentify(c, r, httpAddr) {
			answerOK(c, r)
		}
	})
	return f.addr()
}

// Channels: a lookupd that never answers does not starve the others (the
// queries run concurrently under the caller's deadline); garbage and
// oversized replies are errors, bounded in memory.
func TestChannelsHungGarbageAndHuge(t *testing.T) {
	hang := make(chan struct{})
	defer close(hang)
	good := startHTTPLookupd(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("topic") != "t" {
			t.Errorf("query %q", r.URL.RawQuery)
		}
		fmt.Fprint(w, `{"channels":["a","b"]}`)
	})
	hung := startHTTPLookupd(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	})
	garbage := startHTTPLookupd(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<html>not json`)
	})
	huge := startHTTPLookupd(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"channels":["`)
		chunk := strings.Repeat("a", 1<<20)
		for range 64 { // 64 MiB string
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
		}
		io.WriteString(w, `"]}`)
	})
	c := New(Config{
		Addresses:    []string{hung, good, garbage, huge},
		Identify:     identify,
		PingInterval: time.Second,
		MaxReplySize: 1 << 20,
	})
	runClient(t, c)
	waitFor(t, 5*time.Second, "identified on all four", func() bool { return len(c.HTTPAddresses()) == 4 })

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	start := time.Now()
	got, err := c.Channels(ctx, "t")
	el := time.Since(start)
	runtime.ReadMemStats(&after)
	t.Logf("Channels with hung, garbage and 64 MiB lookupds: %v, %d KiB allocated", el, (after.TotalAlloc-before.TotalAlloc)>>10)
	if !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Fatalf("Channels = %q (err %v), want the good lookupd's [a b]", got, err)
	}
	if err == nil || strings.Count(err.Error(), "lookupd ") != 3 {
		t.Fatalf("want three errors (hung, garbage, huge), got %v", err)
	}
	if el > 3*time.Second {
		t.Fatalf("Channels took %v with a 700ms deadline", el)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 24<<20 {
		t.Fatalf("Channels allocated %d MiB for a 64 MiB reply (limit 1 MiB)", grew>>20)
	}
}

// blackholeAddr returns an address whose listen backlog is full, so that a
// further dial hangs in the TCP handshake (SYNs are dropped).
func blackholeAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	// Fill the backlog: dials succeed until the queue is full, then hang.
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			break
		}
		t.Cleanup(func() { c.Close() })
		if i > 64 {
			t.Skip("backlog never fills on this system")
		}
	}
	return addr
}

// Run cancelled while a dial hangs returns at once.
func TestCancelWhileDialing(t *testing.T) {
	addr := blackholeAddr(t)
	base := runtime.NumGoroutine()
	c := New(Config{Addresses: []string{addr}, Identify: identify, Timeout: time.Minute, PingInterval: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	// Give Run time to start dialing: the dial can only hang, so there is
	// no state to wait for.
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return within 2s of cancel while dialing")
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("Run took %v", el)
	}
	waitFor(t, 5*time.Second, "client goroutines gone", func() bool { return runtime.NumGoroutine() <= base })
}
