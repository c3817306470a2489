package store

import (
	"encoding/binary"
	"strings"
	"testing"
)

// fixChecksums rewrites the checksum of every record framed in data
// ([len u32][crc u32][len bytes]...), as far as the lengths chain, so the
// fuzzer reaches the decoders behind the checksum instead of stopping at it.
func fixChecksums(data []byte) []byte {
	data = append([]byte(nil), data...)
	for off := 0; off+recHeader <= len(data); {
		n := int(binary.BigEndian.Uint32(data[off:]))
		if n < 0 || n > len(data)-off-recHeader {
			break
		}
		binary.BigEndian.PutUint32(data[off+4:], crc32c(data[off+recHeader:off+recHeader+n]))
		off += recHeader + n
	}
	return data
}

// fuzzSeeds builds valid segments and a valid journal to mutate.
func fuzzSeeds(f *testing.F) (segs [][]byte, bases []uint64, journal []byte) {
	fs, paths := buildSegments(f, 40, 700)
	for _, p := range paths {
		b, _ := fs.ReadFile(p)
		base, _ := parseSegName(p[len("/d/"):])
		segs, bases = append(segs, b), append(bases, base)
	}
	j, _ := mustOpenJournal(f, fs)
	c := NewCursor(3)
	j.SetState("a", c, true)
	j.SetState(TopicCursor, NewCursor(40), false)
	j.SetState("b", NewCursor(0), true)
	for _, s := range []uint64{5, 4, 9, 3, 1 << 40} {
		j.Finish("a", s)
	}
	j.Deliver("b", []Delivery{{Seq: 2, Attempts: 1}, {Seq: 1, Attempts: 3}})
	j.Requeue("b", 7, Held{Attempts: 2, Until: 12345})
	j.Flush()
	j.Delete("b")
	j.SetState("b", NewCursor(9), true)
	j.Close()
	journal, _ = fs.ReadFile(jpath)
	return segs, bases, journal
}

// FuzzLogRecovery opens a log whose older and newest segment, and a cursor
// journal, hold arbitrary bytes (with fix set, every framed record gets a
// valid checksum first). Opening never panics; the only error allowed is
// segments that overlap. What the log keeps reads back as exactly the
// ranges of its segments, it takes an append after its end, and a crash
// then a second start find the same log with nothing more to repair. The
// journal opens, replays the same cursors a second time, and takes
// records after what it kept.
func FuzzLogRecovery(f *testing.F) {
	segs, bases, journal := fuzzSeeds(f)
	flip := func(b []byte, at int) []byte {
		b = append([]byte(nil), b...)
		if len(b) > 0 {
			b[at%len(b)] ^= 0x41
		}
		return b
	}
	for i := 0; i+1 < len(segs); i++ {
		nb := uint16(bases[i+1])
		f.Add(segs[i], segs[i+1], journal, nb, uint16(len(segs[i+1])), false)
		f.Add(segs[i], segs[i+1], journal, nb, uint16(len(segs[i+1])/2), false)
		f.Add(flip(segs[i], 50), segs[i+1], flip(journal, 30), nb, uint16(0xffff), false)
		f.Add(segs[i], flip(segs[i+1], 9), journal[:len(journal)-3], nb, uint16(0xffff), true)
		f.Add(segs[i+1], segs[i], journal, uint16(bases[i]), uint16(0xffff), false) // swapped
		f.Add(segs[i], segs[i+1], journal, nb-1, uint16(0xffff), false)             // overlapping
	}
	f.Add([]byte{}, []byte{}, []byte{}, uint16(0), uint16(0), false)
	f.Add([]byte{0, 0, 0, 25, 0, 0, 0, 0}, []byte{0xff, 0xff, 0xff, 0xff}, []byte{0, 0, 0, 9, 0, 0, 0, 0, 1}, uint16(1), uint16(100), true)
	f.Fuzz(func(t *testing.T, older, newest, jdata []byte, newBase, cut uint16, fix bool) {
		if int(cut) < len(newest) {
			newest = newest[:cut]
		}
		if fix {
			older, newest, jdata = fixChecksums(older), fixChecksums(newest), fixChecksums(jdata)
		}
		fs := NewMemFS()
		fs.MkdirAll("/d")
		fs.WriteFile("/d/"+segName(0), older)
		if newBase != 0 {
			fs.WriteFile("/d/"+segName(uint64(newBase)), newest)
		}
		fs.WriteFile(jpath, jdata)
		fs.SyncDir("/d")
		fuzzLog(t, fs)
		fuzzJournal(t, fs)
	})
}

func fuzzLog(t *testing.T, fs *MemFS) {
	opts := LogOptions{MaxRecordBytes: 1 << 16, CacheBytes: 1}
	l, rep, err := OpenLog(fs, "/d", opts)
	if err != nil {
		if !strings.Contains(err.Error(), "overlaps") {
			t.Fatalf("open: %v", err)
		}
		return
	}
	var ranges [][2]uint64
	for _, s := range l.segs {
		if s.end > s.base {
			ranges = append(ranges, [2]uint64{s.base, s.end})
		}
	}
	held := func(l *Log, what string) []Record {
		recs := readFrom(t, l, 0, 7)
		i := 0
		for _, r := range ranges {
			for seq := r[0]; seq < r[1]; seq++ {
				if i >= len(recs) || recs[i].Seq != seq {
					t.Fatalf("%s: record %d of %d is not seq %d (ranges %v, report %+v)", what, i, len(recs), seq, ranges, rep)
				}
				i++
			}
		}
		if i != len(recs) {
			t.Fatalf("%s: %d records beyond the segments' ranges %v", what, len(recs)-i, ranges)
		}
		if len(ranges) > 0 && (l.Start() != ranges[0][0] || l.End() < ranges[len(ranges)-1][1]) {
			t.Fatalf("%s: start %d end %d for ranges %v", what, l.Start(), l.End(), ranges)
		}
		return recs
	}
	before := held(l, "recovered")
	end := l.End()
	c := NewCommitter(0)
	defer c.Close()
	if err := commitWait(c, l, Entry{TS: 1, Body: []byte("after")}); err != nil {
		t.Fatalf("append after recovery: %v", err)
	}
	if recs := readFrom(t, l, end, 10); len(recs) != 1 || recs[0].Seq != end || string(recs[0].Body) != "after" {
		t.Fatalf("appended record: %+v", recs)
	}
	if len(ranges) > 0 && ranges[len(ranges)-1][1] == end {
		ranges[len(ranges)-1][1]++
	} else {
		ranges = append(ranges, [2]uint64{end, end + 1})
	}
	// everything recovery did is durable, and a second start repairs
	// nothing
	fs.Crash()
	l2, rep2, err := OpenLog(fs, "/d", opts)
	if err != nil {
		t.Fatalf("second open: %v", err)
	}
	defer l2.Close()
	if len(rep2.Cut)+len(rep2.Quarantined) != 0 {
		t.Fatalf("second open repaired again: %+v (first: %+v)", rep2, rep)
	}
	after := held(l2, "reopened")
	for i := range before {
		if string(before[i].Body) != string(after[i].Body) || before[i].TS != after[i].TS {
			t.Fatalf("record %d changed across a restart", before[i].Seq)
		}
	}
}

func fuzzJournal(t *testing.T, fs *MemFS) {
	j, first, err := OpenJournal(fs, jpath, nil)
	if err != nil {
		t.Fatalf("open journal: %v", err)
	}
	if err := j.SetState("fuzz-new", NewCursor(7), true); err != nil {
		t.Fatalf("state record after recovery: %v", err)
	}
	for name := range first {
		j.Finish(name, 1)
		first[name].Finish(1)
	}
	j.Close()
	first["fuzz-new"] = NewCursor(7)
	_, second, err := OpenJournal(fs, jpath, nil)
	if err != nil {
		t.Fatalf("second open of the journal: %v", err)
	}
	if d := sameCursors(second, first); d != "" {
		t.Fatalf("journal replays differently the second time: %s", d)
	}
}
