package nsqd

import (
	"math/rand/v2"
	"slices"
	"testing"
)

type wheelItem struct {
	name string
	wl   wheelLink[wheelItem]
}

func itemLink(x *wheelItem) *wheelLink[wheelItem] { return &x.wl }

func names(xs []*wheelItem) []string {
	out := make([]string, 0, len(xs))
	for _, x := range xs {
		out = append(out, x.name)
	}
	slices.Sort(out)
	return out
}

// A 10 ns tick and 8 slots keep the arithmetic readable: the ring spans 80 ns.
func TestTimerWheelReturnsEntriesAtTheirTick(t *testing.T) {
	w := newTimerWheel(10, 8, 1000, itemLink)
	a, b, c, d := &wheelItem{name: "a"}, &wheelItem{name: "b"}, &wheelItem{name: "c"}, &wheelItem{name: "d"}
	w.schedule(a, 1010) // exactly on a tick
	w.schedule(b, 1011) // just after one: waits for the next
	w.schedule(c, 1500) // beyond the ring: laps
	w.schedule(d, 900)  // already past: due at the next advance
	if w.Len() != 4 {
		t.Fatalf("Len %d, want 4", w.Len())
	}
	steps := []struct {
		now  int64
		want []string
	}{
		{1005, nil}, // still tick 100: nothing has moved
		{1009, nil},
		{1010, []string{"a", "d"}},
		{1019, nil},
		{1020, []string{"b"}},
		{1499, nil},
		{1500, []string{"c"}},
		{2000, nil},
	}
	for _, s := range steps {
		if got := names(w.advance(s.now, nil)); !slices.Equal(got, s.want) {
			t.Fatalf("advance(%d) = %v, want %v", s.now, got, s.want)
		}
	}
	if w.Len() != 0 || w.scheduled(a) || w.scheduled(c) {
		t.Fatalf("wheel not empty after everything fired: Len %d", w.Len())
	}
}

func TestTimerWheelMoveAndRemove(t *testing.T) {
	w := newTimerWheel(10, 8, 0, itemLink)
	a, b := &wheelItem{name: "a"}, &wheelItem{name: "b"}
	w.schedule(a, 30)
	w.schedule(b, 30)
	w.schedule(a, 60) // moved later
	if !w.remove(b) || w.remove(b) {
		t.Fatal("remove should report true once, then false")
	}
	if got := names(w.advance(50, nil)); len(got) != 0 {
		t.Fatalf("advance(50) = %v, want nothing (a moved to 60, b removed)", got)
	}
	if at, ok := w.nextTick(); !ok || at != 60 {
		t.Fatalf("nextTick = %d, %v; want 60, true", at, ok)
	}
	if got := names(w.advance(65, nil)); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("advance(65) = %v, want [a]", got)
	}
	if _, ok := w.nextTick(); ok {
		t.Fatal("nextTick on an empty wheel should report false")
	}
	if got := w.advance(10, nil); len(got) != 0 { // backwards: nothing
		t.Fatalf("advance backwards returned %v", names(got))
	}
}

func TestTimerWheelJumpPastTheWholeRing(t *testing.T) {
	w := newTimerWheel(10, 8, 0, itemLink)
	var all []*wheelItem
	for i := range 20 {
		x := &wheelItem{name: string(rune('a' + i))}
		w.schedule(x, int64(i)*17)
		all = append(all, x)
	}
	// 1,000 ns is 100 ticks, more than the 8 slots: one pass over the ring
	// must still return everything due and keep what is not.
	late := &wheelItem{name: "late"}
	w.schedule(late, 5000)
	got := names(w.advance(1000, nil))
	if want := names(all); !slices.Equal(got, want) {
		t.Fatalf("advance(1000) = %v, want %v", got, want)
	}
	if !w.scheduled(late) || w.Len() != 1 {
		t.Fatalf("the entry due at 5000 should still wait (Len %d)", w.Len())
	}
	if got := names(w.advance(5000, nil)); !slices.Equal(got, []string{"late"}) {
		t.Fatalf("advance(5000) = %v", got)
	}
}

// TestTimerWheelAgainstModel runs random schedules, moves, removals and
// advances and checks every advance against a plain map: an entry comes out
// at the first advance that reaches the tick at or after its due time (or
// the next advance, when it was scheduled in the past), never earlier.
func TestTimerWheelAgainstModel(t *testing.T) {
	seed := uint64(rand.Int64())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	const tick, slots = 7, 16
	now := int64(12345)
	w := newTimerWheel(tick, slots, now, itemLink)
	items := make([]*wheelItem, 50)
	for i := range items {
		items[i] = &wheelItem{name: string(rune(0x100 + i))}
	}
	fireTick := map[*wheelItem]int64{} // the model: tick at which each entry fires
	ceilDiv := func(a, b int64) int64 {
		q := a / b
		if q*b < a {
			q++
		}
		return q
	}
	for step := 0; step < 20000; step++ {
		x := items[rng.IntN(len(items))]
		switch op := rng.IntN(10); {
		case op < 5:
			when := now - tick*4 + rng.Int64N(tick*slots*3)
			w.schedule(x, when)
			fireTick[x] = max(ceilDiv(when, tick), now/tick+1)
		case op < 7:
			_, had := fireTick[x]
			if w.remove(x) != had {
				t.Fatalf("step %d: remove reported %v, model had it: %v", step, !had, had)
			}
			delete(fireTick, x)
		default:
			now += rng.Int64N(tick * slots / 2)
			if rng.IntN(50) == 0 {
				now += tick * slots * 3 // a long pause
			}
			got := names(w.advance(now, nil))
			var want []string
			for it, ft := range fireTick {
				if ft <= now/tick {
					want = append(want, it.name)
					delete(fireTick, it)
				}
			}
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("step %d: advance(%d) = %v, want %v", step, now, got, want)
			}
		}
		if w.Len() != len(fireTick) {
			t.Fatalf("step %d: Len %d, model %d", step, w.Len(), len(fireTick))
		}
	}
}
