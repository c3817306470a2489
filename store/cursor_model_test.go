package store

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
)

// spansOf lists the finished spans above the floor as [lo, hi) pairs.
func spansOf(c *Cursor) [][2]uint64 {
	var out [][2]uint64
	for _, s := range c.done {
		out = append(out, [2]uint64{s.lo, s.hi})
	}
	return out
}

func TestCursorFinishTable(t *testing.T) {
	tests := []struct {
		name    string
		floor   uint64
		finish  []uint64
		newOnes []bool // Finish's result per call; nil: all true
		want    uint64 // Floor after
		spans   [][2]uint64
	}{
		{name: "in order", floor: 0, finish: []uint64{0, 1, 2, 3}, want: 4},
		{name: "reverse order", floor: 0, finish: []uint64{3, 2, 1, 0}, want: 4},
		{name: "gap stays a span", floor: 5, finish: []uint64{5, 7, 8}, want: 6, spans: [][2]uint64{{7, 9}}},
		{name: "filling the gap merges the span into the floor", floor: 5, finish: []uint64{7, 8, 6, 5}, want: 9},
		{name: "two spans joined by the seq between them", floor: 0, finish: []uint64{2, 4, 3}, want: 0, spans: [][2]uint64{{2, 5}}},
		{name: "span grows downwards", floor: 0, finish: []uint64{9, 8, 7}, want: 0, spans: [][2]uint64{{7, 10}}},
		{name: "span grows upwards", floor: 0, finish: []uint64{7, 8, 9}, want: 0, spans: [][2]uint64{{7, 10}}},
		{name: "disjoint spans stay sorted", floor: 0, finish: []uint64{20, 5, 10, 11, 30}, want: 0, spans: [][2]uint64{{5, 6}, {10, 12}, {20, 21}, {30, 31}}},
		{name: "floor swallows only the adjacent span", floor: 0, finish: []uint64{1, 2, 4, 0}, want: 3, spans: [][2]uint64{{4, 5}}},
		{
			name: "finishing twice reports false", floor: 0, finish: []uint64{3, 3, 0, 0, 4, 3},
			newOnes: []bool{true, false, true, false, true, false}, want: 1, spans: [][2]uint64{{3, 5}},
		},
		{name: "below the floor is already finished", floor: 10, finish: []uint64{9, 0, 10}, newOnes: []bool{false, false, true}, want: 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCursor(tt.floor)
			for i, s := range tt.finish {
				got := c.Finish(s)
				if want := tt.newOnes == nil || tt.newOnes[i]; got != want {
					t.Fatalf("Finish(%d) #%d = %v, want %v", s, i, got, want)
				}
			}
			if c.Floor != tt.want || !reflect.DeepEqual(spansOf(c), tt.spans) || c.Spans() != len(tt.spans) {
				t.Fatalf("floor %d spans %v, want %d %v", c.Floor, spansOf(c), tt.want, tt.spans)
			}
		})
	}
}

func TestCursorQueries(t *testing.T) {
	c := NewCursor(10)
	for _, s := range []uint64{12, 13, 15, 20, 21, 22} {
		c.Finish(s)
	}
	tests := []struct {
		seq  uint64
		done bool
		next uint64
	}{
		{0, true, 10}, {9, true, 10}, {10, false, 10}, {11, false, 11}, {12, true, 14},
		{13, true, 14}, {14, false, 14}, {15, true, 16}, {16, false, 16}, {19, false, 19},
		{20, true, 23}, {22, true, 23}, {23, false, 23}, {1000, false, 1000},
	}
	for _, tt := range tests {
		if got := c.IsDone(tt.seq); got != tt.done {
			t.Errorf("IsDone(%d) = %v, want %v", tt.seq, got, tt.done)
		}
		if got := c.NextUnfinished(tt.seq); got != tt.next {
			t.Errorf("NextUnfinished(%d) = %d, want %d", tt.seq, got, tt.next)
		}
	}
}

func TestCursorRequeueResetAndClone(t *testing.T) {
	c := NewCursor(0)
	c.Finish(0)
	c.Finish(5)
	c.Requeue(0, Held{Attempts: 2}) // below the floor: done
	c.Requeue(5, Held{Attempts: 2}) // in a span: done
	c.Requeue(3, Held{Attempts: 4, Until: 99})
	if len(c.Held) != 1 || c.Held[3] != (Held{Attempts: 4, Until: 99}) {
		t.Fatalf("held after requeues: %v", c.Held)
	}
	c.Requeue(3, Held{Attempts: 5}) // a later requeue replaces the first
	if c.Held[3].Attempts != 5 {
		t.Fatalf("held[3] = %+v", c.Held[3])
	}

	d := c.Clone()
	d.Finish(3)
	d.Finish(1)
	d.Requeue(7, Held{Attempts: 1})
	if _, ok := c.Held[3]; !ok || c.IsDone(3) || c.IsDone(1) || c.Floor != 1 || c.Spans() != 1 {
		t.Fatalf("changing the clone changed the original: floor %d spans %v held %v", c.Floor, spansOf(c), c.Held)
	}
	if _, ok := c.Held[7]; ok {
		t.Fatal("the clone shares the Held map")
	}
	c.Finish(4) // must not write into the clone's spans
	if d.IsDone(4) {
		t.Fatal("changing the original changed the clone")
	}
	if _, ok := d.Held[3]; ok {
		t.Fatal("finishing a held message kept its Held entry")
	}

	c.Reset(50)
	if c.Floor != 50 || c.Spans() != 0 || c.Held != nil || !c.IsDone(49) || c.IsDone(50) {
		t.Fatalf("after Reset(50): floor %d spans %v held %v", c.Floor, spansOf(c), c.Held)
	}
}

// cursorModel is the obvious implementation: a set of finished numbers.
type cursorModel struct {
	done map[uint64]bool
	held map[uint64]Held
}

func (m *cursorModel) floor() uint64 {
	f := uint64(0)
	for m.done[f] {
		f++
	}
	return f
}

// TestCursorMatchesMapModel drives a cursor and a map-based model with the
// same random operations (finish, requeue, reset, clone-and-continue) and
// compares every query after each step.
func TestCursorMatchesMapModel(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 3))
	rounds, steps := 150, 400
	if longTests() {
		rounds = 3000
	}
	for round := range rounds {
		width := 8 + rng.IntN(200) // small widths: many merges
		c := NewCursor(0)
		m := &cursorModel{done: map[uint64]bool{}, held: map[uint64]Held{}}
		for step := range steps {
			what := fmt.Sprintf("round %d step %d", round, step)
			s := uint64(rng.IntN(width))
			switch k := rng.IntN(100); {
			case k < 70:
				wasNew := !m.done[s]
				if got := c.Finish(s); got != wasNew {
					t.Fatalf("%s: Finish(%d) = %v, model %v", what, s, got, wasNew)
				}
				m.done[s] = true
				delete(m.held, s)
			case k < 82:
				h := Held{Attempts: uint16(rng.IntN(100)), Until: rng.Int64N(1e12)}
				c.Requeue(s, h)
				if !m.done[s] {
					m.held[s] = h
				}
			case k < 90:
				a := uint16(rng.IntN(100))
				c.Delivered(s, a)
				if old, ok := m.held[s]; !m.done[s] && (!ok || old.Attempts < a) {
					m.held[s] = Held{Attempts: a}
				}
			case k < 92:
				// reset to a floor near the current one (a channel emptied)
				f := m.floor() + uint64(rng.IntN(5))
				c.Reset(f)
				m.done, m.held = map[uint64]bool{}, map[uint64]Held{}
				for i := uint64(0); i < f; i++ {
					m.done[i] = true
				}
			default:
				// continue on a clone; the old cursor must not change
				old := c
				snapshot := spansOf(old)
				c = old.Clone()
				c.Finish(uint64(rng.IntN(width)))
				if !reflect.DeepEqual(snapshot, spansOf(old)) {
					t.Fatalf("%s: finishing on a clone changed the original", what)
				}
				c = old // and keep the original, which the model describes
			}
			compareCursor(t, what, c, m, uint64(width)+5)
		}
	}
}

func compareCursor(t *testing.T, what string, c *Cursor, m *cursorModel, limit uint64) {
	t.Helper()
	if f := m.floor(); c.Floor != f {
		t.Fatalf("%s: floor %d, model %d", what, c.Floor, f)
	}
	prevHi := c.Floor
	for i, s := range c.done {
		if s.lo <= prevHi || s.hi <= s.lo {
			t.Fatalf("%s: span %d [%d,%d) not sorted, disjoint and non-adjacent above %d: %v", what, i, s.lo, s.hi, prevHi, spansOf(c))
		}
		prevHi = s.hi
	}
	for s := uint64(0); s < limit; s++ {
		if c.IsDone(s) != m.done[s] {
			t.Fatalf("%s: IsDone(%d) = %v, model %v", what, s, c.IsDone(s), m.done[s])
		}
		n := s
		for m.done[n] {
			n++
		}
		if got := c.NextUnfinished(s); got != n {
			t.Fatalf("%s: NextUnfinished(%d) = %d, model %d", what, s, got, n)
		}
	}
	if len(c.Held) != len(m.held) {
		t.Fatalf("%s: %d held, model %d", what, len(c.Held), len(m.held))
	}
	for s, h := range m.held {
		if c.Held[s] != h {
			t.Fatalf("%s: held[%d] = %+v, model %+v", what, s, c.Held[s], h)
		}
	}
}
