package nsqd

// msgQueue is a FIFO of messages backed by a ring that grows on demand (so
// that ten thousand idle channels do not each hold a 10,000-slot array) and
// shrinks back when it drains. It is not safe for concurrent use; its owner's
// lock guards it.
type msgQueue struct {
	buf  []*Message
	head int
	n    int
}

func (q *msgQueue) len() int { return q.n }

func (q *msgQueue) push(m *Message) {
	if q.n == len(q.buf) {
		q.grow()
	}
	q.buf[(q.head+q.n)%len(q.buf)] = m
	q.n++
}

func (q *msgQueue) grow() {
	size := len(q.buf) * 2
	if size < 16 {
		size = 16
	}
	nb := make([]*Message, size)
	q.copyTo(nb)
	q.buf, q.head = nb, 0
}

func (q *msgQueue) copyTo(dst []*Message) {
	if q.n == 0 {
		return
	}
	end := q.head + q.n
	if end <= len(q.buf) {
		copy(dst, q.buf[q.head:end])
		return
	}
	k := copy(dst, q.buf[q.head:])
	copy(dst[k:], q.buf[:end-len(q.buf)])
}

func (q *msgQueue) pop() *Message {
	if q.n == 0 {
		return nil
	}
	m := q.buf[q.head]
	q.buf[q.head] = nil
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	if q.n == 0 {
		q.head = 0
		if len(q.buf) > 1024 {
			q.buf = nil // give a drained burst's memory back
		}
	}
	return m
}

// drain removes and returns every message in order.
func (q *msgQueue) drain() []*Message {
	out := make([]*Message, q.n)
	q.copyTo(out)
	q.buf, q.head, q.n = nil, 0, 0
	return out
}
