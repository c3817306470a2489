package lookupd

import (
	"fmt"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluicemq/sluice/protocol"
)

func TestTCPHappyPath(t *testing.T) {
	d := startLookupd(t, nil)
	c := dialV1(t, d)
	if r := c.cmd("PING"); r != "OK" {
		t.Fatalf("PING before IDENTIFY: %q", r)
	}
	info := c.identify("10.0.0.5", 4150, 4151)
	want := protocol.LookupIdentifyReply{
		BroadcastAddress: "127.0.0.1", Hostname: d.hostname,
		TCPPort: d.TCPAddr().(*net.TCPAddr).Port, HTTPPort: d.HTTPAddr().(*net.TCPAddr).Port, Version: "1.3.0",
	}
	if info != want {
		t.Fatalf("IDENTIFY reply %+v, want %+v", info, want)
	}
	for _, line := range []string{"REGISTER orders archive", "REGISTER orders billing", "REGISTER logs", "UNREGISTER orders billing", "PING"} {
		if r := c.cmd(line); r != "OK" {
			t.Fatalf("%s: %q", line, r)
		}
	}
	id := c.LocalAddr().String()
	if got := producerIDs(d, "orders"); !reflect.DeepEqual(got, []string{id}) {
		t.Fatalf("orders producers %q, want [%s]", got, id)
	}
	if got := d.Registry().Channels("orders"); !reflect.DeepEqual(got, []string{"archive", "billing"}) {
		t.Fatalf("channels %q", got)
	}

	// Close: removed from every registration, registrations stay.
	c.Close()
	waitFor(t, "producer removed after close", func() bool {
		return len(producerIDs(d, "orders")) == 0 && len(d.Registry().Nodes(time.Now())) == 0
	})
	if got := d.Registry().Topics(); !reflect.DeepEqual(got, []string{"logs", "orders"}) {
		t.Fatalf("topics after close %q", got)
	}
}

// TestTCPFragmentedAndPipelined sends a whole session one byte per write,
// then several commands in one write: framing never depends on read
// boundaries.
func TestTCPFragmentedAndPipelined(t *testing.T) {
	d := startLookupd(t, nil)
	c := dialRaw(t, d)
	session := append([]byte(protocol.MagicV1), identifyMsg(identifyBody("h", 1, 2))...)
	session = append(session, "REGISTER t c\r\n"...)
	for i := range session {
		c.send(session[i : i+1])
	}
	if r := c.mustReply(); !strings.HasPrefix(r, "{") {
		t.Fatalf("IDENTIFY reply %q", r)
	}
	if r := c.mustReply(); r != "OK" {
		t.Fatalf("REGISTER reply %q", r)
	}
	c.send([]byte("REGISTER a\nREGISTER b x\nPING\nUNREGISTER a\n"))
	for i := range 4 {
		if r := c.mustReply(); r != "OK" {
			t.Fatalf("pipelined reply %d: %q", i, r)
		}
	}
	if got := d.Registry().Topics(); !reflect.DeepEqual(got, []string{"a", "b", "t"}) {
		t.Fatalf("topics %q", got)
	}
}

// TestTCPBadInput: every error is replied with its exact text, the
// connection is closed, the offender's registrations are dropped, and other
// peers are undisturbed.
func TestTCPBadInput(t *testing.T) {
	d := startLookupd(t, nil)
	bystander := dialV1(t, d)
	bystander.identify("bystander", 4150, 4151)
	if r := bystander.cmd("REGISTER keep ch"); r != "OK" {
		t.Fatal(r)
	}
	bystanderID := bystander.LocalAddr().String()

	ident := identifyMsg(identifyBody("bad", 1, 2))
	long := strings.Repeat("a", 65)
	cases := []struct {
		name string
		// identified: the offender IDENTIFYs and registers a topic first
		// (checked removed afterwards); otherwise send starts with the magic.
		identified bool
		send       []byte
		halfClose  bool // half-close after send (truncated input)
		want       string
	}{
		{name: "bad magic", send: []byte("  V2PING\n"), want: "E_BAD_PROTOCOL"},
		{name: "unknown command", send: []byte("  V1FOO bar\n"), want: "E_INVALID invalid command FOO"},
		{name: "lower-case command", send: []byte("  V1ping\n"), want: "E_INVALID invalid command ping"},
		{name: "empty line", send: []byte("  V1\n"), want: "E_INVALID invalid command "},
		{name: "REGISTER before IDENTIFY", send: []byte("  V1REGISTER t c\n"), want: "E_INVALID client must IDENTIFY"},
		{name: "UNREGISTER before IDENTIFY", send: []byte("  V1UNREGISTER t\n"), want: "E_INVALID client must IDENTIFY"},
		{name: "REGISTER no params", identified: true, send: []byte("REGISTER\n"), want: "E_INVALID REGISTER insufficient number of params"},
		{name: "UNREGISTER no params", identified: true, send: []byte("UNREGISTER \n"), want: "E_INVALID UNREGISTER insufficient number of params"},
		{name: "REGISTER bad topic", identified: true, send: []byte("REGISTER t! c\n"), want: "E_BAD_TOPIC REGISTER topic name 't!' is not valid"},
		{name: "REGISTER empty topic", identified: true, send: []byte("REGISTER  t\n"), want: "E_BAD_TOPIC REGISTER topic name '' is not valid"},
		{name: "REGISTER 65-byte topic", identified: true, send: []byte("REGISTER " + long + "\n"), want: "E_BAD_TOPIC REGISTER topic name '" + long + "' is not valid"},
		{name: "REGISTER bad channel", identified: true, send: []byte("REGISTER t c!\n"), want: "E_BAD_CHANNEL REGISTER channel name 'c!' is not valid"},
		{name: "UNREGISTER bad topic", identified: true, send: []byte("UNREGISTER a:b\n"), want: "E_BAD_TOPIC UNREGISTER topic name 'a:b' is not valid"},
		{name: "UNREGISTER bad channel", identified: true, send: []byte("UNREGISTER t c#x\n"), want: "E_BAD_CHANNEL UNREGISTER channel name 'c#x' is not valid"},
		{name: "IDENTIFY twice", identified: true, send: ident, want: "E_INVALID cannot IDENTIFY again"},
		{name: "IDENTIFY bad JSON", send: append([]byte("  V1IDENTIFY\n"), append(sizePrefix(3), "{xx"...)...), want: "E_BAD_BODY IDENTIFY failed to decode JSON body"},
		{name: "IDENTIFY missing fields", send: append([]byte("  V1IDENTIFY\n"), append(sizePrefix(25), `{"broadcast_address":"h"}`...)...), want: "E_BAD_BODY IDENTIFY missing fields"},
		{name: "IDENTIFY zero port", send: append([]byte("  V1"), identifyMsg(identifyBody("h", 0, 2))...), want: "E_BAD_BODY IDENTIFY missing fields"},
		{name: "IDENTIFY size zero", send: append([]byte("  V1IDENTIFY\n"), sizePrefix(0)...), want: "E_BAD_BODY IDENTIFY invalid body size 0"},
		{name: "IDENTIFY negative size", send: append([]byte("  V1IDENTIFY\n"), sizePrefix(-1)...), want: "E_BAD_BODY IDENTIFY invalid body size -1"},
		{name: "IDENTIFY oversized body", send: append([]byte("  V1IDENTIFY\n"), sizePrefix(protocol.MaxLookupIdentifySize+1)...),
			want: fmt.Sprintf("E_BAD_BODY IDENTIFY invalid body size %d", protocol.MaxLookupIdentifySize+1)},
		{name: "IDENTIFY truncated size", send: []byte("  V1IDENTIFY\n\x00\x00"), halfClose: true, want: "E_BAD_BODY IDENTIFY failed to read body size"},
		{name: "IDENTIFY truncated body", send: append([]byte("  V1IDENTIFY\n"), append(sizePrefix(100), "{}"...)...), halfClose: true, want: "E_BAD_BODY IDENTIFY failed to read body"},
		{name: "line too long", identified: true, send: []byte("REGISTER " + strings.Repeat("x", maxLineSize) + "\n"), want: fmt.Sprintf("E_INVALID command line longer than %d bytes", maxLineSize)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c *v1conn
			if tc.identified {
				c = dialV1(t, d)
				c.identify("offender", 1, 2)
				if r := c.cmd("REGISTER offender-topic"); r != "OK" {
					t.Fatal(r)
				}
			} else {
				c = dialRaw(t, d)
			}
			c.send(tc.send)
			if tc.halfClose {
				c.Conn.(*net.TCPConn).CloseWrite()
			}
			r, err := c.reply()
			if err != nil {
				t.Fatalf("no reply: %v", err)
			}
			if r != tc.want {
				t.Fatalf("reply %q\nwant  %q", r, tc.want)
			}
			c.expectClosed()
			if tc.identified {
				waitFor(t, "offender removed", func() bool { return len(producerIDs(d, "offender-topic")) == 0 })
			}
			// The bystander is untouched and still served.
			if got := producerIDs(d, "keep"); !reflect.DeepEqual(got, []string{bystanderID}) {
				t.Fatalf("bystander registrations disturbed: %q", got)
			}
			if r := bystander.cmd("PING"); r != "OK" {
				t.Fatalf("bystander PING: %q", r)
			}
		})
	}
	if n := len(d.Registry().Nodes(time.Now())); n != 1 {
		t.Fatalf("nodes after bad input: %d, want 1 (bystander)", n)
	}
}

// TestTCPSilentPeerDropped: a peer that stops PINGing is closed and removed
// after PeerReadTimeout, while one that keeps PINGing stays.
func TestTCPSilentPeerDropped(t *testing.T) {
	const timeout = 300 * time.Millisecond
	d := startLookupd(t, func(o *Options) { o.PeerReadTimeout = timeout })
	silent := dialV1(t, d)
	silent.identify("silent", 1, 2)
	silent.cmd("REGISTER t silent-ch")
	alive := dialV1(t, d)
	alive.identify("alive", 3, 4)
	alive.cmd("REGISTER t")
	aliveID := alive.LocalAddr().String()

	start := time.Now()
	// Keep the live peer PINGing at a third of the timeout until the silent
	// one is gone, and for at least three timeouts.
	for time.Since(start) < 3*timeout || len(producerIDs(d, "t")) != 1 {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("silent peer not dropped: producers %q", producerIDs(d, "t"))
		}
		if r := alive.cmd("PING"); r != "OK" {
			t.Fatalf("PING: %q", r)
		}
		time.Sleep(timeout / 3) // PING cadence of the live peer, not a wait for state
	}
	if got := producerIDs(d, "t"); !reflect.DeepEqual(got, []string{aliveID}) {
		t.Fatalf("producers %q, want only %s", got, aliveID)
	}
	silent.expectClosed()
	if n := d.stats.peersDropped.Load(); n != 1 {
		t.Fatalf("peers timed out = %d, want 1", n)
	}
	if got := d.Registry().Channels("t"); !reflect.DeepEqual(got, []string{"silent-ch"}) {
		t.Fatalf("channel registration should stay: %q", got)
	}
}

// TestExitClosesConnections: Exit returns with peers connected and closes them.
func TestExitClosesConnections(t *testing.T) {
	d := startLookupd(t, nil)
	cs := []*v1conn{}
	for i := range 5 {
		c := dialV1(t, d)
		c.identify(fmt.Sprintf("p%d", i), 1, 2)
		cs = append(cs, c)
	}
	done := make(chan struct{})
	go func() { d.Exit(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Exit blocked")
	}
	for _, c := range cs {
		c.expectClosed()
	}
	d.Exit() // idempotent
	if _, err := net.DialTimeout("tcp", d.TCPAddr().String(), time.Second); err == nil {
		t.Fatal("listener still open after Exit")
	}
}

// Replies to commands sent together come in order; a reply is not held
// back while only part of the next line has arrived; an invalid command
// after valid ones gets its error after their replies, then the close.
func TestTCPPipelinedRepliesInOrderUntilError(t *testing.T) {
	d := startLookupd(t, nil)
	c := dialV1(t, d)
	c.identify("h", 1, 2)
	c.send([]byte("REGISTER a\nREGISTER b"))
	if r := c.mustReply(); r != "OK" {
		t.Fatalf("REGISTER a: %q", r)
	}
	c.send([]byte(" x\nPING\nREGISTER c\nBOGUS\nREGISTER d\n"))
	for i := range 3 {
		if r := c.mustReply(); r != "OK" {
			t.Fatalf("pipelined reply %d: %q", i, r)
		}
	}
	if r := c.mustReply(); !strings.HasPrefix(r, "E_INVALID") {
		t.Fatalf("reply to BOGUS: %q", r)
	}
	c.expectClosed()
	waitFor(t, "the producer removed", func() bool { return len(producerIDs(d, "a")) == 0 })
	if got := d.Registry().Channels("b"); !reflect.DeepEqual(got, []string{"x"}) {
		t.Errorf("channels of b %q", got)
	}
	if got := d.Registry().Topics(); !reflect.DeepEqual(got, []string{"a", "b", "c"}) {
		t.Errorf("topics %q (d came after the error)", got)
	}
}
