package nsqd

import (
	"encoding/binary"

	"github.com/sluicemq/sluice/protocol"
)

// msgBatch is the immutable result of one MPUB: the bodies stay packed in
// the MPUB body exactly as they arrived ([int32 size][bytes]...), and the
// messages get consecutive IDs from firstID. Queues hold a batch as one
// entry; a Message struct is made for a message only when it is delivered
// (or written to disk), so a queued message costs its body and nothing else,
// and publishing does no per-message allocation. Every channel of a topic
// shares the same batch through its own cursor.
type msgBatch struct {
	data    []byte // count records of [int32 size][body], validated
	count   int
	firstID uint64
	ts      int64
}

// qentry is one queue slot: a single message, or the messages [idx, end) of
// a batch, the next one starting at byte offset off of its data.
type qentry struct {
	m        *Message
	b        *msgBatch
	idx, end int32
	off      int32
}

func (e *qentry) len() int {
	if e.m != nil {
		return 1
	}
	return int(e.end - e.idx)
}

// next materializes the entry's next batch message into m and advances.
func (e *qentry) next(m *Message) {
	size := int32(binary.BigEndian.Uint32(e.b.data[e.off:]))
	start := e.off + 4
	*m = Message{
		ID:        protocol.NewMessageID(e.b.firstID + uint64(e.idx)),
		Body:      e.b.data[start : start+size : start+size],
		Timestamp: e.b.ts,
		heapIndex: -1,
	}
	e.off = start + size
	e.idx++
}

// appendNextRecord appends the disk record of the entry's next message
// (§6.3) to dst and advances; a batch message is serialized from the batch
// without materializing it.
func (e *qentry) appendNextRecord(dst []byte) []byte {
	if e.m != nil {
		return e.m.appendRecord(dst)
	}
	size := int32(binary.BigEndian.Uint32(e.b.data[e.off:]))
	start := e.off + 4
	id := protocol.NewMessageID(e.b.firstID + uint64(e.idx))
	dst = protocol.AppendMessage(dst, e.b.ts, 0, &id, e.b.data[start:start+size])
	e.off = start + size
	e.idx++
	return dst
}

// skip advances past k batch messages without materializing them.
func (e *qentry) skip(k int) {
	for ; k > 0; k-- {
		size := int32(binary.BigEndian.Uint32(e.b.data[e.off:]))
		e.off += 4 + size
		e.idx++
	}
}

// batchEntry returns an entry for the whole batch.
func batchEntry(b *msgBatch) qentry { return qentry{b: b, end: int32(b.count)} }

// msgQueue is a FIFO of messages backed by a ring of entries that grows on
// demand (so that ten thousand idle channels do not each hold a large array)
// and is released when it drains. n counts messages, not entries. It is not
// safe for concurrent use; its owner's lock guards it.
type msgQueue struct {
	buf  []qentry
	head int
	ents int
	n    int
}

func (q *msgQueue) len() int { return q.n }

func (q *msgQueue) pushEntry(e qentry) {
	if e.len() == 0 {
		return
	}
	if q.ents == len(q.buf) {
		q.grow()
	}
	q.buf[(q.head+q.ents)%len(q.buf)] = e
	q.ents++
	q.n += e.len()
}

func (q *msgQueue) push(m *Message) { q.pushEntry(qentry{m: m}) }

func (q *msgQueue) grow() {
	size := len(q.buf) * 2
	if size < 8 {
		size = 8
	}
	nb := make([]qentry, size)
	for i := 0; i < q.ents; i++ {
		nb[i] = q.buf[(q.head+i)%len(q.buf)]
	}
	q.buf, q.head = nb, 0
}

func (q *msgQueue) front() *qentry { return &q.buf[q.head] }

func (q *msgQueue) dropFront() {
	q.buf[q.head] = qentry{}
	q.head = (q.head + 1) % len(q.buf)
	q.ents--
	if q.ents == 0 {
		q.head = 0
		if len(q.buf) > 1024 {
			q.buf = nil // give a drained burst's memory back
		}
	}
}

// pop removes and returns the next message, or nil.
func (q *msgQueue) pop() *Message {
	if q.n == 0 {
		return nil
	}
	e := q.front()
	var m *Message
	if e.m != nil {
		m = e.m
		q.dropFront()
	} else {
		m = new(Message)
		e.next(m)
		if e.idx == e.end {
			q.dropFront()
		}
	}
	q.n--
	return m
}

// popN removes up to max messages, appending them to dst. Batch messages
// are materialized into structs from pool (which may be nil), else into
// one slab allocation per call.
func (q *msgQueue) popN(dst []*Message, max int, pool *msgPool) []*Message {
	if max > q.n {
		max = q.n
	}
	if max <= 0 {
		return dst
	}
	var slab []Message
	for max > 0 {
		e := q.front()
		if e.m != nil {
			dst = append(dst, e.m)
			q.dropFront()
			q.n--
			max--
			continue
		}
		k := int(e.end - e.idx)
		if k > max {
			k = max
		}
		for i := 0; i < k; i++ {
			m := pool.get()
			if m == nil {
				if len(slab) == 0 {
					slab = make([]Message, max-i)
				}
				m = &slab[0]
				slab = slab[1:]
			}
			e.next(m)
			dst = append(dst, m)
		}
		if e.idx == e.end {
			q.dropFront()
		}
		q.n -= k
		max -= k
	}
	return dst
}

// msgPool is a free list of Message structs, linked through next. A
// channel puts a message's struct here when it is finished and takes it
// back to materialize the next one from a batch, so that a steady stream
// of deliveries allocates nothing; the channel's lock guards it. It holds
// at most as many structs as the channel has had in flight at once since
// it was last idle (a consumer's FINs for a whole RDY window arrive
// together and are followed by as many deliveries), and the channel drops
// it when it goes idle.
type msgPool struct {
	head *Message
	n    int
	max  int // the most in flight at once
}

// noteInFlight raises the pool's bound to inFlight messages.
func (p *msgPool) noteInFlight(inFlight int) { p.max = max(p.max, inFlight) }

// get returns a spare struct, or nil; p may be nil.
func (p *msgPool) get() *Message {
	if p == nil || p.head == nil {
		return nil
	}
	m := p.head
	p.head = m.next
	p.n--
	m.next = nil
	return m
}

// put keeps m for reuse unless the pool is full; m must be reachable from
// nowhere else.
func (p *msgPool) put(m *Message) {
	if p.n >= p.max {
		return
	}
	// drop what m points to, so a kept struct keeps no batch alive
	*m = Message{next: p.head}
	p.head = m
	p.n++
}

// popEntry removes and returns the whole front entry.
func (q *msgQueue) popEntry() (qentry, bool) {
	if q.ents == 0 {
		return qentry{}, false
	}
	e := *q.front()
	q.dropFront()
	q.n -= e.len()
	return e, true
}

// drain removes every message, materialized, in order.
func (q *msgQueue) drain() []*Message {
	out := make([]*Message, 0, q.n)
	out = q.popN(out, q.n, nil)
	*q = msgQueue{}
	return out
}

// splitEntry splits e after its first k messages.
func splitEntry(e qentry, k int) (head, tail qentry) {
	if e.m != nil || k <= 0 {
		return qentry{}, e
	}
	head = e
	head.end = e.idx + int32(k)
	tail = e
	tail.skip(k)
	return head, tail
}

// materialize returns the messages of an entry.
func (e qentry) materialize() []*Message {
	if e.m != nil {
		return []*Message{e.m}
	}
	var q msgQueue
	q.pushEntry(e)
	return q.drain()
}

// pushFront puts e back at the head of the queue.
func (q *msgQueue) pushFront(e qentry) {
	if e.len() == 0 {
		return
	}
	if q.ents == len(q.buf) {
		q.grow()
	}
	q.head = (q.head - 1 + len(q.buf)) % len(q.buf)
	q.buf[q.head] = e
	q.ents++
	q.n += e.len()
}
