package nsqd

import (
	"bufio"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"
)

// startReviewNSQD starts a daemon on ephemeral ports (testutil cannot be
// imported from package nsqd: it imports nsqd), with mods applied to its
// options.
func startReviewNSQD(t *testing.T, mods ...func(*Options)) *NSQD {
	t.Helper()
	o := NewOptions()
	o.TCPAddress, o.HTTPAddress, o.HTTPSAddress = "127.0.0.1:0", "127.0.0.1:0", ""
	o.BroadcastAddress = "127.0.0.1"
	o.DataPath = t.TempDir()
	o.Logger = slog.New(slog.DiscardHandler)
	for _, mod := range mods {
		mod(o)
	}
	n, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Exit)
	return n
}

type reviewConn struct {
	t *testing.T
	net.Conn
	r *bufio.Reader
}

func dialReview(t *testing.T, n *NSQD, cmds string) *reviewConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", n.TCPAddr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte("  V2" + cmds)); err != nil {
		t.Fatal(err)
	}
	return &reviewConn{t: t, Conn: c, r: bufio.NewReader(c)}
}

// frame reads the next non-heartbeat frame within d; ok is false on timeout.
func (c *reviewConn) frame(d time.Duration) (typ int32, data []byte, ok bool) {
	c.SetReadDeadline(time.Now().Add(d))
	for {
		var hdr [8]byte
		if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
			return 0, nil, false
		}
		data = make([]byte, binary.BigEndian.Uint32(hdr[:4])-4)
		if _, err := io.ReadFull(c.r, data); err != nil {
			return 0, nil, false
		}
		typ = int32(binary.BigEndian.Uint32(hdr[4:]))
		if typ == 0 && string(data) == "_heartbeat_" {
			continue
		}
		return typ, data, true
	}
}

func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BUG (channel.go take/wakeWaitersLocked): a put wakes one waiting consumer
// per message. If the woken consumer stops being ready before its pump runs
// take (RDY 0, CLS or a disconnect arriving from its reader goroutine, which
// changes readiness without the channel lock), take just stops the pump: the
// message stays in memory and the other consumer, still parked in
// c.waiters, is never woken. The message is stuck until some unrelated
// put/requeue/kick. Here the interleaving is forced by holding the channel
// lock across the wake-up and the RDY change, exactly as put then a
// concurrent RDY 0 would produce.
func TestReviewWokenConsumerTurningUnreadyStrandsMessage(t *testing.T) {
	n := startReviewNSQD(t)
	a := dialReview(t, n, "SUB review_wake ch\nRDY 1\n")
	if typ, data, ok := a.frame(5 * time.Second); !ok || typ != 0 || string(data) != "OK" {
		t.Fatalf("A SUB: %d %q %v", typ, data, ok)
	}
	topic, _ := n.ExistingTopic("review_wake")
	ch, _ := topic.existingChannel("ch")
	waitCond(t, "A waiting", func() bool {
		ch.mu.Lock()
		defer ch.mu.Unlock()
		return len(ch.waiters) == 1 && ch.waiters[0].waiting
	})
	b := dialReview(t, n, "SUB review_wake ch\nRDY 1\n")
	if typ, data, ok := b.frame(5 * time.Second); !ok || typ != 0 || string(data) != "OK" {
		t.Fatalf("B SUB: %d %q %v", typ, data, ok)
	}
	waitCond(t, "A and B waiting", func() bool {
		ch.mu.Lock()
		defer ch.mu.Unlock()
		return len(ch.waiters) == 2 && ch.waiters[0].waiting && ch.waiters[1].waiting
	})

	ch.mu.Lock()
	clA := ch.waiters[0]
	m := &Message{ID: [16]byte{'0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '1'}, Body: []byte("stranded"), Timestamp: time.Now().UnixNano(), heapIndex: -1}
	ch.mem.push(m)
	ch.wakeWaitersLocked(1) // what put does: A's pump starts and blocks on ch.mu
	clA.readyCount.Store(0) // A's "RDY 0" is processed before its pump runs
	ch.mu.Unlock()

	// B is ready and waiting: it must get the message
	if typ, data, ok := b.frame(2 * time.Second); !ok || typ != 2 {
		ch.mu.Lock()
		depth, active := ch.mem.len(), ch.active
		ch.mu.Unlock()
		t.Fatalf("B got no message (frame %d %q ok=%v); channel memory depth %d, active %d", typ, data, ok, depth, active)
	}
}

// BUG (channel.go kickLocked): a consumer that turns not-ready while waiting
// only has its waiting flag cleared; its entry stays in c.waiters, which is
// pruned only by wakeWaitersLocked, i.e. by a put. On an idle channel each
// RDY 1 / RDY 0 cycle (go-nsq redistributes RDY this way) appends another
// entry, so c.waiters grows without bound and pins closed clients.
func TestReviewIdleRDYTogglingDoesNotGrowWaiters(t *testing.T) {
	n := startReviewNSQD(t)
	c := dialReview(t, n, "SUB review_toggle ch\n")
	if typ, data, ok := c.frame(5 * time.Second); !ok || typ != 0 || string(data) != "OK" {
		t.Fatalf("SUB: %d %q %v", typ, data, ok)
	}
	// The kick for an RDY runs when the reader has drained its buffer and is
	// about to read again, which may be after the PUB behind it was
	// answered; so the reply to a PUB written after the previous reply
	// proves the kick for the RDY before that previous PUB has run.
	pub := "PUB review_toggle_other\n\x00\x00\x00\x01x"
	for i := 0; i < 100; i++ {
		for _, rdy := range []string{"RDY 1\n", "RDY 0\n"} {
			if _, err := c.Write([]byte(rdy + pub)); err != nil {
				t.Fatal(err)
			}
			if typ, data, ok := c.frame(5 * time.Second); !ok || typ != 0 || string(data) != "OK" {
				t.Fatalf("cycle %d: %d %q %v", i, typ, data, ok)
			}
		}
	}
	if _, err := c.Write([]byte(pub)); err != nil {
		t.Fatal(err)
	}
	if typ, data, ok := c.frame(5 * time.Second); !ok || typ != 0 || string(data) != "OK" {
		t.Fatalf("last PUB: %d %q %v", typ, data, ok)
	}
	topic, _ := n.ExistingTopic("review_toggle")
	ch, _ := topic.existingChannel("ch")
	ch.mu.Lock()
	waiters, active := len(ch.waiters), ch.active
	ch.mu.Unlock()
	if active != 0 {
		t.Fatalf("active = %d with the only consumer at RDY 0", active)
	}
	if waiters > 1 {
		t.Fatalf("c.waiters holds %d entries after 100 RDY 1/0 cycles of one idle consumer", waiters)
	}
}

// BUG (inflight.go listFor): inFlight keeps one deadline list per distinct
// msg_timeout ever used on the channel and never drops empty ones, so
// consumers that come and go with varied msg_timeout values grow
// inFlight.lists without bound; every delivery (listFor) and every scan
// (popExpired) then walks all of them.
func TestReviewInFlightListsDoNotAccumulate(t *testing.T) {
	n := startReviewNSQD(t)
	for i := 0; i < 30; i++ {
		body := []byte(`{"msg_timeout":` + strconv.Itoa(10000+i) + `}`)
		var size [4]byte
		binary.BigEndian.PutUint32(size[:], uint32(len(body)))
		c := dialReview(t, n, "IDENTIFY\n"+string(size[:])+string(body)+"SUB review_lists ch\nRDY 1\nPUB review_lists\n\x00\x00\x00\x01x")
		var id []byte
		for id == nil {
			typ, data, ok := c.frame(5 * time.Second)
			if !ok {
				t.Fatalf("consumer %d: no message", i)
			}
			if typ == 2 {
				id = data[10:26]
			}
		}
		if _, err := c.Write([]byte("FIN " + string(id) + "\n")); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	topic, _ := n.ExistingTopic("review_lists")
	ch, _ := topic.existingChannel("ch")
	waitCond(t, "all finished", func() bool {
		ch.mu.Lock()
		defer ch.mu.Unlock()
		return ch.inFlight.len() == 0 && len(ch.clients) == 0
	})
	ch.mu.Lock()
	lists := len(ch.inFlight.lists)
	ch.mu.Unlock()
	if lists > 1 {
		t.Fatalf("inFlight.lists holds %d lists with nothing in flight and no consumers", lists)
	}
}
