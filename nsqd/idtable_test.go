package nsqd

import (
	"github.com/sluicemq/sluice/protocol"
	"math/rand/v2"
	"testing"
)

// The in-flight table agrees with a map through random adds and removes:
// sequential keys (nsqd's own IDs), random ones, and keys chosen to share
// a home slot, so that removal has runs to shift back across the wrap.
func TestIDTableAgreesWithAMap(t *testing.T) {
	for _, keys := range []struct {
		name string
		gen  func(r *rand.Rand, i int) uint64
	}{
		{"sequential", func(_ *rand.Rand, i int) uint64 { return 1_700_000_000_000_000_000 + uint64(i) }},
		{"random", func(r *rand.Rand, _ int) uint64 { return r.Uint64() }},
		{"small", func(r *rand.Rand, _ int) uint64 { return r.Uint64N(64) }},
	} {
		t.Run(keys.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			var tab idTable
			want := map[uint64]*Message{}
			next := 0
			for step := 0; step < 200_000; step++ {
				if r.IntN(100) < 52 || len(want) == 0 {
					k := keys.gen(r, next)
					next++
					if _, ok := want[k]; ok {
						if tab.get(k) != want[k] {
							t.Fatalf("step %d: get(%d) differs for a present key", step, k)
						}
						continue
					}
					m := &Message{}
					want[k] = m
					tab.insert(k, m)
				} else {
					var k uint64
					for k = range want { // any present key
						break
					}
					if r.IntN(10) == 0 {
						k = r.Uint64() // mostly absent
					}
					_, present := want[k]
					if got := tab.remove(k); got != present {
						t.Fatalf("step %d: remove(%d) = %v, want %v", step, k, got, present)
					}
					delete(want, k)
				}
				if tab.n != len(want) {
					t.Fatalf("step %d: %d entries, want %d", step, tab.n, len(want))
				}
				if step%1000 == 0 {
					for k, m := range want {
						if tab.get(k) != m {
							t.Fatalf("step %d: get(%d) lost its message", step, k)
						}
					}
					seen := 0
					tab.each(func(*Message) { seen++ })
					if seen != len(want) {
						t.Fatalf("step %d: each saw %d, want %d", step, seen, len(want))
					}
				}
			}
		})
	}
}

// Only IDs of 16 lowercase hex digits have a number, and it is the one
// they spell.
func TestIDNumberTakesOnlyLowercaseHex(t *testing.T) {
	for _, n := range []uint64{0, 1, 0xabcdef0123456789, ^uint64(0)} {
		id := protocol.NewMessageID(n)
		if got, ok := idNumber(&id); !ok || got != n {
			t.Fatalf("idNumber(%s) = %x, %v; want %x", id[:], got, ok, n)
		}
	}
	for _, s := range []string{"ABCDEF0123456789", "000000000000000g", "00000000000000 1", "0123456789abcde\xff"} {
		var id protocol.MessageID
		copy(id[:], s)
		if _, ok := idNumber(&id); ok {
			t.Fatalf("idNumber(%q) accepted", s)
		}
	}
}
