package protocol

// The nsqd <-> nsqlookupd registration protocol "V1" (protocol.md §7).
//
// Requests are text lines "NAME[ param...]\n"; only IDENTIFY carries a body
// ([int32 size][JSON]). Every reply, success or error, is [int32 size][data]
// with no frame type. Success data is "OK" or JSON, error data is
// "<CODE> <description>", and every error closes the connection.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Lookup command names (§7.2).
const (
	LookupCmdIdentify   = "IDENTIFY"
	LookupCmdRegister   = "REGISTER"
	LookupCmdUnregister = "UNREGISTER"
	LookupCmdPing       = "PING"
)

// MaxLookupIdentifySize bounds an IDENTIFY body accepted by nsqlookupd. The
// reference does not bound it; a real body is ~150 bytes, so 5 MiB is a
// generous ceiling that still stops a peer from making lookupd allocate
// gigabytes from a forged size prefix.
const MaxLookupIdentifySize = 5 << 20

// LookupOK is the success reply to REGISTER, UNREGISTER and PING.
var LookupOK = []byte("OK")

// LookupIdentify is the IDENTIFY body nsqd sends to nsqlookupd (§7.2).
// Field order is the JSON key order, alphabetical like the reference.
type LookupIdentify struct {
	BroadcastAddress string `json:"broadcast_address"`
	Hostname         string `json:"hostname"`
	HTTPPort         int    `json:"http_port"`
	TCPPort          int    `json:"tcp_port"`
	// TopologyRegion and TopologyZone are post-1.3.0 extensions (§16.1),
	// omitted when empty so the body matches 1.3.0 byte for byte.
	TopologyRegion string `json:"topology_region,omitempty"`
	TopologyZone   string `json:"topology_zone,omitempty"`
	Version        string `json:"version"`
}

// Validate reports whether every field nsqlookupd requires is present and
// non-zero (broadcast_address, tcp_port, http_port, version).
func (li *LookupIdentify) Validate() error {
	if li.BroadcastAddress == "" || li.TCPPort == 0 || li.HTTPPort == 0 || li.Version == "" {
		return errors.New("missing fields")
	}
	return nil
}

// LookupIdentifyReply is nsqlookupd's reply to IDENTIFY: the lookupd
// describing itself. nsqd uses BroadcastAddress:HTTPPort to query /channels
// (§5.2). Keys are alphabetical like the reference.
type LookupIdentifyReply struct {
	BroadcastAddress string `json:"broadcast_address"`
	Hostname         string `json:"hostname"`
	HTTPPort         int    `json:"http_port"`
	TCPPort          int    `json:"tcp_port"`
	Version          string `json:"version"`
}

// Lookup errors reuse Error and the E_* codes of frame.go (E_BAD_PROTOCOL,
// E_INVALID, E_BAD_BODY, E_BAD_TOPIC, E_BAD_CHANNEL); on the V1 wire every
// one of them is fatal and travels as a plain reply "<code> <desc>".

// AppendLookupReply appends the reply frame [int32 len(data)][data] to dst.
func AppendLookupReply(dst, data []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(data)))
	return append(dst, data...)
}

// WriteLookupReply writes one reply frame to w in a single Write call.
func WriteLookupReply(w io.Writer, data []byte) error {
	_, err := w.Write(AppendLookupReply(make([]byte, 0, 4+len(data)), data))
	return err
}

// ReadLookupReply reads one reply frame from r. Sizes below zero or above max
// are rejected before any allocation.
func ReadLookupReply(r io.Reader, max int32) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("read reply size: %w", err)
	}
	size := int32(binary.BigEndian.Uint32(hdr[:]))
	if size < 0 || size > max {
		return nil, fmt.Errorf("reply size %d out of range [0, %d]", size, max)
	}
	buf := make([]byte, size)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("read reply body (%d bytes): %w", size, err)
	}
	return buf, nil
}

// IsLookupErrorReply reports whether a reply carries an error ("E_..." code)
// rather than OK or JSON.
func IsLookupErrorReply(data []byte) bool {
	return bytes.HasPrefix(data, []byte("E_"))
}

// AppendLookupCommand appends "NAME[ param...]\n" to dst.
func AppendLookupCommand(dst []byte, name string, params ...string) []byte {
	dst = append(dst, name...)
	for _, p := range params {
		dst = append(dst, ' ')
		dst = append(dst, p...)
	}
	return append(dst, '\n')
}

// AppendLookupIdentify appends "IDENTIFY\n[int32 size][body]" to dst.
func AppendLookupIdentify(dst, body []byte) []byte {
	dst = append(dst, LookupCmdIdentify+"\n"...)
	return AppendLookupReply(dst, body) // same [size][data] framing
}

// ParseLookupCommand splits a request line into the command name and its
// parameters: surrounding whitespace (including CR and LF) is trimmed and the
// rest is split on single spaces, like the reference (so "A  b" yields the
// params ["", "b"]).
func ParseLookupCommand(line []byte) (name string, params []string) {
	s := strings.TrimSpace(string(line))
	parts := strings.Split(s, " ")
	return parts[0], parts[1:]
}
