package store

import "sort"

// Held is what a channel remembers of a message that went back to its
// queue: how often it was delivered and, when it was requeued with a delay,
// until when it waits.
type Held struct {
	Attempts uint16
	Until    int64 // ns since the epoch; 0 = ready now
}

// span is the finished sequence numbers [lo, hi).
type span struct{ lo, hi uint64 }

// Cursor is one channel's progress over a topic log: every sequence number
// below Floor is finished, so are those in the finished spans above it, and
// Held keeps attempts and deadlines of unfinished messages that went back
// to the queue. A cursor is a plain value; its channel's lock guards it.
type Cursor struct {
	Floor uint64
	done  []span // sorted, disjoint, non-adjacent, all >= Floor
	Held  map[uint64]Held

	notify func() // called after a change (SetNotify); not cloned
}

// SetNotify makes f be called, under the same lock as the change, after
// each change of the cursor by Finish, Requeue and Reset. f must not
// block.
func (c *Cursor) SetNotify(f func()) { c.notify = f }

func (c *Cursor) changed() {
	if c.notify != nil {
		c.notify()
	}
}

// NewCursor returns a cursor with nothing finished at or after floor.
func NewCursor(floor uint64) *Cursor { return &Cursor{Floor: floor} }

// Finish marks seq finished. It reports false when it already was.
func (c *Cursor) Finish(seq uint64) bool {
	if !c.finish(seq) {
		return false
	}
	c.changed()
	return true
}

func (c *Cursor) finish(seq uint64) bool {
	if seq < c.Floor {
		return false
	}
	delete(c.Held, seq)
	if seq == c.Floor {
		c.Floor++
		if len(c.done) > 0 && c.done[0].lo == c.Floor {
			c.Floor = c.done[0].hi
			c.done = c.done[1:]
			if len(c.done) == 0 {
				c.done = nil
			}
		}
		return true
	}
	// first span with hi >= seq
	i := sort.Search(len(c.done), func(i int) bool { return c.done[i].hi >= seq })
	if i < len(c.done) && c.done[i].lo <= seq && seq < c.done[i].hi {
		return false
	}
	switch {
	case i < len(c.done) && c.done[i].hi == seq:
		c.done[i].hi++
		if i+1 < len(c.done) && c.done[i+1].lo == c.done[i].hi {
			c.done[i].hi = c.done[i+1].hi
			c.done = append(c.done[:i+1], c.done[i+2:]...)
		}
	case i < len(c.done) && c.done[i].lo == seq+1:
		c.done[i].lo = seq
	default:
		c.done = append(c.done, span{})
		copy(c.done[i+1:], c.done[i:])
		c.done[i] = span{seq, seq + 1}
	}
	return true
}

// IsDone reports whether seq is finished.
func (c *Cursor) IsDone(seq uint64) bool {
	if seq < c.Floor {
		return true
	}
	i := sort.Search(len(c.done), func(i int) bool { return c.done[i].hi > seq })
	return i < len(c.done) && c.done[i].lo <= seq
}

// NextUnfinished returns the smallest sequence number >= seq that is not
// finished.
func (c *Cursor) NextUnfinished(seq uint64) uint64 {
	if seq < c.Floor {
		seq = c.Floor
	}
	i := sort.Search(len(c.done), func(i int) bool { return c.done[i].hi > seq })
	if i < len(c.done) && c.done[i].lo <= seq {
		return c.done[i].hi
	}
	return seq
}

// Requeue remembers attempts and a deadline for unfinished seq.
func (c *Cursor) Requeue(seq uint64, h Held) {
	if c.IsDone(seq) {
		return
	}
	if c.Held == nil {
		c.Held = make(map[uint64]Held)
	}
	c.Held[seq] = h
	c.changed()
}

// Delivered remembers that unfinished seq was delivered for the attempts-th
// time. A requeue already recorded for that attempt (with its deadline)
// or a later attempt is kept.
func (c *Cursor) Delivered(seq uint64, attempts uint16) {
	if c.IsDone(seq) {
		return
	}
	if old, ok := c.Held[seq]; ok && old.Attempts >= attempts {
		return
	}
	if c.Held == nil {
		c.Held = make(map[uint64]Held)
	}
	c.Held[seq] = Held{Attempts: attempts}
}

// Reset finishes everything below floor and forgets the rest.
func (c *Cursor) Reset(floor uint64) {
	c.Floor = floor
	c.done = nil
	c.Held = nil
	c.changed()
}

// Spans returns the number of finished spans above the floor (how
// fragmented the progress is).
func (c *Cursor) Spans() int { return len(c.done) }

// Clone returns a deep copy.
func (c *Cursor) Clone() *Cursor {
	out := &Cursor{Floor: c.Floor, done: append([]span(nil), c.done...)}
	if len(c.Held) > 0 {
		out.Held = make(map[uint64]Held, len(c.Held))
		for k, v := range c.Held {
			out.Held[k] = v
		}
	}
	return out
}

// EncodeCursorState appends the state of channel name's cursor c to dst,
// in the form of a journal state record's payload: how a replicated
// topic's leader hands its channels' progress to the other replicas.
func EncodeCursorState(dst []byte, name string, c *Cursor) []byte { return appendState(dst, name, c) }

// DecodeCursorState decodes what EncodeCursorState wrote.
func DecodeCursorState(p []byte) (string, *Cursor, error) { return decodeState(p) }
