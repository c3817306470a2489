package replica

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/sluicemq/sluice/store"
)

// preallocSetup saves and syncs entries on a MemFS (which writes at
// offsets) until the active segment's file holds zeros after its records,
// and returns the storage (open), the newest segment's path and what the
// storage shows.
func preallocSetup(t *testing.T, fs *store.MemFS) (*Storage, string, logImage) {
	t.Helper()
	s := mustOpen(t, fs, testDir, StorageOptions{SegmentSize: 1 << 20})
	g := &opGen{rng: rand.New(rand.NewPCG(5, 6)), term: 2}
	for s.active.alloc <= s.active.size {
		last, _ := s.LastIndex()
		if err := s.Save(g.hardState(last), g.entries(last+1, 4), nil); err != nil {
			t.Fatal(err)
		}
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	img, err := imageOf(s)
	if err != nil {
		t.Fatal(err)
	}
	return s, s.segPath(s.active.seq), img
}

func TestStoragePreallocatedTailIsNotATornWrite(t *testing.T) {
	fs := newMemDir(t)
	_, newest, want := preallocSetup(t, fs)
	b, err := fs.ReadFile(newest)
	if err != nil {
		t.Fatal(err)
	}
	fs.Crash() // the storage is never closed: its zeros stay
	s := mustOpen(t, fs, testDir, StorageOptions{SegmentSize: 1 << 20})
	if c := s.Recovery().Cut; len(c) != 0 {
		t.Fatalf("recovery cut %v: the zeros after the last record are preallocated space", c)
	}
	if s.active.alloc != int64(len(b)) || s.active.size >= s.active.alloc {
		t.Fatalf("after recovery the segment holds %d bytes of records in a file of %d, want the file of %d kept", s.active.size, s.active.alloc, len(b))
	}
	got, err := imageOf(s)
	if err != nil {
		t.Fatal(err)
	}
	if d := got.diff(&want); d != "" {
		t.Fatal(d)
	}
	// the records go on where they stopped, over the zeros
	if err := s.Save(nil, ents(got.last+1, 9, 9), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	fs.Crash()
	s = mustOpen(t, fs, testDir, StorageOptions{SegmentSize: 1 << 20})
	defer s.Close()
	if last, _ := s.LastIndex(); last != got.last+2 || len(s.Recovery().Cut) != 0 {
		t.Fatalf("last index %d, cut %v after saving two entries past %d", last, s.Recovery().Cut, got.last)
	}
}

// Bytes other than zeros after the last good record (an unsynced write
// that reached the disk after a gap) are a torn tail: cut, so that no
// later write can leave them after its records.
func TestStorageGarbageInPreallocatedSpaceIsCut(t *testing.T) {
	fs := newMemDir(t)
	s, newest, want := preallocSetup(t, fs)
	size := s.active.size
	fs.Crash()
	b, err := fs.ReadFile(newest)
	if err != nil {
		t.Fatal(err)
	}
	b[size+100] = 7
	fs.WriteFile(newest, b)
	s = mustOpen(t, fs, testDir, StorageOptions{SegmentSize: 1 << 20})
	defer s.Close()
	if c := s.Recovery().Cut; len(c) != 1 || !strings.Contains(c[0], newest) {
		t.Fatalf("recovery report %v, want the tail of %s cut", c, newest)
	}
	if s.active.alloc != size {
		t.Fatalf("file of %d bytes after the cut, want %d", s.active.alloc, size)
	}
	got, err := imageOf(s)
	if err != nil {
		t.Fatal(err)
	}
	if d := got.diff(&want); d != "" {
		t.Fatal(d)
	}
}

// Only the newest segment may end in zeros: a segment is cut back to its
// records before the next one is started, and a closed log keeps none.
func TestStorageSealedSegmentsEndAtTheirLastRecord(t *testing.T) {
	fs := newMemDir(t)
	s := mustOpen(t, fs, testDir, StorageOptions{SegmentSize: 64 << 10})
	g := &opGen{rng: rand.New(rand.NewPCG(7, 8)), term: 2}
	preallocated := false
	for s.active.seq < 4 {
		last, _ := s.LastIndex()
		if err := s.Save(g.hardState(last), g.entries(last+1, 4), nil); err != nil {
			t.Fatal(err)
		}
		preallocated = preallocated || s.active.alloc > s.active.size
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if !preallocated {
		t.Fatal("no segment was preallocated")
	}
	sizes := map[uint32]int64{}
	for _, seg := range s.segs {
		sizes[seg.seq] = seg.size
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for seq, size := range sizes {
		b, err := fs.ReadFile(s.segPath(seq))
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(b)) != size {
			t.Errorf("segment %d: file of %d bytes, records of %d", seq, len(b), size)
		}
	}
	s = mustOpen(t, fs, testDir, StorageOptions{SegmentSize: 64 << 10})
	defer s.Close()
	if len(s.Recovery().Cut) != 0 {
		t.Fatalf("recovery cut %v", s.Recovery().Cut)
	}
}
