package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// A segment record is
//
//	[len u32][crc u32][kind u8][seq u64][ts i64][deliver_at i64][body]
//
// len counts the bytes after the crc (kind through body); crc is CRC-32C
// of those bytes. Integers are big-endian.
const (
	recHeader    = 8             // len + crc
	recFixed     = 1 + 8 + 8 + 8 // kind, seq, ts, deliver_at
	recOverhead  = recHeader + recFixed
	kindMessage  = byte(1)
	maxRecordLen = 1<<31 - 1 - recHeader
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Record is one message of a topic log.
type Record struct {
	Seq       uint64
	TS        int64 // when nsqd accepted it (ns since the epoch)
	DeliverAt int64 // deferred (DPUB) until this time; 0 = at once
	Body      []byte
}

// appendRecord encodes a message record onto dst.
func appendRecord(dst []byte, seq uint64, ts, deliverAt int64, body []byte) []byte {
	start := len(dst)
	dst = binary.BigEndian.AppendUint32(dst, uint32(recFixed+len(body)))
	dst = append(dst, 0, 0, 0, 0)
	dst = append(dst, kindMessage)
	dst = binary.BigEndian.AppendUint64(dst, seq)
	dst = binary.BigEndian.AppendUint64(dst, uint64(ts))
	dst = binary.BigEndian.AppendUint64(dst, uint64(deliverAt))
	dst = append(dst, body...)
	crc := crc32.Checksum(dst[start+recHeader:], castagnoli)
	binary.BigEndian.PutUint32(dst[start+4:], crc)
	return dst
}

// errShort means b ends inside a record (more bytes are needed).
var errShort = errors.New("short record")

// corruptError describes a record that can never be valid.
type corruptError struct{ reason string }

func (e *corruptError) Error() string { return "corrupt record: " + e.reason }

// decodeRecord decodes the record at the start of b and returns it with its
// encoded size. The body aliases b. It returns errShort when b holds only
// part of a record whose length is plausible, and a *corruptError for a
// record that fails its checks. maxLen bounds a plausible length.
func decodeRecord(b []byte, maxLen int, verify bool) (Record, int, error) {
	if len(b) < recHeader {
		return Record{}, 0, errShort
	}
	n := int(binary.BigEndian.Uint32(b))
	if n < recFixed || n > maxLen {
		return Record{}, 0, &corruptError{fmt.Sprintf("length %d out of range", n)}
	}
	if len(b) < recHeader+n {
		return Record{}, 0, errShort
	}
	payload := b[recHeader : recHeader+n]
	if verify && crc32.Checksum(payload, castagnoli) != binary.BigEndian.Uint32(b[4:]) {
		return Record{}, 0, &corruptError{"checksum mismatch"}
	}
	if payload[0] != kindMessage {
		return Record{}, 0, &corruptError{fmt.Sprintf("unknown kind %d", payload[0])}
	}
	r := Record{
		Seq:       binary.BigEndian.Uint64(payload[1:]),
		TS:        int64(binary.BigEndian.Uint64(payload[9:])),
		DeliverAt: int64(binary.BigEndian.Uint64(payload[17:])),
		Body:      payload[recFixed:n:n],
	}
	return r, recHeader + n, nil
}
