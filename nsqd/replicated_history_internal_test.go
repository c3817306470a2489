package nsqd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluicemq/sluice/store"
)

// historyLogs is a replica's topic log (src) and the log of a replica
// restored from a snapshot at src's end (dst: skipped to there, with a few
// messages applied after).
type historyLogs struct {
	src, dst *store.Log
	c        *store.Committer
}

func newHistoryLogs(t *testing.T, build func(h *historyLogs, add func(l *store.Log, n int))) *historyLogs {
	t.Helper()
	fs := store.NewMemFS()
	h := &historyLogs{c: store.NewCommitter(time.Hour)}
	t.Cleanup(h.c.Close)
	var err error
	for _, p := range []struct {
		dir string
		l   **store.Log
	}{{"/src", &h.src}, {"/dst", &h.dst}} {
		if *p.l, _, err = store.OpenLog(fs, p.dir, store.LogOptions{SegmentBytes: 8 << 10}); err != nil {
			t.Fatal(err)
		}
		l := *p.l
		t.Cleanup(func() { l.Close() })
	}
	add := func(l *store.Log, n int) {
		for range n {
			seq := l.End()
			r, err := h.c.Append(l, []store.Entry{{TS: int64(seq) * 3, DeliverAt: int64(seq % 4), Body: fmt.Appendf(nil, "m%d-%s", seq, strings.Repeat("x", int(seq%50)))}})
			if err == nil {
				err = r.Wait(l)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	build(h, add)
	return h
}

func readAllHistory(t *testing.T, l *store.Log, from, to uint64) []store.Record {
	t.Helper()
	rd := l.NewReader(from)
	var out []store.Record
	for {
		n := len(out)
		var err error
		if out, err = rd.Read(out, 64); err != nil {
			t.Fatal(err)
		}
		if len(out) == n || out[len(out)-1].Seq >= to {
			break
		}
	}
	for len(out) > 0 && out[len(out)-1].Seq >= to {
		out = out[:len(out)-1]
	}
	return out
}

func sameHistory(t *testing.T, got, want []store.Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("copied %d messages, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Seq != w.Seq || g.TS != w.TS || g.DeliverAt != w.DeliverAt || string(g.Body) != string(w.Body) {
			t.Fatalf("message %d: got seq %d ts %d at %d %q, want seq %d ts %d at %d %q", i, g.Seq, g.TS, g.DeliverAt, g.Body, w.Seq, w.TS, w.DeliverAt, w.Body)
		}
	}
}

func fetchFrom(src *store.Log, maxBytes, maxMsgs int, calls *int) func(context.Context, []byte) ([]byte, error) {
	return func(_ context.Context, req []byte) ([]byte, error) {
		*calls++
		var hr historyRequest
		if err := json.Unmarshal(req, &hr); err != nil {
			return nil, err
		}
		return historyAnswer(src, hr, maxBytes, maxMsgs)
	}
}

// The history a restore skipped is copied in many small answers, holes in
// the source's numbering (its own skips) included, with every message's
// ID, time, deferral and body as the source has them.
func TestHistoryCopyInSmallChunksMatchesTheSourceHolesIncluded(t *testing.T) {
	h := newHistoryLogs(t, func(h *historyLogs, add func(*store.Log, int)) {
		add(h.src, 700)
		if err := h.src.SkipTo(900); err != nil {
			t.Fatal(err)
		}
		add(h.src, 300) // 900-1199
		if err := h.dst.SkipTo(1200); err != nil {
			t.Fatal(err)
		}
		add(h.dst, 5)
	})
	calls := 0
	copied, low, err := backfillRange(context.Background(), h.dst, historyRange{From: 0, To: 1200}, fetchFrom(h.src, 2<<10, 100, &calls))
	if err != nil {
		t.Fatal(err)
	}
	if copied != 1000 || low != 0 {
		t.Fatalf("copied %d messages down to %d, want 1000 down to 0", copied, low)
	}
	if calls < 20 {
		t.Fatalf("the copy took %d answers; the chunk limits should make it take many more", calls)
	}
	sameHistory(t, readAllHistory(t, h.dst, 0, 1200), readAllHistory(t, h.src, 0, 1200))
	if got := readAllHistory(t, h.dst, 1200, 2000); len(got) != 5 || got[0].Seq != 1200 {
		t.Fatalf("the messages applied after the restore: %d from %v", len(got), got)
	}
}

// A copy cut short (the replica read went away) goes on below what it
// copied when run again, without writing anything twice.
func TestHistoryCopyInterruptedGoesOnWhereItStopped(t *testing.T) {
	h := newHistoryLogs(t, func(h *historyLogs, add func(*store.Log, int)) {
		add(h.src, 1000)
		if err := h.dst.SkipTo(1000); err != nil {
			t.Fatal(err)
		}
	})
	calls := 0
	inner := fetchFrom(h.src, 1<<10, 64, &calls)
	failing := func(ctx context.Context, req []byte) ([]byte, error) {
		if calls == 5 {
			return nil, errors.New("peer gone")
		}
		return inner(ctx, req)
	}
	hr := historyRange{From: 0, To: 1000}
	first, _, err := backfillRange(context.Background(), h.dst, hr, failing)
	if err == nil || first == 0 {
		t.Fatalf("first attempt: copied %d, err %v; want some copied, then the error", first, err)
	}
	rest, low, err := backfillRange(context.Background(), h.dst, hr, inner)
	if err != nil {
		t.Fatal(err)
	}
	if first+rest != 1000 || low != 0 {
		t.Fatalf("copied %d then %d down to %d, want 1000 in all down to 0", first, rest, low)
	}
	sameHistory(t, readAllHistory(t, h.dst, 0, 1000), readAllHistory(t, h.src, 0, 1000))
}

// A replica that holds less history (retention removed its oldest
// messages) gives what it has: the copy stops at its oldest message.
func TestHistoryCopyStopsAtTheOldestMessageTheSourceHolds(t *testing.T) {
	h := newHistoryLogs(t, func(h *historyLogs, add func(*store.Log, int)) {
		if err := h.src.SkipTo(400); err != nil {
			t.Fatal(err)
		}
		add(h.src, 600) // 400-999
		if err := h.dst.SkipTo(1000); err != nil {
			t.Fatal(err)
		}
	})
	calls := 0
	copied, low, err := backfillRange(context.Background(), h.dst, historyRange{From: 0, To: 1000}, fetchFrom(h.src, 4<<10, 1000, &calls))
	if err != nil {
		t.Fatal(err)
	}
	if copied != 600 || low != 400 {
		t.Fatalf("copied %d down to %d, want 600 down to 400", copied, low)
	}
	if h.dst.Start() != 400 {
		t.Fatalf("the copy's log starts at %d, want 400", h.dst.Start())
	}
}

// Answers that do not fit the range asked for, or are cut short, are
// refused, and nothing of them is written.
func TestHistoryCopyRefusesAnswersOutsideTheRangeAsked(t *testing.T) {
	h := newHistoryLogs(t, func(h *historyLogs, add func(*store.Log, int)) {
		add(h.src, 300)
		if err := h.dst.SkipTo(200); err != nil {
			t.Fatal(err)
		}
	})
	good, err := historyAnswer(h.src, historyRequest{From: 0, To: 300}, 1<<20, 1000)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"messages above the range": good,
		"cut inside a message":     mustAnswer(t, h.src, historyRequest{From: 0, To: 200})[:40],
	}
	for name, ans := range cases {
		_, _, err := backfillRange(context.Background(), h.dst, historyRange{From: 0, To: 200},
			func(context.Context, []byte) ([]byte, error) { return ans, nil })
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if got := readAllHistory(t, h.dst, 0, 200); len(got) != 0 {
		t.Fatalf("refused answers wrote %d messages", len(got))
	}
	if _, err := historyAnswer(h.dst, historyRequest{From: 0, To: 300}, 1<<20, 1000); err == nil {
		t.Fatal("a replica that has not applied the range answered for it")
	}
}

func mustAnswer(t *testing.T, l *store.Log, hr historyRequest) []byte {
	t.Helper()
	b, err := historyAnswer(l, hr, 1<<20, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// On a replica still copying the messages a restore skipped, a channel
// created with start=earliest starts at the lowest message still to copy,
// not at the oldest one the log holds so far; one created at a time older
// than what the log holds starts there too (earlier messages delivered
// rather than any lost); a time within the log is found in it.
func TestEarliestStartOnAReplicaStillCopyingIncludesTheUncopiedMessages(t *testing.T) {
	n, tp, _ := startHotPathNSQDWith(t, func(o *Options) { o.Durable = true }, "orders", "")
	if err := tp.dur.log.SkipTo(1000); err != nil { // as a restore does
		t.Fatal(err)
	}
	before := time.Now()
	if err := tp.putMessages(n.newMessages([][]byte{[]byte("a"), []byte("b"), []byte("c"), []byte("d"), []byte("e")}, 0, nil)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		start channelStart
		want  uint64
	}{
		{"earliest-copied", channelStart{kind: "earliest"}, 1000},
		{"earliest-uncopied", channelStart{kind: "earliest", copying: true, uncopied: 200}, 200},
		{"earliest-uncopied-from-0", channelStart{kind: "earliest", copying: true}, 0},
		{"old-time-uncopied", channelStart{kind: "time", at: before.Add(-time.Hour), copying: true, uncopied: 200}, 200},
		{"late-time-uncopied", channelStart{kind: "time", at: time.Now().Add(time.Hour), copying: true, uncopied: 200}, 1005},
		{"latest-uncopied", channelStart{kind: "latest", copying: true, uncopied: 200}, 1005},
	} {
		ch, _, err := tp.getChannelFrom(tc.name, tc.start)
		if err != nil {
			t.Fatal(err)
		}
		ch.mu.Lock()
		floor := ch.dlog.cursor.Floor
		ch.mu.Unlock()
		if floor != tc.want {
			t.Errorf("%s: the channel starts at %d, want %d", tc.name, floor, tc.want)
		}
	}
}
