package replica

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/sluicemq/sluice/store"
)

// The crash tests run random operations on a Storage over MemFS, stop the
// disk at some point (FailAfter(n) for every n of a life, or after a random
// number of operations), cut the power (Crash) and open the storage again.
// Recovery must succeed without cutting anything (MemFS never tears a
// write) and bring back exactly a state the storage showed at or after its
// last Sync (or CreateSnapshot, or Close) that returned nil: so every entry
// and hard state synced is there with the same term and data unless a
// later save replaced it, and the log is contiguous. Then a second life
// runs on the recovered storage, and crashes too.

var crashOpts = StorageOptions{SegmentSize: 600, CacheBytes: 500, Logger: quiet}

// crashHistory is what a storage showed in a life: recovery may bring back
// any of images[durable:].
type crashHistory struct {
	images  []logImage
	durable int
}

func (h *crashHistory) add(t *testing.T, s *Storage, durable bool, what string) {
	t.Helper()
	img, err := imageOf(s)
	if err != nil {
		t.Fatalf("%s: read the storage: %v", what, err)
	}
	h.images = append(h.images, img)
	if durable {
		h.durable = len(h.images) - 1
	}
}

// contractErr reports an error raft's contract names, which changes
// nothing; any other error means the disk stopped.
func contractErr(err error) bool {
	return err == raft.ErrCompacted || err == raft.ErrSnapOutOfDate
}

// crashLife opens the storage and runs up to steps operations, recording
// every state in h, until an operation fails. It reports whether all ran.
func crashLife(t *testing.T, fs store.FS, g *opGen, steps int, h *crashHistory, what string) bool {
	s, err := OpenStorage(fs, testDir, crashOpts)
	if err != nil {
		return false // the disk stopped during recovery
	}
	for step := range steps {
		first, _ := s.FirstIndex()
		last, _ := s.LastIndex()
		o := g.next(first, last, s.st.snapIndex)
		durable := false
		switch o.kind {
		case opSave:
			err = s.Save(o.hs, o.ents, o.snap)
		case opCompact:
			err = s.Compact(o.index)
		case opCreateSnapshot:
			_, err = s.CreateSnapshot(o.index, o.cs, o.data)
			durable = err == nil
		case opSync, opCrash:
			err = s.Sync()
			durable = err == nil
		case opReopen:
			if err = s.Close(); err == nil {
				durable = true
				s, err = OpenStorage(fs, testDir, crashOpts)
			}
		}
		if contractErr(err) {
			continue
		}
		if err != nil {
			return false
		}
		h.add(t, s, durable, fmt.Sprintf("%s, step %d (%v)", what, step, o))
	}
	return true
}

// checkCrashRecovery opens what the crash left and finds the state it
// recovered among those h allows. It returns the recovered state.
func checkCrashRecovery(t *testing.T, fs *store.MemFS, h *crashHistory, what string) logImage {
	t.Helper()
	s, err := OpenStorage(fs, testDir, crashOpts)
	if err != nil {
		t.Fatalf("%s: recovery failed: %v (files %v)", what, err, fs.Files())
	}
	defer s.Close()
	if cut := s.Recovery().Cut; len(cut) > 0 {
		t.Fatalf("%s: recovery cut a tail, which a crash on MemFS cannot tear: %v", what, cut)
	}
	got, err := imageOf(s)
	if err != nil {
		t.Fatalf("%s: read the recovered storage: %v", what, err)
	}
	for _, e := range got.ents {
		if err := checkEntryData(e); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	for _, want := range h.images[h.durable:] {
		if got.diff(&want) == "" {
			return got
		}
	}
	synced := h.images[h.durable]
	t.Logf("recovered %v; states allowed, from the last synced one on:", &got)
	for k, img := range h.images[h.durable:] {
		t.Logf("  %d: %v (%s)", k, &img, got.diff(&img))
	}
	t.Fatalf("%s: recovered a state the storage never showed after its last sync: %s compared with the synced one", what, got.diff(&synced))
	return got
}

func emptyHistory(t *testing.T) *crashHistory {
	img, err := imageOf(raft.NewMemoryStorage())
	if err != nil {
		t.Fatal(err)
	}
	return &crashHistory{images: []logImage{img}}
}

// TestStorageCrashAtEveryStep stops the disk after n operations for every
// n, until a life runs to its end without reaching the failure; after
// each crash, a second life stops at a random point and crashes too.
func TestStorageCrashAtEveryStep(t *testing.T) {
	seed := testSeed(t)
	steps := 150
	if longTests() {
		steps = 600
	}
	for n := 0; ; n++ {
		fs := newMemDir(t)
		fs.FailAfter(n)
		h := emptyHistory(t)
		g := &opGen{rng: rand.New(rand.NewPCG(seed, 1))} // the same operations for every n
		what := fmt.Sprintf("disk stopped after %d operations", n)
		ranToEnd := crashLife(t, fs, g, steps, h, what)
		fs.Crash()
		img := checkCrashRecovery(t, fs, h, what)

		// a second life from the recovered state
		rng := rand.New(rand.NewPCG(seed, uint64(n)+2))
		g.rng = rng
		if rng.IntN(2) == 0 {
			fs.FailAfter(rng.IntN(100))
		}
		h = &crashHistory{images: []logImage{img}}
		crashLife(t, fs, g, rng.IntN(steps), h, what+", second life")
		fs.Crash()
		checkCrashRecovery(t, fs, h, what+", second life")
		if ranToEnd {
			t.Logf("a life of %d steps makes %d disk operations; crashed after each", steps, n)
			return
		}
	}
}

// TestStorageCrashAtRandomPoints runs several lives per file system, each
// stopped at a random operation or disk step.
func TestStorageCrashAtRandomPoints(t *testing.T) {
	seed := testSeed(t)
	rounds := 40
	if longTests() {
		rounds = 1000
	}
	for round := range rounds {
		rng := rand.New(rand.NewPCG(seed, uint64(round)+1000))
		g := &opGen{rng: rng, big: round%2 == 1}
		fs := newMemDir(t)
		h := emptyHistory(t)
		for life := range 4 {
			if rng.IntN(2) == 0 {
				fs.FailAfter(rng.IntN(300))
			}
			what := fmt.Sprintf("round %d, life %d", round, life)
			crashLife(t, fs, g, 20+rng.IntN(100), h, what)
			fs.Crash()
			img := checkCrashRecovery(t, fs, h, what)
			h = &crashHistory{images: []logImage{img}}
		}
	}
}

// A full disk fails the write that does not fit (after writing what fits);
// the storage refuses writes from then on, and opening it again cuts the
// partial record and finds everything saved before, plus the whole records
// of the failed batch that fitted (a prefix of its entries, never its hard
// state, which comes after them).
func TestStorageDiskFull(t *testing.T) {
	partly := 0
	for space := int64(20000); space < 20400; space += 41 {
		if diskFull(t, space) > 0 {
			partly++
		}
	}
	if partly == 0 {
		t.Fatal("no run kept part of the failed batch: the prefix case went untested")
	}
}

// diskFull runs the disk-full story with space bytes, returns how many
// entries of the failed batch recovery kept.
func diskFull(t *testing.T, space int64) int {
	fs := newMemDir(t)
	s := mustOpen(t, fs, testDir, StorageOptions{SegmentSize: 4096})
	fs.SetSpace(space)
	g := &opGen{rng: rand.New(rand.NewPCG(1, 2))}
	var before logImage
	var batch []*pb.Entry
	var err error
	for i := 0; err == nil; i++ {
		if before, err = imageOf(s); err != nil {
			t.Fatal(err)
		}
		last, _ := s.LastIndex()
		batch = g.entries(last+1, 4)
		if err = s.Save(g.hardState(last), batch, nil); err == nil && i%3 == 0 {
			err = s.Sync()
		}
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("a full disk: %v, want ENOSPC", err)
	}
	if err := s.Save(nil, g.entries(1, 1), nil); err == nil || !strings.Contains(err.Error(), "failed earlier") {
		t.Fatalf("a save after a failed write: %v", err)
	}
	s.Close()
	fs.SetSpace(0)
	s = mustOpen(t, fs, testDir, StorageOptions{SegmentSize: 4096})
	defer s.Close()
	if len(s.Recovery().Cut) != 1 {
		t.Fatalf("recovery report %v, want the partial record cut", s.Recovery())
	}
	got, err := imageOf(s)
	if err != nil {
		t.Fatal(err)
	}
	kept := int(got.last - before.last)
	if got.last < before.last || kept >= len(batch) {
		t.Fatalf("recovered entries up to %d; %d were saved before the failed batch of %d", got.last, before.last, len(batch))
	}
	want := before
	want.last = got.last
	want.ents = append(want.ents[:len(want.ents):len(want.ents)], batch[:kept]...)
	for _, e := range batch[:kept] {
		want.terms = append(want.terms, e.GetTerm())
	}
	if d := got.diff(&want); d != "" {
		t.Fatalf("after the disk filled up: %s", d)
	}
	if err := s.Save(nil, g.entries(got.last+1, 2), nil); err != nil {
		t.Fatalf("save after recovery: %v", err)
	}
	return kept
}

// corruptionSetup writes a log of several segments and a snapshot, closes
// it, and returns its segment files (oldest first) and its image.
func corruptionSetup(t *testing.T) (*store.MemFS, []string, logImage) {
	fs := newMemDir(t)
	s := mustOpen(t, fs, testDir, StorageOptions{SegmentSize: 2000})
	g := &opGen{rng: rand.New(rand.NewPCG(3, 4)), term: 2}
	for range 30 {
		last, _ := s.LastIndex()
		if err := s.Save(g.hardState(last), g.entries(last+1, 3), nil); err != nil {
			t.Fatal(err)
		}
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.CreateSnapshot(40, &pb.ConfState{Voters: []uint64{1, 2, 3}}, []byte("state at 40")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// the newest segment ends in entries: a bigger segment size keeps the
	// last ones in it
	s = mustOpen(t, fs, testDir, StorageOptions{SegmentSize: 1 << 20})
	last, _ := s.LastIndex()
	if err := s.Save(nil, g.entries(last+1, 3), nil); err != nil {
		t.Fatal(err)
	}
	img, err := imageOf(s)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	var segs []string
	for _, p := range fs.Files() {
		if strings.HasSuffix(p, ".wal") {
			segs = append(segs, p)
		}
	}
	if len(segs) < 3 {
		t.Fatalf("want several segments, have %v", fs.Files())
	}
	return fs, segs, img
}

// entryOffset returns where entry index's record is in its segment.
func entryOffset(t *testing.T, fs store.FS, index uint64) int64 {
	t.Helper()
	s := mustOpen(t, fs, testDir, StorageOptions{})
	defer s.Close()
	return s.st.ents[index-s.st.first].off
}

func flip(t *testing.T, fs *store.MemFS, path string, off int) {
	t.Helper()
	b, err := fs.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if off < 0 {
		off += len(b)
	}
	b[off] ^= 0x5a
	fs.WriteFile(path, b)
}

func TestStorageCorruptTailIsCut(t *testing.T) {
	for _, at := range []struct {
		name string
		lost int // the entry damaged, counted from the end
	}{{"last record", 1}, {"three records from the end", 3}} {
		t.Run(at.name, func(t *testing.T) {
			fs, segs, want := corruptionSetup(t)
			newest := segs[len(segs)-1]
			flip(t, fs, newest, int(entryOffset(t, fs, want.last+1-uint64(at.lost)))+frameHeader+3)
			s := mustOpen(t, fs, testDir, StorageOptions{})
			rep := s.Recovery()
			if len(rep.Cut) != 1 || !strings.Contains(rep.Cut[0], newest) || !strings.Contains(rep.Cut[0], "offset") {
				t.Fatalf("recovery report %v, want the tail of %s cut", rep.Cut, newest)
			}
			got, err := imageOf(s)
			if err != nil {
				t.Fatal(err)
			}
			if got.last != want.last-uint64(at.lost) {
				t.Fatalf("last index %d after the cut, want %d", got.last, want.last-uint64(at.lost))
			}
			want.last, want.ents, want.terms = got.last, want.ents[:len(want.ents)-at.lost], want.terms[:len(want.terms)-at.lost]
			if d := got.diff(&want); d != "" {
				t.Fatalf("after the cut: %s", d)
			}
			if err := s.Save(nil, ents(got.last+1, 9), nil); err != nil {
				t.Fatal(err)
			}
			s.Close()
			s = mustOpen(t, fs, testDir, StorageOptions{})
			defer s.Close()
			if len(s.Recovery().Cut) != 0 {
				t.Fatalf("second open cut again: %v", s.Recovery().Cut)
			}
			if last, _ := s.LastIndex(); last != got.last+1 {
				t.Fatalf("last index %d after a save past the cut, want %d", last, got.last+1)
			}
		})
	}
}

// A newest segment whose header is torn (its creation did not finish) is
// started again from the state the older ones hold.
func TestStorageTornNewestHeader(t *testing.T) {
	fs, segs, want := corruptionSetup(t)
	s := mustOpen(t, fs, testDir, StorageOptions{})
	s.Close()
	next := filepath.Join(testDir, segName(uint32(len(segs))+1))
	fs.WriteFile(next, []byte{0, 0, 0, 1, 0, 0})
	s = mustOpen(t, fs, testDir, StorageOptions{})
	defer s.Close()
	if len(s.Recovery().Cut) != 1 {
		t.Fatalf("recovery report %v", s.Recovery())
	}
	got, err := imageOf(s)
	if err != nil {
		t.Fatal(err)
	}
	if d := got.diff(&want); d != "" {
		t.Fatal(d)
	}
	if err := s.Save(nil, ents(got.last+1, 9), nil); err != nil {
		t.Fatal(err)
	}
}

func TestStorageDamageIsAnErrorNamingTheFile(t *testing.T) {
	for _, c := range []struct {
		name   string
		damage func(fs *store.MemFS, segs []string) string // returns the file to be named
	}{
		{"flipped byte in an older segment", func(fs *store.MemFS, segs []string) string {
			flip(t, fs, segs[1], 40)
			return segs[1]
		}},
		{"older segment cut short", func(fs *store.MemFS, segs []string) string {
			b, _ := fs.ReadFile(segs[0])
			fs.WriteFile(segs[0], b[:len(b)-5])
			return segs[0]
		}},
		{"segment missing", func(fs *store.MemFS, segs []string) string {
			fs.Remove(segs[1])
			fs.SyncDir(testDir)
			return "segment 2 is missing"
		}},
		{"snapshot file missing", func(fs *store.MemFS, segs []string) string {
			p := filepath.Join(testDir, snapName(40))
			fs.Remove(p)
			fs.SyncDir(testDir)
			return p
		}},
		{"snapshot file damaged", func(fs *store.MemFS, segs []string) string {
			p := filepath.Join(testDir, snapName(40))
			flip(t, fs, p, 20)
			return p
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			fs, segs, _ := corruptionSetup(t)
			named := c.damage(fs, segs)
			s, err := OpenStorage(fs, testDir, StorageOptions{Logger: quiet})
			if err == nil {
				s.Close()
				t.Fatalf("opened a damaged log")
			}
			if !strings.Contains(err.Error(), named) {
				t.Fatalf("error %q does not name %s", err, named)
			}
			t.Log(err)
		})
	}
}

// Damage done to a segment after the log was opened is an error of the
// read, never a wrong entry.
func TestStorageDamageAfterOpen(t *testing.T) {
	fs, segs, want := corruptionSetup(t)
	s := mustOpen(t, fs, testDir, StorageOptions{CacheBytes: -1})
	defer s.Close()
	damaged := s.st.ents[len(s.st.ents)/2]
	if damaged.seq == s.active.seq {
		t.Fatalf("entry %d is in the active segment", s.st.first+uint64(len(s.st.ents)/2))
	}
	flip(t, fs, segs[damaged.seq-1], int(damaged.off)+frameHeader+4)
	got, err := s.Entries(want.first, want.last+1, 1<<30)
	if err == nil || !strings.Contains(err.Error(), segs[damaged.seq-1]) {
		t.Fatalf("read across a damaged record: %d entries, %v", len(got), err)
	}
}

func TestEntryCacheStaysWithinItsLimit(t *testing.T) {
	c := entryCache{limit: 1000}
	rng := rand.New(rand.NewPCG(5, 5))
	last := uint64(0)
	for range 2000 {
		from := last + 1
		if rng.IntN(4) == 0 {
			from = max(c.first, 1) + uint64(rng.IntN(int(last-max(c.first, 1)+2)))
		}
		size := int64(1 + rng.IntN(300))
		c.put(ent(from, 1, nil), size)
		last = from
		if rng.IntN(10) == 0 {
			c.dropThrough(last - uint64(rng.IntN(int(last))))
		}
		var sum int64
		for k, ce := range c.ents {
			sum += ce.size
			if ce.e.GetIndex() != c.first+uint64(k) {
				t.Fatalf("cache slot %d holds entry %d, first %d", k, ce.e.GetIndex(), c.first)
			}
		}
		if sum != c.bytes || c.bytes > c.limit {
			t.Fatalf("cache counts %d bytes, holds %d, limit %d", c.bytes, sum, c.limit)
		}
		if n := len(c.ents); n > 0 && c.first+uint64(n)-1 != last {
			t.Fatalf("cache ends at %d, the log at %d", c.first+uint64(n)-1, last)
		}
	}
}
