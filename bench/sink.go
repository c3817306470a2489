package bench

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
)

// okFrame is a complete response frame carrying "OK".
var okFrame = []byte{0, 0, 0, 6, 0, 0, 0, 0, 'O', 'K'}

// Sink is the raw TCP baseline: a trivial server that accepts the V2 magic,
// reads command lines and their bodies (PUB, MPUB, DPUB, IDENTIFY), discards
// them and answers every command except NOP with an OK frame. It measures
// what the publisher, the loopback and the kernel cost with no queue at all.
type Sink struct {
	*tcpServer
	messages atomic.Int64
}

// NewSink starts a sink listening on addr (e.g. "127.0.0.1:0").
func NewSink(addr string) (*Sink, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("sink listen %s: %w", addr, err)
	}
	s := &Sink{}
	s.tcpServer = serveTCP(ln, s.serve)
	return s, nil
}

// Messages returns how many messages the sink has received.
func (s *Sink) Messages() int64 { return s.messages.Load() }

// Close stops the listener, closes every connection and waits for all of
// the sink's goroutines.
func (s *Sink) Close() error { return s.close(0) }

var errSinkProtocol = errors.New("sink: protocol error")

// serve handles one connection until it fails or closes.
func (s *Sink) serve(c net.Conn) error {
	r := bufio.NewReaderSize(c, 64<<10)
	w := bufio.NewWriterSize(c, 4<<10)
	var magic [4]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil {
		return err
	}
	if !bytes.Equal(magic[:], magicV2) {
		return errSinkProtocol
	}
	var hdr [8]byte
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return err
		}
		name := line[:len(line)-1]
		if i := bytes.IndexByte(name, ' '); i >= 0 {
			name = name[:i]
		}
		switch string(name) { // no allocation: the compiler special-cases this conversion
		case "NOP":
			continue
		case "MPUB":
			if _, err := io.ReadFull(r, hdr[:8]); err != nil {
				return err
			}
			size := int(binary.BigEndian.Uint32(hdr[0:4]))
			count := int64(binary.BigEndian.Uint32(hdr[4:8]))
			if size < 4 {
				return errSinkProtocol
			}
			if _, err := r.Discard(size - 4); err != nil {
				return err
			}
			s.messages.Add(count)
		case "PUB", "DPUB", "IDENTIFY", "AUTH":
			if _, err := io.ReadFull(r, hdr[:4]); err != nil {
				return err
			}
			if _, err := r.Discard(int(binary.BigEndian.Uint32(hdr[0:4]))); err != nil {
				return err
			}
			if string(name) != "IDENTIFY" && string(name) != "AUTH" {
				s.messages.Add(1)
			}
		}
		if _, err := w.Write(okFrame); err != nil {
			return err
		}
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return err
			}
		}
	}
}
