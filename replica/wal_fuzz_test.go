package replica

import (
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"path/filepath"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/sluicemq/sluice/store"
)

// fixChecksums rewrites the checksum of every record framed in data, as far
// as the lengths chain, so the fuzzer reaches replay behind the checksum.
func fixChecksums(data []byte) []byte {
	data = append([]byte(nil), data...)
	for off := 0; off+frameHeader <= len(data); {
		n := int(binary.BigEndian.Uint32(data[off+4:]))
		if n <= 0 || n > len(data)-off-frameHeader {
			break
		}
		binary.BigEndian.PutUint32(data[off:], crc32.Checksum(data[off+4:off+frameHeader+n], castagnoli))
		off += frameHeader + n
	}
	return data
}

// fuzzSeeds writes a real log (overwrites, compaction, hard states, a
// snapshot) and returns its segments' bytes.
func fuzzSeeds(f *testing.F) [][]byte {
	fs := newMemDir(f)
	s := mustOpen(f, fs, testDir, StorageOptions{SegmentSize: 400})
	g := &opGen{rng: rand.New(rand.NewPCG(9, 9))}
	for range 60 {
		first, _ := s.FirstIndex()
		last, _ := s.LastIndex()
		o := g.next(first, last, s.st.snapIndex)
		switch o.kind {
		case opSave:
			if o.snap == nil { // a snapshot file would be needed too
				s.Save(o.hs, o.ents, nil)
			}
		case opCompact:
			s.Compact(o.index)
		default:
			s.Sync()
		}
	}
	s.Close()
	var segs [][]byte
	for _, p := range fs.Files() {
		if filepath.Ext(p) == ".wal" {
			b, _ := fs.ReadFile(p)
			segs = append(segs, b)
		}
	}
	return segs
}

// FuzzStorageRecovery opens a log whose two segments hold arbitrary bytes
// (with fix set, every framed record gets a valid checksum first, so
// replay sees well-formed records in any order). Opening never panics: it
// either fails or recovers a log that reads back whole (every entry from
// FirstIndex to LastIndex, with the terms Term gives), takes a save after
// its end, and after a crash opens again with nothing to repair and the
// same state plus that save.
func FuzzStorageRecovery(f *testing.F) {
	segs := fuzzSeeds(f)
	for i := 0; i+1 < len(segs); i++ {
		f.Add(segs[i], segs[i+1], false)
		f.Add(segs[i], segs[i+1][:len(segs[i+1])/2], false)
		f.Add(segs[i+1], segs[i], true) // swapped
		b := append([]byte(nil), segs[i+1]...)
		b[len(b)/3] ^= 0x10
		f.Add(segs[i], b, i%2 == 0)
	}
	f.Add([]byte{}, []byte{}, false)
	f.Add([]byte{}, []byte{0, 0, 0, 0, 0, 0, 0, 1, 2}, true)
	f.Fuzz(func(t *testing.T, older, newest []byte, fix bool) {
		if fix {
			older, newest = fixChecksums(older), fixChecksums(newest)
		}
		fs := store.NewMemFS()
		fs.MkdirAll(testDir)
		seq := uint32(1)
		if len(older) > 0 {
			fs.WriteFile(filepath.Join(testDir, segName(seq)), older)
			seq++
		}
		fs.WriteFile(filepath.Join(testDir, segName(seq)), newest)
		fs.SyncDir(testDir)
		opts := StorageOptions{CacheBytes: -1, Logger: quiet}
		s, err := OpenStorage(fs, testDir, opts)
		if err != nil {
			return // refusing a damaged log is allowed; panicking is not
		}
		before, err := imageOf(s)
		if err != nil {
			t.Fatalf("a recovered log does not read back: %v", err)
		}
		for k, e := range before.ents {
			if e.GetIndex() != before.first+uint64(k) || e.GetTerm() != before.terms[k+1] {
				t.Fatalf("entry %d of the recovered log is %v, term %d", before.first+uint64(k), e, before.terms[k+1])
			}
		}
		term := max(before.terms[len(before.terms)-1], 1)
		added := ent(before.last+1, term, []byte("after recovery"))
		if err := s.Save(nil, []*pb.Entry{added}, nil); err != nil {
			t.Fatalf("save after recovery: %v", err)
		}
		if err := s.Sync(); err != nil {
			t.Fatalf("sync after recovery: %v", err)
		}
		fs.Crash()
		s2, err := OpenStorage(fs, testDir, opts)
		if err != nil {
			t.Fatalf("second open: %v", err)
		}
		defer s2.Close()
		if cut := s2.Recovery().Cut; len(cut) > 0 {
			t.Fatalf("second open repaired again: %v (first: %v)", cut, s.Recovery().Cut)
		}
		after, err := imageOf(s2)
		if err != nil {
			t.Fatalf("reopened log does not read back: %v", err)
		}
		want := before
		want.last++
		want.terms = append(want.terms[:len(want.terms):len(want.terms)], term)
		want.ents = append(want.ents[:len(want.ents):len(want.ents)], added)
		if d := after.diff(&want); d != "" {
			t.Fatalf("after a save and a crash: %s", d)
		}
	})
}
