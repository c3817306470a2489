package nsqd

import (
	"io"
	"net"
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
