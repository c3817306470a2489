package store

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// buildSegments writes n messages (ids = seqs) to a log in /d with small
// segments and returns the file system and the segment paths, oldest
// first.
func buildSegments(t testing.TB, n int, segBytes int64) (*MemFS, []string) {
	t.Helper()
	fs := newMemDir(t, "/d")
	l, _ := mustOpenLog(t, fs, "/d", LogOptions{SegmentBytes: segBytes})
	c := NewCommitter(0)
	for id := range uint64(n) {
		if err := commitWait(c, l, msgEntry(id, 20+int(id%50))); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	l.Close()
	return fs, segmentFiles(fs, "/d")
}

// recordOffsets returns the offset of every record in a segment's bytes.
func recordOffsets(t testing.TB, data []byte) []int {
	var offs []int
	for off := 0; off < len(data); {
		_, n, err := decodeRecord(data[off:], 1<<20, true)
		if err != nil {
			t.Fatalf("offset %d: %v", off, err)
		}
		offs = append(offs, off)
		off += n
	}
	return offs
}

// checkHeld asserts the log holds exactly the messages of the ranges
// [lo, hi) given, in order, each with its own seq as id.
func checkHeld(t testing.TB, what string, l *Log, ranges ...[2]uint64) {
	t.Helper()
	recs := readFrom(t, l, 0, 64)
	i := 0
	for _, r := range ranges {
		for seq := r[0]; seq < r[1]; seq++ {
			if i >= len(recs) {
				t.Fatalf("%s: read %d records, missing %d", what, len(recs), seq)
			}
			if recs[i].Seq != seq || checkRecord(t, recs[i], nil) != seq {
				t.Fatalf("%s: record %d is seq %d, want %d", what, i, recs[i].Seq, seq)
			}
			i++
		}
	}
	if i != len(recs) {
		t.Fatalf("%s: %d records more than expected, from seq %d", what, len(recs)-i, recs[i].Seq)
	}
}

// A torn tail of the newest segment, at any byte, is cut back to the last
// whole record, reported, and the log goes on appending after it; the
// cut is durable.
func TestRecoveryCutsATornTailAtEveryByte(t *testing.T) {
	fs, segs := buildSegments(t, 120, 2048)
	newest := segs[len(segs)-1]
	base, _ := parseSegName(filepath.Base(newest))
	data, _ := fs.ReadFile(newest)
	offs := recordOffsets(t, data)
	end := base + uint64(len(offs))
	if end != 120 || len(segs) < 3 {
		t.Fatalf("setup: %d segments, newest ends at %d", len(segs), end)
	}
	// every byte of the first two and the last three records
	var cuts []int
	for cut := range len(data) {
		if cut < offs[min(2, len(offs)-1)] || cut >= offs[max(0, len(offs)-3)] {
			cuts = append(cuts, cut)
		}
	}
	for _, cut := range cuts {
		fs, _ := buildSegments(t, 120, 2048)
		fs.WriteFile(newest, data[:cut])
		whole, atBoundary := base, false
		for i, o := range offs {
			recEnd := len(data)
			if i+1 < len(offs) {
				recEnd = offs[i+1]
			}
			if recEnd <= cut {
				whole++
			}
			atBoundary = atBoundary || o == cut
		}
		what := fmt.Sprintf("cut at %d of %d", cut, len(data))
		l, rep := mustOpenLog(t, fs, "/d", LogOptions{SegmentBytes: 2048})
		if (len(rep.Cut) == 0) != atBoundary || len(rep.Quarantined) != 0 {
			t.Fatalf("%s: report %+v", what, rep)
		}
		if atBoundary {
			continue // nothing torn: just fewer records
		}
		if !strings.Contains(rep.Cut[0], filepath.Base(newest)) {
			t.Fatalf("%s: report does not name the segment: %q", what, rep.Cut[0])
		}
		if l.End() != whole {
			t.Fatalf("%s: log ends at %d, want %d", what, l.End(), whole)
		}
		checkHeld(t, what, l, [2]uint64{0, whole})
		c := NewCommitter(0)
		if err := commitWait(c, l, msgEntry(whole, 33)); err != nil {
			t.Fatalf("%s: append after the cut: %v", what, err)
		}
		c.Close()
		checkHeld(t, what+", appended", l, [2]uint64{0, whole + 1})
		fs.Crash()
		l2, rep := mustOpenLog(t, fs, "/d", LogOptions{SegmentBytes: 2048})
		if len(rep.Cut)+len(rep.Quarantined) != 0 {
			t.Fatalf("%s: second recovery found more: %+v", what, rep)
		}
		checkHeld(t, what+", after a crash", l2, [2]uint64{0, whole + 1})
		l2.Close()
	}
}

// A flipped byte anywhere in an older segment quarantines that segment:
// it is renamed to *.corrupt, reported, and reading goes on after the gap;
// the next start finds nothing more.
func TestRecoveryQuarantinesACorruptOlderSegment(t *testing.T) {
	_, segs := buildSegments(t, 200, 1024)
	if len(segs) < 5 {
		t.Fatalf("setup: %d segments", len(segs))
	}
	bases := make([]uint64, len(segs))
	for i, s := range segs {
		bases[i], _ = parseSegName(filepath.Base(s))
	}
	for _, victim := range []int{0, 2, len(segs) - 2} {
		probe, _ := buildSegments(t, 200, 1024)
		data, _ := probe.ReadFile(segs[victim])
		for _, at := range []int{0, 3, 5, recHeader, recHeader + 1, recHeader + 20, len(data) / 2, len(data) - 1} {
			fs, _ := buildSegments(t, 200, 1024)
			bad := append([]byte(nil), data...)
			bad[at] ^= 0x10
			fs.WriteFile(segs[victim], bad)
			what := fmt.Sprintf("segment %d, byte %d", victim, at)
			l, rep := mustOpenLog(t, fs, "/d", LogOptions{SegmentBytes: 1024})
			if len(rep.Quarantined) != 1 || len(rep.Cut) != 0 || !strings.Contains(rep.Quarantined[0], segs[victim]) {
				t.Fatalf("%s: report %+v", what, rep)
			}
			if _, err := fs.ReadFile(segs[victim] + ".corrupt"); err != nil {
				t.Fatalf("%s: no quarantined file: %v", what, err)
			}
			if _, err := fs.ReadFile(segs[victim]); err == nil {
				t.Fatalf("%s: the corrupt segment is still in place", what)
			}
			checkHeld(t, what, l, [2]uint64{0, bases[victim]}, [2]uint64{bases[victim+1], 200})
			if victim == 0 && l.Start() != bases[1] {
				t.Fatalf("%s: start %d, want %d", what, l.Start(), bases[1])
			}
			// a reader positioned inside the gap goes on after it
			r := l.NewReader(bases[victim] + 1)
			if recs, err := r.Read(nil, 1); err != nil || len(recs) != 1 || recs[0].Seq != bases[victim+1] {
				t.Fatalf("%s: reader in the gap: %v %+v", what, err, recs)
			}
			c := NewCommitter(0)
			if err := commitWait(c, l, msgEntry(200, 10)); err != nil {
				t.Fatal(err)
			}
			c.Close()
			fs.Crash() // the quarantine is durable
			l2, rep := mustOpenLog(t, fs, "/d", LogOptions{SegmentBytes: 1024})
			if len(rep.Quarantined)+len(rep.Cut) != 0 {
				t.Fatalf("%s: second start: %+v", what, rep)
			}
			checkHeld(t, what+", reopened", l2, [2]uint64{0, bases[victim]}, [2]uint64{bases[victim+1], 201})
			l2.Close()
		}
	}
}

// A flipped byte inside the newest segment cuts it at the bad record; a
// torn older segment (a record running past its end) is quarantined; stray
// files are left alone; an empty newest segment is fine.
func TestRecoveryOddShapes(t *testing.T) {
	t.Run("flipped byte in the newest segment", func(t *testing.T) {
		fs, segs := buildSegments(t, 100, 1024)
		newest := segs[len(segs)-1]
		base, _ := parseSegName(filepath.Base(newest))
		data, _ := fs.ReadFile(newest)
		offs := recordOffsets(t, data)
		data[offs[2]+recHeader+5] ^= 1
		fs.WriteFile(newest, data)
		l, rep := mustOpenLog(t, fs, "/d", LogOptions{})
		defer l.Close()
		if len(rep.Cut) != 1 || len(rep.Quarantined) != 0 {
			t.Fatalf("report %+v", rep)
		}
		checkHeld(t, "cut", l, [2]uint64{0, base + 2})
	})
	t.Run("torn older segment", func(t *testing.T) {
		fs, segs := buildSegments(t, 100, 1024)
		data, _ := fs.ReadFile(segs[1])
		fs.WriteFile(segs[1], data[:len(data)-4])
		l, rep := mustOpenLog(t, fs, "/d", LogOptions{})
		defer l.Close()
		b1, _ := parseSegName(filepath.Base(segs[1]))
		b2, _ := parseSegName(filepath.Base(segs[2]))
		if len(rep.Quarantined) != 1 {
			t.Fatalf("report %+v", rep)
		}
		checkHeld(t, "quarantined", l, [2]uint64{0, b1}, [2]uint64{b2, 100})
	})
	t.Run("empty files and strays", func(t *testing.T) {
		fs, _ := buildSegments(t, 50, 1024)
		fs.WriteFile("/d/"+segName(1000), nil) // an empty newest segment
		fs.WriteFile("/d/notes.txt", []byte("hello"))
		fs.WriteFile("/d/123.seg", []byte("short name"))
		fs.WriteFile("/d/"+segName(5)+".corrupt", []byte("old quarantine"))
		l, rep := mustOpenLog(t, fs, "/d", LogOptions{})
		defer l.Close()
		if len(rep.Cut)+len(rep.Quarantined) != 0 || l.End() != 1000 {
			t.Fatalf("report %+v, end %d", rep, l.End())
		}
		checkHeld(t, "strays", l, [2]uint64{0, 50})
		if _, err := fs.ReadFile("/d/notes.txt"); err != nil {
			t.Fatal("a stray file was touched")
		}
	})
	t.Run("wrong sequence numbers", func(t *testing.T) {
		fs, segs := buildSegments(t, 100, 1024)
		// the newest segment renamed to a base its records do not have
		data, _ := fs.ReadFile(segs[len(segs)-1])
		fs.Remove(segs[len(segs)-1])
		fs.SyncDir("/d")
		fs.WriteFile("/d/"+segName(500), data)
		l, rep := mustOpenLog(t, fs, "/d", LogOptions{})
		defer l.Close()
		if len(rep.Cut) != 1 || l.End() != 500 {
			t.Fatalf("report %+v, end %d", rep, l.End())
		}
	})
}
