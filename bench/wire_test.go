package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicemq/sluice/protocol"
	"os"
)

// The bench encoder must produce exactly what the shared protocol codec
// produces, so the figures measure real NSQ framing.
func TestBatchMatchesProtocolCodec(t *testing.T) {
	b := NewBatch("topic_x", 100)
	stamp := func(i int) int64 { return 1_700_000_000_000_000_000 + int64(i) }
	bodies := make([][]byte, 3)
	for i := range bodies {
		bodies[i] = binary.BigEndian.AppendUint64(nil, uint64(stamp(i)))
		bodies[i] = append(bodies[i], b.filler...)
	}
	if got, want := b.MPUB(3, stamp), protocol.AppendMPUB(nil, "topic_x", bodies); !bytes.Equal(got, want) {
		t.Fatalf("MPUB encoding differs:\n got %q\nwant %q", got, want)
	}
	if got, want := b.PUB(stamp(0)), protocol.AppendPUB(nil, "topic_x", bodies[0]); !bytes.Equal(got, want) {
		t.Fatalf("PUB encoding differs:\n got %q\nwant %q", got, want)
	}
	if got := bodyStamp(bodies[2]); got != stamp(2) {
		t.Fatalf("bodyStamp = %d, want %d", got, stamp(2))
	}
}

func TestBatchEncodingDoesNotAllocate(t *testing.T) {
	b := NewBatch("t", 100)
	st := &stamper{base: 1}
	stampAt := st.at
	b.MPUB(200, stampAt) // grow the buffer once
	if n := testing.AllocsPerRun(100, func() { b.MPUB(200, stampAt); b.PUB(2) }); n != 0 {
		t.Fatalf("encoding allocates %.1f times per batch", n)
	}
}

func TestPublishToSinkExactCounts(t *testing.T) {
	s, err := NewSink("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var sent atomic.Int64
	res, err := Publish(ctx, PublishSpec{Addr: s.Addr(), Topic: "t", Conns: 3, Batch: 200, BodySize: 100, Messages: 10_001, Sent: &sent})
	if err != nil {
		t.Fatal(err)
	}
	if res.Messages != 10_001 || sent.Load() != 10_001 || s.Messages() != 10_001 {
		t.Fatalf("MPUB: result %d, progress %d, sink %d; want 10001 each", res.Messages, sent.Load(), s.Messages())
	}
	res, err = Publish(ctx, PublishSpec{Addr: s.Addr(), Topic: "t", Conns: 2, BodySize: 100, Messages: 501, PUB: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Messages != 501 || s.Messages() != 10_001+501 {
		t.Fatalf("PUB: result %d, sink total %d; want 501 and 10502", res.Messages, s.Messages())
	}
}

// A throttled publisher keeps to its schedule: 2,000 msgs at 4,000/s take
// about half a second, not less.
func TestPublishThrottled(t *testing.T) {
	s, err := NewSink("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := Publish(ctx, PublishSpec{Addr: s.Addr(), Topic: "t", Conns: 2, Batch: 50, BodySize: 16, Messages: 2000, Rate: 4000})
	if err != nil {
		t.Fatal(err)
	}
	if s.Messages() != 2000 {
		t.Fatalf("sink got %d, want 2000", s.Messages())
	}
	if res.Elapsed < 450*time.Millisecond || res.Elapsed > 5*time.Second {
		t.Fatalf("2000 msgs at 4000/s took %s, want about 500ms", res.Elapsed)
	}
}

// Publish stops when its context ends, even if the server never answers.
func TestPublishHonoursContext(t *testing.T) {
	s, err := NewSink("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = Publish(ctx, PublishSpec{Addr: s.Addr(), Topic: "t", Conns: 1, Batch: 1, BodySize: 16, Messages: 1 << 40, Rate: 10})
	if err == nil {
		t.Fatal("unbounded publish returned no error")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("publish took %s to stop after its context ended", d)
	}
}

func TestPercentiles(t *testing.T) {
	if Percentiles(nil) != nil {
		t.Fatal("no samples must give nil")
	}
	s := make([]int64, 1000)
	for i := range s {
		s[len(s)-1-i] = int64(i+1) * int64(time.Millisecond) // 1..1000 ms, reversed
	}
	l := Percentiles(s)
	if l.Samples != 1000 || l.P50 != 500 || l.P99 != 990 || l.P999 != 999 || l.Max != 1000 {
		t.Fatalf("got %+v", *l)
	}
}

func TestProcessRSS(t *testing.T) {
	rss, err := ProcessRSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if rss < 1<<20 {
		t.Fatalf("RSS of the test process = %d bytes, implausibly small", rss)
	}
}

func TestTableLine(t *testing.T) {
	r := Result{Scenario: "mpub", Target: "sluice", Messages: 10, Seconds: 1, MsgsPerSec: 10, RatioVsSink: 0.5,
		Latency: &Latency{P50: 1, P99: 2, P999: 3}, Extra: map[string]any{"b": 2, "a": 1}}
	line := r.TableLine()
	for _, want := range []string{"mpub", "sluice", "0.500", "1.00", "3.00", "a=1 b=2"} {
		if !bytes.Contains([]byte(line), []byte(want)) {
			t.Fatalf("table line %q lacks %q", line, want)
		}
	}
}
