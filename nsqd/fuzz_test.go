package nsqd

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/sluicemq/sluice/protocol"
)

// FuzzClientStream feeds arbitrary bytes after the V2 magic to a real
// connection handler of a running nsqd and checks that it never panics,
// always ends the connection once the input is exhausted, and that the
// daemon still serves a well-behaved client afterwards.
func FuzzClientStream(f *testing.F) {
	ident := `{"heartbeat_interval":1000,"feature_negotiation":true}`
	body := func(b []byte) []byte { return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...) }
	seed := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	f.Add(seed([]byte("IDENTIFY\n"), body([]byte(ident)), []byte("SUB t c\nRDY 10\nNOP\n")))
	f.Add(protocol.AppendPUB(nil, "t", []byte("hello")))
	f.Add(protocol.AppendMPUB(nil, "t", [][]byte{[]byte("a"), []byte("bb")}))
	f.Add([]byte("DPUB t 100\n\x00\x00\x00\x01x"))
	f.Add([]byte("FIN 0123456789abcdef\nREQ 0123456789abcdef 10\nTOUCH x\n"))
	f.Add([]byte("PUB t\n\xff\xff\xff\xff"))
	f.Add([]byte("MPUB t\n\x00\x00\x00\x08\x00\x00\x00\x05\x00\x00\x00\x01"))
	f.Add([]byte("IDENTIFY\n\x00\x00\x00\x02{}RDY 1\nCLS\n"))
	f.Add([]byte("AUTH\n\x00\x00\x00\x03abc"))
	f.Add([]byte("SUB a#ephemeral b#ephemeral\nRDY 2500\nCLS\nRDY 5\n"))

	opts := NewOptions()
	opts.TCPAddress, opts.HTTPAddress = "127.0.0.1:0", ""
	opts.DataPath = f.TempDir()
	opts.MaxMsgSize, opts.MaxBodySize = 1024, 4096
	opts.MemQueueSize = 50
	n, err := New(opts)
	if err != nil {
		f.Fatal(err)
	}
	if err := n.Start(); err != nil {
		f.Fatal(err)
	}
	defer n.Exit()

	f.Fuzz(func(t *testing.T, input []byte) {
		server, client := net.Pipe()
		done := make(chan struct{})
		n.connWG.Add(1) // the connection's; done when it ends
		go func() {
			defer close(done)
			n.handleConn(server)
		}()
		go io.Copy(io.Discard, client)
		client.SetWriteDeadline(time.Now().Add(2 * time.Second))
		client.Write([]byte(protocol.MagicV2))
		client.Write(input)
		client.Close()
		deadline := time.After(5 * time.Second)
		select {
		case <-done:
		case <-deadline:
			t.Fatal("connection handler did not finish after the input ended")
		}
		// the connection may have moved on to another goroutine (an idle
		// reader is shed): it must still end
		for {
			n.clientsMu.Lock()
			left := len(n.clients)
			n.clientsMu.Unlock()
			if left == 0 {
				break
			}
			select {
			case <-deadline:
				t.Fatalf("%d connections still open after the input ended", left)
			case <-time.After(time.Millisecond):
			}
		}
	})

	// the daemon still works for a normal client
	conn, err := net.Dial("tcp", n.TCPAddr().String())
	if err != nil {
		f.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	conn.Write(append([]byte(protocol.MagicV2), protocol.AppendPUB(nil, "after", []byte("ok"))...))
	ft, data, err := protocol.ReadFrame(conn)
	if err != nil || ft != protocol.FrameTypeResponse || string(data) != "OK" {
		f.Fatalf("publish after fuzzing: %v %d %q", err, ft, data)
	}
}
