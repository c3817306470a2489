package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Magic bytes that open a connection.
const (
	MagicV2 = "  V2" // nsqd client protocol
	MagicV1 = "  V1" // nsqlookupd registration protocol
	// MagicR1 opens a peer connection carrying Raft messages between the
	// nsqds of a replicated cluster (replica/DESIGN.md, "Transport"). An
	// nsqd without replication answers it E_BAD_PROTOCOL, as NSQ does.
	MagicR1 = "  R1"
)

// FrameType is the type field of an nsqd V2 frame.
type FrameType int32

// Frame types sent by nsqd.
const (
	FrameTypeResponse FrameType = 0
	FrameTypeError    FrameType = 1
	FrameTypeMessage  FrameType = 2
)

// Well-known response bodies.
var (
	OK        = []byte("OK")
	Heartbeat = []byte("_heartbeat_")
	CloseWait = []byte("CLOSE_WAIT")
)

// FrameHeaderSize is the size of a V2 frame header: int32 size + int32 type.
const FrameHeaderSize = 8

// AppendFrame appends a complete V2 frame (size, type, data) to dst.
func AppendFrame(dst []byte, t FrameType, data []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(data)+4))
	dst = binary.BigEndian.AppendUint32(dst, uint32(t))
	return append(dst, data...)
}

// MaxFrameSize bounds the frames ReadFrame accepts; a client-side guard.
const MaxFrameSize = 64 << 20

// ErrFrameTooBig is returned by ReadFrame for a frame larger than its limit.
var ErrFrameTooBig = errors.New("frame too big")

// ReadFrame reads one V2 frame from r (client side). The returned data is a
// fresh slice owned by the caller.
func ReadFrame(r io.Reader) (FrameType, []byte, error) {
	var hdr [FrameHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	size := int32(binary.BigEndian.Uint32(hdr[:4]))
	if size < 4 || size > MaxFrameSize {
		return 0, nil, fmt.Errorf("read frame: size %d: %w", size, ErrFrameTooBig)
	}
	data := make([]byte, size-4)
	if _, err := io.ReadFull(r, data); err != nil {
		return 0, nil, fmt.Errorf("read frame body: %w", err)
	}
	return FrameType(binary.BigEndian.Uint32(hdr[4:8])), data, nil
}

// Error is a protocol error as nsqd sends it in an error frame: a code such as
// E_INVALID, an optional human description, and whether it closes the
// connection.
type Error struct {
	Code  string
	Desc  string
	Fatal bool
}

func (e *Error) Error() string {
	if e.Desc == "" {
		return e.Code
	}
	return e.Code + " " + e.Desc
}

// Fatalf builds a fatal protocol error.
func Fatalf(code, format string, args ...any) *Error {
	return &Error{Code: code, Desc: fmt.Sprintf(format, args...), Fatal: true}
}

// Softf builds a non-fatal protocol error (E_FIN_FAILED, E_REQ_FAILED, E_TOUCH_FAILED).
func Softf(code, format string, args ...any) *Error {
	return &Error{Code: code, Desc: fmt.Sprintf(format, args...)}
}

// Error codes (§3.15).
const (
	ErrBadProtocol    = "E_BAD_PROTOCOL"
	ErrInvalid        = "E_INVALID"
	ErrBadBody        = "E_BAD_BODY"
	ErrBadTopic       = "E_BAD_TOPIC"
	ErrBadChannel     = "E_BAD_CHANNEL"
	ErrBadMessage     = "E_BAD_MESSAGE"
	ErrPubFailed      = "E_PUB_FAILED"
	ErrMPubFailed     = "E_MPUB_FAILED"
	ErrDPubFailed     = "E_DPUB_FAILED"
	ErrFinFailed      = "E_FIN_FAILED"
	ErrReqFailed      = "E_REQ_FAILED"
	ErrTouchFailed    = "E_TOUCH_FAILED"
	ErrIdentifyFailed = "E_IDENTIFY_FAILED"
	ErrAuthDisabled   = "E_AUTH_DISABLED"
	ErrAuthFailed     = "E_AUTH_FAILED"
	ErrUnauthorized   = "E_UNAUTHORIZED"
	ErrAuthFirst      = "E_AUTH_FIRST"
	ErrAuthError      = "E_AUTH_ERROR"
	ErrSubFailed      = "E_SUB_FAILED"
)
