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
