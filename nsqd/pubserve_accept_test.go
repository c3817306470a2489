package nsqd_test

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/nsqd"
)

// Publishers that wait for each OK are served by the idle poller between
// PUBs (Linux); these tests hold what such a connection must still do.

// TestPublishersBetweenPUBsHoldNoGoroutine: producers doing one PUB per
// round trip hold no reader goroutine between PUBs, and every PUB is
// answered and delivered once, in each producer's order.
func TestPublishersBetweenPUBsHoldNoGoroutine(t *testing.T) {
	const producers, rounds = 100, 20
	h := testutil.StartNSQD(t, nil)
	consumer := subscribe(t, h, "rt", "c", nil)
	consumer.Ready(producers * rounds)
	before := runtime.NumGoroutine()
	conns := make([]*testutil.V2Conn, producers)
	for i := range conns {
		conns[i] = testutil.DialV2(t, h.TCPAddr)
	}
	limit := before + 20
	if runtime.GOOS != "linux" {
		limit += producers // one reader goroutine per connection
	}
	most := 0
	for r := 0; r < rounds; r++ {
		for i, c := range conns {
			c.Write(testutil.Command("PUB rt", fmt.Appendf(nil, "%d/%d", i, r)))
		}
		for i, c := range conns {
			if f, err := c.ReadNonHeartbeat(testutil.DefaultReadTimeout); err != nil || string(f.Data) != "OK" {
				t.Fatalf("producer %d, round %d: %v %v, want OK", i, r, f, err)
			}
		}
		if r >= 2 { // from the second PUB on, each producer is parked between PUBs
			most = max(most, runtime.NumGoroutine())
		}
	}
	if most > limit {
		t.Fatalf("%d goroutines while %d producers waited between PUBs, want at most %d (%d before they opened)",
			most, producers, limit, before)
	}

	next := make([]int, producers)
	for n := 0; n < producers*rounds; n++ {
		m := consumer.ExpectMessage()
		var i, r int
		if _, err := fmt.Sscanf(string(m.Body), "%d/%d", &i, &r); err != nil || i < 0 || i >= producers {
			t.Fatalf("message %q", m.Body)
		}
		if r != next[i] {
			t.Fatalf("producer %d: message %d delivered after %d, want in order", i, r, next[i]-1)
		}
		next[i]++
		consumer.Finish(m.ID)
	}
	consumer.ExpectNothing(100 * time.Millisecond)
}

// TestServedPublisherRepliesInCommandOrder: PUBs pipelined in one write
// across a durable topic (answered after its sync) and a bounded topic
// that rejects (answered at once) get their replies in command order.
func TestServedPublisherRepliesInCommandOrder(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	testutil.MustPost(t, h.URL("/topic/create?topic=safe&durable=true"), nil)
	testutil.MustPost(t, h.URL("/topic/create?topic=bounded&max_depth=1&overflow=reject"), nil)
	p := testutil.DialV2(t, h.TCPAddr)
	p.Publish("safe", []byte("first")) // from now on the poller serves it
	p.Publish("bounded", []byte("fills it"))
	reject := "E_PUB_FAILED PUB failed: topic bounded is at its max_depth of 1 messages (overflow=reject)"
	for round := 0; round < 20; round++ {
		var batch []byte
		batch = append(batch, testutil.Command("PUB safe", []byte("a"))...)
		batch = append(batch, testutil.Command("PUB bounded", []byte("rejected"))...)
		batch = append(batch, testutil.Command("PUB safe", []byte("b"))...)
		batch = append(batch, "NOP\n"...)
		batch = append(batch, testutil.Command("PUB bounded", []byte("rejected"))...)
		p.Write(batch)
		p.ExpectOK()
		p.ExpectError(reject)
		p.ExpectOK()
		p.ExpectError(reject)
	}
	if ts := topicStats(t, h, "safe"); ts.MessageCount != 41 {
		t.Fatalf("durable topic holds %d messages, want 41", ts.MessageCount)
	}
}

// TestServedPublisherHandsOtherCommandsToAReader: between served PUBs a
// producer sends what the poller leaves to a reader goroutine (MPUB,
// DPUB, a PUB cut across two writes, a PUB to a new topic, a PUB split
// right after its size): each is answered and delivered, and PUBs are
// served again afterwards.
func TestServedPublisherHandsOtherCommandsToAReader(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	c1 := subscribe(t, h, "mix", "c", nil)
	c1.Ready(100)
	p := testutil.DialV2(t, h.TCPAddr)
	want := map[string]bool{}
	pub := func(body string) {
		t.Helper()
		p.Publish("mix", []byte(body))
		want[body] = true
	}
	pub("one")
	p.Write(frame("MPUB mix\n", int32(4+4+3+4+5), int32(2), int32(3), "two", int32(5), "three"))
	p.ExpectOK()
	want["two"], want["three"] = true, true
	pub("four")
	p.Write(testutil.Command("DPUB mix 10", []byte("five")))
	p.ExpectOK()
	want["five"] = true
	cmd := testutil.Command("PUB mix", []byte("six, cut in two"))
	for _, cut := range []int{3, 9, 11, len(cmd) - 1} { // in the line, after it, after the size, in the body
		p.Write(cmd[:cut])
		time.Sleep(20 * time.Millisecond) // the poller sees the first part alone
		p.Write(cmd[cut:])
		p.ExpectOK()
	}
	want["six, cut in two"] = true
	pub("seven")
	p.Publish("mix-new", []byte("to a new topic"))
	pub("eight")

	got := map[string]int{}
	for n := 0; n < 11; n++ {
		m := c1.ExpectMessage()
		got[string(m.Body)]++
		c1.Finish(m.ID)
	}
	c1.ExpectNothing(100 * time.Millisecond)
	for body := range want {
		wantN := 1
		if body == "six, cut in two" {
			wantN = 4
		}
		if got[body] != wantN {
			t.Fatalf("%q delivered %d times, want %d (all: %v)", body, got[body], wantN, got)
		}
	}
}

// TestServedPublisherFatalErrorsEndTheConnection: a served producer's PUB
// with a body over --max-msg-size, or an invalid topic name, gets NSQ's
// fatal error and the connection is closed; nothing of it is published.
func TestServedPublisherFatalErrorsEndTheConnection(t *testing.T) {
	h := testutil.StartNSQD(t, func(o *nsqd.Options) { o.MaxMsgSize = 100 })
	for _, tc := range []struct {
		cmd  []byte
		want string
	}{
		{testutil.Command("PUB big", bytes.Repeat([]byte("x"), 101)), "E_BAD_MESSAGE PUB message too big 101 > 100"},
		{testutil.Command("PUB bad!name", []byte("x")), `E_BAD_TOPIC PUB topic name "bad!name" is not valid`},
		{frame("PUB big\n", int32(0)), "E_BAD_MESSAGE PUB invalid message body size 0"},
	} {
		p := testutil.DialV2(t, h.TCPAddr)
		p.Publish("big", []byte("fits"))
		p.Publish("big", []byte("fits again"))
		p.Write(tc.cmd)
		p.ExpectError(tc.want)
		p.WaitClosed(testutil.DefaultReadTimeout)
	}
	if ts := topicStats(t, h, "big"); ts.MessageCount != 6 {
		t.Fatalf("topic holds %d messages, want the 6 that fit", ts.MessageCount)
	}
}

// TestServedPublisherKeepsHeartbeatsAndTimesOut: a producer parked
// between PUBs gets heartbeats, stays open while it answers them with
// NOPs and publishes on, and is closed two intervals after it goes silent.
func TestServedPublisherKeepsHeartbeatsAndTimesOut(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	p := testutil.DialV2(t, h.TCPAddr)
	p.Identify(map[string]any{"heartbeat_interval": 1000})
	p.Publish("beat", []byte("0"))
	for i := 1; i <= 3; i++ {
		f, err := p.ReadFrame(3 * time.Second)
		if err != nil || f.Type != testutil.FrameTypeResponse || string(f.Data) != "_heartbeat_" {
			t.Fatalf("heartbeat %d: %v %v", i, f, err)
		}
		p.Write([]byte("NOP\n"))
		p.Publish("beat", fmt.Appendf(nil, "%d", i))
	}
	if waited := p.WaitClosed(5 * time.Second); waited < time.Second {
		t.Fatalf("closed after %v of silence, want about two heartbeat intervals", waited)
	}
	if ts := topicStats(t, h, "beat"); ts.MessageCount != 4 {
		t.Fatalf("topic holds %d messages, want 4", ts.MessageCount)
	}
	testutil.WaitFor(t, 5*time.Second, func() bool {
		return len(testutil.GetStats(t, h.HTTPAddr, "").Producers) == 0
	}, "the closed producer is gone from /stats")
}
