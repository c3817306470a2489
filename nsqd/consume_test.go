package nsqd

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/sluicemq/sluice/protocol"
)

// benchChannel returns a node's channel holding MPUB batches of 200
// 100-byte messages, and a subscribed consumer on it without a socket.
func benchChannel(b *testing.B, rdy int64) (*NSQD, *Topic, *Channel, *client, []byte) {
	b.Helper()
	n, topic, ch := startHotPathNSQD(b, 10_000_000, "bench", "c")
	opts := n.opts
	server, other := net.Pipe()
	b.Cleanup(func() { other.Close(); server.Close() })
	cl := &client{id: 1, nsqd: n, conn: server, msgTimeout: opts.MsgTimeout, outputBufSize: 16 * 1024}
	if err := ch.addClient(cl, 0); err != nil {
		b.Fatal(err)
	}
	cl.state.Store(stateSubscribed)
	cl.readyCount.Store(rdy)
	bodies := make([][]byte, 200)
	for i := range bodies {
		bodies[i] = make([]byte, 100)
	}
	data := protocol.AppendMPUB(nil, "bench", bodies)[len("MPUB bench\n")+8:]
	return n, topic, ch, cl, data
}

// BenchmarkDeliverAndFinish is the consume path without sockets: messages
// of MPUB batches framed into a 16 KiB output buffer as a pump does
// (Channel.take), then finished one FIN at a time (Channel.finish), with a
// window of 2,500 in flight. Reported per message; steady state allocates
// nothing per message.
func BenchmarkDeliverAndFinish(b *testing.B) {
	n, topic, ch, cl, data := benchChannel(b, 2500)
	buf := make([]byte, 0, 32*1024)
	ids := make([]protocol.MessageID, 0, 2500)
	frame := func(m *Message) bool {
		buf = protocol.AppendMessageFrame(buf, m.Timestamp, m.Attempts, &m.ID, m.Body)
		ids = append(ids, m.ID)
		return len(buf) < cl.outputBufSize
	}
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		if ch.mem.len() < 2500 {
			b.StopTimer()
			for i := 0; i < 50; i++ {
				if err := topic.putBatch(n.newBatch(data, 200), 200*100); err != nil {
					b.Fatal(err)
				}
			}
			b.StartTimer()
		}
		// fill the window, then finish it
		for len(ids) < 2500 {
			buf = buf[:0]
			if ch.take(cl, maxTakePerRun, frame) == 0 {
				b.Fatal("nothing taken")
			}
		}
		for _, id := range ids {
			if err := ch.finish(cl, id); err != nil {
				b.Fatal(err)
			}
		}
		done += len(ids)
		ids = ids[:0]
	}
}

// BenchmarkInFlightAddRemove is the in-flight bookkeeping alone: a window
// of 2,500 messages added as delivered and removed as finished, by the IDs
// nsqd hands out.
func BenchmarkInFlightAddRemove(b *testing.B) {
	const window = 2500
	msgs := make([]Message, window)
	var f inFlight
	b.ReportAllocs()
	next := uint64(1_700_000_000_000_000_000)
	for done := 0; done < b.N; done += window {
		for i := range msgs {
			msgs[i] = Message{ID: protocol.NewMessageID(next)}
			next++
			f.add(&msgs[i], 1, int64(done), 60e9)
		}
		for i := range msgs {
			if _, err := f.remove(msgs[i].ID, 1); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkDiskPutAndDrain is the --mem-queue-size=0 path end to end:
// MPUB batches of 200 100-byte messages written through the channel's
// go-diskqueue (Channel.put), read back by its refiller and delivered over
// a real socket to a consumer with RDY 2500 that FINs each. Reported per
// message; what it allocates per message is go-diskqueue's: a buffer per
// record read and the size prefixes it reads and writes with
// encoding/binary.
func BenchmarkDiskPutAndDrain(b *testing.B) {
	n, topic, _ := startHotPathNSQD(b, 0, "bench", "")
	conn, err := net.Dial("tcp", n.TCPAddr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReaderSize(conn, 64*1024)
	w := bufio.NewWriterSize(conn, 64*1024)
	w.WriteString("  V2SUB bench c\nRDY 2500\n")
	w.Flush()
	if _, data, err := protocol.ReadFrame(r); err != nil || string(data) != "OK" {
		b.Fatalf("SUB: %q %v", data, err)
	}
	bodies := make([][]byte, 200)
	for i := range bodies {
		bodies[i] = make([]byte, 100)
	}
	data := protocol.AppendMPUB(nil, "bench", bodies)[len("MPUB bench\n")+8:]
	fin := []byte("FIN 0123456789abcdef\n")
	var hdr [8]byte
	var frame []byte
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += 2000 {
		for i := 0; i < 10; i++ {
			if err := topic.putBatch(n.newBatch(data, 200), 200*100); err != nil {
				b.Fatal(err)
			}
		}
		for got := 0; got < 2000; {
			// a frame read into a reused buffer: the client allocates nothing
			if _, err := io.ReadFull(r, hdr[:]); err != nil {
				b.Fatal(err)
			}
			size := int(binary.BigEndian.Uint32(hdr[:4])) - 4
			if cap(frame) < size {
				frame = make([]byte, size)
			}
			frame = frame[:size]
			if _, err := io.ReadFull(r, frame); err != nil {
				b.Fatal(err)
			}
			if protocol.FrameType(binary.BigEndian.Uint32(hdr[4:])) != protocol.FrameTypeMessage {
				continue
			}
			copy(fin[4:20], frame[10:26])
			w.Write(fin)
			got++
			if r.Buffered() == 0 {
				w.Flush()
			}
		}
		w.Flush()
	}
}

// A pump that stops taking part-way through a chunk (its output buffer is
// full) leaves the rest queued in order, and structs reused after FIN
// carry the right message: every message arrives once, in publish order,
// with its own body, however the deliveries are cut.
func TestTakeStoppedMidChunkKeepsOrderAcrossReusedStructs(t *testing.T) {
	n, topic, ch := startHotPathNSQD(t, 10_000_000, "order", "c")
	opts := n.opts
	server, other := net.Pipe()
	defer other.Close()
	cl := &client{id: 1, nsqd: n, conn: server, msgTimeout: opts.MsgTimeout}
	if err := ch.addClient(cl, 0); err != nil {
		t.Fatal(err)
	}
	cl.state.Store(stateSubscribed)
	cl.readyCount.Store(300)

	const batches, perBatch = 20, 100
	for b := 0; b < batches; b++ {
		bodies := make([][]byte, perBatch)
		for i := range bodies {
			bodies[i] = fmt.Appendf(nil, "msg-%05d", b*perBatch+i)
		}
		data := protocol.AppendMPUB(nil, "order", bodies)[len("MPUB order\n")+8:]
		if err := topic.putBatch(n.newBatch(data, perBatch), 0); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	var ids []protocol.MessageID
	for cut := 1; len(got) < batches*perBatch; cut = cut%37 + 1 {
		k := 0
		taken := ch.take(cl, maxTakePerRun, func(m *Message) bool {
			got = append(got, string(m.Body))
			ids = append(ids, m.ID)
			k++
			return k < cut
		})
		if taken != k {
			t.Fatalf("take reported %d, emitted %d", taken, k)
		}
		if taken == 0 {
			t.Fatalf("nothing taken after %d messages", len(got))
		}
		if len(ids) >= 150 { // finish some, so later deliveries reuse their structs
			for _, id := range ids {
				if err := ch.finish(cl, id); err != nil {
					t.Fatal(err)
				}
			}
			ids = ids[:0]
		}
	}
	for i, body := range got {
		if want := fmt.Sprintf("msg-%05d", i); body != want {
			t.Fatalf("delivery %d is %q, want %q", i, body, want)
		}
	}
	if d := ch.mem.len(); d != 0 {
		t.Fatalf("%d messages left queued", d)
	}
}
