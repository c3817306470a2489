package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// The peer protocol (DESIGN.md, "Transport"). A connection carries Raft
// messages one way, from the node that dialled it to the node that accepted
// it; the acceptor never writes. After the magic "  R1" come frames:
//
//	frame   = size:u32 payload           size = len(payload), 1..MaxFrameSize
//	hello   = from:u64 to:u64 [reserved] the first frame's payload, 16..4096 bytes
//	batch   = count:u32 record{count}    every later frame's payload, count 1..65536
//	record  = glen:u8 group:glen mlen:u32 msg:mlen
//
// Integers are big-endian. from is the sender's node ID (never 0), to the
// ID the sender believes the acceptor has (0: unknown); bytes after them are
// reserved for later versions and ignored. group is the Raft group's name
// (1..255 bytes); msg is the raftpb.Message in protobuf encoding. A batch
// has no bytes after its last record.
//
// A frame that breaks any of these rules ends the connection with an error
// naming the rule; nothing in it is delivered.
const (
	// frameHeaderSize is the size prefix of every frame.
	frameHeaderSize = 4
	// helloMinSize and helloMaxSize bound the hello frame's payload.
	helloMinSize = 16
	helloMaxSize = 4096
	// batchHeaderSize is a batch's count field.
	batchHeaderSize = 4
	// recordOverhead is a record's fixed part: glen and mlen.
	recordOverhead = 1 + 4
	// maxGroupLen is the longest group name a record can carry.
	maxGroupLen = 255
	// maxBatchCount bounds the envelopes of one frame, so that a frame of
	// tiny records cannot make the reader allocate millions of Envelopes.
	maxBatchCount = 1 << 16
	// unmarshalDepth bounds the nesting of a decoded raftpb.Message (peers
	// never send Responses; entries and snapshots nest two levels).
	unmarshalDepth = 32
)

// errFrame marks a malformed frame or hello: the peer broke the protocol.
var errFrame = errors.New("malformed R1 frame")

func frameErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errFrame, fmt.Sprintf(format, args...))
}

// appendRecord appends env as one record of a batch. It fails when the
// group name cannot be carried or the message cannot be encoded.
func appendRecord(b []byte, env *Envelope) ([]byte, error) {
	if n := len(env.Group); n == 0 || n > maxGroupLen {
		return b, fmt.Errorf("group name %q: length %d out of range 1-%d", env.Group, n, maxGroupLen)
	}
	if env.Msg == nil {
		return b, fmt.Errorf("group %q: nil raft message", env.Group)
	}
	start := len(b)
	b = append(b, byte(len(env.Group)))
	b = append(b, env.Group...)
	lenAt := len(b)
	b = append(b, 0, 0, 0, 0)
	out, err := proto.MarshalOptions{}.MarshalAppend(b, env.Msg)
	if err != nil {
		return b[:start], fmt.Errorf("group %q: encode raft message: %w", env.Group, err)
	}
	binary.BigEndian.PutUint32(out[lenAt:], uint32(len(out)-lenAt-4))
	return out, nil
}

// appendHello appends the hello frame, size prefix included.
func appendHello(b []byte, from, to uint64) []byte {
	b = binary.BigEndian.AppendUint32(b, helloMinSize)
	b = binary.BigEndian.AppendUint64(b, from)
	return binary.BigEndian.AppendUint64(b, to)
}

// parseHello decodes a hello payload.
func parseHello(p []byte) (from, to uint64, err error) {
	if len(p) < helloMinSize {
		return 0, 0, frameErrorf("hello of %d bytes, want at least %d", len(p), helloMinSize)
	}
	from = binary.BigEndian.Uint64(p)
	to = binary.BigEndian.Uint64(p[8:])
	if from == 0 {
		return 0, 0, frameErrorf("hello from node 0")
	}
	return from, to, nil
}

// readFrameSize reads a frame's size prefix and checks it against 1..max.
func readFrameSize(r io.Reader, max int) (int, error) {
	var hdr [frameHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, err
	}
	size := binary.BigEndian.Uint32(hdr[:])
	if size == 0 {
		return 0, frameErrorf("empty frame")
	}
	if uint64(size) > uint64(max) {
		return 0, frameErrorf("frame of %d bytes exceeds the limit of %d", size, max)
	}
	return int(size), nil
}

// frameReadChunk is how much of a large frame is allocated ahead of its bytes.
const frameReadChunk = 1 << 20

// readPayload reads size bytes, reusing buf when it is large enough. A large
// frame's buffer grows as its bytes arrive, so a peer that announces 64 MiB
// and sends nothing costs at most frameReadChunk. A frame that ends early is an
// io.ErrUnexpectedEOF.
func readPayload(r io.Reader, size int, buf []byte) ([]byte, error) {
	if size <= cap(buf) || size <= frameReadChunk {
		if size > cap(buf) {
			buf = make([]byte, size)
		}
		b := buf[:size]
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, noEOF(err)
		}
		return b, nil
	}
	b := make([]byte, 0, frameReadChunk)
	for len(b) < size {
		if len(b) == cap(b) {
			grown := make([]byte, len(b), min(2*cap(b), size))
			copy(grown, b)
			b = grown
		}
		n, err := io.ReadFull(r, b[len(b):min(cap(b), size)])
		b = b[:len(b)+n]
		if err != nil {
			return nil, noEOF(err)
		}
	}
	return b, nil
}

// noEOF turns a clean EOF inside a frame into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// decodeBatch decodes a batch payload. It never panics and never allocates
// more than the payload's size justifies; the envelopes it returns share no
// memory with p.
func decodeBatch(p []byte) ([]Envelope, error) {
	if len(p) < batchHeaderSize {
		return nil, frameErrorf("batch of %d bytes has no count", len(p))
	}
	count := binary.BigEndian.Uint32(p)
	p = p[batchHeaderSize:]
	if count == 0 || count > maxBatchCount {
		return nil, frameErrorf("batch count %d out of range 1-%d", count, maxBatchCount)
	}
	// every record takes at least recordOverhead+1 bytes
	if uint64(count) > uint64(len(p)/(recordOverhead+1)) {
		return nil, frameErrorf("batch count %d does not fit in %d bytes", count, len(p))
	}
	envs := make([]Envelope, count)
	opts := proto.UnmarshalOptions{RecursionLimit: unmarshalDepth}
	for i := range envs {
		glen := int(p[0])
		if glen == 0 {
			return nil, frameErrorf("record %d: empty group name", i)
		}
		if len(p) < 1+glen+4 {
			return nil, frameErrorf("record %d: truncated (group name of %d bytes, %d left)", i, glen, len(p)-1)
		}
		envs[i].Group = string(p[1 : 1+glen])
		p = p[1+glen:]
		mlen := binary.BigEndian.Uint32(p)
		p = p[4:]
		if uint64(mlen) > uint64(len(p)) {
			return nil, frameErrorf("record %d (group %q): message of %d bytes, %d left", i, envs[i].Group, mlen, len(p))
		}
		envs[i].Msg = new(raftpb.Message)
		if err := opts.Unmarshal(p[:mlen], envs[i].Msg); err != nil {
			return nil, fmt.Errorf("%w: record %d (group %q): decode raft message: %v", errFrame, i, envs[i].Group, err)
		}
		p = p[mlen:]
		if i < len(envs)-1 && len(p) == 0 {
			return nil, frameErrorf("batch of %d records ends after record %d", count, i)
		}
	}
	if len(p) != 0 {
		return nil, frameErrorf("%d bytes after the last of %d records", len(p), count)
	}
	return envs, nil
}
