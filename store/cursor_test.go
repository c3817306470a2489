package store

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestCursorFloorAndSpansFollowFinishesInAnyOrder(t *testing.T) {
	c := NewCursor(10)
	for _, s := range []uint64{12, 14, 13, 11} {
		c.Finish(s)
	}
	if c.Floor != 10 || c.Spans() != 1 || !c.IsDone(12) || c.IsDone(10) {
		t.Fatalf("after 11-14: floor %d spans %d", c.Floor, c.Spans())
	}
	c.Finish(10)
	if c.Floor != 15 || c.Spans() != 0 {
		t.Fatalf("after 10: floor %d spans %d", c.Floor, c.Spans())
	}
	if c.Finish(12) {
		t.Fatal("finishing below the floor reported new")
	}
	c.Finish(20)
	if got := c.NextUnfinished(20); got != 21 {
		t.Fatalf("NextUnfinished(20) = %d", got)
	}
	c.Requeue(20, Held{Attempts: 3})
	if _, ok := c.Held[20]; ok {
		t.Fatal("requeue of a finished message was kept")
	}
	c.Requeue(16, Held{Attempts: 2, Until: 5})
	d := c.Clone()
	d.Finish(16)
	if _, ok := c.Held[16]; !ok || c.IsDone(16) {
		t.Fatal("clone shares state")
	}
}

func TestCursorMatchesAModel(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 2))
	for range 200 {
		c := NewCursor(0)
		done := map[uint64]bool{}
		for range 300 {
			s := uint64(r.IntN(120))
			c.Finish(s)
			done[s] = true
		}
		floor := uint64(0)
		for done[floor] {
			floor++
		}
		if c.Floor != floor {
			t.Fatalf("floor %d, model %d", c.Floor, floor)
		}
		for s := uint64(0); s < 130; s++ {
			if c.IsDone(s) != done[s] {
				t.Fatalf("IsDone(%d) = %v, model %v", s, c.IsDone(s), done[s])
			}
			n := s
			for done[n] {
				n++
			}
			if got := c.NextUnfinished(s); got != n {
				t.Fatalf("NextUnfinished(%d) = %d, model %d", s, got, n)
			}
		}
	}
}

func TestJournalReplayAndCompactionRebuildTheCursors(t *testing.T) {
	fs := NewMemFS()
	fs.MkdirAll("/d")
	fs.SyncDir("/d")
	j, _, err := OpenJournal(fs, "/d/cursors.jnl", nil)
	if err != nil {
		t.Fatal(err)
	}
	live := map[string]*Cursor{"a": NewCursor(0), "b": NewCursor(5), TopicCursor: NewCursor(0)}
	for name, c := range live {
		j.SetState(name, c.Clone(), true)
	}
	r := rand.New(rand.NewPCG(1, 2))
	step := func() {
		for range 500 {
			name := []string{"a", "b"}[r.IntN(2)]
			s := uint64(r.IntN(2000))
			if r.IntN(5) == 0 {
				h := Held{Attempts: uint16(r.IntN(9)), Until: int64(r.IntN(1000))}
				live[name].Requeue(s, h)
				j.Requeue(name, s, h)
				continue
			}
			live[name].Finish(s)
			j.Finish(name, s)
		}
		if _, _, err := j.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what string) {
		t.Helper()
		_, got, err := OpenJournal(fs, "/d/cursors.jnl", nil)
		if err != nil {
			t.Fatal(err)
		}
		for name, c := range live {
			g := got[name]
			if g == nil || g.Floor != c.Floor || g.Spans() != c.Spans() || len(g.Held) != len(c.Held) {
				t.Fatalf("%s: %q replayed as %+v, want %+v", what, name, g, c)
			}
			for s := uint64(0); s < 2000; s++ {
				if g.IsDone(s) != c.IsDone(s) || g.Held[s] != c.Held[s] {
					t.Fatalf("%s: %q differs at %d", what, name, s)
				}
			}
		}
	}
	step()
	check("replay")
	gen := j.StateGen()
	if err := j.Compact(gen, func() map[string]*Cursor {
		out := map[string]*Cursor{}
		for n, c := range live {
			out[n] = c.Clone()
		}
		return out
	}); err != nil {
		t.Fatal(err)
	}
	step()
	fs.Crash()
	check("compaction, more changes and a crash")
	j.SetState("c", NewCursor(0), true)
	if err := j.Compact(gen, func() map[string]*Cursor { return nil }); err != ErrCompactionRaced {
		t.Fatalf("compaction with a stale channel list: %v", err)
	}
	if err := j.Delete("b"); err != nil {
		t.Fatal(err)
	}
	delete(live, "b")
	live["c"] = NewCursor(0)
	_, got, _ := OpenJournal(fs, "/d/cursors.jnl", nil)
	if _, ok := got["b"]; ok {
		t.Fatal("deleted channel came back")
	}
	check("delete")
}

// The committer writes a journal's changes within about one interval of
// the first change, again and again, with no appends to wake it.
func TestCommitterFlushesJournalChangesWithinAnInterval(t *testing.T) {
	fs := NewMemFS()
	fs.MkdirAll("/d")
	fs.SyncDir("/d")
	j, _, err := OpenJournal(fs, "/d/cursors.jnl", nil)
	if err != nil {
		t.Fatal(err)
	}
	c := NewCommitter(20 * time.Millisecond)
	defer c.Close()
	c.AddJournal(j)
	if err := j.SetState("c", NewCursor(0), true); err != nil {
		t.Fatal(err)
	}
	finishedOnDisk := func(seq uint64) bool {
		fs.mu.Lock()
		nd := fs.nodes["/d/cursors.jnl"]
		synced := append([]byte(nil), nd.synced...)
		fs.mu.Unlock()
		probe := NewMemFS()
		probe.MkdirAll("/p")
		probe.WriteFile("/p/j", synced)
		_, cur, err := OpenJournal(probe, "/p/j", nil)
		return err == nil && cur["c"] != nil && cur["c"].IsDone(seq)
	}
	for round, seq := range []uint64{0, 1, 2} {
		j.Finish("c", seq)
		deadline := time.Now().Add(2 * time.Second)
		for !finishedOnDisk(seq) {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: finish of %d not synced within 2s", round, seq)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// Deliveries journaled with finishes and requeues replay to the attempts
// and deadline the channel last had.
func TestJournalDeliveriesKeepAttemptsAndDeadlines(t *testing.T) {
	fs := NewMemFS()
	fs.MkdirAll("/d")
	fs.SyncDir("/d")
	j, _, err := OpenJournal(fs, "/d/cursors.jnl", nil)
	if err != nil {
		t.Fatal(err)
	}
	j.SetState("c", NewCursor(0), true)
	j.Deliver("c", []Delivery{{Seq: 1, Attempts: 1}, {Seq: 2, Attempts: 1}, {Seq: 3, Attempts: 1}, {Seq: 9, Attempts: 4}})
	j.Requeue("c", 2, Held{Attempts: 1, Until: 777}) // REQ with delay of the first delivery
	j.Requeue("c", 3, Held{Attempts: 1, Until: 0})
	j.Deliver("c", []Delivery{{Seq: 3, Attempts: 2}}) // delivered again
	j.Finish("c", 1)
	if _, _, err := j.Flush(); err != nil {
		t.Fatal(err)
	}
	_, got, err := OpenJournal(fs, "/d/cursors.jnl", nil)
	if err != nil {
		t.Fatal(err)
	}
	c := got["c"]
	if !c.IsDone(1) || len(c.Held) != 3 {
		t.Fatalf("replayed cursor: floor %d held %v", c.Floor, c.Held)
	}
	want := map[uint64]Held{2: {Attempts: 1, Until: 777}, 3: {Attempts: 2}, 9: {Attempts: 4}}
	for s, h := range want {
		if c.Held[s] != h {
			t.Errorf("seq %d: %+v, want %+v", s, c.Held[s], h)
		}
	}
}

// A cursor's notify function hears of every change, and of nothing else;
// a clone does not carry it.
func TestCursorNotifiesItsChangesAndAClonedCursorDoesNot(t *testing.T) {
	c := NewCursor(10)
	n := 0
	c.SetNotify(func() { n++ })
	c.Finish(12) // a span above the floor
	c.Finish(12) // already finished: no change
	c.Finish(9)  // below the floor: no change
	c.Requeue(11, Held{Attempts: 2})
	c.Requeue(12, Held{Attempts: 2}) // finished: nothing kept
	c.Finish(10)                     // the floor moves
	c.Delivered(13, 1)               // the journal's record, not a change of progress
	if n != 3 {
		t.Fatalf("notified %d times, want 3 (two finishes, one requeue)", n)
	}
	cl := c.Clone()
	cl.Finish(20)
	if n != 3 {
		t.Fatal("a clone's change notified the original's function")
	}
	c.Reset(30)
	if n != 4 {
		t.Fatalf("notified %d times after a reset, want 4", n)
	}
}
