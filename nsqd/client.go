package nsqd

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

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
// there are messages to send it (see Channel). Idle connections therefore
// cost one goroutine, a small read buffer and no write buffer.
//
// Fields are guarded as noted; counters read by /stats are atomics.
type client struct {
	id         uint64
	nsqd       *NSQD
	conn       net.Conn
	remoteAddr string
	connectTS  int64

	// set by the reader goroutine during IDENTIFY/AUTH/SUB; read by others
	// only after SUB (which publishes them through Channel.mu).
	msgTimeout    time.Duration
	sampleRate    int32
	heartbeat     time.Duration
	outputBufSize int
	outputBufTO   time.Duration
	channel       *Channel

	identity atomic.Pointer[clientIdentity] // IDENTIFY/TLS/auth facts for stats

	state         atomic.Int32
	readyCount    atomic.Int64
	inFlightCount atomic.Int64
	messageCount  atomic.Uint64
	finishCount   atomic.Uint64
	requeueCount  atomic.Uint64

	// guarded by channel.mu
	pumpRunning bool
	waiting     bool
	listed      bool // scratch mark while the channel compacts its waiters

	pubMu     sync.Mutex // guards pubCounts
	pubCounts map[string]uint64

	auth authState // reader goroutine only

	rd            connReader // reader goroutine only
	scratchBodies [][]byte   // reader goroutine only: MPUB parsing
	scratchMsgs   []*Message // reader goroutine only: publishing

	writeMu   sync.Mutex // guards the write side below
	w         io.Writer  // conn, TLS or compressor
	flusher   interface{ Flush() error }
	wbuf      []byte
	hbTimer   *time.Timer
	closed    atomic.Bool // set once, by closeConn; writers check it under writeMu
	closeOnce sync.Once
}

// clientIdentity holds what /stats reports about who the client is.
type clientIdentity struct {
	clientID, hostname, userAgent string
	deflate, snappy               bool
	tls                           *tls.ConnectionState
	authed                        bool
	authIdentity, authURL         string
}

func newClient(id uint64, conn net.Conn, n *NSQD) *client {
	c := &client{
		id:            id,
		nsqd:          n,
		conn:          conn,
		remoteAddr:    conn.RemoteAddr().String(),
		connectTS:     time.Now().Unix(),
		msgTimeout:    n.opts.MsgTimeout,
		heartbeat:     n.opts.ClientTimeout / 2,
		outputBufSize: 16 * 1024,
		outputBufTO:   n.opts.OutputBufferTimeout,
		w:             conn,
	}
	host, _, err := net.SplitHostPort(c.remoteAddr)
	if err != nil {
		host = c.remoteAddr
	}
	c.identity.Store(&clientIdentity{clientID: host, hostname: host})
	c.rd.src = conn
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
	small    [64]byte
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
		r.buf, r.r, r.w = nil, 0, 0
		return
	}
	if r.lastFill < quietRead {
		b := r.buf[:cap(r.buf)]
		readBufPool.Put(&b)
		r.buf, r.r, r.w = nil, 0, 0
	}
}

func (r *connReader) isSmall() bool { return len(r.buf) == len(r.small) }

// fill reads more bytes, compacting the buffer first. Reads start in the
// connection's own 64-byte array (a heartbeat reply or a FIN never needs
// more); the pooled buffer is taken when that fills up, or when the last
// read filled all the space it had: a busy consumer's FINs then arrive
// 16 KiB per read rather than 64 bytes (profiled: the 64-byte reads were
// about 30 % of nsqd's CPU while draining a backlog).
func (r *connReader) fill(beforeBlock func()) error {
	beforeBlock()
	if r.buf == nil {
		r.buf, r.r, r.w = r.small[:], 0, 0
	}
	if r.r > 0 {
		copy(r.buf, r.buf[r.r:r.w])
		r.w -= r.r
		r.r = 0
	}
	if r.isSmall() && (r.w == len(r.buf) || r.fullRead) {
		big := *(readBufPool.Get().(*[]byte))
		copy(big, r.buf[:r.w])
		r.buf = big
	} else if r.w == len(r.buf) {
		return errLineTooLong
	}
	space := len(r.buf) - r.w
	n, err := r.src.Read(r.buf[r.w:])
	r.w += n
	r.lastFill = n
	r.fullRead = n == space
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// readLine returns the next line without its LF. The slice is valid until
// the next read. beforeBlock runs before every read from the source.
func (r *connReader) readLine(beforeBlock func()) ([]byte, error) {
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
		if err := r.fill(beforeBlock); err != nil {
			return nil, err
		}
	}
}

// readFull fills p from the buffer and then the source; large remainders
// are read straight into p.
func (r *connReader) readFull(p []byte, beforeBlock func()) error {
	n := 0
	for n < len(p) {
		if r.buf != nil && r.r < r.w {
			k := copy(p[n:], r.buf[r.r:r.w])
			r.r += k
			n += k
			continue
		}
		if len(p)-n >= directRead {
			beforeBlock()
			m, err := r.src.Read(p[n:])
			n += m
			if m == 0 && err != nil {
				return err
			}
			continue
		}
		r.maybeRelease()
		if err := r.fill(beforeBlock); err != nil {
			return err
		}
	}
	r.maybeRelease()
	return nil
}

// readInt32 reads a big-endian int32.
func (r *connReader) readInt32(beforeBlock func()) (int32, error) {
	var b [4]byte
	if err := r.readFull(b[:], beforeBlock); err != nil {
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
		if c.heartbeat > 0 {
			c.conn.SetWriteDeadline(time.Now().Add(c.heartbeat))
		}
		_, err := c.w.Write(frame)
		if err == nil && c.flusher != nil {
			err = c.flusher.Flush()
		}
		if err != nil {
			c.closeConnLocked()
		}
		return err
	}
	c.grabBufLocked()
	c.wbuf = protocol.AppendFrame(c.wbuf, t, data)
	return c.flushLocked(true)
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
		if c.heartbeat > 0 {
			c.conn.SetWriteDeadline(time.Now().Add(c.heartbeat))
		}
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
		c.closeConnLocked()
	}
	return err
}

// writeMessages frames msgs into the output buffer, flushing whenever it
// reaches the negotiated output buffer size.
func (c *client) writeMessages(msgs []*Message) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if c.closed.Load() {
		return net.ErrClosed
	}
	c.grabBufLocked()
	for _, m := range msgs {
		c.wbuf = protocol.AppendMessageFrame(c.wbuf, m.Timestamp, m.Attempts, &m.ID, m.Body)
		if len(c.wbuf) >= c.outputBufSize {
			if err := c.flushLocked(false); err != nil {
				return err
			}
		}
	}
	return nil
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
func (c *client) pump(ch *Channel) {
	defer ch.wg.Done()
	var arr [256]*Message
	for {
		msgs := ch.take(c, arr[:0])
		if len(msgs) == 0 {
			break
		}
		c.messageCount.Add(uint64(len(msgs)))
		if err := c.writeMessages(msgs); err != nil {
			ch.pumpFailed(c)
			return
		}
		clear(arr[:len(msgs)])
	}
	c.flush()
}

// startHeartbeats (re)arms the heartbeat timer.
func (c *client) startHeartbeats() {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if c.hbTimer != nil {
		c.hbTimer.Stop()
		c.hbTimer = nil
	}
	if c.heartbeat <= 0 || c.closed.Load() {
		return
	}
	c.hbTimer = time.AfterFunc(c.heartbeat, c.sendHeartbeat)
}

func (c *client) sendHeartbeat() {
	if err := c.writeFrame(protocol.FrameTypeResponse, protocol.Heartbeat); err != nil {
		return
	}
	c.writeMu.Lock()
	if !c.closed.Load() && c.hbTimer != nil {
		c.hbTimer.Reset(c.heartbeat)
	}
	c.writeMu.Unlock()
}

// closeConn closes the connection; the reader goroutine then cleans up. It
// does not wait for the write lock, so a writer blocked on a slow peer
// cannot hold up a channel deletion or shutdown: closing the socket fails
// that write at once.
func (c *client) closeConn() {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		c.conn.Close()
	})
}

// closeConnLocked is closeConn for callers holding writeMu; it also stops
// the heartbeat timer, which writeMu guards.
func (c *client) closeConnLocked() {
	c.closeConn()
	if c.hbTimer != nil {
		c.hbTimer.Stop()
	}
}

func (c *client) notePublish(topic string, n int) {
	c.pubMu.Lock()
	if c.pubCounts == nil {
		c.pubCounts = make(map[string]uint64, 1)
	}
	c.pubCounts[topic] += uint64(n)
	c.pubMu.Unlock()
}
