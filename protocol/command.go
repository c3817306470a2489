package protocol

import (
	"bytes"
	"encoding/binary"
)

// MaxParams is the most space-separated tokens SplitParams keeps; no command
// needs more and extra trailing parameters are ignored (§2.2).
const MaxParams = 4

// SplitParams splits a command line (without its trailing LF; a trailing CR
// is stripped) on every single space into dst, which must have capacity for
// MaxParams tokens. Tokens alias line; nothing is allocated.
func SplitParams(line []byte, dst [][]byte) [][]byte {
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	dst = dst[:0]
	for len(dst) < MaxParams-1 {
		i := bytes.IndexByte(line, ' ')
		if i < 0 {
			break
		}
		dst = append(dst, line[:i])
		line = line[i+1:]
	}
	if len(dst) == MaxParams-1 {
		// keep only the next token; anything after it is ignored
		if i := bytes.IndexByte(line, ' '); i >= 0 {
			line = line[:i]
		}
	}
	return append(dst, line)
}

// ParseUint parses an unsigned decimal made only of ASCII digits. An empty
// string is 0 (§3.6 quirk). ok is false for any other byte or on overflow of
// max.
func ParseUint(b []byte, max uint64) (v uint64, ok bool) {
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
		if v > max {
			return v, false
		}
	}
	return v, true
}

// ParseMPUB parses the body of an MPUB command after its int32 body size:
// [int32 count]([int32 size][bytes])*. Parsing is structure driven; it
// returns the message bodies as sub-slices of body (no copies) or a fatal
// protocol error with the reference texts (§3.13). maxMsgSize bounds each
// message; maxBodySize bounds the count ((maxBodySize-4)/5). Bytes left after
// the last message are an error (E_BAD_BODY), since they mean the declared
// count does not match the body.
func ParseMPUB(body []byte, maxMsgSize, maxBodySize int64, dst [][]byte) ([][]byte, *Error) {
	if len(body) < 4 {
		return nil, Fatalf(ErrBadBody, "MPUB failed to read message count")
	}
	count := int32(binary.BigEndian.Uint32(body))
	body = body[4:]
	if count < 1 || int64(count) > (maxBodySize-4)/5 {
		return nil, Fatalf(ErrBadBody, "MPUB invalid message count %d", count)
	}
	// each message needs at least 5 bytes; cap the preallocation by what the body can hold
	if need := int(count); cap(dst) < need && need <= len(body)/5+1 {
		dst = make([][]byte, 0, need)
	}
	dst = dst[:0]
	for i := int32(0); i < count; i++ {
		if len(body) < 4 {
			return nil, Fatalf(ErrBadMessage, "MPUB failed to read message(%d) body size", i)
		}
		size := int32(binary.BigEndian.Uint32(body))
		body = body[4:]
		if size <= 0 {
			return nil, Fatalf(ErrBadMessage, "MPUB invalid message(%d) body size %d", i, size)
		}
		if int64(size) > maxMsgSize {
			return nil, Fatalf(ErrBadMessage, "MPUB message too big %d > %d", size, maxMsgSize)
		}
		if int(size) > len(body) {
			return nil, Fatalf(ErrBadMessage, "MPUB failed to read message body")
		}
		dst = append(dst, body[:size:size])
		body = body[size:]
	}
	if len(body) != 0 {
		return nil, Fatalf(ErrBadBody, "MPUB body size does not match its %d messages (%d bytes left)", count, len(body))
	}
	return dst, nil
}

// AppendMPUB appends a complete MPUB command for topic with the given bodies.
func AppendMPUB(dst []byte, topic string, bodies [][]byte) []byte {
	dst = append(dst, "MPUB "...)
	dst = append(dst, topic...)
	dst = append(dst, '\n')
	size := 4
	for _, b := range bodies {
		size += 4 + len(b)
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(size))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(bodies)))
	for _, b := range bodies {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(b)))
		dst = append(dst, b...)
	}
	return dst
}

// AppendPUB appends a complete PUB command.
func AppendPUB(dst []byte, topic string, body []byte) []byte {
	dst = append(dst, "PUB "...)
	dst = append(dst, topic...)
	dst = append(dst, '\n')
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(body)))
	return append(dst, body...)
}
