//go:build linux

package nsqd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"syscall"
	"time"

	"github.com/sluicemq/sluice/protocol"
)

// Publishers served by the idle poller.
//
// A producer that sends one PUB and waits for its OK before the next is
// idle between commands for a round trip each time. Served by a reader
// goroutine, each PUB cost nsqd a read, a second read that found nothing
// (Go's poller reads before it parks the goroutine), the OK's write, and
// the goroutine's park and wake-up through the runtime's poller: profiled
// on 4 such producers, system calls and scheduling were ~80 % of nsqd's
// CPU (issue 12, one PUB per round trip). A connection whose last command
// was a PUB that could be answered without waiting is therefore parked
// in the idle poller between PUBs like an idle connection; when it becomes
// readable the poller reads it once (edge-triggered: a short read leaves
// nothing behind) and runs the complete PUBs and NOPs it finds itself:
// a read and a write per PUB, and one epoll_wait for every connection
// that became readable meanwhile. Anything else (another command, a
// command cut by the read, a PUB that may wait or fail fatally) goes to a
// reader goroutine as before, with the bytes already read.
//
// The poller publishes only where that cannot block it: an existing topic
// that is neither replicated nor forwarded, without AUTH, without a TLS
// requirement; a durable topic only where its reply is written by the
// committer's side (publishDurableAsync) and the connection has room for
// one more pending reply. Every reply goes through the connection's
// pubReplies (reply, send): a non-blocking write, in command order behind
// durable replies still syncing; one that cannot be written at once is
// queued and written by a short-lived goroutine. A served connection is
// taken out of the parked set while the poller runs its commands (outside
// the poller's lock, which closeConn takes), and reads go through the
// socket's RawConn, which holds the descriptor open meanwhile.

// pubServeRead is the size of one read of a served publisher: the
// poller's own buffer, so a parked publisher holds none.
const pubServeRead = 16 * 1024

// servedPub is the poller's state for serving publishers; poller goroutine only.
type servedPub struct {
	scratch []byte
	readFn  func(fd uintptr) bool
	n       int
	err     error
	list    []*client
	after   []pubServeOutcome
}

// pubServeOutcome is what happens to a served connection after its turn.
type pubServeOutcome uint8

const (
	servedStay    pubServeOutcome = iota // back to the parked set
	servedResume                         // a reader goroutine takes over
	servedGoodbye                        // the poller closes it (fatal reply queued)
)

func newServedPub() *servedPub {
	s := &servedPub{scratch: make([]byte, pubServeRead)}
	s.readFn = func(fd uintptr) bool {
		for {
			s.n, s.err = syscall.Read(int(fd), s.scratch)
			if !errors.Is(s.err, syscall.EINTR) {
				return true // one attempt: the poller never waits here
			}
		}
	}
	return s
}

// servePublishers runs the turn of every served connection that became
// readable; the poller's lock is not held. It then puts each back, or
// hands it to a reader goroutine.
func (p *pollShard) servePublishers() {
	s := p.pubs
	s.after = s.after[:0]
	now := time.Now().UnixNano()
	for _, c := range s.list {
		s.after = append(s.after, p.serveTurn(c, now))
	}
	p.mu.Lock()
	for i, c := range s.list {
		if s.after[i] == servedStay && !c.closed.Load() {
			p.parked[c.fd] = c
			continue
		}
		if !c.closed.Load() {
			// still its socket (closeConn closes it only after unpark,
			// which waits for this lock): the reader takes over
			p.disarmLocked(c.fd)
		}
		if s.after[i] == servedGoodbye {
			c.woken = true
			go func() {
				c.awaitReplies() // the fatal reply goes out before the close
				c.closeConn()
				c.serve() // finds the socket closed and cleans up
			}()
			continue
		}
		go c.serve() // connWG still counts the connection; it sees a close itself
	}
	p.mu.Unlock()
	clear(s.list)
	s.list = s.list[:0]
}

// serveTurn reads c's socket and runs what it can; see the file comment.
func (p *pollShard) serveTurn(c *client, now int64) pubServeOutcome {
	s := p.pubs
	rc := c.publisher().rawConn(c)
	if rc == nil {
		return servedResume
	}
	for {
		s.n, s.err = 0, nil
		if err := rc.Read(s.readFn); err != nil {
			c.woken = true // closed meanwhile: the reader sees it
			return servedResume
		}
		n, err := s.n, s.err
		if errors.Is(err, syscall.EAGAIN) {
			return servedStay // a report that went stale
		}
		if n <= 0 {
			c.woken = true // the end of the stream, or an error: the reader sees it
			return servedResume
		}
		r := &c.rd
		r.buf, r.r, r.w = s.scratch, 0, n
		out := servedStay
		for r.r < r.w && out == servedStay {
			var ok bool
			ok, out = c.serveOne(p)
			if !ok {
				break
			}
		}
		if r.r < r.w {
			c.keepRest()
			return servedResume
		}
		r.buf, r.r, r.w = nil, 0, 0
		if out != servedStay {
			return out
		}
		if n < len(s.scratch) {
			c.readSince.Store(now) // one wait ended, the next begins
			return servedStay
		}
	}
}

// rawConn returns the socket's RawConn, made on the first served read.
func (ps *publisherState) rawConn(c *client) syscall.RawConn {
	if ps.raw == nil {
		if sc, ok := c.conn.(syscall.Conn); ok {
			ps.raw, _ = sc.SyscallConn()
		}
	}
	return ps.raw
}

// enablePublishers lets the poller serve publishers (see the file
// comment); only where a PUB needs no AUTH and no TLS check. Before run.
func (p *idlePoller) enablePublishers() {
	for _, s := range p.shards {
		if s.nopOnly {
			s.pubs = newServedPub()
		}
	}
}

// servesPublishers reports whether a publisher may be parked between PUBs.
func (p *idlePoller) servesPublishers() bool { return p != nil && p.shards[0].pubs != nil }

// keepRest moves the unread bytes of the poller's buffer into the
// connection's own, for the reader goroutine about to start.
func (c *client) keepRest() {
	r := &c.rd
	rest := r.w - r.r
	var b []byte
	if rest <= len(r.small) {
		b = r.small[:]
	} else {
		b = *(readBufPool.Get().(*[]byte))
	}
	copy(b, r.buf[r.r:r.w])
	r.buf, r.r, r.w = b, 0, rest
	r.lastFill, r.fullRead = rest, false
	c.readSince.Store(0)
	c.keepSince = false
}

// serveOne runs the next buffered command when it is a complete NOP or a
// PUB the poller may publish; ok is false when it leaves it for a reader.
func (c *client) serveOne(p *pollShard) (ok bool, out pubServeOutcome) {
	r := &c.rd
	b := r.buf[r.r:r.w]
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return false, servedStay
	}
	var params [protocol.MaxParams][]byte
	ps := protocol.SplitParams(b[:i], params[:0])
	if len(ps) == 1 && string(ps[0]) == "NOP" {
		r.r += i + 1
		return true, servedStay
	}
	if len(ps) != 2 || string(ps[0]) != "PUB" || len(b) < i+1+4 {
		return false, servedStay
	}
	size := int64(int32(binary.BigEndian.Uint32(b[i+1:])))
	if size <= 0 || size > c.nsqd.opts.MaxMsgSize || int64(len(b)) < int64(i+1+4)+size {
		return false, servedStay // a reader reports a bad size, or reads the rest
	}
	name := c.topicName(ps[1])
	if !protocol.IsValidTopicName(name) {
		return false, servedStay
	}
	t := c.nsqd.servableTopic(name)
	if t == nil {
		return false, servedStay
	}
	rs := c.replies()
	if t.dur != nil && rs.full() {
		return false, servedStay
	}
	start := i + 1 + 4
	body := make([]byte, size)
	copy(body, b[start:])
	r.r += start + int(size)

	var perr error
	if t.dur != nil {
		if queued, err := c.publishDurableAsync(t, "PUB", protocol.ErrPubFailed, body, 0); queued {
			if err == nil {
				return true, servedStay
			}
			perr = err
		}
	}
	if perr == nil {
		_, perr = c.publish("PUB", protocol.ErrPubFailed, t, [][]byte{body}, 0)
	}
	if perr == nil {
		rs.reply(okFrame)
		return true, servedStay
	}
	var pe *protocol.Error
	if !errors.As(perr, &pe) {
		pe = protocol.Fatalf(protocol.ErrPubFailed, "PUB failed %s", perr)
	}
	rs.reply(protocol.AppendFrame(nil, protocol.FrameTypeError, []byte(pe.Error())))
	if pe.Fatal {
		return true, servedGoodbye
	}
	return true, servedStay
}
