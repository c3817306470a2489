package replica

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/sluicemq/sluice/store"
)

// Helpers of the Storage tests: seeds, a generator of random operations
// that both a Storage and raft.MemoryStorage accept, and logImage, all a
// raft.Storage shows, to compare two storages or two moments of one.

// testSeed returns the seed of a randomized test, printed so a failure can
// be replayed with SLUICE_REPLICA_SEED=<seed>.
func testSeed(t testing.TB) uint64 {
	t.Helper()
	seed := rand.Uint64() >> 1
	if s := os.Getenv("SLUICE_REPLICA_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SLUICE_REPLICA_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (replay: SLUICE_REPLICA_SEED=%d)", seed, seed)
	return seed
}

// longTests reports whether the long variants run (SLUICE_LONG=1).
func longTests() bool { return os.Getenv("SLUICE_LONG") != "" }

var quiet = slog.New(slog.DiscardHandler)

const testDir = "/data/raft"

func newMemDir(t testing.TB) *store.MemFS {
	t.Helper()
	fs := store.NewMemFS()
	if err := fs.MkdirAll(testDir); err != nil {
		t.Fatal(err)
	}
	if err := fs.SyncDir(testDir); err != nil {
		t.Fatal(err)
	}
	return fs
}

func mustOpen(t testing.TB, fs store.FS, dir string, opts StorageOptions) *Storage {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	s, err := OpenStorage(fs, dir, opts)
	if err != nil {
		t.Fatalf("open storage %s: %v", dir, err)
	}
	return s
}

// entryData is the payload of an entry with identity id: the id, then
// bytes derived from it, so damage is detected without keeping bodies.
func entryData(id uint64, size int) []byte {
	b := make([]byte, max(size, 8))
	binary.BigEndian.PutUint64(b, id)
	for i := 8; i < len(b); i++ {
		b[i] = byte(id*31) + byte(i)
	}
	return b
}

func checkEntryData(e *pb.Entry) error {
	d := e.GetData()
	if len(d) == 0 {
		return nil
	}
	if len(d) < 8 || string(d) != string(entryData(binary.BigEndian.Uint64(d), len(d))) {
		return fmt.Errorf("entry %d: damaged data %x", e.GetIndex(), d[:min(len(d), 16)])
	}
	return nil
}

func ent(index, term uint64, data []byte) *pb.Entry {
	return &pb.Entry{Index: new(index), Term: new(term), Type: pb.EntryNormal.Enum(), Data: data}
}

// ents makes entries from index on with the given terms.
func ents(index uint64, terms ...uint64) []*pb.Entry {
	var out []*pb.Entry
	for k, term := range terms {
		out = append(out, ent(index+uint64(k), term, entryData(index*100+term, 20)))
	}
	return out
}

type opKind int

const (
	opSave opKind = iota
	opCompact
	opCreateSnapshot
	opSync
	opReopen
	opCrash // Sync, then cut the power (MemFS only)
)

// storageOp is one step of a randomized test.
type storageOp struct {
	kind  opKind
	hs    *pb.HardState
	ents  []*pb.Entry
	snap  *pb.Snapshot
	index uint64
	cs    *pb.ConfState
	data  []byte
}

func (o storageOp) String() string {
	switch o.kind {
	case opSave:
		s := "save"
		if o.snap != nil {
			s += fmt.Sprintf(" snapshot %d/%d", o.snap.GetMetadata().GetIndex(), o.snap.GetMetadata().GetTerm())
		}
		if len(o.ents) > 0 {
			s += fmt.Sprintf(" entries %d..%d term %d", o.ents[0].GetIndex(), o.ents[len(o.ents)-1].GetIndex(), o.ents[0].GetTerm())
		}
		if o.hs != nil {
			s += fmt.Sprintf(" hs %d/%d/%d", o.hs.GetTerm(), o.hs.GetVote(), o.hs.GetCommit())
		}
		return s
	case opCompact:
		return fmt.Sprintf("compact %d", o.index)
	case opCreateSnapshot:
		return fmt.Sprintf("create snapshot %d (cs %v)", o.index, o.cs != nil)
	case opSync:
		return "sync"
	case opReopen:
		return "close and reopen"
	}
	return "sync and crash"
}

// opGen makes random operations that both a Storage and a MemoryStorage
// accept (MemoryStorage panics on some misuse that Storage reports).
type opGen struct {
	rng   *rand.Rand
	term  uint64
	id    uint64
	big   bool // some entries larger than a small segment
	crash bool // opCrash allowed
}

func (g *opGen) entries(from uint64, n int) []*pb.Entry {
	out := make([]*pb.Entry, n)
	for k := range out {
		g.id++
		e := &pb.Entry{Index: new(from + uint64(k)), Term: new(g.term)}
		switch g.rng.IntN(6) {
		case 0: // no Type: raft's empty entries look like this
		case 1:
			e.Type = pb.EntryConfChange.Enum()
		default:
			e.Type = pb.EntryNormal.Enum()
		}
		switch r := g.rng.IntN(20); {
		case r == 0: // nil Data
		case r == 1:
			e.Data = []byte{} // present but empty: must come back so
		case r == 2 && g.big:
			e.Data = entryData(g.id, 3000+g.rng.IntN(3000))
		default:
			e.Data = entryData(g.id, 8+g.rng.IntN(200))
		}
		out[k] = e
	}
	return out
}

func (g *opGen) hardState(last uint64) *pb.HardState {
	if g.rng.IntN(5) < 2 {
		return nil
	}
	return &pb.HardState{Term: new(g.term), Vote: new(uint64(g.rng.IntN(4))), Commit: new(uint64(g.rng.IntN(int(last) + 1)))}
}

func (g *opGen) confState() *pb.ConfState {
	cs := &pb.ConfState{}
	for range 1 + g.rng.IntN(3) {
		cs.Voters = append(cs.Voters, 1+uint64(g.rng.IntN(9)))
	}
	if g.rng.IntN(3) == 0 {
		cs.Learners = []uint64{10 + uint64(g.rng.IntN(5))}
	}
	return cs
}

// next returns an operation for a log of entries [first, last] whose
// snapshot is at snapIndex.
func (g *opGen) next(first, last, snapIndex uint64) storageOp {
	if g.term == 0 {
		g.term = 1
	}
	base := first - 1
	r := g.rng
	switch k := r.IntN(100); {
	case k < 35: // the leader appends
		return storageOp{kind: opSave, ents: g.entries(last+1, 1+r.IntN(8)), hs: g.hardState(last)}
	case k < 47: // a new leader replaces part of a follower's log
		g.term++
		from := max(first, 3) - 2 + uint64(r.IntN(int(last-max(first, 3)+4)))
		o := storageOp{kind: opSave, ents: g.entries(from, 1+r.IntN(6))}
		if r.IntN(2) == 0 {
			o.hs = &pb.HardState{Term: new(g.term), Vote: new(uint64(1 + r.IntN(3))), Commit: new(uint64(r.IntN(int(from))))}
		}
		return o
	case k < 55:
		if r.IntN(4) == 0 {
			g.term++
		}
		hs := g.hardState(last)
		if hs == nil {
			hs = &pb.HardState{} // empty: ignored
		}
		return storageOp{kind: opSave, hs: hs}
	case k < 63:
		return storageOp{kind: opCompact, index: max(base, 1) - 1 + uint64(r.IntN(int(last-max(base, 1)+2)))}
	case k < 69:
		o := storageOp{kind: opCreateSnapshot, index: base + uint64(r.IntN(int(last-base+1))), data: entryData(g.id, r.IntN(100))}
		g.id++
		if r.IntN(2) == 0 {
			o.cs = g.confState()
		}
		return o
	case k < 73: // a snapshot from the leader
		g.term += uint64(r.IntN(2))
		index := max(snapIndex, 1) + uint64(r.IntN(int(last-min(last, snapIndex)+20)))
		g.id++
		snap := &pb.Snapshot{Data: entryData(g.id, r.IntN(200)), Metadata: &pb.SnapshotMetadata{Index: new(index), Term: new(g.term), ConfState: g.confState()}}
		o := storageOp{kind: opSave, snap: snap}
		if r.IntN(2) == 0 {
			o.ents = g.entries(index+1, 1+r.IntN(4))
		}
		if r.IntN(2) == 0 {
			o.hs = &pb.HardState{Term: new(g.term), Commit: new(index)}
		}
		return o
	case k < 77:
		return storageOp{kind: opReopen}
	case k < 80 && g.crash:
		return storageOp{kind: opCrash}
	}
	return storageOp{kind: opSync}
}

// applyModel applies a save to a MemoryStorage as Storage.Save does.
func applyModel(ms *raft.MemoryStorage, o storageOp) error {
	if o.snap != nil && !raft.IsEmptySnap(o.snap) {
		if err := ms.ApplySnapshot(o.snap); err != nil {
			return err
		}
	}
	if err := ms.Append(o.ents); err != nil {
		return err
	}
	if o.hs != nil && !raft.IsEmptyHardState(o.hs) {
		return ms.SetHardState(o.hs)
	}
	return nil
}

// logImage is everything a raft.Storage shows, normalized for comparing.
type logImage struct {
	first, last uint64
	terms       []uint64    // of first-1 .. last
	ents        []*pb.Entry // first .. last
	hs          [3]uint64
	cs          *pb.ConfState
	snap        *pb.Snapshot
}

func imageOf(s raft.Storage) (img logImage, err error) {
	if img.first, err = s.FirstIndex(); err != nil {
		return img, err
	}
	if img.last, err = s.LastIndex(); err != nil {
		return img, err
	}
	for i := img.first - 1; i <= img.last; i++ {
		term, err := s.Term(i)
		if err != nil {
			return img, fmt.Errorf("term %d: %w", i, err)
		}
		img.terms = append(img.terms, term)
	}
	if img.last >= img.first {
		if img.ents, err = s.Entries(img.first, img.last+1, math.MaxUint64); err != nil {
			return img, fmt.Errorf("entries [%d, %d]: %w", img.first, img.last, err)
		}
	}
	hs, cs, err := s.InitialState()
	if err != nil {
		return img, err
	}
	img.hs = [3]uint64{hs.GetTerm(), hs.GetVote(), hs.GetCommit()}
	img.cs = pb.EnsureConfState(proto.Clone(cs).(*pb.ConfState))
	snap, err := s.Snapshot()
	if err != nil {
		return img, err
	}
	img.snap = pb.EnsureSnapshot(proto.Clone(snap).(*pb.Snapshot))
	return img, nil
}

// diff describes the first difference between a and b ("" when none).
func (a *logImage) diff(b *logImage) string {
	switch {
	case a.first != b.first || a.last != b.last:
		return fmt.Sprintf("entries [%d, %d], want [%d, %d]", a.first, a.last, b.first, b.last)
	case a.hs != b.hs:
		return fmt.Sprintf("hard state %v, want %v", a.hs, b.hs)
	case !proto.Equal(a.cs, b.cs):
		return fmt.Sprintf("conf state %v, want %v", a.cs, b.cs)
	case !proto.Equal(a.snap, b.snap):
		return fmt.Sprintf("snapshot %d/%d, want %d/%d (or data, conf state)", a.snap.GetMetadata().GetIndex(), a.snap.GetMetadata().GetTerm(), b.snap.GetMetadata().GetIndex(), b.snap.GetMetadata().GetTerm())
	}
	for k := range a.terms {
		if a.terms[k] != b.terms[k] {
			return fmt.Sprintf("term of %d is %d, want %d", a.first-1+uint64(k), a.terms[k], b.terms[k])
		}
	}
	if len(a.ents) != len(b.ents) {
		return fmt.Sprintf("%d entries, want %d", len(a.ents), len(b.ents))
	}
	for k := range a.ents {
		if !proto.Equal(a.ents[k], b.ents[k]) {
			return fmt.Sprintf("entry %d is %v, want %v", a.first+uint64(k), a.ents[k], b.ents[k])
		}
	}
	return ""
}

func (a *logImage) String() string {
	return fmt.Sprintf("[%d, %d] hs %v snapshot %d", a.first, a.last, a.hs, a.snap.GetMetadata().GetIndex())
}
