package diskq

import (
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
	q := Open("bench", b.TempDir(), Options{MaxBytesPerFile: 100 << 20, MinMsgSize: 26, MaxMsgSize: 1 << 20, SyncEvery: 2500, Logger: quiet})
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
