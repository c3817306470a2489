package replica

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicemq/sluice/protocol"
)

// peer is the outbound side of one peer: the queue Send fills, and the
// writer goroutine (run) that dials the peer and drains the queue into
// frames. run owns the connection; stop may close it to unblock a write.
type peer struct {
	t      *TCPTransport
	cfg    *TCPConfig
	id     uint64
	addr   string
	logger *slog.Logger
	ctx    context.Context // cancelled by stop
	cancel context.CancelFunc
	wake   chan struct{} // capacity 1; signalled when records are queued
	// up (capacity 1) says the peer just connected to this node: it is
	// back, so a dial waiting out its backoff goes at once.
	up chan struct{}

	// mu guards queue, queueBytes, spare and conn.
	mu         sync.Mutex
	queue      [][]byte // encoded records (frame.go), oldest first
	queueBytes int
	spare      [][]byte // the writer's drained batch, reused as the next queue
	conn       net.Conn // the live outbound connection, nil while down

	connected     atomic.Bool
	sent, dropped atomic.Uint64
}

func newPeer(t *TCPTransport, id uint64, addr string) *peer {
	ctx, cancel := context.WithCancel(context.Background())
	return &peer{
		t:      t,
		cfg:    &t.cfg,
		id:     id,
		addr:   addr,
		logger: t.logger.With("peer", id, "addr", addr),
		ctx:    ctx,
		cancel: cancel,
		wake:   make(chan struct{}, 1),
		up:     make(chan struct{}, 1),
	}
}

// peerUp tells run that the peer connected to this node (it is back from
// a restart): the next dial is not held back by the backoff of the dials
// that failed while it was down.
func (p *peer) peerUp() {
	select {
	case p.up <- struct{}{}:
	default:
	}
}

// stop makes run return: it cancels a dial or backoff in progress and
// closes the connection, which fails a write in progress.
func (p *peer) stop() {
	p.cancel()
	p.mu.Lock()
	if p.conn != nil {
		p.conn.Close()
	}
	p.mu.Unlock()
}

func (p *peer) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// enqueue encodes msgs and queues the longest prefix that fits; the rest,
// and messages that cannot be encoded or framed, are dropped. It encodes
// outside the lock, after checking there is room, so a full queue costs
// Send nothing but the check.
func (p *peer) enqueue(msgs []Envelope) {
	p.mu.Lock()
	room := p.cfg.QueueSize - len(p.queue)
	p.mu.Unlock()
	if room <= 0 {
		p.dropped.Add(uint64(len(msgs)))
		return
	}
	n := min(room, len(msgs))
	dropped := len(msgs) - n
	maxRecord := p.cfg.MaxFrameSize - batchHeaderSize
	var (
		buf     []byte
		endsArr [16]int
		ends    = endsArr[:0]
	)
	for i := range msgs[:n] {
		start := len(buf)
		var err error
		buf, err = appendRecord(buf, &msgs[i])
		if err == nil && len(buf)-start > maxRecord {
			err = fmt.Errorf("group %q: record of %d bytes exceeds the frame limit of %d", msgs[i].Group, len(buf)-start, maxRecord)
			buf = buf[:start]
		}
		if err != nil {
			dropped++
			p.logger.Warn("dropping a message that cannot be sent", "err", err)
			continue
		}
		ends = append(ends, len(buf))
	}
	admitted, start := 0, 0
	p.mu.Lock()
	for _, end := range ends {
		rec := buf[start:end:end]
		if len(p.queue) >= p.cfg.QueueSize || p.queueBytes+len(rec) > p.cfg.QueueBytes {
			break
		}
		p.queue = append(p.queue, rec)
		p.queueBytes += len(rec)
		admitted++
		start = end
	}
	p.mu.Unlock()
	if dropped += len(ends) - admitted; dropped > 0 {
		p.dropped.Add(uint64(dropped))
	}
	if admitted > 0 {
		p.signal()
	}
}

// take empties the queue and returns what it held (nil when empty).
func (p *peer) take() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queue) == 0 {
		return nil
	}
	q := p.queue
	p.queue, p.spare, p.queueBytes = p.spare, nil, 0
	return q
}

// recycle gives a drained batch back for reuse as a queue.
func (p *peer) recycle(q [][]byte) {
	clear(q)
	p.mu.Lock()
	if p.spare == nil {
		p.spare = q[:0]
	}
	p.mu.Unlock()
}

// discard drops everything queued: messages for a peer that cannot be
// reached are stale by the time it can, and Raft resends what matters.
func (p *peer) discard() int {
	q := p.take()
	n := len(q)
	if q != nil {
		p.recycle(q)
	}
	p.dropped.Add(uint64(n))
	return n
}

func (p *peer) queued() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue)
}

// link is one live outbound connection.
type link struct {
	conn net.Conn
	w    *bufio.Writer
	up   time.Time
	// closed is closed by watch when the connection ends; err says why.
	closed chan struct{}
	err    error
}

// run dials the peer when there is something to send, writes what is
// queued, and redials after failures with exponential backoff, until stop.
func (p *peer) run() {
	var (
		l         *link
		backoff   = p.cfg.MinBackoff
		notBefore time.Time // no dial before this
		failures  int       // consecutive failed dials
	)
	defer func() {
		if l != nil {
			p.hangUp(l)
		}
	}()
	// after a connection ends: redial at once if it had lived a while (a
	// restarted peer); otherwise count it as a failure, so a peer that
	// accepts and closes (one without replication) is not redialled in a
	// tight loop
	ended := func(l *link, err error) {
		p.hangUp(l)
		if p.ctx.Err() != nil {
			return
		}
		p.logger.Warn("connection to peer lost", "err", err)
		if time.Since(l.up) >= p.cfg.MaxBackoff {
			backoff, notBefore = p.cfg.MinBackoff, time.Time{}
		} else {
			notBefore = time.Now().Add(backoff)
			backoff = min(2*backoff, p.cfg.MaxBackoff)
		}
		if p.queued() > 0 {
			p.signal()
		}
	}
	for {
		var linkClosed <-chan struct{}
		if l != nil {
			linkClosed = l.closed
		}
		select {
		case <-p.ctx.Done():
			return
		case <-linkClosed:
			ended(l, l.err)
			l = nil
			continue
		case <-p.wake:
		}
		if l == nil {
			select {
			case <-p.up:
				backoff, notBefore = p.cfg.MinBackoff, time.Time{}
			default:
			}
			up, ok := sleepUntil(p.ctx, notBefore, p.up)
			if !ok {
				return
			}
			if up {
				backoff = p.cfg.MinBackoff
			}
			var err error
			if l, err = p.dial(); err != nil {
				if p.ctx.Err() != nil {
					return
				}
				failures++
				n := p.discard()
				log := p.logger.Debug
				if failures == 1 {
					log = p.logger.Warn
				}
				log("cannot reach peer", "err", err, "dropped", n, "failures", failures, "retry_in", backoff)
				notBefore = time.Now().Add(backoff)
				backoff = min(2*backoff, p.cfg.MaxBackoff)
				continue
			}
			p.logger.Info("connected to peer", "after_failures", failures)
			failures = 0
		}
		if err := p.flush(l); err != nil {
			ended(l, err)
			l = nil
		}
	}
}

// dial connects to the peer and buffers the magic and the hello.
func (p *peer) dial() (*link, error) {
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.DialTimeout)
	defer cancel()
	conn, err := p.cfg.Dial(ctx, p.addr)
	if err != nil {
		return nil, fmt.Errorf("dial peer %d at %s: %w", p.id, p.addr, err)
	}
	magicSent := false
	if p.cfg.Secure != nil {
		deadline, _ := ctx.Deadline()
		conn.SetWriteDeadline(deadline)
		_, err := io.WriteString(conn, protocol.MagicR1)
		conn.SetWriteDeadline(time.Time{})
		if err == nil {
			var sconn net.Conn
			if sconn, err = p.cfg.Secure(ctx, conn, p.addr); err == nil {
				conn, magicSent = sconn, true
			}
		}
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("secure the connection to peer %d at %s: %w", p.id, p.addr, err)
		}
	}
	p.mu.Lock()
	if err := p.ctx.Err(); err != nil { // stopped while dialling
		p.mu.Unlock()
		conn.Close()
		return nil, err
	}
	p.conn = conn
	p.mu.Unlock()
	l := &link{
		conn:   conn,
		w:      bufio.NewWriterSize(conn, writeBufferSize),
		up:     time.Now(),
		closed: make(chan struct{}),
	}
	if !magicSent {
		l.w.WriteString(protocol.MagicR1)
	}
	l.w.Write(appendHello(nil, p.t.cfg.Self, p.id))
	p.connected.Store(true)
	go p.watch(l) // waited for by hangUp
	return l, nil
}

// watch notices at once when the peer closes the connection or answers on
// it: a peer never writes on a connection it accepted, except nsqd without
// replication, which answers E_BAD_PROTOCOL and closes.
func (p *peer) watch(l *link) {
	defer close(l.closed)
	var b [64]byte
	n, err := l.conn.Read(b[:])
	if n > 0 {
		l.err = fmt.Errorf("peer %d at %s answered %q: it does not accept replication connections", p.id, p.addr, b[:n])
		return
	}
	l.err = fmt.Errorf("connection to peer %d at %s: %w", p.id, p.addr, err)
}

// hangUp closes l and waits for its watch goroutine.
func (p *peer) hangUp(l *link) {
	p.mu.Lock()
	p.conn = nil
	p.mu.Unlock()
	l.conn.Close()
	<-l.closed
	p.connected.Store(false)
}

// flush writes everything queued, including what is queued while it
// writes, then flushes the connection. Envelopes count as sent once
// flushed; on an error everything written since the last flush counts as
// dropped (some of it may have reached the peer).
func (p *peer) flush(l *link) error {
	pending := 0
	for {
		batch := p.take()
		if len(batch) == 0 {
			break
		}
		pending += len(batch)
		l.conn.SetWriteDeadline(time.Now().Add(p.cfg.WriteTimeout))
		err := writeFrames(l.w, batch, p.cfg.MaxFrameSize)
		p.recycle(batch)
		if err != nil {
			p.dropped.Add(uint64(pending))
			return fmt.Errorf("write to peer %d: %w", p.id, err)
		}
	}
	l.conn.SetWriteDeadline(time.Now().Add(p.cfg.WriteTimeout))
	if err := l.w.Flush(); err != nil {
		p.dropped.Add(uint64(pending))
		return fmt.Errorf("write to peer %d: %w", p.id, err)
	}
	p.sent.Add(uint64(pending))
	return nil
}

// writeFrames writes recs as batch frames, in order: a frame is closed once
// its payload reaches frameTarget or maxBatchCount records, and never
// exceeds maxFrame (enqueue keeps every record below it).
func writeFrames(w *bufio.Writer, recs [][]byte, maxFrame int) error {
	target := min(frameTarget, maxFrame)
	var hdr [frameHeaderSize + batchHeaderSize]byte
	for i := 0; i < len(recs); {
		size, j := batchHeaderSize, i
		for j < len(recs) && j-i < maxBatchCount {
			if j > i && size+len(recs[j]) > target {
				break
			}
			size += len(recs[j])
			j++
		}
		binary.BigEndian.PutUint32(hdr[:], uint32(size))
		binary.BigEndian.PutUint32(hdr[frameHeaderSize:], uint32(j-i))
		if _, err := w.Write(hdr[:]); err != nil {
			return err
		}
		for _, r := range recs[i:j] {
			if _, err := w.Write(r); err != nil {
				return err
			}
		}
		i = j
	}
	return nil
}

// sleepUntil waits until t, or until early is signalled (woken); ok is
// false if ctx ends first.
func sleepUntil(ctx context.Context, t time.Time, early <-chan struct{}) (woken, ok bool) {
	d := time.Until(t)
	if d <= 0 {
		return false, ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false, false
	case <-timer.C:
		return false, true
	case <-early:
		return true, true
	}
}
