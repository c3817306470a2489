package store

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sort"
	"syscall"
	"testing"
)

const jpath = "/d/cursors.jnl"

func mustOpenJournal(t testing.TB, fs FS) (*Journal, map[string]*Cursor) {
	t.Helper()
	j, cursors, err := OpenJournal(fs, jpath, nil)
	if err != nil {
		t.Fatalf("open journal: %v", err)
	}
	return j, cursors
}

// sameCursors reports how got differs from want ("" when equal): the same
// names, floors, finished spans and held messages.
func sameCursors(got, want map[string]*Cursor) string {
	var names []string
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		g, w := got[n], want[n]
		if g == nil {
			return fmt.Sprintf("%q missing", n)
		}
		if g.Floor != w.Floor || !reflect.DeepEqual(spansOf(g), spansOf(w)) {
			return fmt.Sprintf("%q: floor %d spans %v, want %d %v", n, g.Floor, spansOf(g), w.Floor, spansOf(w))
		}
		if len(g.Held) != len(w.Held) || (len(w.Held) > 0 && !reflect.DeepEqual(g.Held, w.Held)) {
			return fmt.Sprintf("%q: held %v, want %v", n, g.Held, w.Held)
		}
	}
	for n := range got {
		if want[n] == nil {
			return fmt.Sprintf("%q should not exist", n)
		}
	}
	return ""
}

func cloneAll(m map[string]*Cursor) map[string]*Cursor {
	out := make(map[string]*Cursor, len(m))
	for n, c := range m {
		out[n] = c.Clone()
	}
	return out
}

// TestJournalReplayEqualsTheCursors applies random channel operations to
// in-memory cursors and the journal alike (finishes in any order, requeues,
// resets, deletes and re-creations, compactions), and checks at every
// reopen that replay rebuilds exactly the in-memory cursors.
func TestJournalReplayEqualsTheCursors(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 4))
	fs := newMemDir(t, "/d")
	j, got := mustOpenJournal(t, fs)
	if len(got) != 0 {
		t.Fatalf("a new journal has cursors: %v", got)
	}
	live := map[string]*Cursor{}
	names := []string{TopicCursor, "a", "b", "c#ephemeral-looking", "a-much-longer-channel-name"}
	rounds := 40
	if longTests() {
		rounds = 400
	}
	for round := range rounds {
		for range 300 {
			name := names[rng.IntN(len(names))]
			c := live[name]
			switch k := rng.IntN(100); {
			case c == nil || k < 2:
				// create (or reset to a random position, possibly lower)
				c = NewCursor(uint64(rng.IntN(3000)))
				live[name] = c
				if err := j.SetState(name, c.Clone(), rng.IntN(2) == 0); err != nil {
					t.Fatal(err)
				}
			case k < 4:
				delete(live, name)
				if err := j.Delete(name); err != nil {
					t.Fatal(err)
				}
			case k < 12:
				// a requeue carries the attempts of the last delivery
				s := c.Floor + uint64(rng.IntN(400))
				h := Held{Attempts: c.Held[s].Attempts, Until: rng.Int64()}
				c.Requeue(s, h)
				j.Requeue(name, s, h)
			case k < 20:
				var ds []Delivery
				for range 1 + rng.IntN(4) {
					s := c.Floor + uint64(rng.IntN(400))
					d := Delivery{Seq: s, Attempts: c.Held[s].Attempts + 1}
					c.Delivered(d.Seq, d.Attempts)
					ds = append(ds, d)
				}
				j.Deliver(name, ds)
			default:
				// finishes cluster around the floor, out of order
				s := c.Floor + uint64(rng.IntN(200))
				if rng.IntN(10) == 0 && c.Floor > 0 {
					s = uint64(rng.IntN(int(c.Floor))) // already finished
				}
				c.Finish(s)
				j.Finish(name, s)
			}
		}
		switch rng.IntN(4) {
		case 0:
			if err := j.Compact(j.StateGen(), func() map[string]*Cursor { return cloneAll(live) }); err != nil {
				t.Fatalf("round %d: compact: %v", round, err)
			}
		case 1:
			if _, _, err := j.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		if rng.IntN(3) == 0 {
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			if rng.IntN(2) == 0 {
				fs.Crash() // everything was synced by Close
			}
			j, got = mustOpenJournal(t, fs)
			if d := sameCursors(got, live); d != "" {
				t.Fatalf("round %d: replay differs: %s", round, d)
			}
		}
	}
	j.Close()
	_, got = mustOpenJournal(t, fs)
	if d := sameCursors(got, live); d != "" {
		t.Fatalf("final replay differs: %s", d)
	}
}

// A finish recorded before a state record of the same channel must not be
// replayed after it: the state (here a rewind) is the newer truth.
func TestJournalFinishBeforeStateKeepsTheOrder(t *testing.T) {
	fs := newMemDir(t, "/d")
	j, _ := mustOpenJournal(t, fs)
	if err := j.SetState("c", NewCursor(0), true); err != nil {
		t.Fatal(err)
	}
	j.Finish("c", 5)
	j.Finish("c", 0)
	rewound := NewCursor(0) // e.g. a channel reset to the earliest message
	if err := j.SetState("c", rewound.Clone(), false); err != nil {
		t.Fatal(err)
	}
	j.Finish("c", 7)
	rewound.Finish(7)
	if _, _, err := j.Flush(); err != nil {
		t.Fatal(err)
	}
	_, got := mustOpenJournal(t, fs)
	if d := sameCursors(got, map[string]*Cursor{"c": rewound}); d != "" {
		t.Fatalf("replay: %s", d)
	}
}

func TestJournalTornTailIsCut(t *testing.T) {
	build := func(t *testing.T) (*MemFS, []int64, []map[string]*Cursor) {
		fs := newMemDir(t, "/d")
		j, _ := mustOpenJournal(t, fs)
		live := map[string]*Cursor{"a": NewCursor(10)}
		var sizes []int64 // journal size after each flush
		var states []map[string]*Cursor
		if err := j.SetState("a", live["a"].Clone(), true); err != nil {
			t.Fatal(err)
		}
		sizes, states = append(sizes, j.Size()), append(states, cloneAll(live))
		for i := range 5 {
			for k := range 10 {
				s := uint64(10 + i*10 + (k*7)%10)
				live["a"].Finish(s)
				j.Finish("a", s)
			}
			live["a"].Requeue(uint64(200+i), Held{Attempts: uint16(i)})
			j.Requeue("a", uint64(200+i), Held{Attempts: uint16(i)})
			if _, _, err := j.Flush(); err != nil {
				t.Fatal(err)
			}
			sizes, states = append(sizes, j.Size()), append(states, cloneAll(live))
		}
		j.Close()
		return fs, sizes, states
	}
	fs, sizes, states := build(t)
	data, _ := fs.ReadFile(jpath)
	if int64(len(data)) != sizes[len(sizes)-1] {
		t.Fatalf("file %d bytes, journal says %d", len(data), sizes[len(sizes)-1])
	}
	// mid is the state between the two records of flush k (a flush
	// writes the buffered requeue first, then the batched finishes)
	mid := func(k int) map[string]*Cursor {
		m := cloneAll(states[k])
		m["a"].Requeue(uint64(200+k), Held{Attempts: uint16(k)})
		return m
	}
	// cut at every byte: replay gives the state after the last whole record
	for n := range len(data) {
		fs := NewMemFS()
		fs.MkdirAll("/d")
		fs.WriteFile(jpath, data[:n])
		j, got, err := OpenJournal(fs, jpath, nil)
		if err != nil {
			t.Fatalf("cut at %d: %v", n, err)
		}
		k := sort.Search(len(sizes), func(i int) bool { return sizes[i] > int64(n) }) - 1
		switch {
		case k < 0:
			if len(got) != 0 {
				t.Fatalf("cut at %d, before the first state: %v", n, got)
			}
		case sameCursors(got, states[k]) != "" && (k+1 == len(states) || sameCursors(got, mid(k)) != ""):
			t.Fatalf("cut at %d: replayed neither the state after flush %d nor the one after its requeue: %s", n, k, sameCursors(got, states[k]))
		}
		if j.Size() > int64(n) {
			t.Fatalf("cut at %d: size %d", n, j.Size())
		}
		// and the journal takes records after the cut
		if err := j.SetState("z", NewCursor(3), true); err != nil {
			t.Fatal(err)
		}
		j.Close()
		if _, got, err = OpenJournal(fs, jpath, nil); err != nil || got["z"] == nil || got["z"].Floor != 3 {
			t.Fatalf("cut at %d, then a state record: %v %v", n, err, got)
		}
	}
	// a flipped byte in the last record (the last flush's finishes) cuts
	// just that record
	for _, at := range []int{1, 5, 9, 20} {
		fs2, _, _ := build(t)
		bad := append([]byte(nil), data...)
		bad[len(bad)-at] ^= 0x40
		fs2.WriteFile(jpath, bad)
		_, got, err := OpenJournal(fs2, jpath, nil)
		if err != nil {
			t.Fatal(err)
		}
		if d := sameCursors(got, mid(len(states)-2)); d != "" {
			t.Fatalf("flipped byte %d from the end: %s", at, d)
		}
		if b, _ := fs2.ReadFile(jpath); len(b) >= len(data) {
			t.Fatalf("the bad record was not cut: %d bytes", len(b))
		}
	}
}

func TestJournalDeleteThenRecreate(t *testing.T) {
	fs := newMemDir(t, "/d")
	j, _ := mustOpenJournal(t, fs)
	old := NewCursor(100)
	j.SetState("ch", old.Clone(), true)
	j.SetState("other", NewCursor(0), true)
	j.Finish("ch", 100)
	j.Finish("ch", 150)
	j.Requeue("ch", 120, Held{Attempts: 9})
	if err := j.Delete("ch"); err != nil {
		t.Fatal(err)
	}
	j.Finish("ch", 151) // a late finish for the deleted channel is dropped
	j.Finish("other", 0)
	fresh := NewCursor(5) // the same name again, starting lower
	if err := j.SetState("ch", fresh.Clone(), true); err != nil {
		t.Fatal(err)
	}
	j.Finish("ch", 6)
	fresh.Finish(6)
	if _, _, err := j.Flush(); err != nil {
		t.Fatal(err)
	}
	other := NewCursor(0)
	other.Finish(0)
	want := map[string]*Cursor{"ch": fresh, "other": other}
	j.Close()
	j, got := mustOpenJournal(t, fs)
	if d := sameCursors(got, want); d != "" {
		t.Fatalf("replay: %s", d)
	}
	// after a reopen the ids of deleted channels may be handed out again
	if err := j.Delete("ch"); err != nil {
		t.Fatal(err)
	}
	delete(want, "ch")
	for _, name := range []string{"n1", "n2", "ch"} {
		want[name] = NewCursor(uint64(len(name)))
		if err := j.SetState(name, want[name].Clone(), true); err != nil {
			t.Fatal(err)
		}
		j.Finish(name, 40)
		want[name].Finish(40)
	}
	j.Close()
	_, got = mustOpenJournal(t, fs)
	if d := sameCursors(got, want); d != "" {
		t.Fatalf("replay after re-used ids: %s", d)
	}
	if err := j.Delete("n1"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Delete on a closed journal: %v", err)
	}
}

// FIN batches are delta-encoded against the previous number, which can go
// down as well as up by any amount; more than 65536 in one flush are
// split over several records.
func TestJournalFinishDeltaEncoding(t *testing.T) {
	tests := []struct {
		name string
		seqs []uint64
	}{
		{"ascending", []uint64{1, 2, 3, 10, 11}},
		{"descending", []uint64{50, 40, 30, 3, 2, 1}},
		{"wild jumps", []uint64{1 << 40, 3, 1<<63 + 5, 0, 1<<64 - 2, 7, 1 << 40}},
		{"duplicates", []uint64{9, 9, 9, 8, 9}},
		{"many", func() []uint64 {
			// near-sorted with local shuffles and stragglers, as FINs
			// come: few spans, so the model cursor stays cheap
			r := rand.New(rand.NewPCG(5, 5))
			var s []uint64
			for i := range 70000 + r.IntN(70000) {
				v := uint64(i + r.IntN(64))
				if r.IntN(500) == 0 {
					v = uint64(r.IntN(1 << 30))
				}
				s = append(s, v)
			}
			return s
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := newMemDir(t, "/d")
			j, _ := mustOpenJournal(t, fs)
			want := NewCursor(0)
			j.SetState("c", want.Clone(), true)
			for _, s := range tt.seqs {
				j.Finish("c", s)
				want.Finish(s)
			}
			if _, synced, err := j.Flush(); err != nil || !synced {
				t.Fatalf("flush: %v %v", synced, err)
			}
			_, got := mustOpenJournal(t, fs)
			if d := sameCursors(got, map[string]*Cursor{"c": want}); d != "" {
				t.Fatal(d)
			}
		})
	}
}

// A compaction whose directory sync fails, or whose rename reports an
// error, may already have replaced the file: the journal must go on
// writing to the file in place, and must not report a later flush as
// synced before the replacement is durable.
func TestJournalCompactionWithAFailedStep(t *testing.T) {
	for _, op := range []string{"syncdir", "rename", "sync", "write"} {
		for _, applied := range []bool{false, true} {
			for _, crash := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s fails, applied %v, crash %v", op, applied, crash), func(t *testing.T) {
					mem := newMemDir(t, "/d")
					fs := &faultFS{FS: mem}
					j, _ := mustOpenJournal(t, fs)
					live := map[string]*Cursor{"a": NewCursor(0)}
					j.SetState("a", live["a"].Clone(), true)
					for s := range uint64(10) {
						live["a"].Finish(s * 2)
						j.Finish("a", s*2)
					}
					j.Flush()
					fs.failOnce(op, "", applied)
					err := j.Compact(j.StateGen(), func() map[string]*Cursor { return cloneAll(live) })
					if err == nil && fs.failures() == 1 && !(op == "rename" && applied) {
						t.Fatal("compaction with a failed step reported success")
					}
					live["a"].Finish(1)
					j.Finish("a", 1)
					_, synced, err := j.Flush()
					if err != nil || !synced {
						t.Fatalf("flush after the failed compaction: %v %v", synced, err)
					}
					if crash {
						mem.Crash()
					} else {
						j.Close()
					}
					_, got := mustOpenJournal(t, mem)
					if d := sameCursors(got, live); d != "" {
						t.Fatalf("a synced finish after a failed compaction is lost: %s", d)
					}
				})
			}
		}
	}
}

// A full disk fails flushes with ENOSPC; once there is room again the
// journal writes what it held, and nothing of the failed write is replayed.
func TestJournalFullDisk(t *testing.T) {
	fs := newMemDir(t, "/d")
	j, _ := mustOpenJournal(t, fs)
	live := map[string]*Cursor{"a": NewCursor(0)}
	if err := j.SetState("a", live["a"].Clone(), true); err != nil {
		t.Fatal(err)
	}
	fs.SetSpace(j.Size() + 10)
	for s := range uint64(100) {
		live["a"].Finish(s * 3)
		j.Finish("a", s*3)
	}
	if _, synced, err := j.Flush(); !errors.Is(err, syscall.ENOSPC) || synced {
		t.Fatalf("flush on a full disk: %v %v", synced, err)
	}
	if err := j.SetState("b", NewCursor(1), true); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("state on a full disk: %v", err)
	}
	live["b"] = NewCursor(1) // recorded, written with the next flush
	fs.SetSpace(0)
	if _, synced, err := j.Flush(); err != nil || !synced {
		t.Fatalf("flush with room: %v %v", synced, err)
	}
	fs.Crash()
	_, got := mustOpenJournal(t, fs)
	if d := sameCursors(got, live); d != "" {
		t.Fatal(d)
	}
}
