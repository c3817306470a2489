package store

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkCommitterMPUB measures durable MPUB throughput on the real file
// system: producers each append 200-message entries of 100-byte bodies to
// one topic log and wait for the group commit (write + fdatasync) that
// covers them. One op is one MPUB.
func BenchmarkCommitterMPUB(b *testing.B) {
	const perEntry, bodySize = 200, 100
	ids := make([]uint64, perEntry)
	for i := range ids {
		ids[i] = uint64(i)
	}
	entry := packEntry(ids, bodySize) // read only: the log copies it
	for _, producers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("producers=%d", producers), func(b *testing.B) {
			l, _, err := OpenLog(OSFS{}, b.TempDir(), LogOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			c := NewCommitter(0)
			defer c.Close()
			b.SetBytes(perEntry * bodySize)
			b.ReportAllocs()
			var ops atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for p := range producers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for n := ops.Add(1); n <= int64(b.N); n = ops.Add(1) {
						if err := commitWait(c, l, entry); err != nil {
							b.Error(err)
							return
						}
						if p == 0 && n%256 == 0 {
							// keep the disk use bounded: nothing reads
							l.Retain(l.End(), Retention{}, time.Now())
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N*perEntry)/elapsed.Seconds(), "msgs/s")
			b.ReportMetric(float64(c.Syncs())/float64(b.N), "fsyncs/op")
		})
	}
}
