package replica

import (
	"math/rand/v2"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/sluicemq/sluice/store"
)

// BenchmarkStorageSaveSync saves batches of 64 entries of 1 KiB with a hard
// state and syncs each (one fdatasync per batch) on the real file system,
// compacting as a host would so segments roll and are removed.
func BenchmarkStorageSaveSync(b *testing.B) {
	s := mustOpen(b, store.OSFS{}, b.TempDir(), StorageOptions{})
	defer s.Close()
	data := entryData(1, 1024)
	next, batches := uint64(1), 0
	b.SetBytes(64 * 1024)
	for b.Loop() {
		batch := make([]*pb.Entry, 64) // raft hands over new entries each time
		for k := range batch {
			batch[k] = ent(next+uint64(k), 1, data)
		}
		next += 64
		if err := s.Save(&pb.HardState{Term: new(uint64(1)), Vote: new(uint64(1)), Commit: new(next - 1)}, batch, nil); err != nil {
			b.Fatal(err)
		}
		if err := s.Sync(); err != nil {
			b.Fatal(err)
		}
		if batches++; batches%256 == 0 {
			if err := s.Compact(next - 1 - 4096); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(batches*64)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkStorageEntriesFromDisk reads runs of 64 entries of 1 KiB from
// random places of a 32 MiB log with no cache: every entry is read from a
// segment file (from the page cache: the file system is warm) and decoded.
func BenchmarkStorageEntriesFromDisk(b *testing.B) {
	dir := b.TempDir()
	s := mustOpen(b, store.OSFS{}, dir, StorageOptions{CacheBytes: -1})
	defer s.Close()
	data := entryData(1, 1024)
	const total = 32 << 10
	for next := uint64(1); next <= total; next += 256 {
		batch := make([]*pb.Entry, 256)
		for k := range batch {
			batch[k] = ent(next+uint64(k), 1, data)
		}
		if err := s.Save(nil, batch, nil); err != nil {
			b.Fatal(err)
		}
		if err := s.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(1, 1))
	read := 0
	b.SetBytes(64 * 1024)
	for b.Loop() {
		lo := 1 + uint64(rng.IntN(total-64))
		got, err := s.Entries(lo, lo+64, 1<<30)
		if err != nil || len(got) != 64 {
			b.Fatalf("Entries(%d): %d, %v", lo, len(got), err)
		}
		read += len(got)
	}
	b.ReportMetric(float64(read)/b.Elapsed().Seconds(), "entries/s")
}
