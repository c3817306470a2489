package nsqd

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unique"

	"github.com/sluicemq/sluice/protocol"
)

// Connection states reported in /stats (§3.1).
const (
	stateInit       = 0
	stateSubscribed = 3
	stateClosing    = 4
)

// client is one V2 connection. Its reader goroutine (the connection's
// owner) parses and executes commands; a pump goroutine exists only while
// there are messages to send it (see Channel). Heartbeats and the read
// timeout are driven by the daemon's connTimers wheel, not by a timer of
// the connection's own.
//
// What an idle connection costs is kept small on purpose (issue 12: 4 KiB
// per idle consumer, socket included): state used by few connections
// (publishing, AUTH, identity) hangs off pointers that stay nil until
// needed, no buffer is held between commands, and an idle connection has
// no goroutine: it is parked in the idle poller (see serve, idlePoller).
//
// Fields are guarded as noted; counters read by /stats are atomics.
type client struct {
	id        uint64
	nsqd      *NSQD
	conn      net.Conn
	connectTS int64

	// set by the reader goroutine during IDENTIFY/AUTH/SUB; read by others
	// only after SUB (which publishes them through Channel.mu).
	msgTimeout    time.Duration
	outputBufSize int
	outputBufTO   time.Duration
	sampleRate    int32
	channel       *Channel

	heartbeatNs atomic.Int64 // negotiated heartbeat interval; 0: none

	identity atomic.Pointer[clientIdentity] // IDENTIFY/TLS/auth facts for stats; nil until one is set
	pubState atomic.Pointer[publisherState] // nil until the first publish

	state         atomic.Int32
	closed        atomic.Bool // set once, by closeConn; writers check it under writeMu
	readyCount    atomic.Int64
	inFlightCount atomic.Int64
	messageCount  atomic.Uint64
	finishCount   atomic.Uint64
	requeueCount  atomic.Uint64

	// guarded by channel.mu
	pumpRunning bool
	waiting     bool
	listed      bool // scratch mark while the channel compacts its waiters

	// reader goroutine only
	pendingKick bool  // the consumer may take more: kick the channel before blocking
	dirty       bool  // this goroutine ran more than NOPs: its stack may have grown
	keepSince   bool  // a fresh reader goroutine continues the previous one's wait
	woken       bool  // started by the idle poller: the socket has something to read
	fd          int32 // the socket's descriptor, for the idle poller; -1: cannot park
	shedAt      int64 // read deadline armed to shed the goroutine when idle (unix ns); 0: none
	auth        *authState
	rd          connReader

	// connection timers (see connTimers): readSince is written by the
	// reader; the rest is guarded by connTimers.mu
	readSince atomic.Int64 // unix ns the current read began waiting; 0 while not reading
	beating   atomic.Bool  // a heartbeat write is under way
	timerLink wheelLink[client]
	nextBeat  int64

	writeMu sync.Mutex // guards the write side below
	w       io.Writer  // conn, TLS or compressor
	flusher interface{ Flush() error }
	wbuf    []byte
	// wdeadline is the write deadline armed on the socket (unix ns; 0 for
	// none): see armWriteDeadlineLocked.
	wdeadline int64
}

// publisherState is what a connection that publishes keeps; most consumers
// never need it.
type publisherState struct {
	mu        sync.Mutex // guards counts, lastTopic and lastCount
	counts    map[string]*uint64
	lastTopic string  // the topic of the last notePublish
	lastCount *uint64 // and its count in counts

	lastName string // reader goroutine only: topicName's last name

	scratchBodies [][]byte   // reader goroutine only: MPUB parsing
	scratchMsgs   []*Message // reader goroutine only: publishing

	replies *pubReplies // durable publishes answered by the committer's side; set by the reader goroutine
}

// publisher returns the connection's publisher state, creating it on the
// reader goroutine's first publish.
func (c *client) publisher() *publisherState {
	p := c.pubState.Load()
	if p == nil {
		p = &publisherState{}
		c.pubState.Store(p)
	}
	return p
}

// heartbeat is the negotiated heartbeat interval (0: heartbeats disabled).
func (c *client) heartbeat() time.Duration { return time.Duration(c.heartbeatNs.Load()) }

// clientIdentity holds what /stats reports about who the client is. The
// names a client gives in IDENTIFY are interned: thousands of connections
// from one host, with one client library, share one copy of each.
type clientIdentity struct {
	clientID, hostname, userAgent unique.Handle[string]
	deflate, snappy, authed       bool
	tls                           *tls.ConnectionState
	authIdentity, authURL         string
}

// ident returns a copy of what is known about who the client is; before
// IDENTIFY its client_id and hostname are its remote host, as in NSQ.
func (c *client) ident() clientIdentity {
	if id := c.identity.Load(); id != nil {
		return *id
	}
	addr := c.remoteAddr()
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	h := unique.Make(host)
	return clientIdentity{clientID: h, hostname: h, userAgent: unique.Make("")}
}

// remoteAddr is the peer's address, as /stats and the logs show it.
func (c *client) remoteAddr() string { return c.conn.RemoteAddr().String() }

func newClient(id uint64, conn net.Conn, n *NSQD) *client {
	c := &client{
		id:            id,
		nsqd:          n,
		conn:          conn,
		connectTS:     time.Now().Unix(),
		msgTimeout:    n.opts.MsgTimeout,
		outputBufSize: 16 * 1024,
		outputBufTO:   n.opts.OutputBufferTimeout,
		w:             conn,
	}
	c.heartbeatNs.Store(int64(n.opts.ClientTimeout / 2))
	c.rd.src = conn
	c.fd = -1
	if n.idle != nil {
		c.fd = pollFD(conn)
	}
	return c
}

// connReader is a buffered reader that holds a real buffer only while data
// is flowing: an idle connection blocks in Read on a 64-byte array, and a
// pooled 16 KiB buffer is taken when bytes arrive. The buffer is given back
// once it has been drained after a read that brought little data (a quiet
// connection); a busy one keeps it.
type connReader struct {
	src      io.Reader
	buf      []byte // nil while idle
	r, w     int
	lastFill int
	fullRead bool // the last read filled all the space it was given
	// keep holds the big buffer between commands: set by the first
	// publish (a 100-byte PUB does not fit the small array), so that each
	// later PUB takes one read rather than two; the buffer goes back when
	// the connection is shed or parked (idle) or ends. A consumer keeps
	// giving it back whenever it is quiet.
	keep  bool
	small [64]byte
}

// readHook is told about every read a connReader makes from its source.
// atLineStart is true when no part of a command is buffered: the
// connection is between commands.
type readHook interface {
	// beforeRead runs before a read that may block; an error is returned
	// instead of reading.
	beforeRead(atLineStart bool) error
	// afterRead sees the outcome of that read. For a read that brought no
	// data it returns nil to have the read made again, or the error to
	// return; otherwise err (nil when n > 0).
	afterRead(atLineStart bool, n int, err error) error
}

var readBufPool = sync.Pool{New: func() any { b := make([]byte, 16*1024); return &b }}

const (
	maxLineLength = 16 * 1024
	quietRead     = 512 // a read smaller than this lets the buffer go
	directRead    = 4096
)

var errLineTooLong = errors.New("command line too long")

// maybeRelease gives the big buffer back when it is drained and the
// connection looks quiet.
func (r *connReader) maybeRelease() {
	if r.buf == nil || r.r != r.w {
		return
	}
	if r.isSmall() {
		// the small array is the connection's own: nothing to give back,
		// and keep stays (release, on going idle, is what clears it)
		r.buf, r.r, r.w = nil, 0, 0
		return
	}
	if !r.keep && r.lastFill < quietRead {
		r.release()
	}
}

// release drops the buffer, giving a pooled one back; nothing may be
// buffered.
func (r *connReader) release() {
	if r.buf != nil && !r.isSmall() {
		b := r.buf[:cap(r.buf)]
		readBufPool.Put(&b)
	}
	r.buf, r.r, r.w = nil, 0, 0
	r.keep = false
}

func (r *connReader) isSmall() bool { return len(r.buf) == len(r.small) }

// fill reads more bytes, compacting the buffer first. Reads start in the
// connection's own 64-byte array (a heartbeat reply or a FIN never needs
// more); the pooled buffer is taken when that fills up, on a publishing
// connection (keep), or when the last read filled all the space it had:
// a busy consumer's FINs then arrive
// 16 KiB per read rather than 64 bytes (profiled: the 64-byte reads were
// about 30 % of nsqd's CPU while draining a backlog). atLineStart tells h
// whether the connection is between commands.
func (r *connReader) fill(h readHook, atLineStart bool) error {
	if r.buf == nil {
		r.buf, r.r, r.w = r.small[:], 0, 0
	}
	if r.r > 0 {
		copy(r.buf, r.buf[r.r:r.w])
		r.w -= r.r
		r.r = 0
	}
	if r.isSmall() && (r.w == len(r.buf) || r.fullRead || r.keep) {
		big := *(readBufPool.Get().(*[]byte))
		copy(big, r.buf[:r.w])
		r.buf = big
	} else if r.w == len(r.buf) {
		return errLineTooLong
	}
	for {
		if err := h.beforeRead(atLineStart); err != nil {
			return err
		}
		space := len(r.buf) - r.w
		n, err := r.src.Read(r.buf[r.w:])
		r.w += n
		r.lastFill = n
		r.fullRead = n == space
		if n > 0 {
			return h.afterRead(atLineStart, n, nil)
		}
		if err == nil {
			err = io.ErrNoProgress
		}
		if err = h.afterRead(atLineStart, 0, err); err != nil {
			return err
		}
	}
}

// readLine returns the next line without its LF. The slice is valid until
// the next read.
func (r *connReader) readLine(h readHook) ([]byte, error) {
	scanned := 0
	for {
		if r.buf != nil {
			for i := r.r + scanned; i < r.w; i++ {
				if r.buf[i] == '\n' {
					line := r.buf[r.r:i]
					r.r = i + 1
					return line, nil
				}
			}
			scanned = r.w - r.r
			r.maybeRelease()
		}
		if err := r.fill(h, r.r == r.w); err != nil {
			return nil, err
		}
	}
}

// readFull fills p from the buffer and then the source; large remainders
// are read straight into p.
func (r *connReader) readFull(p []byte, h readHook) error {
	n := 0
	for n < len(p) {
		if r.buf != nil && r.r < r.w {
			k := copy(p[n:], r.buf[r.r:r.w])
			r.r += k
			n += k
			continue
		}
		if len(p)-n >= directRead {
			if err := h.beforeRead(false); err != nil {
				return err
			}
			m, err := r.src.Read(p[n:])
			n += m
			if m == 0 && err == nil {
				err = io.ErrNoProgress
			}
			if err = h.afterRead(false, m, err); m == 0 && err != nil {
				return err
			}
			continue
		}
		r.maybeRelease()
		if err := r.fill(h, false); err != nil {
			return err
		}
	}
	r.maybeRelease()
	return nil
}

// readInt32 reads a big-endian int32.
func (r *connReader) readInt32(h readHook) (int32, error) {
	if r.buf != nil && r.w-r.r >= 4 {
		// the usual case (a body size right after its command line): no
		// array for readFull, which escapes (profiled: an allocation per PUB)
		b := r.buf[r.r : r.r+4]
		v := int32(uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]))
		r.r += 4
		r.maybeRelease() // may give the buffer back: b is not read after
		return v, nil
	}
	var b [4]byte
	if err := r.readFull(b[:], h); err != nil {
		return 0, err
	}
	return int32(uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])), nil
}

// Prebuilt frames for the replies sent most often. Only read.
var (
	okFrame        = protocol.AppendFrame(nil, protocol.FrameTypeResponse, protocol.OK)
	heartbeatFrame = protocol.AppendFrame(nil, protocol.FrameTypeResponse, protocol.Heartbeat)
)

var writeBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 16*1024); return &b }}

// writeFrame writes one response or error frame and flushes it. A small
// frame with nothing else pending is written from the stack, so heartbeats
// on idle connections touch no buffer.
func (c *client) writeFrame(t protocol.FrameType, data []byte) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	return c.writeFrameLocked(t, data)
}

// writeFrameLocked is writeFrame for callers holding writeMu.
func (c *client) writeFrameLocked(t protocol.FrameType, data []byte) error {
	if c.closed.Load() {
		return net.ErrClosed
	}
	if len(c.wbuf) == 0 && len(data) <= 4096 {
		// a lone control frame: written as is, from a prebuilt frame for the
		// common replies, else an exact-size one; no pooled buffer
		var frame []byte
		switch {
		case t == protocol.FrameTypeResponse && len(data) == 2 && data[0] == 'O' && data[1] == 'K':
			frame = okFrame
		case t == protocol.FrameTypeResponse && len(data) == len(protocol.Heartbeat) && string(data) == string(protocol.Heartbeat):
			frame = heartbeatFrame
		default:
			frame = protocol.AppendFrame(make([]byte, 0, protocol.FrameHeaderSize+len(data)), t, data)
		}
		c.armWriteDeadlineLocked()
		_, err := c.w.Write(frame)
		if err == nil && c.flusher != nil {
			err = c.flusher.Flush()
		}
		if err != nil {
			c.closeConn()
		}
		return err
	}
	c.grabBufLocked()
	c.wbuf = protocol.AppendFrame(c.wbuf, t, data)
	return c.flushLocked(true)
}

// armWriteDeadlineLocked gives a blocking write a heartbeat interval to
// complete, as NSQ does, so that a consumer that stops reading is dropped.
// The deadline is re-armed only once less than half of it remains: a
// connection busy with round trips then changes its socket's deadline
// about once a heartbeat interval instead of before every write (a runtime
// timer update each; profiled at ~2-3 % of nsqd's CPU on PUB round trips).
// A write may thus get between half and all of the interval.
func (c *client) armWriteDeadlineLocked() {
	hb := c.heartbeat()
	if hb <= 0 {
		return
	}
	now := time.Now().UnixNano()
	if c.wdeadline-now >= int64(hb/2) {
		return
	}
	c.wdeadline = now + int64(hb)
	c.conn.SetWriteDeadline(time.Unix(0, c.wdeadline))
}

// clearWriteDeadlineLocked removes the socket's write deadline.
func (c *client) clearWriteDeadlineLocked() {
	c.wdeadline = 0
	c.conn.SetWriteDeadline(time.Time{})
}

func (c *client) grabBufLocked() {
	if c.wbuf == nil {
		c.wbuf = (*(writeBufPool.Get().(*[]byte)))[:0]
	}
}

// flushLocked writes the buffered frames; release gives the buffer back.
func (c *client) flushLocked(release bool) error {
	var err error
	if len(c.wbuf) > 0 {
		c.armWriteDeadlineLocked()
		_, err = c.w.Write(c.wbuf)
		if err == nil && c.flusher != nil {
			err = c.flusher.Flush()
		}
		c.wbuf = c.wbuf[:0]
	}
	if release && c.wbuf != nil {
		b := c.wbuf[:0]
		c.wbuf = nil
		writeBufPool.Put(&b)
	}
	if err != nil {
		c.closeConn()
	}
	return err
}

func (c *client) flush() error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if c.closed.Load() {
		return net.ErrClosed
	}
	return c.flushLocked(true)
}

// pump sends messages from ch while ch has messages and the client is ready.
//
// Messages are framed straight into the output buffer while the channel
// hands them over (Channel.take, under its lock), up to the output buffer
// size the client negotiated; the buffer is written when it is full and
// once more when the run ends. No pointer to a delivered message outlives
// the channel's lock, which is what lets the channel reuse a message's
// struct once it is finished (see msgPool): delivering allocates nothing per
// message.
func (c *client) pump(ch *Channel) {
	defer ch.wg.Done()
	frame := func(m *Message) bool {
		c.wbuf = protocol.AppendMessageFrame(c.wbuf, m.Timestamp, m.Attempts, &m.ID, m.Body)
		return len(c.wbuf) < c.outputBufSize
	}
	for {
		c.writeMu.Lock()
		if c.closed.Load() {
			c.writeMu.Unlock()
			ch.pumpFailed(c)
			return
		}
		c.grabBufLocked()
		n := ch.take(c, maxTakePerRun, frame)
		if n == 0 {
			c.flushLocked(true)
			c.writeMu.Unlock()
			return
		}
		c.messageCount.Add(uint64(n))
		if len(c.wbuf) >= c.outputBufSize {
			if err := c.flushLocked(false); err != nil {
				c.writeMu.Unlock()
				ch.pumpFailed(c)
				return
			}
		}
		c.writeMu.Unlock()
	}
}

// maxTakePerRun bounds the messages a pump takes under the channel's lock
// at a time (the output buffer size bounds it too).
const maxTakePerRun = 256

// tryHeartbeat writes a heartbeat frame on the connTimers goroutine when
// that cannot block: the writer is free, nothing is buffered, and the
// connection is a plain socket with room for the frame (an idle
// connection's case). It reports false when the caller must send it from a
// goroutine of its own (sendHeartbeat), so that a peer that does not read
// cannot hold up the wheel.
func (c *client) tryHeartbeat() bool {
	if c.fd < 0 || !c.writeMu.TryLock() {
		return false
	}
	if c.closed.Load() || len(c.wbuf) > 0 || c.w != io.Writer(c.conn) {
		c.writeMu.Unlock()
		return false
	}
	// The last write's deadline has passed by now and would fail this
	// one; a write that cannot block needs none (the next blocking write
	// sets its own).
	c.clearWriteDeadlineLocked()
	n, ok := writeNow(c.conn, heartbeatFrame)
	switch {
	case ok && n == len(heartbeatFrame):
		c.writeMu.Unlock()
		c.beating.Store(false)
		return true
	case ok && n > 0:
		// part of the frame is out: the rest must follow before any other
		// write, so writeMu goes with it
		go c.finishHeartbeat(heartbeatFrame[n:])
		return true
	}
	c.writeMu.Unlock()
	return false
}

// finishHeartbeat writes the rest of a heartbeat frame that tryHeartbeat
// began; writeMu is held, and released here.
func (c *client) finishHeartbeat(rest []byte) {
	defer c.beating.Store(false)
	defer c.writeMu.Unlock()
	c.armWriteDeadlineLocked()
	if _, err := c.w.Write(rest); err != nil {
		c.closeConn()
	}
}

// sendHeartbeat writes one heartbeat frame, waiting for the writer and the
// socket as any write does; connTimers runs it on a goroutine of its own.
func (c *client) sendHeartbeat() {
	defer c.beating.Store(false)
	c.writeFrame(protocol.FrameTypeResponse, protocol.Heartbeat)
}

// closeConn closes the connection; the reader goroutine then cleans up. It
// does not wait for the write lock, so a writer blocked on a slow peer
// cannot hold up a channel deletion or shutdown: closing the socket fails
// that write at once.
func (c *client) closeConn() {
	if c.closed.CompareAndSwap(false, true) {
		if c.nsqd.idle.unpark(c) {
			go c.serve() // finds the socket closed and cleans up
		}
		c.conn.Close()
	}
}

func (c *client) notePublish(topic string, n int) {
	p := c.publisher()
	p.mu.Lock()
	if p.lastCount == nil || topic != p.lastTopic {
		if p.counts == nil {
			p.counts = make(map[string]*uint64, 1)
		}
		cnt := p.counts[topic]
		if cnt == nil {
			cnt = new(uint64)
			p.counts[topic] = cnt
		}
		p.lastTopic, p.lastCount = topic, cnt
	}
	*p.lastCount += uint64(n)
	p.mu.Unlock()
}

// topicName returns the topic named by a command parameter as a string,
// without allocating when it is the topic the connection published to
// last (a producer usually publishes to one topic).
func (c *client) topicName(b []byte) string {
	if p := c.pubState.Load(); p != nil && p.lastName == string(b) {
		return p.lastName
	}
	name := string(b)
	c.publisher().lastName = name
	return name
}

// pubCounts calls fn for every topic the connection has published to, with
// its count.
func (c *client) pubCounts(fn func(topic string, n uint64)) {
	p := c.pubState.Load()
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for t, n := range p.counts {
		fn(t, *n)
	}
}
