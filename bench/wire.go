package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Frame types of the V2 protocol (§2.3).
const (
	FrameResponse int32 = 0
	FrameError    int32 = 1
	FrameMessage  int32 = 2
)

// maxFrameSize bounds the frames the bench client accepts so that a broken
// server cannot make it allocate without limit.
const maxFrameSize = 8 << 20

var (
	magicV2      = []byte("  V2")
	heartbeat    = []byte("_heartbeat_")
	okBody       = []byte("OK")
	nopCmd       = []byte("NOP\n")
	errNotOK     = errors.New("unexpected reply")
	errFrameSize = errors.New("frame size out of range")
)

// Conn is a raw V2 client connection. It is not safe for concurrent use: one
// goroutine owns it. Data returned by ReadFrame is valid until the next read.
type Conn struct {
	nc  net.Conn
	r   *bufio.Reader
	w   *bufio.Writer
	buf []byte // reused frame payload buffer
}

// Dial connects to an nsqd TCP address and sends the V2 magic.
func Dial(ctx context.Context, addr string) (*Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return newConn(nc, 64<<10)
}

// DialSmall is Dial with small buffers, for scenarios that hold thousands of
// mostly idle connections.
func DialSmall(ctx context.Context, addr string) (*Conn, error) {
	return DialSmallFrom(ctx, addr, nil)
}

// DialSmallFrom is DialSmall from the source address local (nil: the
// kernel's choice).
func DialSmallFrom(ctx context.Context, addr string, local *net.TCPAddr) (*Conn, error) {
	d := net.Dialer{}
	if local != nil {
		d.LocalAddr = local
	}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if local != nil {
			return nil, fmt.Errorf("dial %s from %s: %w", addr, local.IP, err)
		}
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return newConn(nc, 512)
}

func newConn(nc net.Conn, bufSize int) (*Conn, error) {
	c := &Conn{nc: nc, r: bufio.NewReaderSize(nc, bufSize), w: bufio.NewWriterSize(nc, bufSize)}
	if _, err := c.w.Write(magicV2); err != nil {
		nc.Close()
		return nil, fmt.Errorf("write magic: %w", err)
	}
	return c, nil
}

// Close closes the socket.
func (c *Conn) Close() error { return c.nc.Close() }

// SetDeadline sets the read and write deadline of the socket.
func (c *Conn) SetDeadline(t time.Time) error { return c.nc.SetDeadline(t) }

// Flush writes buffered commands to the socket.
func (c *Conn) Flush() error { return c.w.Flush() }

// Buffered reports how many received bytes are waiting to be parsed.
func (c *Conn) Buffered() int { return c.r.Buffered() }

// WriteRaw appends already encoded commands to the write buffer.
func (c *Conn) WriteRaw(b []byte) error {
	_, err := c.w.Write(b)
	return err
}

// ReadFrame reads one frame. The returned data aliases an internal buffer
// and is valid until the next call.
func (c *Conn) ReadFrame() (int32, []byte, error) {
	var hdr [8]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		return 0, nil, err
	}
	size := int32(binary.BigEndian.Uint32(hdr[0:4]))
	typ := int32(binary.BigEndian.Uint32(hdr[4:8]))
	if size < 4 || size > maxFrameSize {
		return 0, nil, fmt.Errorf("%w: %d", errFrameSize, size)
	}
	n := int(size - 4)
	if cap(c.buf) < n {
		c.buf = make([]byte, n)
	}
	data := c.buf[:n]
	if _, err := io.ReadFull(c.r, data); err != nil {
		return 0, nil, err
	}
	return typ, data, nil
}

// ReadResponse flushes pending commands and reads frames until a response
// that is not a heartbeat arrives (heartbeats are answered with NOP). An
// error frame becomes an error. The data is valid until the next read.
func (c *Conn) ReadResponse() ([]byte, error) {
	if err := c.w.Flush(); err != nil {
		return nil, err
	}
	for {
		typ, data, err := c.ReadFrame()
		if err != nil {
			return nil, err
		}
		switch typ {
		case FrameResponse:
			if bytes.Equal(data, heartbeat) {
				if _, err := c.w.Write(nopCmd); err != nil {
					return nil, err
				}
				if err := c.w.Flush(); err != nil {
					return nil, err
				}
				continue
			}
			return data, nil
		case FrameError:
			return nil, fmt.Errorf("nsqd error: %s", data)
		default:
			return nil, fmt.Errorf("%w: frame type %d while waiting for a response", errNotOK, typ)
		}
	}
}

// expectOK reads a response and checks that it is OK.
func (c *Conn) expectOK(what string) error {
	data, err := c.ReadResponse()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !bytes.Equal(data, okBody) {
		return fmt.Errorf("%s: %w %q", what, errNotOK, data)
	}
	return nil
}

// Identify sends IDENTIFY with the given JSON body and waits for the reply
// (OK, or a JSON document when feature_negotiation is set).
func (c *Conn) Identify(body []byte) error {
	c.w.WriteString("IDENTIFY\n")
	c.w.Write(be32(uint32(len(body))))
	c.w.Write(body)
	if _, err := c.ReadResponse(); err != nil {
		return fmt.Errorf("IDENTIFY: %w", err)
	}
	return nil
}

// Subscribe sends SUB and waits for OK.
func (c *Conn) Subscribe(topic, channel string) error {
	c.w.WriteString("SUB " + topic + " " + channel + "\n")
	return c.expectOK("SUB " + topic + " " + channel)
}

// Ready queues RDY n (flushed with the next Flush or response read).
func (c *Conn) Ready(n int) error {
	_, err := fmt.Fprintf(c.w, "RDY %d\n", n)
	return err
}

// Finish queues FIN for the 16-byte message id without allocating.
func (c *Conn) Finish(id []byte) error {
	c.w.WriteString("FIN ")
	c.w.Write(id)
	return c.w.WriteByte('\n')
}

// Nop queues NOP (the answer to a heartbeat).
func (c *Conn) Nop() error {
	_, err := c.w.Write(nopCmd)
	return err
}

func be32(v uint32) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return b[:]
}

// Message field offsets within a message frame's data (§2.4).
const (
	msgTimestampEnd = 8
	msgAttemptsEnd  = 10
	msgIDEnd        = 26
)

// Batch encodes PUB/MPUB commands with bodies of a fixed size into one
// reusable buffer. The first 8 bytes of every body carry a big-endian
// timestamp (Unix nanoseconds) used for end-to-end latency; the rest is
// filler.
type Batch struct {
	topic    string
	bodySize int
	filler   []byte // body bytes after the timestamp
	buf      []byte
}

// NewBatch returns an encoder for bodies of bodySize bytes (at least 8).
func NewBatch(topic string, bodySize int) *Batch {
	if bodySize < 8 {
		bodySize = 8
	}
	filler := make([]byte, bodySize-8)
	for j := range filler {
		filler[j] = 'a' + byte(j%26)
	}
	return &Batch{topic: topic, bodySize: bodySize, filler: filler}
}

// MPUB encodes one MPUB command carrying n messages; stamp(i) gives the
// timestamp of message i. The result is valid until the next call.
func (b *Batch) MPUB(n int, stamp func(i int) int64) []byte {
	buf := b.buf[:0]
	buf = append(buf, "MPUB "...)
	buf = append(buf, b.topic...)
	buf = append(buf, '\n')
	buf = binary.BigEndian.AppendUint32(buf, uint32(4+n*(4+b.bodySize)))
	buf = binary.BigEndian.AppendUint32(buf, uint32(n))
	for i := 0; i < n; i++ {
		buf = binary.BigEndian.AppendUint32(buf, uint32(b.bodySize))
		buf = binary.BigEndian.AppendUint64(buf, uint64(stamp(i)))
		buf = append(buf, b.filler...)
	}
	b.buf = buf
	return buf
}

// PUB encodes one PUB command. The result is valid until the next call.
func (b *Batch) PUB(stamp int64) []byte {
	buf := b.buf[:0]
	buf = append(buf, "PUB "...)
	buf = append(buf, b.topic...)
	buf = append(buf, '\n')
	buf = binary.BigEndian.AppendUint32(buf, uint32(b.bodySize))
	buf = binary.BigEndian.AppendUint64(buf, uint64(stamp))
	buf = append(buf, b.filler...)
	b.buf = buf
	return buf
}

// bodyStamp returns the timestamp carried in a message body written by Batch.
func bodyStamp(body []byte) int64 {
	if len(body) < 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(body[:8]))
}
