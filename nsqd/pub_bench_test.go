package nsqd

import (
	"io"
	"net"
	"sync"
	"testing"

	"github.com/sluicemq/sluice/protocol"
)

// BenchmarkPUBRoundTrip times one PUB of 100 bytes and its OK over a real
// socket into a topic with one channel, one round trip at a time; the
// client side allocates nothing, so allocs/op is the daemon's per PUB.
func BenchmarkPUBRoundTrip(b *testing.B) {
	n, _, _ := startHotPathNSQD(b, 100_000_000, "pubrt", "c")
	conn, err := net.Dial("tcp", n.TCPAddr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(protocol.MagicV2)); err != nil {
		b.Fatal(err)
	}
	cmd := protocol.AppendPUB(nil, "pubrt", make([]byte, 100))
	ok := make([]byte, len(okFrame))
	b.SetBytes(100)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := conn.Write(cmd); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(conn, ok); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if string(ok) != string(okFrame) {
		b.Fatalf("last answer %q, want OK", ok)
	}
}

// BenchmarkDurablePUBRoundTrip64 is durable-pub64 in process: 64
// connections, each one PUB of 100 bytes at a time into a durable topic
// (OK after the group commit's fdatasync). b.N is the PUB count over all
// connections; allocs/op is the daemon's per PUB (the clients allocate
// nothing per PUB).
func BenchmarkDurablePUBRoundTrip64(b *testing.B) {
	n, _, _ := startHotPathNSQDWith(b, func(o *Options) { o.Durable = true }, "durrt", "c")
	const conns = 64
	cmd := protocol.AppendPUB(nil, "durrt", make([]byte, 100))
	cs := make([]net.Conn, conns)
	for i := range cs {
		c, err := net.Dial("tcp", n.TCPAddr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte(protocol.MagicV2)); err != nil {
			b.Fatal(err)
		}
		cs[i] = c
	}
	b.SetBytes(100)
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i, c := range cs {
		count := b.N / conns
		if i < b.N%conns {
			count++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok := make([]byte, len(okFrame))
			for range count {
				if _, err := c.Write(cmd); err != nil {
					errs <- err
					return
				}
				if _, err := io.ReadFull(c, ok); err != nil {
					errs <- err
					return
				}
				if string(ok) != string(okFrame) {
					errs <- io.ErrUnexpectedEOF
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}
