package nsqd

import (
	"sync/atomic"
	"time"

	"github.com/sluicemq/sluice/protocol"
)

// Message is one channel's copy of a published message together with that
// channel's delivery bookkeeping. Every field after Attempts is guarded by
// the owning channel's lock.
type Message struct {
	ID        protocol.MessageID
	Body      []byte
	Timestamp int64  // ns since the epoch, set when nsqd accepted it
	Attempts  uint16 // deliveries so far

	deferBy time.Duration // DPUB: deferred until Timestamp+deferBy, applied when a channel receives it

	clientID   uint64 // connection the message is in flight to
	idNum      uint64 // in flight: the number ID spells (idNumber), if idIsNum
	idIsNum    bool
	deliveryTS int64 // when it was last sent (ns)
	deadline   int64 // in flight: timeout; deferred: release time (ns)

	// in-flight list links (see inflight.go)
	prev, next *Message
	list       *msgList
	heapIndex  int // position in the deferred heap, -1 when not deferred
}

// idSource hands out message IDs. IDs are a process-wide counter started at
// the wall clock in nanoseconds, so they increase, are unique within this
// process and, as long as fewer than 1e9 messages per second are published,
// never repeat an ID from an earlier run whose messages are still on disk.
type idSource struct{ next atomic.Uint64 }

func newIDSource(now time.Time) *idSource {
	s := &idSource{}
	s.next.Store(uint64(now.UnixNano()))
	return s
}

// reserve returns the first of n consecutive fresh IDs.
func (s *idSource) reserve(n int) uint64 { return s.next.Add(uint64(n)) - uint64(n) }

// appendRecord serializes m as the on-disk record payload (§6.3).
func (m *Message) appendRecord(dst []byte) []byte {
	return protocol.AppendMessage(dst, m.Timestamp, m.Attempts, &m.ID, m.Body)
}

// decodeRecord rebuilds a message read back from a disk queue. The body
// aliases b: the disk queue hands over records in read blocks it never
// writes again.
func decodeRecord(b []byte) (*Message, error) {
	m := new(Message)
	if err := decodeRecordInto(b, m); err != nil {
		return nil, err
	}
	return m, nil
}

// decodeRecordInto is decodeRecord into a struct of the caller's.
func decodeRecordInto(b []byte, m *Message) error {
	ts, attempts, id, body, err := protocol.DecodeMessage(b)
	if err != nil {
		return err
	}
	*m = Message{ID: id, Body: body, Timestamp: ts, Attempts: attempts, heapIndex: -1}
	return nil
}
