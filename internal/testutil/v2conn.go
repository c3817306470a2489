package testutil

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// Frame types of the V2 protocol (protocol.md §2.3).
const (
	FrameTypeResponse int32 = 0
	FrameTypeError    int32 = 1
	FrameTypeMessage  int32 = 2
)

// DefaultReadTimeout bounds every frame read that does not name its own timeout.
const DefaultReadTimeout = 5 * time.Second

// Frame is one server→client V2 frame.
type Frame struct {
	Type int32
	Data []byte
}

// String renders the frame for failure messages.
func (f Frame) String() string {
	switch f.Type {
	case FrameTypeResponse:
		return fmt.Sprintf("response %q", f.Data)
	case FrameTypeError:
		return fmt.Sprintf("error %q", f.Data)
	case FrameTypeMessage:
		m, err := DecodeMessage(f.Data)
		if err != nil {
			return fmt.Sprintf("message (undecodable: %v)", err)
		}
		return fmt.Sprintf("message id=%s attempts=%d body=%q", m.ID, m.Attempts, m.Body)
	}
	return fmt.Sprintf("frame type %d %q", f.Type, f.Data)
}

// Message is a decoded message frame payload (protocol.md §2.4).
type Message struct {
	Timestamp int64
	Attempts  uint16
	ID        string
	Body      []byte
}

// DecodeMessage decodes the data of a message frame.
func DecodeMessage(b []byte) (Message, error) {
	if len(b) < 26 {
		return Message{}, fmt.Errorf("message frame data is %d bytes, want >= 26", len(b))
	}
	return Message{
		Timestamp: int64(binary.BigEndian.Uint64(b[0:8])),
		Attempts:  binary.BigEndian.Uint16(b[8:10]),
		ID:        string(b[10:26]),
		Body:      append([]byte(nil), b[26:]...),
	}, nil
}

// V2Conn is a raw client connection speaking the nsqd TCP protocol V2 byte by
// byte, for tests that must control or observe exact bytes. Methods that take
// no error return fail the test on error.
type V2Conn struct {
	t    testing.TB
	Conn net.Conn
	r    *bufio.Reader
}

// DialRaw opens a TCP connection to addr without sending the magic. The
// connection is closed when the test ends.
func DialRaw(t testing.TB, addr string) *V2Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &V2Conn{t: t, Conn: c, r: bufio.NewReader(c)}
}

// DialV2 opens a connection to addr and sends the "  V2" magic.
func DialV2(t testing.TB, addr string) *V2Conn {
	t.Helper()
	c := DialRaw(t, addr)
	c.Write([]byte("  V2"))
	return c
}

// Close closes the connection.
func (c *V2Conn) Close() error { return c.Conn.Close() }

// Write writes raw bytes.
func (c *V2Conn) Write(b []byte) {
	c.t.Helper()
	if err := c.Conn.SetWriteDeadline(time.Now().Add(DefaultReadTimeout)); err != nil {
		c.t.Fatalf("set write deadline: %v", err)
	}
	if _, err := c.Conn.Write(b); err != nil {
		c.t.Fatalf("write %q: %v", truncate(b), err)
	}
}

// TryWrite writes raw bytes and returns the error instead of failing (a
// server that rejects a large body may reset the connection mid-write).
func (c *V2Conn) TryWrite(b []byte) error {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(DefaultReadTimeout)); err != nil {
		return err
	}
	_, err := c.Conn.Write(b)
	return err
}

// Command encodes a command line and, if body is non-nil, its size-prefixed body.
func Command(line string, body []byte) []byte {
	var b bytes.Buffer
	b.WriteString(line)
	b.WriteByte('\n')
	if body != nil {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(body)))
		b.Write(n[:])
		b.Write(body)
	}
	return b.Bytes()
}

// Int32 returns v as 4 big-endian bytes.
func Int32(v int32) []byte {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(v))
	return n[:]
}

// MPUBBody builds an MPUB body without its leading body_size field:
// [int32 count]([int32 size][bytes])*. Command adds the body_size.
func MPUBBody(msgs [][]byte) []byte {
	var b bytes.Buffer
	b.Write(Int32(int32(len(msgs))))
	for _, m := range msgs {
		b.Write(Int32(int32(len(m))))
		b.Write(m)
	}
	return b.Bytes()
}

// Send writes a command (see Command).
func (c *V2Conn) Send(line string, body []byte) {
	c.t.Helper()
	c.Write(Command(line, body))
}

// ReadFrame reads one frame, waiting at most timeout.
func (c *V2Conn) ReadFrame(timeout time.Duration) (Frame, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return Frame{}, err
	}
	var hdr [8]byte
	if _, err := io.ReadFull(c.r, hdr[:4]); err != nil {
		return Frame{}, err
	}
	size := int32(binary.BigEndian.Uint32(hdr[:4]))
	if size < 4 || size > 64<<20 {
		return Frame{}, fmt.Errorf("bad frame size %d", size)
	}
	if _, err := io.ReadFull(c.r, hdr[4:8]); err != nil {
		return Frame{}, err
	}
	data := make([]byte, size-4)
	if _, err := io.ReadFull(c.r, data); err != nil {
		return Frame{}, err
	}
	return Frame{Type: int32(binary.BigEndian.Uint32(hdr[4:8])), Data: data}, nil
}

// ReadNonHeartbeat reads frames until one that is not a _heartbeat_ response,
// answering each heartbeat with NOP.
func (c *V2Conn) ReadNonHeartbeat(timeout time.Duration) (Frame, error) {
	deadline := time.Now().Add(timeout)
	for {
		f, err := c.ReadFrame(time.Until(deadline))
		if err != nil {
			return f, err
		}
		if f.Type == FrameTypeResponse && string(f.Data) == "_heartbeat_" {
			if err := c.TryWrite([]byte("NOP\n")); err != nil {
				return Frame{}, err
			}
			continue
		}
		return f, nil
	}
}

// MustFrame reads the next non-heartbeat frame or fails the test.
func (c *V2Conn) MustFrame() Frame {
	c.t.Helper()
	f, err := c.ReadNonHeartbeat(DefaultReadTimeout)
	if err != nil {
		c.t.Fatalf("read frame: %v", err)
	}
	return f
}

// ExpectResponse reads the next frame and fails unless it is a response with data want.
func (c *V2Conn) ExpectResponse(want string) {
	c.t.Helper()
	f := c.MustFrame()
	if f.Type != FrameTypeResponse || string(f.Data) != want {
		c.t.Fatalf("got %v, want response %q", f, want)
	}
}

// ExpectOK reads the next frame and fails unless it is the response OK.
func (c *V2Conn) ExpectOK() {
	c.t.Helper()
	c.ExpectResponse("OK")
}

// ExpectError reads the next frame and fails unless it is an error frame with exactly want.
func (c *V2Conn) ExpectError(want string) {
	c.t.Helper()
	f := c.MustFrame()
	if f.Type != FrameTypeError || string(f.Data) != want {
		c.t.Fatalf("got %v, want error %q", f, want)
	}
}

// ExpectMessage reads the next frame and fails unless it is a message.
func (c *V2Conn) ExpectMessage() Message {
	c.t.Helper()
	return c.ExpectMessageWithin(DefaultReadTimeout)
}

// ExpectMessageWithin is ExpectMessage with an explicit timeout.
func (c *V2Conn) ExpectMessageWithin(timeout time.Duration) Message {
	c.t.Helper()
	f, err := c.ReadNonHeartbeat(timeout)
	if err != nil {
		c.t.Fatalf("read message frame: %v", err)
	}
	if f.Type != FrameTypeMessage {
		c.t.Fatalf("got %v, want a message", f)
	}
	m, err := DecodeMessage(f.Data)
	if err != nil {
		c.t.Fatalf("decode message: %v", err)
	}
	return m
}

// ExpectNothing fails if any non-heartbeat frame arrives within d, or if the
// connection is closed. It answers heartbeats.
func (c *V2Conn) ExpectNothing(d time.Duration) {
	c.t.Helper()
	f, err := c.ReadNonHeartbeat(d)
	if err == nil {
		c.t.Fatalf("got %v, want nothing for %v", f, d)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		c.t.Fatalf("want nothing for %v, got read error %v", d, err)
	}
}

// WaitClosed reads (and discards heartbeats) until the server closes the
// connection, failing if a non-heartbeat frame arrives or it stays open past
// timeout. It returns how long it waited.
func (c *V2Conn) WaitClosed(timeout time.Duration) time.Duration {
	c.t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		f, err := c.ReadFrame(time.Until(deadline))
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				c.t.Fatalf("connection still open after %v", timeout)
			}
			return time.Since(start) // EOF or reset: closed by the server
		}
		if f.Type == FrameTypeResponse && string(f.Data) == "_heartbeat_" {
			continue
		}
		c.t.Fatalf("got %v while waiting for the connection to close", f)
	}
}

// Identify sends IDENTIFY with fields as the JSON body and returns the data
// of the response frame (JSON when feature_negotiation is true, else "OK").
// It fails on an error frame.
func (c *V2Conn) Identify(fields map[string]any) []byte {
	c.t.Helper()
	body, err := json.Marshal(fields)
	if err != nil {
		c.t.Fatalf("marshal IDENTIFY: %v", err)
	}
	c.Send("IDENTIFY", body)
	f := c.MustFrame()
	if f.Type != FrameTypeResponse {
		c.t.Fatalf("IDENTIFY: got %v", f)
	}
	return f.Data
}

// Subscribe sends SUB and expects OK.
func (c *V2Conn) Subscribe(topic, channel string) {
	c.t.Helper()
	c.Send("SUB "+topic+" "+channel, nil)
	c.ExpectOK()
}

// Publish sends PUB and expects OK.
func (c *V2Conn) Publish(topic string, body []byte) {
	c.t.Helper()
	c.Send("PUB "+topic, body)
	c.ExpectOK()
}

// Ready sends RDY n (no reply is expected).
func (c *V2Conn) Ready(n int) {
	c.t.Helper()
	c.Send(fmt.Sprintf("RDY %d", n), nil)
}

// Finish sends FIN id (no reply is expected on success).
func (c *V2Conn) Finish(id string) {
	c.t.Helper()
	c.Send("FIN "+id, nil)
}

func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}
