package nsqd_test

import (
	"runtime"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/testutil"
)

// TestIdleConnectionsHoldNoGoroutine: idle consumers and an idle producer
// are held without a goroutine each (on Linux, parked in the idle poller;
// elsewhere each keeps one small reader goroutine), while everything a
// connection does still works on them: heartbeats keep coming and NOP
// answers keep them open, a message is delivered and FINished, a PUB is
// answered.
func TestIdleConnectionsHoldNoGoroutine(t *testing.T) {
	const consumers = 200
	h := testutil.StartNSQD(t, nil)
	before := runtime.NumGoroutine()
	conns := make([]*testutil.V2Conn, consumers)
	for i := range conns {
		c := testutil.DialV2(t, h.TCPAddr)
		if got := string(c.Identify(map[string]any{"heartbeat_interval": 2000})); got != "OK" {
			t.Fatalf("IDENTIFY reply %q", got)
		}
		c.Subscribe("idle", "c")
		c.Ready(1)
		conns[i] = c
	}
	producer := testutil.DialV2(t, h.TCPAddr)
	producer.Publish("idle", []byte("first"))

	limit := before + 20
	if runtime.GOOS != "linux" {
		limit += consumers + 1 // one reader goroutine per connection
	}
	testutil.WaitFor(t, 5*time.Second, func() bool { return runtime.NumGoroutine() <= limit },
		"at most %d goroutines for %d idle connections (%d before they opened)", limit, consumers+1, before)

	// Two rounds of heartbeats, each answered: the idle connections stay
	// open, with no goroutine each. The one message published so far goes
	// to one of them, which FINishes it.
	delivered := 0
	for round := 0; round < 2; round++ {
		for i, c := range conns {
			for {
				f, err := c.ReadFrame(4 * time.Second)
				if err != nil {
					t.Fatalf("round %d, consumer %d: %v", round, i, err)
				}
				if f.Type == testutil.FrameTypeMessage {
					m, err := testutil.DecodeMessage(f.Data)
					if err != nil || string(m.Body) != "first" {
						t.Fatalf("consumer %d: message %v (%v), want %q", i, f, err, "first")
					}
					c.Finish(m.ID)
					delivered++
					continue
				}
				if f.Type != testutil.FrameTypeResponse || string(f.Data) != "_heartbeat_" {
					t.Fatalf("round %d, consumer %d: got %v, want a heartbeat", round, i, f)
				}
				c.Write([]byte("NOP\n"))
				break
			}
		}
	}
	if delivered != 1 {
		t.Fatalf("the first message was delivered %d times, want once", delivered)
	}
	testutil.WaitFor(t, 5*time.Second, func() bool { return runtime.NumGoroutine() <= limit },
		"at most %d goroutines after heartbeats (%d before the connections opened)", limit, before)

	// The parked producer publishes again and is answered.
	producer.Write(testutil.Command("PUB idle", []byte("second")))
	if f, err := producer.ReadNonHeartbeat(testutil.DefaultReadTimeout); err != nil || string(f.Data) != "OK" {
		t.Fatalf("PUB on an idle producer: %v %v", f, err)
	}
	// One consumer gets it (every one has RDY 1 and nothing in flight).
	got := -1
	for i, c := range conns {
		f, err := c.ReadNonHeartbeat(50 * time.Millisecond)
		if err != nil {
			continue
		}
		m, err := testutil.DecodeMessage(f.Data)
		if err != nil || string(m.Body) != "second" {
			t.Fatalf("consumer %d: got %v (%v), want the message %q", i, f, err, "second")
		}
		c.Finish(m.ID)
		got = i
		break
	}
	if got < 0 {
		t.Fatal("no consumer got the second message")
	}
	testutil.WaitFor(t, 5*time.Second, func() bool {
		ch := testutil.GetStats(t, h.HTTPAddr, "&topic=idle").Channel("idle", "c")
		return ch != nil && ch.ClientCount == consumers && ch.InFlightCount == 0 && ch.Depth == 0 && ch.MessageCount == 2
	}, "%d consumers still subscribed, both messages finished", consumers)
}

// TestParkedConnectionTimesOut: a consumer that stops answering heartbeats
// once it is idle (and parked) is closed two heartbeat intervals after its
// last command, like any other.
func TestParkedConnectionTimesOut(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	c := testutil.DialV2(t, h.TCPAddr)
	c.Identify(map[string]any{"heartbeat_interval": 1000})
	c.Subscribe("idle_timeout", "c")
	c.Ready(1)
	start := time.Now()
	d := c.WaitClosed(4 * time.Second)
	if e := time.Since(start); e < 1500*time.Millisecond || e > 2600*time.Millisecond {
		t.Fatalf("closed %v after the last command (%v), want ~2s (1.5s..2.6s)", e, d)
	}
	testutil.WaitFor(t, 5*time.Second, func() bool {
		ch := testutil.GetStats(t, h.HTTPAddr, "&topic=idle_timeout").Channel("idle_timeout", "c")
		return ch != nil && ch.ClientCount == 0
	}, "the timed-out consumer to be gone from /stats")
}
