package nsqd_test

import (
	"bytes"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/nsqd"
)

// TestPipelinedAndFragmented: framing never depends on read boundaries (§2.2):
// 100 PUBs in one write get 100 OKs in order; a PUB sent one byte at a time works.
func TestPipelinedAndFragmented(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	c := testutil.DialV2(t, h.TCPAddr)
	var b bytes.Buffer
	for i := range 100 {
		b.Write(testutil.Command("PUB pipe", fmt.Appendf(nil, "m%d", i)))
	}
	b.Write(testutil.Command("MPUB pipe", testutil.MPUBBody(bodies("mm", 0, 5))))
	c.Write(b.Bytes())
	for range 101 {
		c.ExpectOK()
	}
	for _, x := range testutil.Command("PUB pipe", []byte("slow")) {
		c.Write([]byte{x})
	}
	c.ExpectOK()
	// CRLF line endings are accepted.
	c.Write(frame("PUB pipe\r\n", 4, "crlf"))
	c.ExpectOK()
	if tp := topicStats(t, h, "pipe"); tp.MessageCount != 107 {
		t.Fatalf("message_count %d, want 107", tp.MessageCount)
	}
}

// TestMessageFrame: attempts, 16-byte hex-ish id, timestamp and body as §2.4;
// every channel's copy has the same id and timestamp.
func TestMessageFrame(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	createChannel(t, h, "frame", "a")
	createChannel(t, h, "frame", "b")
	a := subscribe(t, h, "frame", "a", nil)
	b := subscribe(t, h, "frame", "b", nil)
	a.Ready(1)
	b.Ready(1)
	before := time.Now().UnixNano()
	testutil.DialV2(t, h.TCPAddr).Publish("frame", []byte("payload"))
	after := time.Now().UnixNano()
	ma, mb := a.ExpectMessage(), b.ExpectMessage()
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(ma.ID) {
		t.Errorf("message id %q, want 16 lowercase hex digits", ma.ID)
	}
	if ma.Attempts != 1 || string(ma.Body) != "payload" || ma.Timestamp < before || ma.Timestamp > after {
		t.Errorf("message attempts=%d body=%q ts=%d, want 1, payload, in [%d,%d]", ma.Attempts, ma.Body, ma.Timestamp, before, after)
	}
	if mb.ID != ma.ID || mb.Timestamp != ma.Timestamp || string(mb.Body) != "payload" || mb.Attempts != 1 {
		t.Errorf("channel copies differ: a=%+v b=%+v", ma, mb)
	}
}

// TestCLS: CLS answers CLOSE_WAIT, stops delivery, ignores RDY, still accepts FIN (§3.10, §5.7).
func TestCLS(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	createChannel(t, h, "cls", "c")
	c := subscribe(t, h, "cls", "c", nil)
	c.Ready(1)
	pub := testutil.DialV2(t, h.TCPAddr)
	pub.Publish("cls", []byte("one"))
	m := c.ExpectMessage()
	c.Send("CLS", nil)
	c.ExpectResponse("CLOSE_WAIT")
	c.Ready(5) // ignored
	pub.Publish("cls", []byte("two"))
	pub.Publish("cls", []byte("three"))
	c.ExpectNothing(300 * time.Millisecond)
	c.Finish(m.ID)
	c.Publish("cls", []byte("four")) // PUB allowed in CLOSING; its OK proves FIN raised no error
	testutil.WaitFor(t, 5*time.Second, func() bool {
		cs := channelStats(t, h, "cls", "c")
		return cs.Depth == 3 && cs.InFlightCount == 0 && cs.Clients[0].State == 4 && cs.Clients[0].FinishCount == 1
	}, "3 queued, nothing in flight, client in state 4")
}

// TestFINNotOwned: after a timeout the message is redelivered to another
// consumer; the first one's FIN fails non-fatally (§17.2).
func TestFINNotOwned(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	createChannel(t, h, "owned", "c")
	a := subscribe(t, h, "owned", "c", map[string]any{"msg_timeout": 1000})
	a.Ready(1)
	testutil.DialV2(t, h.TCPAddr).Publish("owned", []byte("x"))
	m := a.ExpectMessage()
	a.Ready(0)
	a.Publish("owned_sync", []byte("sync")) // orders RDY 0 before B subscribes
	b := subscribe(t, h, "owned", "c", nil)
	b.Ready(1)
	m2 := b.ExpectMessageWithin(5 * time.Second)
	if m2.ID != m.ID || m2.Attempts != 2 {
		t.Fatalf("B got id=%s attempts=%d, want id=%s attempts=2", m2.ID, m2.Attempts, m.ID)
	}
	a.Send("FIN "+m.ID, nil)
	a.ExpectError("E_FIN_FAILED FIN " + m.ID + " failed client does not own message")
	a.Publish("owned_sync", []byte("still open"))
	b.Finish(m2.ID)
	b.Publish("owned_sync", []byte("fin ok"))
}

// TestMaxChannelConsumers: the (N+1)th SUB fails with E_SUB_FAILED (§5.12).
func TestMaxChannelConsumers(t *testing.T) {
	h := testutil.StartNSQD(t, func(o *nsqd.Options) { o.MaxChannelConsumers = 1 })
	subscribe(t, h, "mcc", "c", nil)
	c := testutil.DialV2(t, h.TCPAddr)
	c.Send("SUB mcc c", nil)
	c.ExpectError("E_SUB_FAILED SUB failed consumers for mcc:c exceeds limit of 1")
	c.WaitClosed(3 * time.Second)
	subscribe(t, h, "mcc", "other", nil) // other channels unaffected
}
