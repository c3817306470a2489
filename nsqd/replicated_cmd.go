package nsqd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/sluicemq/sluice/store"
)

// The commands of a replicated topic's Raft group. Every replica applies
// them in the same order, so its log holds the same messages under the
// same sequence numbers (message IDs) as every other replica's.
//
//	publish:  [1] then per entry [ts i64][deliver_at i64][count u32][len u32][bytes]
//	          (count 0: bytes is one body; else an MPUB pack of count messages)
//	channel:  [2][start kind len u8][start kind][start time i64][name]
//	cursors:  [3] then per channel [len u32][a journal state record of the cursor]
//	delete:   [4][name]   (a channel deleted)
//	policy:   [5][channel name len u8][channel name][policy query]
//	          (the topic's policy when the name is empty, a channel's
//	          otherwise; the query holds /topic/config's or
//	          /channel/config's policy parameters)
const (
	cmdPublish       = 1
	cmdChannel       = 2
	cmdCursors       = 3
	cmdDeleteChannel = 4
	cmdPolicy        = 5
)

// policyKeys are the parameters a policy command carries.
var (
	topicPolicyKeys   = []string{"ttl", "max_depth", "overflow"}
	channelPolicyKeys = []string{"max_attempts", "dead_letter_topic", "ttl"}
)

// encodePolicyCmd encodes the policy parameters of q for channel ("" for
// the topic).
func encodePolicyCmd(channel string, q url.Values) []byte {
	keys := topicPolicyKeys
	if channel != "" {
		keys = channelPolicyKeys
	}
	only := url.Values{}
	for _, k := range keys {
		if v, ok := q[k]; ok {
			only[k] = v
		}
	}
	b := []byte{cmdPolicy, byte(len(channel))}
	b = append(b, channel...)
	return append(b, only.Encode()...)
}

func decodePolicyCmd(b []byte) (string, url.Values, error) {
	if len(b) < 2 || b[0] != cmdPolicy || len(b) < 2+int(b[1]) {
		return "", nil, errBadCommand
	}
	channel := string(b[2 : 2+int(b[1])])
	q, err := url.ParseQuery(string(b[2+int(b[1]):]))
	if err != nil {
		return "", nil, fmt.Errorf("%w: %v", errBadCommand, err)
	}
	return channel, q, nil
}

var errBadCommand = errors.New("malformed replicated topic command")

// encodePublish encodes ents as one publish command.
func encodePublish(ents []store.Entry) []byte {
	n := 1
	for i := range ents {
		n += 24 + len(ents[i].Body) + len(ents[i].Packed)
	}
	b := make([]byte, 1, n)
	b[0] = cmdPublish
	for i := range ents {
		e := &ents[i]
		b = binary.BigEndian.AppendUint64(b, uint64(e.TS))
		b = binary.BigEndian.AppendUint64(b, uint64(e.DeliverAt))
		data, count := e.Body, 0
		if e.Packed != nil {
			data, count = e.Packed, e.Count
		}
		b = binary.BigEndian.AppendUint32(b, uint32(count))
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		b = append(b, data...)
	}
	return b
}

// decodePublish returns the entries of a publish command. The entries
// alias b. A pack is checked to hold exactly its count of messages.
func decodePublish(b []byte) ([]store.Entry, error) {
	if len(b) < 1 || b[0] != cmdPublish {
		return nil, errBadCommand
	}
	b = b[1:]
	var ents []store.Entry
	for len(b) > 0 {
		if len(b) < 24 {
			return nil, fmt.Errorf("%w: truncated entry header", errBadCommand)
		}
		ts := int64(binary.BigEndian.Uint64(b))
		at := int64(binary.BigEndian.Uint64(b[8:]))
		count := binary.BigEndian.Uint32(b[16:])
		size := binary.BigEndian.Uint32(b[20:])
		b = b[24:]
		if uint64(size) > uint64(len(b)) {
			return nil, fmt.Errorf("%w: entry of %d bytes, %d left", errBadCommand, size, len(b))
		}
		data := b[:size:size]
		b = b[size:]
		if count == 0 {
			ents = append(ents, store.Entry{TS: ts, DeliverAt: at, Body: data})
			continue
		}
		if _, err := packOffset(data, int(count)); err != nil {
			return nil, err
		}
		ents = append(ents, store.Entry{TS: ts, DeliverAt: at, Packed: data, Count: int(count)})
	}
	return ents, nil
}

// packOffset returns the byte offset of message k of an MPUB pack
// ([u32 size][body]...); k may equal the pack's count (its end).
func packOffset(p []byte, k int) (int, error) {
	off := 0
	for i := 0; i < k; i++ {
		if len(p)-off < 4 {
			return 0, fmt.Errorf("%w: pack shorter than its count", errBadCommand)
		}
		size := int(binary.BigEndian.Uint32(p[off:]))
		if size > len(p)-off-4 {
			return 0, fmt.Errorf("%w: pack message overruns the pack", errBadCommand)
		}
		off += 4 + size
	}
	return off, nil
}

// skipMessages drops the first n messages of ents (already in the log
// when entries are applied again after a restart) and returns the rest
// and how many of n it could not drop.
func skipMessages(ents []store.Entry, n uint64) ([]store.Entry, uint64) {
	for n > 0 && len(ents) > 0 {
		e := &ents[0]
		if e.Packed == nil {
			ents = ents[1:]
			n--
			continue
		}
		if uint64(e.Count) <= n {
			n -= uint64(e.Count)
			ents = ents[1:]
			continue
		}
		off, _ := packOffset(e.Packed, int(n)) // checked by decodePublish
		e.Packed = e.Packed[off:]
		e.Count -= int(n)
		n = 0
	}
	return ents, n
}

// encodeChannelCmd encodes the creation of a channel starting at start.
func encodeChannelCmd(name string, start channelStart) []byte {
	b := []byte{cmdChannel, byte(len(start.kind))}
	b = append(b, start.kind...)
	var ts int64
	if start.kind == "time" {
		ts = start.at.UnixNano()
	}
	b = binary.BigEndian.AppendUint64(b, uint64(ts))
	return append(b, name...)
}

func decodeChannelCmd(b []byte) (string, channelStart, error) {
	if len(b) < 2 || b[0] != cmdChannel {
		return "", channelStart{}, errBadCommand
	}
	k := int(b[1])
	if len(b) < 2+k+8+1 {
		return "", channelStart{}, fmt.Errorf("%w: truncated channel command", errBadCommand)
	}
	start := channelStart{kind: string(b[2 : 2+k])}
	if start.kind == "time" {
		start.at = time.Unix(0, int64(binary.BigEndian.Uint64(b[2+k:])))
	}
	return string(b[2+k+8:]), start, nil
}

// encodeCursors encodes the cursors of channels (journal state records).
func encodeCursors(states map[string]*store.Cursor) []byte {
	b := []byte{cmdCursors}
	for name, c := range states {
		rec := store.EncodeCursorState(nil, name, c)
		b = binary.BigEndian.AppendUint32(b, uint32(len(rec)))
		b = append(b, rec...)
	}
	return b
}

func decodeCursors(b []byte) (map[string]*store.Cursor, error) {
	if len(b) < 1 || b[0] != cmdCursors {
		return nil, errBadCommand
	}
	b = b[1:]
	out := make(map[string]*store.Cursor)
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, fmt.Errorf("%w: truncated cursor", errBadCommand)
		}
		n := binary.BigEndian.Uint32(b)
		if uint64(n) > uint64(len(b)-4) {
			return nil, fmt.Errorf("%w: cursor overruns the command", errBadCommand)
		}
		name, c, err := store.DecodeCursorState(b[4 : 4+n])
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errBadCommand, err)
		}
		out[name] = c
		b = b[4+n:]
	}
	return out, nil
}
