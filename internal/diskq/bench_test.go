package diskq

import (
	"fmt"
	"testing"
	"time"

	diskqueue "github.com/nsqio/go-diskqueue"
)

// The benchmarks put and read 126-byte records (a 100-byte NSQ message
// with its 26-byte header) with --sync-every 2500, NSQ's default: this
// package in batches of 200 (an MPUB), go-diskqueue one Put and one
// ReadChan receive per record, as nsqd uses each. b.N counts records.

const benchRecord = 126

func benchBatch(n int) []byte {
	var b []byte
	rec := make([]byte, benchRecord)
	for range n {
		var start int
		b, start = AppendFrame(b)
		b = append(b, rec...)
		EndFrame(b, start)
	}
	return b
}

func BenchmarkPutBatch200(b *testing.B) {
	benchmarkPutBatch200(b, Options{MaxBytesPerFile: 100 << 20, MinMsgSize: 26, MaxMsgSize: 1 << 20, SyncEvery: 2500, Logger: quiet})
}

// benchmarkPutBatch200 puts an MPUB's batch of 200 records at a time.
func benchmarkPutBatch200(b *testing.B, o Options) {
	q := Open("bench", b.TempDir(), o)
	defer q.Close()
	batch := benchBatch(200)
	b.SetBytes(benchRecord)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += 200 {
		if err := q.PutFramed(batch); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPutSingle is nsqd's put of one PUB's message: one record per
// put, without a write buffer (one write syscall each) and with nsqd's
// --disk-write-buffer=65536 (one per 64 KiB).
func BenchmarkPutSingle(b *testing.B) {
	for _, wbuf := range []int{0, 64 << 10} {
		b.Run(fmt.Sprintf("buffer=%d", wbuf), func(b *testing.B) {
			s := NewSyncer(2 * time.Second)
			q := Open("bench", b.TempDir(), Options{MaxBytesPerFile: 100 << 20, MinMsgSize: 26, MaxMsgSize: 1 << 20, SyncEvery: 2500,
				Syncer: s, Logger: quiet, WriteBuffer: wbuf})
			defer q.Close()
			rec := benchBatch(1)
			b.SetBytes(benchRecord)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := q.PutFramed(rec); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPutBatch200Buffered: an MPUB's batch with the write buffer on
// is written at once, as without it.
func BenchmarkPutBatch200Buffered(b *testing.B) {
	benchmarkPutBatch200(b, Options{MaxBytesPerFile: 100 << 20, MinMsgSize: 26, MaxMsgSize: 1 << 20, SyncEvery: 2500,
		Syncer: NewSyncer(2 * time.Second), Logger: quiet, WriteBuffer: 64 << 10})
}

func BenchmarkRead(b *testing.B) {
	q := Open("bench", b.TempDir(), Options{MaxBytesPerFile: 100 << 20, MinMsgSize: 26, MaxMsgSize: 1 << 20, SyncEvery: 2500, Logger: quiet})
	defer q.Close()
	batch := benchBatch(200)
	for i := 0; i < b.N; i += 200 {
		if err := q.PutFramed(batch); err != nil {
			b.Fatal(err)
		}
	}
	recs := make([][]byte, 0, 256)
	b.SetBytes(benchRecord)
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; {
		recs, _ = q.Read(recs[:0], 256)
		if len(recs) == 0 {
			b.Fatalf("read %d of %d", n, b.N)
		}
		n += len(recs)
	}
}

func BenchmarkGoDiskqueuePut(b *testing.B) {
	q := diskqueue.New("bench", b.TempDir(), 100<<20, 26, 1<<20, 2500, 2*time.Second, libLog(b))
	defer q.Close()
	rec := make([]byte, benchRecord)
	b.SetBytes(benchRecord)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := q.Put(rec); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGoDiskqueueRead(b *testing.B) {
	q := diskqueue.New("bench", b.TempDir(), 100<<20, 26, 1<<20, 2500, 2*time.Second, libLog(b))
	defer q.Close()
	rec := make([]byte, benchRecord)
	for range b.N {
		if err := q.Put(rec); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(benchRecord)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		<-q.ReadChan()
	}
}
