package replica

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sluicemq/sluice/protocol"
)

// TestServeConnMalformed: a peer that breaks the protocol gets its
// connection closed with an error naming the problem; nothing of the bad
// frame is delivered, what came before it is.
func TestServeConnMalformed(t *testing.T) {
	b := startNode(t, func(c *TCPConfig) { c.MaxFrameSize = 1 << 20; c.HelloTimeout = 200 * time.Millisecond })
	const from = 77
	good := frame(batchPayload(t, Envelope{Group: "orders", Msg: testMsg(from, b.id, 1, "x")}))
	// afterHello is a valid hello followed by parts
	afterHello := func(parts ...[]byte) []byte {
		b := appendHello(nil, from, b.id)
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	cases := []struct {
		name string
		send []byte
		want string // in the error
	}{
		{"hello size 0", []byte{0, 0, 0, 0}, "empty frame"},
		{"hello too big", []byte{0, 0, 0x10, 1}, "exceeds the limit"},
		{"hello too short", frame(make([]byte, 8)), "hello of 8 bytes"},
		{"hello from 0", appendHello(nil, 0, b.id), "hello from node 0"},
		{"hello from self", appendHello(nil, b.id, b.id), "which is this node"},
		{"hello to another node", appendHello(nil, from, b.id+1), "addressed to node"},
		{"no hello", nil, "i/o timeout"},
		{"frame size 0", afterHello([]byte{0, 0, 0, 0}), "empty frame"},
		{"frame over the limit", afterHello([]byte{0, 0x10, 0, 1}), "exceeds the limit"},
		{"huge frame size", afterHello([]byte{0xff, 0xff, 0xff, 0xff}), "exceeds the limit"},
		{"truncated frame", afterHello(good[:len(good)-3]), "unexpected EOF"},
		{"garbage group length", afterHello(frame([]byte{0, 0, 0, 1, 250, 'g', 0, 0, 0, 0})), "truncated"},
		{"garbage count", afterHello(frame([]byte{0xff, 0, 0, 0, 1, 'g', 0, 0, 0, 0})), "out of range"},
		{"not protobuf", afterHello(frame([]byte{0, 0, 0, 1, 1, 'g', 0, 0, 0, 2, 0xff, 0xff})), "decode raft message"},
		{"good then garbage", afterHello(good, frame([]byte{0, 0, 0, 1, 0, 'g', 0, 0, 0, 0})), "empty group name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := b.rcv.len()
			conn, err := net.Dial("tcp", b.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.Write([]byte(protocol.MagicR1))
			conn.Write(tc.send)
			if strings.Contains(tc.name, "truncated") {
				conn.(*net.TCPConn).CloseWrite()
			}
			var err2 error
			select {
			case err2 = <-b.errs:
			case <-time.After(5 * time.Second):
				t.Fatal("the connection was not closed")
			}
			if err2 == nil || !strings.Contains(err2.Error(), tc.want) {
				t.Fatalf("connection ended with %v, want an error containing %q", err2, tc.want)
			}
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := conn.Read(make([]byte, 1)); n != 0 || !(errors.Is(err, io.EOF) || isReset(err)) {
				t.Fatalf("read after the error: %d bytes, %v; want the connection closed", n, err)
			}
			wantDelivered := 0
			if tc.name == "good then garbage" {
				wantDelivered = 1
			}
			if got := b.rcv.len() - before; got != wantDelivered {
				t.Fatalf("%d messages delivered, want %d", got, wantDelivered)
			}
		})
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// TestReconnectSupersedes: when a sender reconnects, its old connection
// delivers nothing more, and a batch the old connection was delivering is
// finished before the new connection's first: the sender's messages stay
// in order, with a gap.
func TestReconnectSupersedes(t *testing.T) {
	gate := make(chan struct{})
	b := startNode(t, nil)
	b.rcv.gate = gate
	const from = 77
	msg := func(i uint64) []byte {
		return frame(batchPayload(t, Envelope{Group: "orders", Msg: testMsg(from, b.id, i, "")}))
	}
	dial := func(frames ...[]byte) net.Conn {
		conn, err := net.Dial("tcp", b.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		conn.Write([]byte(protocol.MagicR1))
		conn.Write(appendHello(nil, from, b.id))
		for _, f := range frames {
			conn.Write(f)
		}
		return conn
	}
	old := dial(msg(1), msg(2))
	waitFor(t, 5*time.Second, "the first batch in Receive", func() bool { return b.tr.Stats()[from].Received == 1 })
	dial(msg(3))
	// b closes the old connection as soon as the new one has said hello
	old.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := old.Read(make([]byte, 1)); n != 0 || !(errors.Is(err, io.EOF) || isReset(err)) {
		t.Fatalf("old connection: read %d bytes, %v; want it closed", n, err)
	}
	b.rcv.mu.Lock()
	b.rcv.gate = nil
	b.rcv.mu.Unlock()
	close(gate)
	waitFor(t, 5*time.Second, "two deliveries", func() bool { return b.rcv.len() == 2 })
	if got := fmt.Sprint(b.rcv.indexes(from, "orders")); got != "[1 3]" {
		t.Fatalf("received %s, want [1 3]", got)
	}
	if err := <-b.errs; !errors.Is(err, errSuperseded) {
		t.Fatalf("old connection ended with %v, want errSuperseded", err)
	}
}
