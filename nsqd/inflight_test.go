package nsqd

import (
	"testing"
	"time"

	"github.com/sluicemq/sluice/protocol"
)

func msgWithID(n uint64) *Message {
	return &Message{ID: protocol.NewMessageID(n), heapIndex: -1}
}

func TestInFlightTimeoutOrder(t *testing.T) {
	f := newInFlight()
	const sec = int64(time.Second)
	a, b, c := msgWithID(1), msgWithID(2), msgWithID(3)
	if !f.add(a, 7, 0, time.Second) || !f.add(b, 7, sec/2, time.Second) || !f.add(c, 8, sec/2, 5*time.Second) {
		t.Fatal("add failed")
	}
	if f.add(msgWithID(1), 7, 0, time.Second) {
		t.Fatal("duplicate ID accepted")
	}
	if got := f.popExpired(sec-1, nil); len(got) != 0 {
		t.Fatalf("expired too early: %d", len(got))
	}
	got := f.popExpired(2*sec, nil)
	if len(got) != 2 || got[0] != a || got[1] != b {
		t.Fatalf("popExpired = %v", got)
	}
	if f.len() != 1 {
		t.Fatalf("len %d", f.len())
	}
	if _, err := f.remove(c.ID, 7); err != errNotOwner {
		t.Fatalf("remove by non-owner: %v", err)
	}
	if _, err := f.remove(a.ID, 7); err != errNotInFlight {
		t.Fatalf("remove expired: %v", err)
	}
	if m, err := f.remove(c.ID, 8); err != nil || m != c || f.len() != 0 {
		t.Fatalf("remove: %v %v", m, err)
	}
}

func TestInFlightTouchCappedByMaxTimeout(t *testing.T) {
	f := newInFlight()
	const sec = int64(time.Second)
	a, b := msgWithID(1), msgWithID(2)
	f.add(a, 1, 0, 10*time.Second)
	f.add(b, 1, 1*sec, 10*time.Second)
	// touching a at t=9s moves it to 19s, behind b (11s)
	if err := f.touch(a.ID, 1, 9*sec, 10*time.Second, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := f.popExpired(12*sec, nil); len(got) != 1 || got[0] != b {
		t.Fatalf("want b first, got %v", got)
	}
	// touches never push past delivery + max timeout (30s here)
	if err := f.touch(a.ID, 1, 25*sec, 10*time.Second, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if a.deadline != 30*sec {
		t.Fatalf("deadline %d, want capped at 30s", a.deadline)
	}
	if err := f.touch(msgWithID(9).ID, 1, 0, time.Second, time.Minute); err != errNotInFlight {
		t.Fatalf("touch unknown: %v", err)
	}
	if got := f.popExpired(30*sec, nil); len(got) != 1 || got[0] != a {
		t.Fatalf("got %v", got)
	}
}

func TestInFlightOwnedByAndDrain(t *testing.T) {
	f := newInFlight()
	for i := uint64(0); i < 10; i++ {
		f.add(msgWithID(i), i%2, int64(i), time.Second)
	}
	if got := f.ownedBy(1); len(got) != 5 {
		t.Fatalf("ownedBy = %d", len(got))
	}
	if got := f.drain(); len(got) != 10 || f.len() != 0 {
		t.Fatalf("drain = %d, left %d", len(got), f.len())
	}
}

func TestDeferredQueue(t *testing.T) {
	var q deferredQueue
	for i, at := range []int64{50, 10, 30, 20, 40} {
		q.add(msgWithID(uint64(i)), at)
	}
	got := q.popDue(30, nil)
	if len(got) != 3 || got[0].deadline != 10 || got[1].deadline != 20 || got[2].deadline != 30 {
		t.Fatalf("popDue = %v", got)
	}
	for _, m := range got {
		if m.heapIndex != -1 {
			t.Fatal("popped message keeps a heap index")
		}
	}
	if rest := q.drain(); len(rest) != 2 {
		t.Fatalf("drain = %d", len(rest))
	}
}
