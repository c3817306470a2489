package lookupd

import (
	"io"
	"net"
	"testing"
	"time"
)

// FuzzServeConn feeds arbitrary bytes to the V1 connection handler: it must
// never panic, must finish once the peer closes, and must leave no producer
// behind.
func FuzzServeConn(f *testing.F) {
	d := startLookupd(f, nil)
	ident := identifyMsg(identifyBody("h", 1, 2))
	f.Add([]byte("  V1PING\n"))
	f.Add(append(append([]byte("  V1"), ident...), "REGISTER t c\nUNREGISTER t\nPING\n"...))
	f.Add(append(append([]byte("  V1"), ident...), ident...))
	f.Add([]byte("  V1IDENTIFY\n\xff\xff\xff\xff"))
	f.Add([]byte("  V1IDENTIFY\n\x00\x00\x00\x05{}"))
	f.Add([]byte("  V2"))
	f.Fuzz(func(t *testing.T, in []byte) {
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() {
			d.serveConn(server)
			close(done)
		}()
		go io.Copy(io.Discard, client)
		client.SetWriteDeadline(time.Now().Add(2 * time.Second))
		client.Write(in) // fails once the server has closed: fine
		client.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("handler did not finish for input %q", in)
		}
		if n := len(d.Registry().Nodes(time.Now())); n != 0 {
			t.Fatalf("%d producers left behind by input %q", n, in)
		}
	})
}
