package store

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

func appendOne(t *testing.T, c *Committer, l *Log, b []byte) error {
	t.Helper()
	r, err := c.Append(l, []Entry{{TS: time.Now().UnixNano(), Body: b}})
	if err != nil {
		return err
	}
	return r.Wait(l)
}

func readAll(t *testing.T, l *Log) []Record {
	t.Helper()
	var out []Record
	r := l.NewReader(0)
	for {
		recs, err := r.Read(nil, 1000)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if len(recs) == 0 {
			return out
		}
		out = append(out, recs...)
	}
}

func TestFullDiskRefusesAppendsThenRecoversWhenSpaceReturns(t *testing.T) {
	fs := NewMemFS()
	fs.MkdirAll("/d")
	fs.SyncDir("/d")
	fs.SetSpace(4096)
	l, _, err := OpenLog(fs, "/d", LogOptions{SegmentBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	c := NewCommitter(0)
	var acked [][]byte
	var fullErr error
	for i := range 200 {
		b := []byte(fmt.Sprintf("message %03d %s", i, strings.Repeat("x", 60)))
		if err := appendOne(t, c, l, b); err != nil {
			fullErr = err
			break
		}
		acked = append(acked, b)
	}
	if !errors.Is(fullErr, syscall.ENOSPC) {
		t.Fatalf("append on a full disk: %v, want ENOSPC", fullErr)
	}
	if err := appendOne(t, c, l, []byte("still full")); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("second append on a full disk: %v", err)
	}
	fs.SetSpace(0) // space returns
	for i := range 5 {
		b := []byte(fmt.Sprintf("after %d", i))
		if err := appendOne(t, c, l, b); err != nil {
			t.Fatalf("append after space returned: %v", err)
		}
		acked = append(acked, b)
	}
	c.Close()
	l.Close()
	fs.Crash()
	l, rep, err := OpenLog(fs, "/d", LogOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Cut) != 0 {
		t.Fatalf("a failed write left a torn record behind: %v", rep.Cut)
	}
	got := readAll(t, l)
	if len(got) != len(acked) {
		t.Fatalf("recovered %d records, acknowledged %d", len(got), len(acked))
	}
	for i := range got {
		if !bytes.Equal(got[i].Body, acked[i]) {
			t.Fatalf("record %d = %q, want %q", i, got[i].Body, acked[i])
		}
	}
}

// writeLog makes a log with n small records spread over segments of
// segBytes and returns its files.
func writeLog(t testing.TB, n int, segBytes int64) *MemFS {
	fs := NewMemFS()
	fs.MkdirAll("/d")
	fs.SyncDir("/d")
	l, _, err := OpenLog(fs, "/d", LogOptions{SegmentBytes: segBytes})
	if err != nil {
		t.Fatal(err)
	}
	c := NewCommitter(0)
	for i := range n {
		r, _ := c.Append(l, []Entry{{TS: int64(i + 1), Body: []byte(fmt.Sprintf("m%04d", i))}})
		if err := r.Wait(l); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	l.Close()
	return fs
}

func TestTornTailIsCutAtTheLastGoodRecord(t *testing.T) {
	fs := writeLog(t, 10, 1<<20)
	seg := "/d/" + segName(0)
	data, _ := fs.ReadFile(seg)
	fs.WriteFile(seg, data[:len(data)-7]) // the last record loses its end
	l, rep, err := OpenLog(fs, "/d", LogOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Cut) != 1 || !strings.Contains(rep.Cut[0], "after message 8") {
		t.Fatalf("report: %+v", rep)
	}
	if got := readAll(t, l); len(got) != 9 || l.End() != 9 {
		t.Fatalf("after the cut: %d records, end %d", len(got), l.End())
	}
	c := NewCommitter(0)
	defer c.Close()
	if err := appendOne(t, c, l, []byte("next")); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, l); string(got[9].Body) != "next" || got[9].Seq != 9 {
		t.Fatalf("append after the cut: %+v", got[9])
	}
}

func TestCorruptOlderSegmentIsQuarantinedAndReadingContinues(t *testing.T) {
	fs := writeLog(t, 60, 256)
	files := fs.Files()
	var segs []string
	for _, f := range files {
		if strings.HasSuffix(f, ".seg") {
			segs = append(segs, f)
		}
	}
	if len(segs) < 4 {
		t.Fatalf("want several segments, got %v", files)
	}
	victim := segs[1]
	data, _ := fs.ReadFile(victim)
	data[len(data)/2] ^= 0xff
	fs.WriteFile(victim, data)
	l, rep, err := OpenLog(fs, "/d", LogOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Quarantined) != 1 || !strings.Contains(rep.Quarantined[0], victim) {
		t.Fatalf("report: %+v", rep)
	}
	if _, err := fs.ReadFile(victim + ".corrupt"); err != nil {
		t.Fatalf("quarantined file: %v", err)
	}
	got := readAll(t, l)
	if len(got) == 0 || got[len(got)-1].Seq != 59 {
		t.Fatalf("reading past the quarantined segment: %d records", len(got))
	}
	for i := 1; i < len(got); i++ {
		if got[i].Seq <= got[i-1].Seq {
			t.Fatalf("sequence went back at %d", i)
		}
	}
	// and a second start does not find it again (no crash loop)
	l.Close()
	if _, rep, err = OpenLog(fs, "/d", LogOptions{}); err != nil || len(rep.Quarantined) != 0 {
		t.Fatalf("second open: %v %+v", err, rep)
	}
}

// FuzzLogRecovery opens logs whose newest and older segment and whose
// journal hold arbitrary bytes: opening never panics, what it keeps reads
// back with contiguous sequence numbers, and the log takes appends after.
func FuzzLogRecovery(f *testing.F) {
	good := writeLog(f, 30, 512)
	var seeds [][]byte
	for _, p := range good.Files() {
		b, _ := good.ReadFile(p)
		seeds = append(seeds, b)
	}
	for i, s := range seeds {
		f.Add(s, seeds[(i+1)%len(seeds)], []byte{}, uint16(i))
		if len(s) > 10 {
			m := append([]byte(nil), s...)
			m[len(m)/3] ^= 0x5a
			f.Add(m, s, []byte{1, 2, 3}, uint16(len(s)/2))
		}
	}
	f.Add([]byte{}, []byte{0, 0, 0, 0, 0, 0, 0, 0}, []byte{0, 0, 0, 9, 0, 0, 0, 0, 1}, uint16(3))
	f.Fuzz(func(t *testing.T, older, newest, journal []byte, cut uint16) {
		fs := NewMemFS()
		fs.MkdirAll("/d")
		fs.WriteFile("/d/"+segName(0), older)
		fs.WriteFile("/d/"+segName(1000), newest)
		if int(cut) < len(newest) {
			fs.WriteFile("/d/"+segName(1000), newest[:cut])
		}
		fs.WriteFile("/d/cursors.jnl", journal)
		fs.SyncDir("/d")
		l, _, err := OpenLog(fs, "/d", LogOptions{})
		if err != nil {
			return // a clear error is fine; a panic is not
		}
		defer l.Close()
		var prev uint64
		first := true
		r := l.NewReader(0)
		for {
			recs, err := r.Read(nil, 100)
			if err != nil {
				t.Fatalf("read after recovery: %v", err)
			}
			if len(recs) == 0 {
				break
			}
			for _, rec := range recs {
				if !first && rec.Seq <= prev {
					t.Fatalf("sequence %d after %d", rec.Seq, prev)
				}
				prev, first = rec.Seq, false
			}
		}
		end := l.End()
		c := NewCommitter(0)
		defer c.Close()
		rd, err := c.Append(l, []Entry{{TS: 1, Body: []byte("after")}})
		if err != nil {
			t.Fatal(err)
		}
		if err := rd.Wait(l); err != nil {
			t.Fatalf("append after recovery: %v", err)
		}
		recs, err := l.NewReader(end).Read(nil, 10)
		if err != nil || len(recs) != 1 || string(recs[0].Body) != "after" {
			t.Fatalf("appended record: %v %+v", err, recs)
		}
		if j, _, err := OpenJournal(fs, "/d/cursors.jnl", nil); err == nil {
			j.Close()
		}
	})
}

// An idle log lets go of its cached commits; readers then read the files.
func TestIdleLogDropsItsCacheAndReadsFromFiles(t *testing.T) {
	fs := NewMemFS()
	fs.MkdirAll("/d")
	fs.SyncDir("/d")
	l, _, err := OpenLog(fs, "/d", LogOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := NewCommitter(0)
	defer c.Close()
	for i := range 5 {
		if err := appendOne(t, c, l, []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if l.cacheBytes == 0 {
		t.Fatal("no cache after commits")
	}
	l.Retain(0, Retention{}, time.Now().Add(3*time.Second))
	if l.cacheBytes != 0 || l.cache != nil {
		t.Fatalf("cache kept %d bytes after 3 idle seconds", l.cacheBytes)
	}
	if got := readAll(t, l); len(got) != 5 || string(got[4].Body) != "4" {
		t.Fatalf("read from files: %+v", got)
	}
}
