package lookupclient

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sluicemq/sluice/lookupd"
	"github.com/sluicemq/sluice/protocol"
)

func startLookupd(t testing.TB, tcpAddr string) *lookupd.Daemon {
	t.Helper()
	opts := lookupd.NewOptions()
	opts.TCPAddress, opts.HTTPAddress = tcpAddr, "127.0.0.1:0"
	opts.BroadcastAddress = "127.0.0.1"
	d, err := lookupd.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Exit)
	return d
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fakeNSQD is the state a real nsqd would expose through Snapshot.
type fakeNSQD struct {
	mu   sync.Mutex
	regs map[Registration]bool
}

func (f *fakeNSQD) set(r Registration, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if on {
		f.regs[r] = true
	} else {
		delete(f.regs, r)
	}
}

func (f *fakeNSQD) snapshot() []Registration {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []Registration{}
	for r := range f.regs {
		out = append(out, r)
	}
	return out
}

var identify = protocol.LookupIdentify{BroadcastAddress: "10.1.2.3", Hostname: "nsqd-1", TCPPort: 4150, HTTPPort: 4151, Version: "1.3.0"}

// startClient runs a Client until the end of the test.
func startClient(t testing.TB, addrs []string, f *fakeNSQD) *Client {
	t.Helper()
	return startClientPing(t, addrs, f, 200*time.Millisecond)
}

func startClientPing(t testing.TB, addrs []string, f *fakeNSQD, ping time.Duration) *Client {
	t.Helper()
	c := New(Config{
		Addresses:    addrs,
		Identify:     identify,
		Snapshot:     f.snapshot,
		PingInterval: ping,
		MinBackoff:   20 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return c
}

// producers returns the broadcast addresses of topic's producers on d.
func producers(d *lookupd.Daemon, topic string) []string {
	_, ps, _ := d.Registry().Lookup(topic, time.Now())
	out := []string{}
	for _, p := range ps {
		out = append(out, p.BroadcastAddress)
	}
	return out
}

// state summarises which topics (and channels) have this client as producer.
func state(d *lookupd.Daemon) []string {
	out := []string{}
	dbg := d.Registry().Debug()
	for k, ps := range dbg {
		for _, p := range ps {
			if p.BroadcastAddress == identify.BroadcastAddress && k != "client::" {
				out = append(out, k)
			}
		}
	}
	slices.Sort(out)
	return out
}

func TestConnectIdentifyAndFullRegistration(t *testing.T) {
	d := startLookupd(t, "127.0.0.1:0")
	f := &fakeNSQD{regs: map[Registration]bool{{"t1", ""}: true, {"t2", "c"}: true, {"e#ephemeral", "x#ephemeral"}: true}}
	c := startClient(t, []string{d.TCPAddr().String()}, f)
	want := []string{"channel:e#ephemeral:x#ephemeral", "channel:t2:c", "topic:e#ephemeral:", "topic:t1:", "topic:t2:"}
	waitFor(t, 5*time.Second, "full registration", func() bool { return reflect.DeepEqual(state(d), want) })

	nodes := d.Registry().Nodes(time.Now())
	if len(nodes) != 1 {
		t.Fatalf("nodes %d", len(nodes))
	}
	n := nodes[0]
	if n.BroadcastAddress != "10.1.2.3" || n.Hostname != "nsqd-1" || n.TCPPort != 4150 || n.HTTPPort != 4151 || n.Version != "1.3.0" {
		t.Fatalf("identify info %+v", n.PeerInfo)
	}
	wantHTTP := []string{d.HTTPAddr().String()}
	if got := c.HTTPAddresses(); !reflect.DeepEqual(got, wantHTTP) {
		t.Fatalf("HTTPAddresses %q, want %q", got, wantHTTP)
	}
	if got := c.Addresses(); !reflect.DeepEqual(got, []string{d.TCPAddr().String()}) {
		t.Fatalf("Addresses %q", got)
	}
}

func TestRegisterUnregisterInOrder(t *testing.T) {
	d := startLookupd(t, "127.0.0.1:0")
	f := &fakeNSQD{regs: map[Registration]bool{}}
	c := startClient(t, []string{d.TCPAddr().String()}, f)
	waitFor(t, 5*time.Second, "identified", func() bool { return len(c.HTTPAddresses()) == 1 })

	want := []string{}
	for i := range 50 {
		topic := fmt.Sprintf("t%02d", i)
		c.Register(topic, "")
		c.Register(topic, "ch")
		if i%2 == 0 {
			c.Unregister(topic, "ch") // keeps the topic
		}
		if i%5 == 0 {
			c.Unregister(topic, "") // drops topic and channels
			continue
		}
		want = append(want, "topic:"+topic+":")
		if i%2 != 0 {
			want = append(want, "channel:"+topic+":ch")
		}
	}
	slices.Sort(want)
	waitFor(t, 5*time.Second, "registrations applied in order", func() bool { return reflect.DeepEqual(state(d), want) })
}

// TestPingKeepsConnectionAlive: a lookupd that drops silent peers after 1 s
// keeps a client that PINGs every 200 ms (the margin absorbs scheduling
// stalls on a loaded machine).
func TestPingKeepsConnectionAlive(t *testing.T) {
	opts := lookupd.NewOptions()
	opts.TCPAddress, opts.HTTPAddress, opts.BroadcastAddress = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1"
	opts.PeerReadTimeout = time.Second
	d, err := lookupd.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	defer d.Exit()
	f := &fakeNSQD{regs: map[Registration]bool{{"t", ""}: true}}
	startClient(t, []string{d.TCPAddr().String()}, f)
	waitFor(t, 5*time.Second, "registered", func() bool { return len(producers(d, "t")) == 1 })
	first := d.Registry().Nodes(time.Now())[0].ID
	deadline := time.Now().Add(2500 * time.Millisecond)
	for time.Now().Before(deadline) {
		nodes := d.Registry().Nodes(time.Now())
		if len(nodes) != 1 || nodes[0].ID != first {
			t.Fatalf("connection not kept alive: nodes %+v", nodes)
		}
		time.Sleep(50 * time.Millisecond) // sampling cadence over a fixed window
	}
}

// TestLookupdRestartReregisters: after a lookupd restart (state lost) the
// client reconnects and re-registers everything, including changes made
// while the lookupd was down. The closed connection is noticed at once (not
// at the next PING), so with a 10 s PING interval re-registration still
// takes well under a second or two.
func TestLookupdRestartReregisters(t *testing.T) {
	d := startLookupd(t, "127.0.0.1:0")
	addr := d.TCPAddr().String()
	f := &fakeNSQD{regs: map[Registration]bool{{"t1", "c1"}: true}}
	const ping = 10 * time.Second
	c := startClientPing(t, []string{addr}, f, ping)
	waitFor(t, 5*time.Second, "registered", func() bool { return len(producers(d, "t1")) == 1 })

	d.Exit()
	// Changes while the lookupd is down: the commands are lost, the
	// snapshot covers them.
	f.set(Registration{"t2", ""}, true)
	c.Register("t2", "")
	f.set(Registration{"t1", "c1"}, false)
	f.set(Registration{"t1", ""}, true)
	c.Unregister("t1", "c1")

	d2 := startLookupd(t, addr)
	start := time.Now()
	want := []string{"topic:t1:", "topic:t2:"}
	waitFor(t, 5*time.Second, "re-registration", func() bool { return reflect.DeepEqual(state(d2), want) })
	// Reconnect attempts back off from 20 ms; 2 s leaves room for the race
	// detector on a shared machine and is far below the PING interval.
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("re-registered after %v, want well within the PING interval (%v)", el, ping)
	}
}

func TestSetAddresses(t *testing.T) {
	d1 := startLookupd(t, "127.0.0.1:0")
	d2 := startLookupd(t, "127.0.0.1:0")
	f := &fakeNSQD{regs: map[Registration]bool{{"t", "c"}: true}}
	c := startClient(t, []string{d1.TCPAddr().String()}, f)
	waitFor(t, 5*time.Second, "registered on d1", func() bool { return len(producers(d1, "t")) == 1 })

	c.SetAddresses([]string{d2.TCPAddr().String(), d2.TCPAddr().String()})
	waitFor(t, 5*time.Second, "moved to d2", func() bool {
		return len(producers(d2, "t")) == 1 && len(producers(d1, "t")) == 0 && len(d1.Registry().Nodes(time.Now())) == 0
	})
	if got := c.Addresses(); !reflect.DeepEqual(got, []string{d2.TCPAddr().String()}) {
		t.Fatalf("Addresses %q", got)
	}
	c.SetAddresses([]string{d1.TCPAddr().String(), d2.TCPAddr().String()})
	waitFor(t, 5*time.Second, "on both", func() bool { return len(producers(d1, "t")) == 1 && len(producers(d2, "t")) == 1 })
	// Register goes to every peer.
	c.Register("u", "")
	waitFor(t, 5*time.Second, "u on both", func() bool { return len(producers(d1, "u")) == 1 && len(producers(d2, "u")) == 1 })
}

func TestChannels(t *testing.T) {
	d1 := startLookupd(t, "127.0.0.1:0")
	d2 := startLookupd(t, "127.0.0.1:0")
	d1.Registry().CreateChannel("t", "a")
	d1.Registry().CreateChannel("t", "b")
	d2.Registry().CreateChannel("t", "b")
	d2.Registry().CreateChannel("t", "c")
	c := startClient(t, []string{d1.TCPAddr().String(), d2.TCPAddr().String()}, &fakeNSQD{regs: map[Registration]bool{}})
	waitFor(t, 5*time.Second, "identified on both", func() bool { return len(c.HTTPAddresses()) == 2 })
	got, err := c.Channels(context.Background(), "t")
	if err != nil || !reflect.DeepEqual(got, []string{"a", "b", "c"}) {
		t.Fatalf("Channels = %q, %v", got, err)
	}
	got, err = c.Channels(context.Background(), "none")
	if err != nil || len(got) != 0 {
		t.Fatalf("Channels(none) = %q, %v", got, err)
	}
	// One lookupd gone: the other's answer plus an error.
	d2.Exit()
	got, err = c.Channels(context.Background(), "t")
	if err == nil || !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Fatalf("with one lookupd down: %q, %v", got, err)
	}
}

// TestUnreachableThenUp: the first attempt fails, backoff retries connect
// once the lookupd is listening.
func TestUnreachableThenUp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	f := &fakeNSQD{regs: map[Registration]bool{{"t", ""}: true}}
	startClient(t, []string{addr}, f)
	time.Sleep(100 * time.Millisecond) // let a few dials fail first
	d := startLookupd(t, addr)
	waitFor(t, 5*time.Second, "registered after lookupd came up", func() bool { return len(producers(d, "t")) == 1 })
}

// TestRejectedIdentify: a lookupd that rejects IDENTIFY never gets
// registrations and the client keeps retrying without crashing.
func TestRejectedIdentify(t *testing.T) {
	d := startLookupd(t, "127.0.0.1:0")
	c := New(Config{
		Addresses:    []string{d.TCPAddr().String()},
		Identify:     protocol.LookupIdentify{BroadcastAddress: "x"}, // missing fields
		Snapshot:     func() []Registration { return []Registration{{"t", ""}} },
		PingInterval: 100 * time.Millisecond,
		MinBackoff:   10 * time.Millisecond,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	c.Run(ctx)
	if got := d.Registry().Topics(); len(got) != 0 {
		t.Fatalf("registered despite rejected IDENTIFY: %q", got)
	}
	if got := c.HTTPAddresses(); len(got) != 0 {
		t.Fatalf("HTTPAddresses %q", got)
	}
}

func TestBackoff(t *testing.T) {
	p := &peer{cfg: &Config{MinBackoff: 100 * time.Millisecond, PingInterval: time.Second}}
	for n, max := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 5: time.Second, 50: time.Second} {
		for range 20 {
			d := p.backoff(n)
			if d < max/2 || d > max {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", n, d, max/2, max)
			}
		}
	}
}
