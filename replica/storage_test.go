package replica

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/sluicemq/sluice/store"
)

// compareWithModel checks that s shows what ms shows, including the errors
// of out-of-range reads and Entries' size limits.
func compareWithModel(t *testing.T, what string, s *Storage, ms *raft.MemoryStorage, rng *rand.Rand) {
	t.Helper()
	got, err := imageOf(s)
	if err != nil {
		t.Fatalf("%s: read storage: %v", what, err)
	}
	want, err := imageOf(ms)
	if err != nil {
		t.Fatalf("%s: read model: %v", what, err)
	}
	if d := got.diff(&want); d != "" {
		t.Fatalf("%s: %s", what, d)
	}
	for _, e := range got.ents {
		if err := checkEntryData(e); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	first, last := want.first, want.last
	for _, i := range []uint64{first - 1, first, last, last + 1, last + 2, max(first, 2) - 2} {
		gt, gerr := s.Term(i)
		wt, werr := ms.Term(i)
		if gt != wt || gerr != werr {
			t.Fatalf("%s: Term(%d) = %d, %v; want %d, %v", what, i, gt, gerr, wt, werr)
		}
	}
	for range 8 {
		lo := first - 1 + uint64(rng.IntN(int(last-first+3)))
		hi := lo + uint64(rng.IntN(int(last+2-lo)))
		var maxSize uint64
		switch rng.IntN(4) {
		case 0:
			maxSize = uint64(rng.IntN(3))
		case 1:
			maxSize = math.MaxUint64
		default: // around the size of a prefix of the range
			for k := max(lo, first); k < min(hi, lo+uint64(rng.IntN(6))); k++ {
				maxSize += uint64(proto.Size(want.ents[k-first]))
			}
			maxSize = maxSize + uint64(rng.IntN(3)) - 1
		}
		ge, gerr := s.Entries(lo, hi, maxSize)
		we, werr := ms.Entries(lo, hi, maxSize)
		if gerr != werr || len(ge) != len(we) {
			t.Fatalf("%s: Entries(%d, %d, %d) = %d entries, %v; want %d, %v", what, lo, hi, maxSize, len(ge), gerr, len(we), werr)
		}
		for k := range ge {
			if !proto.Equal(ge[k], we[k]) {
				t.Fatalf("%s: Entries(%d, %d, %d)[%d] = %v, want %v", what, lo, hi, maxSize, k, ge[k], we[k])
			}
		}
	}
}

// TestStorageMatchesMemoryStorage applies random saves (appends, a new
// leader's overwrites, hard states, snapshots from a leader), compactions,
// snapshots, syncs, restarts and synced crashes to a Storage on MemFS and
// to raft.MemoryStorage, and compares everything they show after each.
func TestStorageMatchesMemoryStorage(t *testing.T) {
	seed := testSeed(t)
	rounds, steps := 6, 300
	if longTests() {
		rounds, steps = 60, 3000
	}
	for round := range rounds {
		rng := rand.New(rand.NewPCG(seed, uint64(round)))
		opts := StorageOptions{
			SegmentSize: []int64{300, 2048, 1 << 20}[round%3],
			CacheBytes:  []int64{-1, 700, 1 << 20}[round/3%3],
		}
		g := &opGen{rng: rng, big: round%2 == 0, crash: true}
		fs := newMemDir(t)
		s := mustOpen(t, fs, testDir, opts)
		ms := raft.NewMemoryStorage()
		for step := range steps {
			first, _ := ms.FirstIndex()
			last, _ := ms.LastIndex()
			snap, _ := ms.Snapshot()
			o := g.next(first, last, snap.GetMetadata().GetIndex())
			what := fmt.Sprintf("round %d (%+v) step %d: %v", round, opts, step, o)
			switch o.kind {
			case opSave:
				gerr := s.Save(o.hs, o.ents, o.snap)
				if werr := applyModel(ms, o); gerr != werr {
					t.Fatalf("%s: error %v, want %v", what, gerr, werr)
				}
			case opCompact:
				if gerr, werr := s.Compact(o.index), ms.Compact(o.index); gerr != werr {
					t.Fatalf("%s: error %v, want %v", what, gerr, werr)
				}
			case opCreateSnapshot:
				gs, gerr := s.CreateSnapshot(o.index, o.cs, o.data)
				ws, werr := ms.CreateSnapshot(o.index, o.cs, o.data)
				if gerr != werr || (gerr == nil && !proto.Equal(pb.EnsureSnapshot(gs), pb.EnsureSnapshot(ws))) {
					t.Fatalf("%s: %v, %v; want %v, %v", what, gs, gerr, ws, werr)
				}
			case opSync:
				if err := s.Sync(); err != nil {
					t.Fatalf("%s: %v", what, err)
				}
			case opReopen:
				if err := s.Close(); err != nil {
					t.Fatalf("%s: close: %v", what, err)
				}
				s = mustOpen(t, fs, testDir, opts)
			case opCrash:
				if err := s.Sync(); err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				fs.Crash() // s is abandoned: its files belong to the old life
				s = mustOpen(t, fs, testDir, opts)
			}
			if rep := s.Recovery(); len(rep.Cut) > 0 {
				t.Fatalf("%s: recovery cut a tail without a crash: %v", what, rep.Cut)
			}
			compareWithModel(t, what, s, ms, rng)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = mustOpen(t, fs, testDir, opts)
		compareWithModel(t, fmt.Sprintf("round %d: reopened at the end", round), s, ms, rng)
		s.Close()
	}
}

// The cases of raft's own storage tests, each against a fresh Storage that
// is also closed and reopened, so every answer comes from disk once.
func TestStorageContractCases(t *testing.T) {
	// a log compacted at 3 (term 3) holding 4, 5 (terms 4, 5)
	setup := func(t *testing.T) (*Storage, *store.MemFS) {
		fs := newMemDir(t)
		s := mustOpen(t, fs, testDir, StorageOptions{})
		if err := s.Save(nil, ents(1, 1, 2, 3, 4, 5), nil); err != nil {
			t.Fatal(err)
		}
		if err := s.Compact(3); err != nil {
			t.Fatal(err)
		}
		return s, fs
	}
	for _, reopen := range []bool{false, true} {
		s, fs := setup(t)
		if reopen {
			s.Close()
			s = mustOpen(t, fs, testDir, StorageOptions{})
		}
		for i, want := range map[uint64]struct {
			term uint64
			err  error
		}{2: {0, raft.ErrCompacted}, 3: {3, nil}, 4: {4, nil}, 5: {5, nil}, 6: {0, raft.ErrUnavailable}} {
			if term, err := s.Term(i); term != want.term || err != want.err {
				t.Errorf("reopen %v: Term(%d) = %d, %v; want %d, %v", reopen, i, term, err, want.term, want.err)
			}
		}
		size := func(i uint64) uint64 { return uint64(proto.Size(ents(i, i)[0])) }
		for _, c := range []struct {
			lo, hi, maxSize uint64
			n               int
			err             error
		}{
			{2, 6, math.MaxUint64, 0, raft.ErrCompacted},
			{3, 4, math.MaxUint64, 0, raft.ErrCompacted},
			{4, 5, math.MaxUint64, 1, nil},
			{4, 6, math.MaxUint64, 2, nil},
			{4, 6, 0, 1, nil}, // at least one, whatever the limit
			{4, 6, size(4) + size(5) - 1, 1, nil},
			{4, 6, size(4) + size(5), 2, nil},
			{5, 5, 0, 0, nil},
		} {
			got, err := s.Entries(c.lo, c.hi, c.maxSize)
			if len(got) != c.n || err != c.err {
				t.Errorf("reopen %v: Entries(%d, %d, %d) = %d entries, %v; want %d, %v", reopen, c.lo, c.hi, c.maxSize, len(got), err, c.n, c.err)
			}
			for k, e := range got {
				if e.GetIndex() != c.lo+uint64(k) || e.GetTerm() != c.lo+uint64(k) {
					t.Errorf("Entries(%d, %d)[%d] = %v", c.lo, c.hi, k, e)
				}
			}
		}
		if _, err := s.Entries(4, 7, math.MaxUint64); !errors.Is(err, raft.ErrUnavailable) {
			t.Errorf("Entries past the last: %v, want ErrUnavailable", err)
		}
		if err := s.Compact(3); err != raft.ErrCompacted {
			t.Errorf("Compact(3) again: %v", err)
		}
		if err := s.Compact(9); err == nil {
			t.Errorf("Compact past the last entry: no error")
		}
		// a follower's conflicting suffix replaced; entries below the
		// compaction point ignored
		if err := s.Save(nil, ents(2, 2, 3, 6, 6), nil); err != nil {
			t.Fatal(err)
		}
		if last, _ := s.LastIndex(); last != 5 {
			t.Errorf("last after overwrite: %d", last)
		}
		if term, _ := s.Term(4); term != 6 {
			t.Errorf("term of 4 after overwrite: %d", term)
		}
		if err := s.Save(nil, ents(7, 7), nil); err == nil {
			t.Errorf("a batch leaving a gap was accepted")
		}
		cs := &pb.ConfState{Voters: []uint64{1, 2, 3}}
		snap, err := s.CreateSnapshot(4, cs, []byte("state"))
		if err != nil || snap.GetMetadata().GetIndex() != 4 || snap.GetMetadata().GetTerm() != 6 || string(snap.GetData()) != "state" {
			t.Fatalf("CreateSnapshot: %v, %v", snap, err)
		}
		if _, err := s.CreateSnapshot(4, nil, nil); err != raft.ErrSnapOutOfDate {
			t.Errorf("CreateSnapshot at the same index: %v", err)
		}
		if err := s.Save(nil, nil, &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(uint64(4)), Term: new(uint64(6))}}); err != raft.ErrSnapOutOfDate {
			t.Errorf("an older snapshot applied: %v", err)
		}
		if _, gotCS, _ := s.InitialState(); !proto.Equal(gotCS, pb.EnsureConfState(proto.Clone(cs).(*pb.ConfState))) {
			t.Errorf("conf state %v", gotCS)
		}
		// a newer snapshot from the leader discards the log
		if err := s.Save(&pb.HardState{Term: new(uint64(9)), Commit: new(uint64(20))}, nil, &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(uint64(20)), Term: new(uint64(9))}}); err != nil {
			t.Fatal(err)
		}
		first, _ := s.FirstIndex()
		last, _ := s.LastIndex()
		if term, _ := s.Term(20); first != 21 || last != 20 || term != 9 {
			t.Errorf("after a snapshot: first %d last %d term %d", first, last, term)
		}
		if _, err := s.Entries(21, 21, 0); err != raft.ErrUnavailable {
			t.Errorf("Entries of an empty log: %v", err)
		}
		s.Close()
		s = mustOpen(t, fs, testDir, StorageOptions{})
		if hs, _, _ := s.InitialState(); hs.GetTerm() != 9 || hs.GetCommit() != 20 {
			t.Errorf("hard state after reopen: %v", hs)
		}
		if files := fs.Files(); len(files) != 2 {
			t.Errorf("files after a snapshot replaced the log: %v", files) // one segment, one snapshot
		}
		s.Close()
	}
}

// Readers run beside Save, Compact and Sync (run with -race): every entry
// they get is intact, and their only errors are ErrCompacted.
func TestStorageConcurrentReads(t *testing.T) {
	fs := newMemDir(t)
	s := mustOpen(t, fs, testDir, StorageOptions{SegmentSize: 4096, CacheBytes: 2048})
	defer s.Close()
	done := make(chan struct{})
	var wg sync.WaitGroup
	for r := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 1))
			for {
				select {
				case <-done:
					return
				default:
				}
				first, _ := s.FirstIndex()
				last, _ := s.LastIndex()
				if last < first {
					continue
				}
				lo := first + uint64(rng.IntN(int(last-first+1)))
				got, err := s.Entries(lo, last+1, uint64(rng.IntN(4096)))
				if err == raft.ErrCompacted {
					continue
				}
				if err != nil {
					t.Errorf("Entries(%d, %d): %v", lo, last+1, err)
					return
				}
				for k, e := range got {
					if e.GetIndex() != lo+uint64(k) || checkEntryData(e) != nil {
						t.Errorf("Entries(%d, ...)[%d] = %v", lo, k, e)
						return
					}
				}
			}
		}()
	}
	g := &opGen{rng: rand.New(rand.NewPCG(7, 7))}
	for i := range 400 {
		last, _ := s.LastIndex()
		if err := s.Save(nil, g.entries(last+1, 5), nil); err != nil {
			t.Fatal(err)
		}
		if i%10 == 9 {
			if err := s.Compact(last - 10); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	wg.Wait()
}
