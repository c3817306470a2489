package bench

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// ConsumeSink is the raw TCP baseline of consuming: a trivial server that
// accepts the V2 magic, answers IDENTIFY and SUB with OK and, once a
// connection has sent RDY, writes prepared message frames to it, never more
// unfinished than its RDY count; every FIN frees a slot. It serves a fixed
// number of messages in all (shared by every connection), as many as the
// consumers are told to expect. It measures what the consumers, the
// loopback and the kernel cost with no queue at all.
type ConsumeSink struct {
	*tcpServer
	bodySize int
	// remaining counts the messages no connection has claimed yet.
	remaining atomic.Int64
	seq       atomic.Uint64 // message ids
	sent      atomic.Int64
	fins      atomic.Int64
}

// NewConsumeSink starts a consume sink on addr that serves messages
// messages of bodySize bytes.
func NewConsumeSink(addr string, messages int64, bodySize int) (*ConsumeSink, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("consume sink listen %s: %w", addr, err)
	}
	s := &ConsumeSink{bodySize: max(bodySize, 8)}
	s.remaining.Store(messages)
	s.tcpServer = serveTCP(ln, s.serve)
	return s, nil
}

// Sent returns how many messages the sink has written; Finished how many
// FINs it has read.
func (s *ConsumeSink) Sent() int64     { return s.sent.Load() }
func (s *ConsumeSink) Finished() int64 { return s.fins.Load() }

// Close stops the listener, waits up to grace for the clients to close
// their connections (so that FINs still in flight are counted), then closes
// the rest and waits for the sink's goroutines.
func (s *ConsumeSink) Close(grace time.Duration) error { return s.close(grace) }

// claim takes up to n messages from the shared remainder.
func (s *ConsumeSink) claim(n int64) int64 {
	for {
		left := s.remaining.Load()
		k := min(n, left)
		if k <= 0 {
			return 0
		}
		if s.remaining.CompareAndSwap(left, left-k) {
			return k
		}
	}
}

// sinkConn is the flow-control state of one subscribed connection,
// shared by its reader (RDY, FIN) and its writer (messages).
type sinkConn struct {
	mu     sync.Mutex
	cond   sync.Cond
	rdy    int64 // the last RDY count
	sent   int64 // messages written (reserved before the write)
	fins   int64
	closed bool
}

// inFlight returns the messages written and not yet finished.
func (sc *sinkConn) inFlight() int64 { return sc.sent - sc.fins }

// serve reads commands until the connection fails or closes.
func (s *ConsumeSink) serve(c net.Conn) error {
	r := bufio.NewReaderSize(c, 64<<10)
	var magic [4]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil {
		return err
	}
	if !bytes.Equal(magic[:], magicV2) {
		return errSinkProtocol
	}
	sc := &sinkConn{}
	sc.cond.L = &sc.mu
	var writerDone chan struct{}
	defer func() {
		sc.mu.Lock()
		sc.closed = true
		sc.cond.Broadcast()
		sc.mu.Unlock()
		if writerDone != nil {
			<-writerDone
		}
	}()
	var hdr [4]byte
	changed := false
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return err
		}
		line = line[:len(line)-1]
		name, arg, _ := bytes.Cut(line, []byte{' '})
		switch string(name) {
		case "NOP":
		case "FIN":
			if len(arg) != 16 {
				return errSinkProtocol
			}
			sc.mu.Lock()
			sc.fins++
			bad := sc.fins > sc.sent
			sc.mu.Unlock()
			if bad {
				return fmt.Errorf("%w: FIN of a message never sent", errSinkProtocol)
			}
			s.fins.Add(1)
			changed = true
		case "RDY":
			n, err := strconv.ParseInt(string(arg), 10, 64)
			if err != nil || n < 0 {
				return errSinkProtocol
			}
			sc.mu.Lock()
			sc.rdy = n
			sc.mu.Unlock()
			changed = true
		case "IDENTIFY":
			if _, err := io.ReadFull(r, hdr[:]); err != nil {
				return err
			}
			if _, err := r.Discard(int(binary.BigEndian.Uint32(hdr[:]))); err != nil {
				return err
			}
			if _, err := c.Write(okFrame); err != nil {
				return err
			}
		case "SUB":
			if writerDone != nil {
				return fmt.Errorf("%w: second SUB", errSinkProtocol)
			}
			if _, err := c.Write(okFrame); err != nil {
				return err
			}
			writerDone = make(chan struct{})
			go func() {
				defer close(writerDone)
				s.write(c, sc)
			}()
		case "CLS":
			return nil
		default:
			return fmt.Errorf("%w: command %q", errSinkProtocol, name)
		}
		// Every command already read is handled before the writer is
		// woken, as a server reading FINs in batches would.
		if changed && r.Buffered() == 0 {
			sc.mu.Lock()
			sc.cond.Signal()
			sc.mu.Unlock()
			changed = false
		}
	}
}

// write sends messages on c while its RDY allows and messages remain, then
// waits for FINs or a new RDY; it returns when the connection closes or
// a write fails.
func (s *ConsumeSink) write(c net.Conn, sc *sinkConn) {
	w := bufio.NewWriterSize(c, 64<<10)
	frame := s.messageFrame()
	for {
		sc.mu.Lock()
		for !sc.closed && sc.inFlight() >= sc.rdy {
			sc.cond.Wait()
		}
		if sc.closed {
			sc.mu.Unlock()
			return
		}
		k := s.claim(sc.rdy - sc.inFlight())
		if k == 0 {
			// Everything is claimed: nothing more to send on any
			// connection; wait for the close.
			for !sc.closed {
				sc.cond.Wait()
			}
			sc.mu.Unlock()
			return
		}
		sc.sent += k // reserved before the write: a FIN may come back at once
		sc.mu.Unlock()
		for ; k > 0; k-- {
			putHexID(frame[8+msgAttemptsEnd:8+msgIDEnd], s.seq.Add(1))
			if _, err := w.Write(frame); err != nil {
				c.Close()
				return
			}
			s.sent.Add(1)
		}
		if err := w.Flush(); err != nil {
			c.Close()
			return
		}
	}
}

// messageFrame returns a complete message frame (attempts 1) whose id is
// patched per message; the body's first 8 bytes carry the time it was made.
func (s *ConsumeSink) messageFrame() []byte {
	now := time.Now().UnixNano()
	f := make([]byte, 0, 8+msgIDEnd+s.bodySize)
	f = binary.BigEndian.AppendUint32(f, uint32(4+msgIDEnd+s.bodySize))
	f = binary.BigEndian.AppendUint32(f, uint32(FrameMessage))
	f = binary.BigEndian.AppendUint64(f, uint64(now))
	f = binary.BigEndian.AppendUint16(f, 1)
	f = append(f, "0000000000000000"...)
	f = binary.BigEndian.AppendUint64(f, uint64(now))
	for i := 8; i < s.bodySize; i++ {
		f = append(f, 'a'+byte(i%26))
	}
	return f
}

// putHexID writes v as 16 lower-case hex digits into id.
func putHexID(id []byte, v uint64) {
	const digits = "0123456789abcdef"
	for i := 15; i >= 0; i-- {
		id[i] = digits[v&0xf]
		v >>= 4
	}
}
