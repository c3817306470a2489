package nsqd

// timerWheel is a hashed timing wheel: one list of entries per tick of a
// ring of slots. Scheduling, moving and removing an entry are O(1) and
// allocate nothing (the links live in the entry, found through link);
// advancing visits only the slots of the ticks that have passed. It has no
// clock and no goroutine: time is passed in, as unix nanoseconds, so it is
// tested without sleeping. Not safe for concurrent use.
//
// An entry due at when sits in the slot of the first tick at or after when,
// so it is returned by the first advance whose now reaches that tick: at
// most one tick late, never early. An entry further away than the ring
// spans waits in the ring's last slot and is put back, closer, each time
// that slot comes round before it is due.
type timerWheel[T any] struct {
	tick  int64 // nanoseconds per slot
	slots []*T  // heads of the per-slot lists
	cur   int64 // the last tick advanced to: its slot and all before are done
	n     int   // entries in the wheel
	link  func(*T) *wheelLink[T]
	later []*T // scratch of advance: entries seen before they were due
}

// wheelLink is an entry's place in a timerWheel; the zero value is "not
// scheduled".
type wheelLink[T any] struct {
	next, prev *T
	when       int64 // due time, unix nanoseconds
	slot       int32 // slot index + 1; 0 when not in the wheel
}

// newTimerWheel returns an empty wheel of slots slots of tick nanoseconds
// each, advanced up to now. link returns the wheelLink inside an entry.
func newTimerWheel[T any](tick int64, slots int, now int64, link func(*T) *wheelLink[T]) *timerWheel[T] {
	if tick <= 0 || slots <= 0 {
		panic("timerWheel: tick and slots must be positive")
	}
	return &timerWheel[T]{tick: tick, slots: make([]*T, slots), cur: now / tick, link: link}
}

// Len is the number of scheduled entries.
func (w *timerWheel[T]) Len() int { return w.n }

// scheduled reports whether x is in the wheel.
func (w *timerWheel[T]) scheduled(x *T) bool { return w.link(x).slot != 0 }

// schedule puts x in the wheel, due at when, moving it if it was already
// scheduled. A time that has passed makes x due at the next advance.
func (w *timerWheel[T]) schedule(x *T, when int64) {
	w.remove(x)
	l := w.link(x)
	l.when = when
	t := when / w.tick
	if t*w.tick < when {
		t++ // the first tick at or after when
	}
	t = min(max(t, w.cur+1), w.cur+int64(len(w.slots)))
	i := int32(t % int64(len(w.slots)))
	l.slot = i + 1
	l.prev = nil
	l.next = w.slots[i]
	if l.next != nil {
		w.link(l.next).prev = x
	}
	w.slots[i] = x
	w.n++
}

// remove takes x out of the wheel and reports whether it was in it.
func (w *timerWheel[T]) remove(x *T) bool {
	l := w.link(x)
	if l.slot == 0 {
		return false
	}
	if l.prev != nil {
		w.link(l.prev).next = l.next
	} else {
		w.slots[l.slot-1] = l.next
	}
	if l.next != nil {
		w.link(l.next).prev = l.prev
	}
	l.next, l.prev, l.slot = nil, nil, 0
	w.n--
	return true
}

// advance moves the wheel to now, removes every entry whose tick (the first
// at or after its due time) has been reached, and appends them to due,
// which it returns. Moving backwards does nothing.
func (w *timerWheel[T]) advance(now int64, due []*T) []*T {
	end := now / w.tick
	if end <= w.cur {
		return due
	}
	steps := min(end-w.cur, int64(len(w.slots)))
	cutoff := end * w.tick // due: the tick at or after when has been reached
	later := w.later[:0]
	for t := w.cur + 1; t <= w.cur+steps; t++ {
		i := t % int64(len(w.slots))
		for x := w.slots[i]; x != nil; {
			l := w.link(x)
			next := l.next
			w.remove(x)
			if l.when <= cutoff {
				due = append(due, x)
			} else {
				later = append(later, x)
			}
			x = next
		}
	}
	w.cur = end
	for _, x := range later {
		w.schedule(x, w.link(x).when)
	}
	clear(later)
	w.later = later[:0]
	return due
}

// nextTick returns the start of the earliest tick whose slot holds an
// entry: no entry is due before it (one there may be due later, if it was
// further away than the ring spans). ok is false when the wheel is empty.
func (w *timerWheel[T]) nextTick() (at int64, ok bool) {
	if w.n == 0 {
		return 0, false
	}
	for t := w.cur + 1; t <= w.cur+int64(len(w.slots)); t++ {
		if w.slots[t%int64(len(w.slots))] != nil {
			return t * w.tick, true
		}
	}
	return 0, false // unreachable while n counts the entries
}
