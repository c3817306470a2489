package nsqd_test

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"
	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/nsqd"
)

// indexedCounter is a go-nsq handler for bodies "<index>" in [0, n): it
// counts deliveries per index and those with attempts > 1.
type indexedCounter struct {
	counts    []atomic.Int32
	total     atomic.Int64
	redeliver atomic.Int64
	mu        sync.Mutex
	attempts  map[int]uint16 // highest attempts seen per index
	bad       []string
}

func newIndexedCounter(n int) *indexedCounter {
	return &indexedCounter{counts: make([]atomic.Int32, n), attempts: make(map[int]uint16)}
}

func (c *indexedCounter) HandleMessage(m *nsq.Message) error {
	i, err := strconv.Atoi(string(m.Body))
	if err != nil || i < 0 || i >= len(c.counts) {
		c.mu.Lock()
		c.bad = append(c.bad, string(m.Body))
		c.mu.Unlock()
		return nil
	}
	c.counts[i].Add(1)
	if m.Attempts > 1 {
		c.redeliver.Add(1)
		c.mu.Lock()
		c.attempts[i] = max(c.attempts[i], m.Attempts)
		c.mu.Unlock()
	}
	c.total.Add(1)
	return nil
}

// check asserts every index was delivered, exactly once unless up to
// allowedExtra redeliveries (that followed timeouts) are tolerated.
func (c *indexedCounter) check(t *testing.T, name string, allowedExtra int64) {
	t.Helper()
	c.mu.Lock()
	bad := c.bad
	c.mu.Unlock()
	if len(bad) > 0 {
		t.Errorf("%s: %d unexpected bodies, e.g. %q", name, len(bad), bad[0])
	}
	var missing, dups int
	var extra int64
	for i := range c.counts {
		switch k := c.counts[i].Load(); {
		case k == 0:
			missing++
		case k > 1:
			dups++
			extra += int64(k - 1)
		}
	}
	if missing > 0 {
		t.Errorf("%s: %d of %d messages never delivered", name, missing, len(c.counts))
	}
	if extra > allowedExtra {
		t.Errorf("%s: %d messages delivered more than once (%d extra deliveries), only %d timeouts to explain them", name, dups, extra, allowedExtra)
	}
}

// mpubAll publishes bodies "0".."n-1" to topic with go-nsq MultiPublish in batches.
func mpubAll(t *testing.T, p *nsq.Producer, topic string, from, n, batch int) {
	t.Helper()
	for start := from; start < from+n; start += batch {
		end := min(start+batch, from+n)
		msgs := make([][]byte, 0, end-start)
		for i := start; i < end; i++ {
			msgs = append(msgs, []byte(strconv.Itoa(i)))
		}
		if err := p.MultiPublish(topic, msgs); err != nil {
			t.Fatalf("MultiPublish %d..%d: %v", start, end, err)
		}
	}
}

// Test100kThreeChannels: 100 000 messages through 3 channels; every channel
// gets every message exactly once (no timeouts are expected: default 60 s).
func Test100kThreeChannels(t *testing.T) {
	const n = 100_000
	h := testutil.StartNSQD(t, nil)
	channels := []string{"a", "b", "c"}
	for _, ch := range channels {
		createChannel(t, h, "hundredk", ch)
	}
	counters := make([]*indexedCounter, len(channels))
	for i, ch := range channels {
		counters[i] = newIndexedCounter(n)
		cfg := testutil.NewConfig()
		cfg.MaxInFlight = 1000
		testutil.NewConsumer(t, h.TCPAddr, "hundredk", ch, cfg, counters[i])
	}
	p := testutil.NewProducer(t, h.TCPAddr, nil)
	start := time.Now()
	mpubAll(t, p, "hundredk", 0, n, 500)
	pubDone := time.Since(start)
	testutil.WaitFor(t, 120*time.Second, func() bool {
		for _, c := range counters {
			if c.total.Load() < n {
				return false
			}
		}
		return true
	}, "%d deliveries on each of 3 channels", n)
	t.Logf("published %d in %v, 3x%d delivered in %v", n, pubDone, n, time.Since(start))

	// Let the last FINs land, then check the counters nsqd reports.
	testutil.WaitFor(t, 10*time.Second, func() bool {
		s := testutil.GetStats(t, h.HTTPAddr, "&topic=hundredk")
		for _, ch := range channels {
			c := s.Channel("hundredk", ch)
			if c == nil || c.InFlightCount != 0 || c.Depth != 0 {
				return false
			}
		}
		return true
	}, "all channels drained with nothing in flight")
	s := testutil.GetStats(t, h.HTTPAddr, "&topic=hundredk")
	if tp := s.Topic("hundredk"); tp.MessageCount != n || tp.Depth != 0 {
		t.Errorf("topic message_count=%d depth=%d, want %d, 0", tp.MessageCount, tp.Depth, n)
	}
	for i, ch := range channels {
		c := s.Channel("hundredk", ch)
		if c.MessageCount < n || c.RequeueCount != 0 || c.DeferredCount != 0 {
			t.Errorf("channel %s: message_count=%d requeue=%d deferred=%d, want >=%d, 0, 0", ch, c.MessageCount, c.RequeueCount, c.DeferredCount, n)
		}
		if c.TimeoutCount != 0 {
			t.Logf("channel %s: %d timeouts (duplicates tolerated up to that many)", ch, c.TimeoutCount)
		}
		counters[i].check(t, "channel "+ch, int64(c.TimeoutCount))
		if r := counters[i].redeliver.Load(); r > int64(c.TimeoutCount) {
			t.Errorf("channel %s: %d deliveries with attempts > 1 but only %d timeouts", ch, r, c.TimeoutCount)
		}
		if got := counters[i].total.Load(); got != n+int64(c.TimeoutCount) && got != n {
			t.Errorf("channel %s: %d deliveries, want %d", ch, got, n)
		}
	}
}

// TestMemQueueOverflowRestart: with --mem-queue-size=100 most messages go to
// disk; after a restart every message is delivered exactly once.
func TestMemQueueOverflowRestart(t *testing.T) {
	const n = 5000
	h := testutil.StartNSQD(t, func(o *nsqd.Options) { o.MemQueueSize = 100 })
	createChannel(t, h, "overflow", "c")
	p := testutil.NewProducer(t, h.TCPAddr, nil)
	mpubAll(t, p, "overflow", 0, n, 500)
	testutil.WaitFor(t, 10*time.Second, func() bool {
		c := channelStats(t, h, "overflow", "c")
		return c != nil && c.Depth == n
	}, "channel depth %d", n)
	c := channelStats(t, h, "overflow", "c")
	if c.BackendDepth < n-100 {
		t.Errorf("channel backend_depth %d, want >= %d (memory holds 100)", c.BackendDepth, n-100)
	}
	p.Stop()

	h = testutil.RestartNSQD(t, h)
	testutil.WaitFor(t, 10*time.Second, func() bool {
		c := channelStats(t, h, "overflow", "c")
		return c != nil && c.Depth == n
	}, "channel depth %d after restart", n)
	got := newIndexedCounter(n)
	cfg := testutil.NewConfig()
	cfg.MaxInFlight = 500
	testutil.NewConsumer(t, h.TCPAddr, "overflow", "c", cfg, got)
	testutil.WaitFor(t, 30*time.Second, func() bool { return got.total.Load() >= n }, "%d deliveries after restart", n)
	got.check(t, "after restart", 0)
	if r := got.redeliver.Load(); r != 0 {
		t.Errorf("%d deliveries with attempts > 1, want 0", r)
	}
}

// TestExitWithQueuedAndInFlight: 50 000 queued and 500 in flight when nsqd
// exits gracefully; after a restart on the same data path everything is
// delivered, the 500 previously in flight with attempts >= 2.
func TestExitWithQueuedAndInFlight(t *testing.T) {
	const queued, inFlight = 50_000, 500
	const n = queued + inFlight
	h := testutil.StartNSQD(t, nil)
	createChannel(t, h, "shutdown", "c")
	p := testutil.NewProducer(t, h.TCPAddr, nil)
	mpubAll(t, p, "shutdown", 0, n, 500)
	p.Stop()

	c := subscribe(t, h, "shutdown", "c", nil)
	c.Ready(inFlight)
	held := make(map[int]bool, inFlight)
	for range inFlight {
		m := c.ExpectMessage()
		i, err := strconv.Atoi(string(m.Body))
		if err != nil {
			t.Fatalf("body %q", m.Body)
		}
		if m.Attempts != 1 {
			t.Fatalf("first delivery of %d has attempts %d", i, m.Attempts)
		}
		held[i] = true
	}
	testutil.WaitFor(t, 10*time.Second, func() bool {
		cs := channelStats(t, h, "shutdown", "c")
		return cs != nil && cs.InFlightCount == inFlight && cs.Depth == queued
	}, "%d in flight and %d queued", inFlight, queued)

	h = testutil.RestartNSQD(t, h) // Exit: flush memory + in-flight to disk
	testutil.WaitFor(t, 10*time.Second, func() bool {
		cs := channelStats(t, h, "shutdown", "c")
		return cs != nil && cs.Depth == n
	}, "channel depth %d after restart", n)

	got := newIndexedCounter(n)
	cfg := testutil.NewConfig()
	cfg.MaxInFlight = 1000
	testutil.NewConsumer(t, h.TCPAddr, "shutdown", "c", cfg, got)
	testutil.WaitFor(t, 60*time.Second, func() bool { return got.total.Load() >= n }, "%d deliveries after restart", n)
	got.check(t, "after restart", 0)
	got.mu.Lock()
	defer got.mu.Unlock()
	for i := range held {
		if got.attempts[i] < 2 {
			t.Errorf("message %d was in flight at exit but redelivered with attempts %d, want >= 2", i, max(got.attempts[i], 1))
		}
	}
	if len(got.attempts) != inFlight {
		t.Errorf("%d messages redelivered with attempts >= 2, want exactly the %d in flight at exit", len(got.attempts), inFlight)
	}
}

// TestTimeoutRedelivery: a message not FIN'd within msg_timeout is
// redelivered (same id, body, timestamp) with attempts+1.
func TestTimeoutRedelivery(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	createChannel(t, h, "timeout", "c")
	c := subscribe(t, h, "timeout", "c", map[string]any{"msg_timeout": 1000})
	c.Ready(1)
	testutil.DialV2(t, h.TCPAddr).Publish("timeout", []byte("late"))
	m1 := c.ExpectMessage()
	got1 := time.Now()
	if m1.Attempts != 1 || string(m1.Body) != "late" {
		t.Fatalf("first delivery attempts=%d body=%q", m1.Attempts, m1.Body)
	}
	m2 := c.ExpectMessageWithin(5 * time.Second)
	d := time.Since(got1)
	if m2.ID != m1.ID || string(m2.Body) != "late" || m2.Timestamp != m1.Timestamp || m2.Attempts != 2 {
		t.Fatalf("redelivery id=%s body=%q ts=%d attempts=%d, want id=%s body=late ts=%d attempts=2", m2.ID, m2.Body, m2.Timestamp, m2.Attempts, m1.ID, m1.Timestamp)
	}
	if d < 900*time.Millisecond || d > 2500*time.Millisecond {
		t.Fatalf("redelivered %v after the first delivery, want ~1s (0.9s..2.5s)", d)
	}
	// FIN of the first delivery's id now refers to the redelivered copy, which we own.
	c.Finish(m2.ID)
	testutil.WaitFor(t, 5*time.Second, func() bool {
		cs := channelStats(t, h, "timeout", "c")
		return cs.InFlightCount == 0 && len(cs.Clients) == 1 && cs.Clients[0].FinishCount == 1
	}, "FIN to be counted")
	cs := channelStats(t, h, "timeout", "c")
	if cs.TimeoutCount != 1 || cs.Clients[0].MessageCount != 2 {
		t.Fatalf("timeout_count=%d client message_count=%d, want 1, 2", cs.TimeoutCount, cs.Clients[0].MessageCount)
	}
}

// TestREQWithDelay: REQ id 1500 redelivers no earlier than 1.5 s later, with attempts+1.
func TestREQWithDelay(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	createChannel(t, h, "req", "c")
	c := subscribe(t, h, "req", "c", nil)
	c.Ready(1)
	testutil.DialV2(t, h.TCPAddr).Publish("req", []byte("again"))
	m := c.ExpectMessage()
	sent := time.Now()
	c.Send("REQ "+m.ID+" 1500", nil)
	testutil.WaitFor(t, time.Second, func() bool {
		cs := channelStats(t, h, "req", "c")
		return cs.DeferredCount == 1 && cs.InFlightCount == 0
	}, "the message to be deferred")
	if cs := channelStats(t, h, "req", "c"); cs.RequeueCount != 1 || cs.Depth != 0 {
		t.Fatalf("requeue_count=%d depth=%d, want 1, 0", cs.RequeueCount, cs.Depth)
	}
	m2 := c.ExpectMessageWithin(5 * time.Second)
	d := time.Since(sent)
	if d < 1500*time.Millisecond {
		t.Fatalf("REQ 1500 redelivered after %v", d)
	}
	if d > 3*time.Second {
		t.Errorf("REQ 1500 redelivered only after %v, want within ~1.5s", d)
	}
	if m2.ID != m.ID || m2.Attempts != 2 || string(m2.Body) != "again" {
		t.Fatalf("redelivery id=%s attempts=%d body=%q", m2.ID, m2.Attempts, m2.Body)
	}
	c.Finish(m2.ID)
}

// TestDeferredPublish: DPUB and HTTP /pub?defer deliver no earlier than asked.
func TestDeferredPublish(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	createChannel(t, h, "dpub", "c")
	c := subscribe(t, h, "dpub", "c", nil)
	c.Ready(10)
	pub := testutil.DialV2(t, h.TCPAddr)

	sent := time.Now()
	pub.Send("DPUB dpub 1000", []byte("tcp-deferred"))
	pub.ExpectOK()
	pub.Publish("dpub", []byte("immediate"))
	if m := c.ExpectMessage(); string(m.Body) != "immediate" {
		t.Fatalf("first delivery %q, want the immediate message", m.Body)
	}
	testutil.WaitFor(t, 900*time.Millisecond, func() bool { return channelStats(t, h, "dpub", "c").DeferredCount == 1 }, "deferred_count 1")
	m := c.ExpectMessageWithin(5 * time.Second)
	if d := time.Since(sent); d < time.Second || d > 3*time.Second {
		t.Fatalf("DPUB 1000 delivered after %v, want 1s..3s", d)
	}
	if string(m.Body) != "tcp-deferred" || m.Attempts != 1 {
		t.Fatalf("got %q attempts %d", m.Body, m.Attempts)
	}
	c.Finish(m.ID)

	sent = time.Now()
	testutil.MustPost(t, h.URL("/pub?topic=dpub&defer=800"), []byte("http-deferred"))
	m = c.ExpectMessageWithin(5 * time.Second)
	if d := time.Since(sent); d < 800*time.Millisecond || d > 3*time.Second {
		t.Fatalf("/pub?defer=800 delivered after %v, want 0.8s..3s", d)
	}
	if string(m.Body) != "http-deferred" {
		t.Fatalf("got %q", m.Body)
	}
}

// TestTOUCHExtends: TOUCH every 700 ms keeps a 1500 ms message in flight for
// 2.8 s; the final FIN succeeds and the message never times out.
func TestTOUCHExtends(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	createChannel(t, h, "touch", "c")
	c := subscribe(t, h, "touch", "c", map[string]any{"msg_timeout": 1500})
	c.Ready(2)
	testutil.DialV2(t, h.TCPAddr).Publish("touch", []byte("held"))
	m := c.ExpectMessage()
	for range 3 {
		c.ExpectNothing(700 * time.Millisecond) // no redelivery meanwhile
		c.Send("TOUCH "+m.ID, nil)
	}
	c.ExpectNothing(700 * time.Millisecond)
	c.Finish(m.ID)
	c.ExpectNothing(200 * time.Millisecond) // no E_FIN_FAILED
	cs := channelStats(t, h, "touch", "c")
	if cs.TimeoutCount != 0 || cs.InFlightCount != 0 || len(cs.Clients) != 1 || cs.Clients[0].FinishCount != 1 {
		t.Fatalf("timeout_count=%d in_flight=%d clients=%+v, want 0, 0, one client with finish_count 1", cs.TimeoutCount, cs.InFlightCount, cs.Clients)
	}
}

// TestEphemeralChannelDisappears: an ephemeral channel is deleted with its
// last consumer; an ephemeral topic with its last channel.
func TestEphemeralChannelDisappears(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	for _, tc := range []struct{ topic, channel string }{
		{"eph", "c#ephemeral"},
		{"tmp#ephemeral", "c#ephemeral"},
	} {
		got := testutil.NewCollector()
		cons1 := testutil.NewConsumer(t, h.TCPAddr, tc.topic, tc.channel, nil, got)
		cons2 := testutil.NewConsumer(t, h.TCPAddr, tc.topic, tc.channel, nil, got)
		testutil.MustPost(t, h.URL("/pub?topic="+urlEscape(tc.topic)), []byte("x"))
		testutil.WaitFor(t, 5*time.Second, func() bool { return got.Len() == 1 }, "delivery on %s/%s", tc.topic, tc.channel)
		// go-nsq's ConnectToNSQD does not wait for SUB's OK: poll.
		testutil.WaitFor(t, 5*time.Second, func() bool {
			cs := testutil.GetStats(t, h.HTTPAddr, "").Channel(tc.topic, tc.channel)
			return cs != nil && cs.ClientCount == 2
		}, "%s/%s with 2 consumers", tc.topic, tc.channel)
		testutil.StopConsumer(t, cons1)
		testutil.WaitFor(t, 5*time.Second, func() bool {
			cs := testutil.GetStats(t, h.HTTPAddr, "").Channel(tc.topic, tc.channel)
			return cs != nil && cs.ClientCount == 1
		}, "one consumer left")
		testutil.StopConsumer(t, cons2)
		testutil.WaitFor(t, 5*time.Second, func() bool {
			return testutil.GetStats(t, h.HTTPAddr, "").Channel(tc.topic, tc.channel) == nil
		}, "%s/%s to disappear from /stats", tc.topic, tc.channel)
		tp := testutil.GetStats(t, h.HTTPAddr, "").Topic(tc.topic)
		if ephemeralTopic := tc.topic == "tmp#ephemeral"; ephemeralTopic {
			testutil.WaitFor(t, 5*time.Second, func() bool { return testutil.GetStats(t, h.HTTPAddr, "").Topic(tc.topic) == nil }, "ephemeral topic to disappear")
		} else if tp == nil {
			t.Fatalf("non-ephemeral topic %s disappeared with its ephemeral channel", tc.topic)
		}
	}
}

// TestChannelPause: /channel/pause stops delivery, /channel/unpause resumes it.
func TestChannelPause(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	createChannel(t, h, "pause", "c")
	got := testutil.NewCollector()
	cfg := testutil.NewConfig()
	cfg.MaxInFlight = 10
	testutil.NewConsumer(t, h.TCPAddr, "pause", "c", cfg, got)
	testutil.MustPost(t, h.URL("/pub?topic=pause"), []byte("before"))
	testutil.WaitFor(t, 5*time.Second, func() bool { return got.Len() == 1 }, "first delivery")

	testutil.MustPost(t, h.URL("/channel/pause?topic=pause&channel=c"), nil)
	testutil.MustPost(t, h.URL("/mpub?topic=pause"), []byte("p0\np1\np2\np3\np4\n"))
	testutil.WaitFor(t, 5*time.Second, func() bool {
		cs := channelStats(t, h, "pause", "c")
		return cs.Paused && cs.Depth == 5
	}, "paused channel holding 5")
	if testutil.Eventually(500*time.Millisecond, func() bool { return got.Len() > 1 }) {
		t.Fatalf("paused channel delivered %d messages", got.Len()-1)
	}
	testutil.MustPost(t, h.URL("/channel/unpause?topic=pause&channel=c"), nil)
	testutil.WaitFor(t, 5*time.Second, func() bool { return got.Len() == 6 }, "5 deliveries after unpause")
	if cs := channelStats(t, h, "pause", "c"); cs.Paused {
		t.Fatalf("channel still reported paused")
	}
}

// TestTopicPause: a paused topic keeps new messages in the topic.
func TestTopicPause(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	createChannel(t, h, "tpause", "c")
	testutil.MustPost(t, h.URL("/topic/pause?topic=tpause"), nil)
	testutil.MustPost(t, h.URL("/mpub?topic=tpause"), []byte("a\nb\nc\n"))
	testutil.WaitFor(t, 5*time.Second, func() bool {
		tp := topicStats(t, h, "tpause")
		return tp.Paused && tp.Depth == 3 && tp.Channels[0].Depth == 0
	}, "paused topic holding 3")
	testutil.MustPost(t, h.URL("/topic/unpause?topic=tpause"), nil)
	testutil.WaitFor(t, 5*time.Second, func() bool {
		tp := topicStats(t, h, "tpause")
		return !tp.Paused && tp.Depth == 0 && tp.Channels[0].Depth == 3
	}, "unpaused topic handing 3 to its channel")
}

// TestRDYZeroStopsDelivery: RDY 0 stops delivery; RDY n resumes it.
func TestRDYZeroStopsDelivery(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	createChannel(t, h, "rdy", "c")
	c := subscribe(t, h, "rdy", "c", nil)
	c.Ready(1)
	pub := testutil.DialV2(t, h.TCPAddr)
	pub.Publish("rdy", []byte("first"))
	c.Finish(c.ExpectMessage().ID)
	c.Ready(0)
	// RDY has no reply: a PUB on the same connection orders it after RDY 0.
	c.Publish("rdy", []byte("probe"))
	for i := range 4 {
		pub.Publish("rdy", []byte(fmt.Sprint("held", i)))
	}
	testutil.WaitFor(t, 5*time.Second, func() bool { return channelStats(t, h, "rdy", "c").Depth == 5 }, "5 queued")
	c.ExpectNothing(500 * time.Millisecond)
	c.Ready(5)
	for range 5 {
		c.Finish(c.ExpectMessage().ID)
	}
	c.ExpectNothing(200 * time.Millisecond)
}

// TestRDYWindow: RDY is a window, not a budget (§3.6): with RDY 2 and FINs,
// delivery continues without a new RDY.
func TestRDYWindow(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	createChannel(t, h, "window", "c")
	c := subscribe(t, h, "window", "c", nil)
	c.Ready(2)
	pub := testutil.DialV2(t, h.TCPAddr)
	for i := range 6 {
		pub.Publish("window", []byte(fmt.Sprint(i)))
	}
	a, b := c.ExpectMessage(), c.ExpectMessage()
	c.ExpectNothing(300 * time.Millisecond) // window full
	c.Finish(a.ID)
	c.Finish(b.ID)
	for range 4 {
		c.Finish(c.ExpectMessage().ID)
	}
}

// TestHeartbeatTimeout: a client that never answers heartbeats is closed
// after two intervals; one that answers with NOP stays connected.
func TestHeartbeatTimeout(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the polite client, concurrently
		defer wg.Done()
		c := testutil.DialV2(t, h.TCPAddr)
		c.Identify(map[string]any{"heartbeat_interval": 1000})
		f, err := c.ReadNonHeartbeat(3500 * time.Millisecond) // answers heartbeats with NOP
		if err == nil {
			t.Errorf("polite client got %v", f)
			return
		}
		if err := c.TryWrite(testutil.Command("PUB hb", []byte("alive"))); err != nil {
			t.Errorf("polite client closed after 3.5s: %v", err)
			return
		}
		if f, err := c.ReadNonHeartbeat(testutil.DefaultReadTimeout); err != nil || string(f.Data) != "OK" {
			t.Errorf("polite client PUB: %v %v", f, err)
		}
	}()

	c := testutil.DialV2(t, h.TCPAddr)
	if got := string(c.Identify(map[string]any{"heartbeat_interval": 1000})); got != "OK" {
		t.Fatalf("IDENTIFY reply %q", got)
	}
	start := time.Now()
	f, err := c.ReadFrame(3 * time.Second)
	if err != nil || f.Type != testutil.FrameTypeResponse || string(f.Data) != "_heartbeat_" {
		t.Fatalf("want a heartbeat, got %v %v", f, err)
	}
	if d := time.Since(start); d < 800*time.Millisecond || d > 1500*time.Millisecond {
		t.Errorf("first heartbeat after %v, want ~1s", d)
	}
	c.WaitClosed(3 * time.Second)
	if d := time.Since(start); d < 1500*time.Millisecond || d > 2600*time.Millisecond {
		t.Fatalf("closed %v after IDENTIFY, want ~2s (1.5s..2.6s)", d)
	}
	wg.Wait()
}

func urlEscape(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '#' {
			out = append(out, "%23"...)
			continue
		}
		out = append(out, s[i])
	}
	return string(out)
}
