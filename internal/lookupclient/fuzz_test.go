package lookupclient

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/sluicemq/sluice/protocol"
)

// FuzzGarbageLookupd runs one peer's connect sequence and serve loop against
// a "lookupd" that answers with arbitrary bytes and then closes: the peer
// must never panic or allocate beyond MaxReplySize, and must give up within
// its timeouts.
func FuzzGarbageLookupd(f *testing.F) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { ln.Close() })
	inputs := make(chan []byte, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			in := <-inputs
			go func() {
				defer c.Close()
				go io.Copy(io.Discard, c)
				c.Write(in)
			}()
		}
	}()
	ok := protocol.AppendLookupReply(nil, []byte(`{"broadcast_address":"x","http_port":1}`))
	f.Add(ok)
	f.Add(append(append([]byte{}, ok...), protocol.AppendLookupReply(nil, protocol.LookupOK)...))
	f.Add(append(append([]byte{}, ok...), protocol.AppendLookupReply(nil, []byte("E_INVALID nope"))...))
	f.Add([]byte("\x7f\xff\xff\xff"))
	f.Add([]byte("\xff\xff\xff\xff{}"))
	f.Add(protocol.AppendLookupReply(nil, []byte("null")))
	f.Fuzz(func(t *testing.T, in []byte) {
		cfg := &Config{
			Identify:     identify,
			Snapshot:     func() []Registration { return []Registration{{"t", "c"}, {"u", ""}} },
			Timeout:      200 * time.Millisecond,
			PingInterval: 50 * time.Millisecond,
			MinBackoff:   10 * time.Millisecond,
			MaxReplySize: 1 << 10,
		}
		p := &peer{addr: ln.Addr().String(), cfg: cfg, logger: New(Config{}).logger, wake: make(chan struct{}, 1)}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		done := make(chan struct{})
		go func() {
			defer close(done)
			inputs <- in
			conn, err := p.connect(ctx)
			if err != nil {
				return
			}
			p.enqueue(command(protocol.LookupCmdRegister, "v", ""))
			p.serve(ctx, conn)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("peer did not give up for input %q", in)
		}
	})
}
