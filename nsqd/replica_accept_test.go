package nsqd_test

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/nsqd"
	"github.com/sluicemq/sluice/protocol"
)

// TestR1MagicWithoutReplication: an nsqd with no replica handler answers
// "  R1" exactly as NSQ answers any unknown magic: E_BAD_PROTOCOL, then close.
func TestR1MagicWithoutReplication(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	c := testutil.DialRaw(t, h.TCPAddr)
	c.Write([]byte(protocol.MagicR1 + "hello"))
	c.ExpectError("E_BAD_PROTOCOL")
	c.WaitClosed(5 * time.Second)

	// setting and clearing a handler restores the NSQ behaviour
	h.Server.(*nsqd.NSQD).SetReplicaHandler(func(net.Conn) { t.Error("handler called after being cleared") })
	h.Server.(*nsqd.NSQD).SetReplicaHandler(nil)
	c = testutil.DialRaw(t, h.TCPAddr)
	c.Write([]byte(protocol.MagicR1))
	c.ExpectError("E_BAD_PROTOCOL")
	c.WaitClosed(5 * time.Second)
}

// TestR1MagicWithReplicaHandler: with a handler, an "  R1" connection is
// handed over right after the magic, with no read deadline left over; V2
// clients are unaffected; Exit closes a connection the handler still serves
// and waits for the handler to return.
func TestR1MagicWithReplicaHandler(t *testing.T) {
	h := testutil.StartNSQD(t, func(o *nsqd.Options) { o.ClientTimeout = 200 * time.Millisecond })
	n := h.Server.(*nsqd.NSQD)
	type served struct {
		first []byte
		err   error // of the read after the client's pause
	}
	got := make(chan served, 1)
	returned := make(chan struct{})
	n.SetReplicaHandler(func(conn net.Conn) {
		defer close(returned)
		first := make([]byte, 5)
		_, err := io.ReadFull(conn, first)
		if err == nil {
			conn.Write([]byte("ack"))
			// the client now waits longer than ClientTimeout: a leftover
			// magic deadline would fail this read
			_, err = io.ReadFull(conn, make([]byte, 1))
		}
		got <- served{first, err}
		io.Copy(io.Discard, conn) // until Exit closes the connection
	})

	c := testutil.DialRaw(t, h.TCPAddr)
	c.Write([]byte(protocol.MagicR1 + "hello"))
	c.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	ack := make([]byte, 3)
	if _, err := io.ReadFull(c.Conn, ack); err != nil || string(ack) != "ack" {
		t.Fatalf("handler reply %q, %v; want ack", ack, err)
	}
	time.Sleep(2 * h.Opts.ClientTimeout) // idle longer than the magic's deadline, on purpose
	c.Write([]byte("x"))
	select {
	case s := <-got:
		if !bytes.Equal(s.first, []byte("hello")) || s.err != nil {
			t.Fatalf("handler read %q then err %v; want hello then x", s.first, s.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the connection never reached the handler")
	}

	// V2 clients are untouched
	v2 := testutil.DialV2(t, h.TCPAddr)
	v2.Publish("r1test", []byte("m"))

	exited := make(chan struct{})
	go func() { h.Exit(); close(exited) }()
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("Exit did not close the replica connection")
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("Exit did not return")
	}
}
