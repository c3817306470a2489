package nsqd

import (
	"fmt"
	"testing"

	"github.com/sluicemq/sluice/protocol"
)

func testBatch(first uint64, bodies ...string) *msgBatch {
	var bs [][]byte
	for _, b := range bodies {
		bs = append(bs, []byte(b))
	}
	data := protocol.AppendMPUB(nil, "t", bs)[len("MPUB t\n")+8:]
	return &msgBatch{data: data, count: len(bodies), firstID: first, ts: 42}
}

func TestMsgQueueMixesBatchesAndSingles(t *testing.T) {
	var q msgQueue
	q.push(&Message{ID: protocol.NewMessageID(1), Body: []byte("single-1")})
	q.pushEntry(batchEntry(testBatch(100, "a", "bb", "ccc")))
	q.push(&Message{ID: protocol.NewMessageID(2), Body: []byte("single-2")})
	if q.len() != 5 {
		t.Fatalf("len %d", q.len())
	}
	got := q.popN(nil, 3, nil)
	want := []string{"single-1", "a", "bb"}
	for i, m := range got {
		if string(m.Body) != want[i] {
			t.Fatalf("popN[%d] = %q, want %q", i, m.Body, want[i])
		}
	}
	if got[1].ID != protocol.NewMessageID(100) || got[1].Timestamp != 42 {
		t.Fatalf("batch message id/ts: %s %d", got[1].ID[:], got[1].Timestamp)
	}
	if m := q.pop(); string(m.Body) != "ccc" || m.ID != protocol.NewMessageID(102) {
		t.Fatalf("pop = %q %s", m.Body, m.ID[:])
	}
	if rest := q.drain(); len(rest) != 1 || string(rest[0].Body) != "single-2" || q.len() != 0 {
		t.Fatalf("drain = %v", rest)
	}
}

func TestSplitEntry(t *testing.T) {
	e := batchEntry(testBatch(10, "m0", "m1", "m2", "m3"))
	head, tail := splitEntry(e, 1)
	if head.len() != 1 || tail.len() != 3 {
		t.Fatalf("split lens %d %d", head.len(), tail.len())
	}
	hm, tm := head.materialize(), tail.materialize()
	if string(hm[0].Body) != "m0" || string(tm[0].Body) != "m1" || tm[2].ID != protocol.NewMessageID(13) {
		t.Fatalf("split content %q %q %s", hm[0].Body, tm[0].Body, tm[2].ID[:])
	}
	// every channel reads a shared batch through its own cursor
	var q1, q2 msgQueue
	b := testBatch(0, "x", "y")
	q1.pushEntry(batchEntry(b))
	q2.pushEntry(batchEntry(b))
	q1.pop()
	if m := q2.pop(); string(m.Body) != "x" {
		t.Fatalf("cursors are shared: %q", m.Body)
	}
}

func TestMsgQueueGrowsAndWraps(t *testing.T) {
	var q msgQueue
	next, pushed := 0, 0
	for round := 0; round < 50; round++ {
		for i := 0; i < 7; i++ {
			q.push(&Message{Body: []byte(fmt.Sprint(pushed))})
			pushed++
		}
		for i := 0; i < 5; i++ {
			m := q.pop()
			if string(m.Body) != fmt.Sprint(next) {
				t.Fatalf("got %s want %d", m.Body, next)
			}
			next++
		}
	}
	if q.len() != 100 {
		t.Fatalf("len %d", q.len())
	}
}
