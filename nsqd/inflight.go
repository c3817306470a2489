package nsqd

import (
	"container/heap"
	"errors"
	"time"

	"github.com/sluicemq/sluice/protocol"
)

// msgList is a doubly linked list of in-flight messages kept in deadline
// order. Messages delivered with the same timeout arrive in deadline order,
// so appending keeps the list sorted in O(1); a TOUCH capped by
// --max-msg-timeout walks back from the tail to its place (a few steps).
type msgList struct {
	timeout    time.Duration
	head, tail *Message
}

func (l *msgList) insertSorted(m *Message) {
	m.list = l
	at := l.tail
	for at != nil && at.deadline > m.deadline {
		at = at.prev
	}
	if at == nil { // new head
		m.prev, m.next = nil, l.head
		if l.head != nil {
			l.head.prev = m
		} else {
			l.tail = m
		}
		l.head = m
		return
	}
	m.prev, m.next = at, at.next
	if at.next != nil {
		at.next.prev = m
	} else {
		l.tail = m
	}
	at.next = m
}

func (l *msgList) remove(m *Message) {
	if m.prev != nil {
		m.prev.next = m.next
	} else {
		l.head = m.next
	}
	if m.next != nil {
		m.next.prev = m.prev
	} else {
		l.tail = m.prev
	}
	m.prev, m.next, m.list = nil, nil, nil
}

// errNotInFlight and errNotOwner are why FIN, REQ and TOUCH fail (§3.7).
var (
	errNotInFlight = errors.New("ID not in flight")
	errNotOwner    = errors.New("client does not own message")
)

// inFlight tracks a channel's messages that were sent to a client and not
// yet finished, requeued or timed out, ordered by deadline. It has no
// sockets, no goroutines and no clock: callers pass now. The channel's lock
// guards it.
//
// Messages are found by ID on every FIN. The IDs nsqd hands out (and NSQ's)
// are 16 lowercase hex digits of a 64-bit number, so they are keyed by that
// number: a map with 8-byte keys costs about half of one hashing and
// comparing 16-byte arrays (profiled: the 16-byte map was 17 % of nsqd's CPU
// while draining a backlog), in a table of its own (idTable). Any other ID (one read from a disk queue that
// some other writer produced) goes to a second map keyed by the ID itself.
type inFlight struct {
	byNum   idTable
	byOther map[protocol.MessageID]*Message
	lists   []*msgList // one per distinct msg_timeout in use; usually one
}

// idNumber returns the number a lowercase hex ID spells, and whether it is
// one. Only lowercase digits are accepted, so distinct IDs never share a
// number.
func idNumber(id *protocol.MessageID) (uint64, bool) {
	var n uint64
	bad := byte(0)
	for _, b := range id {
		v := hexValue[b]
		bad |= v
		n = n<<4 | uint64(v&0xf)
	}
	return n, bad&0x80 == 0
}

// hexValue maps a lowercase hex digit to its value and anything else to
// 0x80.
var hexValue = func() (t [256]byte) {
	for i := range t {
		t[i] = 0x80
	}
	for i := byte(0); i < 10; i++ {
		t['0'+i] = i
	}
	for i := byte(0); i < 6; i++ {
		t['a'+i] = 10 + i
	}
	return t
}()

// get returns the message in flight with id, or nil.
func (f *inFlight) get(id *protocol.MessageID) *Message {
	if n, ok := idNumber(id); ok {
		return f.byNum.get(n)
	}
	return f.byOther[*id]
}

// has reports whether a message with id is in flight.
func (f *inFlight) has(id protocol.MessageID) bool { return f.get(&id) != nil }

// each calls fn for every message in flight.
func (f *inFlight) each(fn func(m *Message)) {
	f.byNum.each(fn)
	for _, m := range f.byOther {
		fn(m)
	}
}

// newInFlight returns an empty set; its map is made by the first add (an
// idle channel holds none).
func newInFlight() inFlight { return inFlight{} }

// release gives back the memory of an empty set (an idle channel's).
func (f *inFlight) release() {
	if f.len() == 0 {
		*f = inFlight{}
	}
}

func (f *inFlight) len() int { return f.byNum.n + len(f.byOther) }

func (f *inFlight) listFor(timeout time.Duration) *msgList {
	for _, l := range f.lists {
		if l.timeout == timeout {
			return l
		}
	}
	l := &msgList{timeout: timeout}
	f.lists = append(f.lists, l)
	return l
}

// add records m as in flight to client until now+timeout. It reports false if
// a message with the same ID is already in flight.
func (f *inFlight) add(m *Message, client uint64, now int64, timeout time.Duration) bool {
	n, ok := idNumber(&m.ID)
	m.idNum, m.idIsNum = n, ok
	if ok {
		if f.byNum.get(n) != nil {
			return false
		}
		f.byNum.insert(n, m)
	} else {
		if _, dup := f.byOther[m.ID]; dup {
			return false
		}
		if f.byOther == nil {
			f.byOther = make(map[protocol.MessageID]*Message)
		}
		f.byOther[m.ID] = m
	}
	m.clientID = client
	m.deliveryTS = now
	m.deadline = now + int64(timeout)
	f.listFor(timeout).insertSorted(m)
	return true
}

// lookup finds the message id in flight to client.
func (f *inFlight) lookup(id protocol.MessageID, client uint64) (*Message, error) {
	m := f.get(&id)
	if m == nil {
		return nil, errNotInFlight
	}
	if m.clientID != client {
		return nil, errNotOwner
	}
	return m, nil
}

// remove takes the message id in flight to client out of the set.
func (f *inFlight) remove(id protocol.MessageID, client uint64) (*Message, error) {
	m, err := f.lookup(id, client)
	if err != nil {
		return nil, err
	}
	f.unlink(m)
	return m, nil
}

func (f *inFlight) unlink(m *Message) {
	if m.idIsNum {
		f.byNum.remove(m.idNum)
	} else {
		delete(f.byOther, m.ID)
	}
	if l := m.list; l != nil {
		l.remove(m)
		if l.head == nil && len(f.lists) > 1 {
			f.dropList(l)
		}
	}
}

// dropList forgets an empty list, so consumers that come and go with
// different msg_timeouts do not leave lists behind. One list is always kept
// to spare the common single-timeout case an allocation per idle period.
func (f *inFlight) dropList(l *msgList) {
	for i, x := range f.lists {
		if x == l {
			last := len(f.lists) - 1
			f.lists[i] = f.lists[last]
			f.lists[last] = nil
			f.lists = f.lists[:last]
			return
		}
	}
}

// touch moves the deadline of id to now+timeout, but never past the
// delivery time plus maxTimeout (§3.9).
func (f *inFlight) touch(id protocol.MessageID, client uint64, now int64, timeout, maxTimeout time.Duration) error {
	m, err := f.lookup(id, client)
	if err != nil {
		return err
	}
	deadline := now + int64(timeout)
	if limit := m.deliveryTS + int64(maxTimeout); deadline > limit {
		deadline = limit
	}
	l := m.list
	l.remove(m)
	m.deadline = deadline
	l.insertSorted(m)
	return nil
}

// popExpired removes and returns the messages whose deadline is at or before
// now, appending them to dst.
func (f *inFlight) popExpired(now int64, dst []*Message) []*Message {
	for i := 0; i < len(f.lists); i++ {
		l := f.lists[i]
		for l.head != nil && l.head.deadline <= now {
			m := l.head
			f.unlink(m) // may drop l from f.lists once it is empty
			dst = append(dst, m)
		}
		if i < len(f.lists) && f.lists[i] != l {
			i-- // l was dropped and another list moved into slot i
		}
	}
	return dst
}

// ownedBy returns the messages in flight to client.
func (f *inFlight) ownedBy(client uint64) []*Message {
	var out []*Message
	for _, l := range f.lists {
		for m := l.head; m != nil; m = m.next {
			if m.clientID == client {
				out = append(out, m)
			}
		}
	}
	return out
}

// all returns every in-flight message and empties the set.
func (f *inFlight) drain() []*Message {
	out := make([]*Message, 0, f.len())
	for _, l := range f.lists {
		for m := l.head; m != nil; {
			next := m.next
			m.prev, m.next, m.list = nil, nil, nil
			out = append(out, m)
			m = next
		}
	}
	*f = newInFlight()
	return out
}

// deferredQueue is a min-heap of deferred messages by release time
// (Message.deadline). The channel's lock guards it.
type deferredQueue []*Message

func (q deferredQueue) Len() int           { return len(q) }
func (q deferredQueue) Less(i, j int) bool { return q[i].deadline < q[j].deadline }
func (q deferredQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].heapIndex = i
	q[j].heapIndex = j
}
func (q *deferredQueue) Push(x any) {
	m := x.(*Message)
	m.heapIndex = len(*q)
	*q = append(*q, m)
}
func (q *deferredQueue) Pop() any {
	old := *q
	m := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	m.heapIndex = -1
	return m
}

func (q *deferredQueue) add(m *Message, releaseAt int64) {
	m.deadline = releaseAt
	heap.Push(q, m)
}

// popDue removes and returns the messages due at or before now.
func (q *deferredQueue) popDue(now int64, dst []*Message) []*Message {
	for len(*q) > 0 && (*q)[0].deadline <= now {
		dst = append(dst, heap.Pop(q).(*Message))
	}
	return dst
}

func (q *deferredQueue) drain() []*Message {
	out := []*Message(*q)
	for _, m := range out {
		m.heapIndex = -1
	}
	*q = nil
	return out
}
