package store

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func histRecord(seq uint64) Record {
	return Record{Seq: seq, TS: int64(seq)*10 + 5, DeliverAt: int64(seq % 3), Body: fmt.Appendf(nil, "history-%d", seq)}
}

func histRecords(from, to uint64) []Record {
	var out []Record
	for s := from; s < to; s++ {
		out = append(out, histRecord(s))
	}
	return out
}

// checkBackfilled reads l from its start and checks that it holds exactly the
// sequence numbers want, each with the body histRecord or msgEntry gave it.
func checkBackfilled(t *testing.T, l *Log, want []uint64, live map[uint64]string) {
	t.Helper()
	got := readFrom(t, l, 0, 7)
	if len(got) != len(want) {
		t.Fatalf("log holds %d records (%s), want %d", len(got), seqList(got), len(want))
	}
	for i, rec := range got {
		if rec.Seq != want[i] {
			t.Fatalf("record %d has sequence %d, want %d (log holds %s)", i, rec.Seq, want[i], seqList(got))
		}
		body := string(histRecord(rec.Seq).Body)
		if b, ok := live[rec.Seq]; ok {
			body = b
		} else if h := histRecord(rec.Seq); rec.TS != h.TS || rec.DeliverAt != h.DeliverAt {
			t.Fatalf("record %d: TS %d DeliverAt %d, want %d %d", rec.Seq, rec.TS, rec.DeliverAt, h.TS, h.DeliverAt)
		}
		if string(rec.Body) != body {
			t.Fatalf("record %d holds %q, want %q", rec.Seq, rec.Body, body)
		}
	}
}

func seqList(recs []Record) string {
	var b strings.Builder
	for i, r := range recs {
		if i > 0 && r.Seq == recs[i-1].Seq+1 && (i == len(recs)-1 || recs[i+1].Seq != r.Seq+1) {
			fmt.Fprintf(&b, "-%d", r.Seq)
			continue
		}
		if i > 0 && r.Seq == recs[i-1].Seq+1 {
			continue
		}
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%d", r.Seq)
	}
	return b.String()
}

// appendLive commits n messages "live-<seq>" at l's end and records them
// in live.
func appendLive(t *testing.T, c *Committer, l *Log, live map[uint64]string, n int) {
	t.Helper()
	for range n {
		seq := l.End()
		e := Entry{TS: 1, Body: fmt.Appendf(nil, "live-%d", seq)}
		if err := commitWait(c, l, e); err != nil {
			t.Fatal(err)
		}
		live[seq] = string(e.Body)
	}
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s < to; s++ {
		out = append(out, s)
	}
	return out
}

// A replica restored from a snapshot skips its log to the snapshot's end;
// the history below it, backfilled in chunks from the top down, is read
// in order with what was appended after the skip, and is still there
// after the log is opened again.
func TestBackfillFillsTheRangeASkipJumpedOverAndSurvivesReopening(t *testing.T) {
	fs := newMemDir(t, "/t")
	l, _ := mustOpenLog(t, fs, "/t", LogOptions{})
	c := NewCommitter(time.Hour)
	defer c.Close()
	if err := l.SkipTo(100); err != nil {
		t.Fatal(err)
	}
	live := map[uint64]string{}
	appendLive(t, c, l, live, 5)
	tail := l.NewReader(100) // a channel already reading after the skip
	for _, chunk := range [][2]uint64{{70, 100}, {40, 70}} {
		if err := l.Backfill(histRecords(chunk[0], chunk[1])); err != nil {
			t.Fatal(err)
		}
	}
	if got := l.Start(); got != 40 {
		t.Fatalf("Start() = %d after the backfill, want 40", got)
	}
	recs, err := tail.Read(nil, 100)
	if err != nil || len(recs) != 5 || recs[0].Seq != 100 {
		t.Fatalf("a reader past the backfilled range read %d records from %v (err %v), want the 5 from 100", len(recs), recs, err)
	}
	checkBackfilled(t, l, seqRange(40, 105), live)
	if n, err := l.SeqAtTime(histRecord(55).TS); err != nil || n != 55 {
		t.Fatalf("SeqAtTime of message 55's time = %d (%v), want 55", n, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	fs.Crash()
	l, rep := mustOpenLog(t, fs, "/t", LogOptions{})
	defer l.Close()
	if len(rep.Cut)+len(rep.Quarantined) > 0 {
		t.Fatalf("reopening reported damage: %+v", rep)
	}
	checkBackfilled(t, l, seqRange(40, 105), live)
	if l.End() != 105 {
		t.Fatalf("End() = %d after reopening, want 105", l.End())
	}
}

// A log that held messages before it skipped gets the hole between them
// and the skip's target filled, without disturbing either side.
func TestBackfillFillsAHoleBetweenHeldMessages(t *testing.T) {
	fs := newMemDir(t, "/t")
	l, _ := mustOpenLog(t, fs, "/t", LogOptions{})
	defer l.Close()
	c := NewCommitter(time.Hour)
	defer c.Close()
	live := map[uint64]string{}
	appendLive(t, c, l, live, 10)
	if err := l.SkipTo(50); err != nil {
		t.Fatal(err)
	}
	appendLive(t, c, l, live, 3)
	if err := l.Backfill(histRecords(10, 50)); err != nil {
		t.Fatal(err)
	}
	checkBackfilled(t, l, seqRange(0, 53), live)
}

func TestBackfillRefusesRecordsItCannotPlace(t *testing.T) {
	fs := newMemDir(t, "/t")
	l, _ := mustOpenLog(t, fs, "/t", LogOptions{MaxRecordBytes: 1 << 10})
	defer l.Close()
	c := NewCommitter(time.Hour)
	defer c.Close()
	for range 10 {
		if err := commitWait(c, l, Entry{TS: 1, Body: []byte("held")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.SkipTo(50); err != nil {
		t.Fatal(err)
	}
	if err := commitWait(c, l, Entry{TS: 1, Body: []byte("held")}); err != nil {
		t.Fatal(err)
	}
	big := histRecords(20, 21)
	big[0].Body = make([]byte, 2<<10)
	cases := []struct {
		name string
		recs []Record
		want string
	}{
		{"none", nil, "no records"},
		{"overlapping held messages", histRecords(5, 15), "overlap"},
		{"overlapping messages after the hole", histRecords(40, 51), "overlap"},
		{"reaching the end", histRecords(51, 53), "end"},
		{"not consecutive", append(histRecords(20, 22), histRecord(23)), "consecutive"},
		{"over the record limit", big, "limit"},
	}
	for _, tc := range cases {
		err := l.Backfill(tc.recs)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("backfill %s: err %v, want one saying %q", tc.name, err, tc.want)
		}
	}
	want := append(seqRange(0, 10), 50)
	live := map[uint64]string{}
	for _, s := range want {
		live[s] = "held"
	}
	checkBackfilled(t, l, want, live)
	if files := fs.Files(); strings.Contains(strings.Join(files, " "), tmpSuffix) {
		t.Fatalf("a refused backfill left files behind: %v", files)
	}
}

// A crash at any step of a backfill of three chunks leaves, once the log
// is opened again, every message it held before, each chunk whole or not
// at all, no half-written file, and a log that takes appends and further
// backfills.
func TestBackfillCrashAtEveryStepLeavesEachChunkWholeOrAbsent(t *testing.T) {
	chunks := [][2]uint64{{600, 900}, {300, 600}, {0, 300}}
	for n := 0; ; n++ {
		fs := newMemDir(t, "/t")
		l, _ := mustOpenLog(t, fs, "/t", LogOptions{SegmentBytes: 4 << 10})
		c := NewCommitter(time.Hour)
		if err := l.SkipTo(900); err != nil {
			t.Fatal(err)
		}
		live := map[uint64]string{}
		appendLive(t, c, l, live, 20)
		fs.FailAfter(n)
		done := 0
		for _, ch := range chunks {
			if err := l.Backfill(histRecords(ch[0], ch[1])); err != nil {
				break
			}
			done++
		}
		c.Close()
		l.Close()
		fs.Crash()
		l2, rep, err := OpenLog(fs, "/t", LogOptions{SegmentBytes: 4 << 10})
		if err != nil {
			t.Fatalf("crash after %d steps: reopen: %v", n, err)
		}
		if len(rep.Quarantined) > 0 {
			t.Fatalf("crash after %d steps: quarantined %v", n, rep.Quarantined)
		}
		for _, f := range fs.Files() {
			if strings.HasSuffix(f, tmpSuffix) {
				t.Fatalf("crash after %d steps: %s left after reopening", n, f)
			}
		}
		got := readFrom(t, l2, 0, 50)
		held := map[uint64]bool{}
		for _, r := range got {
			held[r.Seq] = true
		}
		kept := 0
		for i, ch := range chunks {
			k := 0
			for s := ch[0]; s < ch[1]; s++ {
				if held[s] {
					k++
				}
			}
			if k != 0 && k != int(ch[1]-ch[0]) {
				t.Fatalf("crash after %d steps: chunk %d-%d partly held (%d messages)", n, ch[0], ch[1]-1, k)
			}
			if k > 0 {
				if i > kept {
					t.Fatalf("crash after %d steps: chunk %d held though a chunk above it is not", n, i)
				}
				kept++
			}
			if i < done && k == 0 {
				t.Fatalf("crash after %d steps: chunk %d-%d was backfilled (nil error) but is gone", n, ch[0], ch[1]-1)
			}
		}
		var want []uint64
		if kept > 0 {
			want = seqRange(chunks[kept-1][0], 900)
		}
		want = append(want, seqRange(900, 920)...)
		checkBackfilled(t, l2, want, live)
		// the log goes on: the missing chunks and new messages
		c2 := NewCommitter(time.Hour)
		for _, ch := range chunks[kept:] {
			if err := l2.Backfill(histRecords(ch[0], ch[1])); err != nil {
				t.Fatalf("crash after %d steps: backfill %d-%d after reopening: %v", n, ch[0], ch[1]-1, err)
			}
		}
		if err := commitWait(c2, l2, Entry{TS: 1, Body: []byte("after")}); err != nil {
			t.Fatal(err)
		}
		live[920] = "after"
		checkBackfilled(t, l2, seqRange(0, 921), live)
		c2.Close()
		l2.Close()
		if done == len(chunks) {
			if n < 5 {
				t.Fatalf("the backfill took only %d disk steps", n)
			}
			return
		}
	}
}

// Skips leave empty segments (a replica restored from two snapshots in a
// row skips twice); a backfill over them replaces them, so the log opens
// again without two segments claiming the same messages.
func TestBackfillReplacesTheEmptySegmentsSkipsLeftInItsRange(t *testing.T) {
	fs := newMemDir(t, "/t")
	l, _ := mustOpenLog(t, fs, "/t", LogOptions{})
	c := NewCommitter(time.Hour)
	defer c.Close()
	for _, s := range []uint64{50, 100} {
		if err := l.SkipTo(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := commitWait(c, l, Entry{TS: 1, Body: []byte("live")}); err != nil {
		t.Fatal(err)
	}
	if err := l.Backfill(histRecords(0, 100)); err != nil {
		t.Fatal(err)
	}
	live := map[uint64]string{100: "live"}
	checkBackfilled(t, l, seqRange(0, 101), live)
	l.Close()
	fs.Crash()
	l, _ = mustOpenLog(t, fs, "/t", LogOptions{})
	defer l.Close()
	checkBackfilled(t, l, seqRange(0, 101), live)
}
