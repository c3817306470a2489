package protocol

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// MsgIDLength is the length of a message ID on the wire.
const MsgIDLength = 16

// MessageHeaderSize is the fixed part of a serialized message: timestamp,
// attempts and ID.
const MessageHeaderSize = 8 + 2 + MsgIDLength

// MessageID is the 16-byte printable ID of a message.
type MessageID [MsgIDLength]byte

// NewMessageID hex-encodes a 64-bit number into a MessageID.
func NewMessageID(n uint64) MessageID {
	var raw [8]byte
	var id MessageID
	binary.BigEndian.PutUint64(raw[:], n)
	hex.Encode(id[:], raw[:])
	return id
}

// AppendMessage appends the serialization of §2.4 (also the on-disk record
// payload) to dst.
func AppendMessage(dst []byte, ts int64, attempts uint16, id *MessageID, body []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(ts))
	dst = binary.BigEndian.AppendUint16(dst, attempts)
	dst = append(dst, id[:]...)
	return append(dst, body...)
}

// AppendMessageFrame appends a complete message frame (size, type 2, message).
func AppendMessageFrame(dst []byte, ts int64, attempts uint16, id *MessageID, body []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(4+MessageHeaderSize+len(body)))
	dst = binary.BigEndian.AppendUint32(dst, uint32(FrameTypeMessage))
	return AppendMessage(dst, ts, attempts, id, body)
}

// DecodeMessage splits a serialized message. body aliases b.
func DecodeMessage(b []byte) (ts int64, attempts uint16, id MessageID, body []byte, err error) {
	if len(b) < MessageHeaderSize {
		return 0, 0, id, nil, fmt.Errorf("decode message: %d bytes is shorter than the %d-byte header", len(b), MessageHeaderSize)
	}
	ts = int64(binary.BigEndian.Uint64(b[:8]))
	attempts = binary.BigEndian.Uint16(b[8:10])
	copy(id[:], b[10:26])
	return ts, attempts, id, b[26:], nil
}
