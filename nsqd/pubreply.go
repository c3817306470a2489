package nsqd

import (
	"io"
	"sync"
	"time"

	"github.com/sluicemq/sluice/protocol"
	"github.com/sluicemq/sluice/store"
)

// Durable PUB and DPUB replies written by the committer's side.
//
// A PUB on a durable topic is answered only once its message is synced.
// Waiting for that on the connection's reader goroutine cost a park and a
// wake-up per PUB (the reader woken by the commit, then again by the
// next PUB): profiled on durable-pub64, nsqd spent ~31 µs of CPU per PUB,
// mostly syscalls and scheduler work. Instead the reader appends the
// message to the committer with AppendNotify and goes back to reading;
// after the round's fdatasync the committer's notifier goroutine writes
// the OK (or E_PUB_FAILED) itself, one non-blocking write per reply
// (writeNow). Guarantees:
//
//   - OK only after the message is on stable storage (the notifier runs
//     after the round's sync);
//   - replies in the order of the commands: a connection's appends are
//     committed and notified in order, and the reader writes a frame of
//     its own (another command's reply or error) only once every pending
//     reply is out (awaitReplies);
//   - bounded: a pipelining client has at most maxPendingReplies PUBs
//     waiting; the reader stops reading until the oldest is answered;
//   - the notifier never blocks on a connection: a reply that cannot be
//     written at once (the writer is busy, the socket is full) is queued
//     and written, in order with those after it, by a goroutine that lives
//     until the queue is empty.
//
// Only plain sockets take this path (a TLS or compressed connection
// writes through stream state that only its own writers may touch); they
// and topics with a policy (whose publishes check depth and trim after
// landing), replicated and forwarded topics publish as before.

// maxPendingReplies bounds the durable PUBs of one connection waiting for
// their commit or their reply's write.
const maxPendingReplies = 128

// pendingPub is what a reply needs to know about its PUB.
type pendingPub struct {
	t     *Topic
	bytes uint64
	dpub  bool
}

// pubReplies is a connection's durable publishes waiting for their
// replies. It is the store.Notifier of their appends.
type pubReplies struct {
	c *client

	mu      sync.Mutex
	queue   []pendingPub // appended, not yet committed: queue[head:]
	head    int
	pending int    // appended and not yet written: the queue plus the frames in out
	out     []byte // replies the notifier could not write at once, in order
	outN    int    // replies in out
	writing bool   // a goroutine is writing out
	waitFor int    // the reader waits until pending <= waitFor; -1: not waiting
	wake    chan struct{}

	nw *nowWriter // the notifier's writer on the socket; made at its first reply
}

// replies returns the connection's reply state, creating it on the reader
// goroutine's first durable publish.
func (c *client) replies() *pubReplies {
	ps := c.publisher()
	if ps.replies == nil {
		ps.replies = &pubReplies{c: c, waitFor: -1, wake: make(chan struct{}, 1)}
	}
	return ps.replies
}

// repliesPending reports whether a durable publish of the connection
// still waits for its reply; reader goroutine only.
func (c *client) repliesPending() bool {
	ps := c.pubState.Load()
	if ps == nil || ps.replies == nil {
		return false
	}
	r := ps.replies
	r.mu.Lock()
	n := r.pending
	r.mu.Unlock()
	return n > 0
}

// awaitReplies waits until every pending reply is written; reader
// goroutine only. A frame the reader writes comes after them.
func (c *client) awaitReplies() {
	if ps := c.pubState.Load(); ps != nil && ps.replies != nil {
		ps.replies.await(0)
	}
}

// await waits until at most limit replies are pending.
func (r *pubReplies) await(limit int) {
	r.mu.Lock()
	for r.pending > limit {
		r.waitFor = limit
		r.mu.Unlock()
		<-r.wake
		r.mu.Lock()
	}
	r.mu.Unlock()
}

// answered counts n replies as written (or dropped with the connection).
func (r *pubReplies) answered(n int) {
	r.mu.Lock()
	r.pending -= n
	if r.waitFor >= 0 && r.pending <= r.waitFor {
		r.waitFor = -1
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
	r.mu.Unlock()
}

// asyncReplies reports whether the connection's durable publishes can be
// answered by the committer's side: a plain socket on a system where a
// write can be tried without blocking.
func (c *client) asyncReplies() bool {
	return canWriteNow && c.w == io.Writer(c.conn) && c.flusher == nil
}

// publishDurableAsync queues one durable PUB or DPUB whose reply the
// committer's notifier writes. It returns false, having done nothing,
// when the topic must publish the ordinary way.
func (c *client) publishDurableAsync(t *Topic, cmd, failCode string, body []byte, deferBy time.Duration) (bool, error) {
	if t.dur == nil || t.repl != nil || t.fwd || t.policy.Load() != nil {
		return false, nil
	}
	t.mu.RLock()
	exiting := t.exiting
	t.mu.RUnlock()
	if exiting {
		return false, nil // the ordinary path answers it
	}
	now := time.Now().UnixNano()
	ents := [1]store.Entry{{TS: now, Body: body}}
	if deferBy > 0 {
		ents[0].DeliverAt = now + int64(deferBy)
	}
	r := c.replies()
	r.await(maxPendingReplies - 1)
	r.mu.Lock()
	if r.head > 0 && len(r.queue) == cap(r.queue) {
		// a pipelining client never drains the queue: reuse its front
		n := copy(r.queue, r.queue[r.head:])
		clear(r.queue[n:])
		r.queue, r.head = r.queue[:n], 0
	}
	r.queue = append(r.queue, pendingPub{t: t, bytes: uint64(len(body)), dpub: cmd == "DPUB"})
	r.pending++
	r.mu.Unlock()
	if err := c.nsqd.committer.AppendNotify(t.dur.log, ents[:], r); err != nil {
		// nothing was queued: take the entry back (the newest; the
		// notifier only takes the oldest) and answer in order
		r.mu.Lock()
		r.queue[len(r.queue)-1] = pendingPub{}
		r.queue = r.queue[:len(r.queue)-1]
		if r.head == len(r.queue) {
			r.queue, r.head = r.queue[:0], 0
		}
		r.mu.Unlock()
		r.answered(1)
		return true, publishFailure(failCode, cmd, &durableWriteError{err})
	}
	return true, nil
}

// Committed implements store.Notifier: the oldest pending publish is
// synced (err nil) or failed; its reply is written. Notifier goroutine.
func (r *pubReplies) Committed(err error) {
	r.mu.Lock()
	p := r.queue[r.head]
	r.queue[r.head] = pendingPub{}
	if r.head++; r.head == len(r.queue) {
		r.queue, r.head = r.queue[:0], 0 // drained: a publisher that waits for each OK uses one slot
	}
	r.mu.Unlock()
	c := r.c
	frame := okFrame
	if err == nil {
		c.nsqd.setHealth(nil)
		p.t.messageCount.Add(1)
		p.t.messageBytes.Add(p.bytes)
		c.notePublish(p.t.name, 1)
	} else {
		c.nsqd.setHealth(err)
		cmd, code := "PUB", protocol.ErrPubFailed
		if p.dpub {
			cmd, code = "DPUB", protocol.ErrDPubFailed
		}
		pe := publishFailure(code, cmd, &durableWriteError{err})
		frame = protocol.AppendFrame(nil, protocol.FrameTypeError, []byte(pe.Error()))
	}
	r.send(frame)
}

// send writes one reply frame, or queues it behind those not yet written.
// Notifier goroutine only: it never blocks on the connection.
func (r *pubReplies) send(frame []byte) {
	r.mu.Lock()
	if r.writing {
		r.out = append(r.out, frame...)
		r.outN++
		r.mu.Unlock()
		return
	}
	r.mu.Unlock()
	c := r.c
	if c.writeMu.TryLock() {
		if c.closed.Load() {
			c.writeMu.Unlock()
			r.answered(1)
			return
		}
		if r.nw == nil {
			r.nw = newNowWriter(c.conn)
		}
		if len(c.wbuf) == 0 && c.w == io.Writer(c.conn) && r.nw != nil {
			n, ok := r.nw.writeNow(frame)
			switch {
			case ok && n == len(frame):
				c.writeMu.Unlock()
				r.answered(1)
				return
			case ok && n > 0:
				// part of the frame is out: the rest goes first, with
				// writeMu kept until it is written
				r.mu.Lock()
				r.out = append(r.out, frame[n:]...)
				r.outN++
				r.writing = true
				r.mu.Unlock()
				go r.writeQueued(true)
				return
			}
		}
		c.writeMu.Unlock()
	}
	r.mu.Lock()
	r.out = append(r.out, frame...)
	r.outN++
	r.writing = true
	r.mu.Unlock()
	go r.writeQueued(false)
}

// writeQueued writes the queued replies in order, blocking as any writer
// does (bounded by the write deadline), until the queue is empty. locked
// says whether the caller handed writeMu over.
func (r *pubReplies) writeQueued(locked bool) {
	c := r.c
	var spare []byte
	for {
		r.mu.Lock()
		if len(r.out) == 0 {
			r.writing = false
			if spare != nil && r.out == nil {
				r.out = spare
			}
			r.mu.Unlock()
			if locked {
				c.writeMu.Unlock()
			}
			return
		}
		buf, n := r.out, r.outN
		r.out, r.outN = spare, 0
		r.mu.Unlock()
		if !locked {
			c.writeMu.Lock()
		}
		if !c.closed.Load() {
			c.armWriteDeadlineLocked()
			if _, err := c.w.Write(buf); err != nil {
				c.closeConn()
			}
		}
		c.writeMu.Unlock()
		locked = false
		r.answered(n)
		spare = buf[:0]
	}
}
