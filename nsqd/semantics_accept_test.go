package nsqd_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/nsqd"
)

// TestCompetingConsumers: two consumers of one channel share its messages;
// each message reaches exactly one of them (§5.1).
func TestCompetingConsumers(t *testing.T) {
	const n = 2000
	h := testutil.StartNSQD(t, nil)
	createChannel(t, h, "compete", "c")
	got := newIndexedCounter(n)
	for range 2 {
		cfg := testutil.NewConfig()
		cfg.MaxInFlight = 5
		testutil.NewConsumer(t, h.TCPAddr, "compete", "c", cfg, got)
	}
	testutil.WaitFor(t, 5*time.Second, func() bool {
		cs := channelStats(t, h, "compete", "c")
		return cs != nil && cs.ClientCount == 2
	}, "2 consumers subscribed")
	p := testutil.NewProducer(t, h.TCPAddr, nil)
	mpubAll(t, p, "compete", 0, n, 200)
	testutil.WaitFor(t, 30*time.Second, func() bool { return got.total.Load() >= n }, "%d deliveries", n)
	got.check(t, "channel c", 0)
	testutil.WaitFor(t, 5*time.Second, func() bool { return channelStats(t, h, "compete", "c").InFlightCount == 0 }, "nothing in flight")
	cs := channelStats(t, h, "compete", "c")
	var sum uint64
	for _, cl := range cs.Clients {
		sum += cl.FinishCount
	}
	if sum != n || got.total.Load() != n {
		t.Fatalf("clients finished %d, handler saw %d, want %d each", sum, got.total.Load(), n)
	}
}

// TestDisconnectedConsumerInFlight: messages in flight to a consumer that
// disconnects without FIN are redelivered to another consumer, attempts 2
// (immediately or at their timeout, §5.4).
func TestDisconnectedConsumerInFlight(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	createChannel(t, h, "gone", "c")
	a := subscribe(t, h, "gone", "c", map[string]any{"msg_timeout": 1000})
	a.Ready(5)
	pub := testutil.DialV2(t, h.TCPAddr)
	pub.Send("MPUB gone", testutil.MPUBBody(bodies("g", 0, 5)))
	pub.ExpectOK()
	held := map[string]bool{}
	for range 5 {
		held[string(a.ExpectMessage().Body)] = true
	}
	a.Close()
	b := subscribe(t, h, "gone", "c", nil)
	b.Ready(10)
	for range 5 {
		m := b.ExpectMessageWithin(5 * time.Second)
		if !held[string(m.Body)] || m.Attempts != 2 {
			t.Fatalf("got %q attempts %d, want one of the held messages with attempts 2", m.Body, m.Attempts)
		}
		delete(held, string(m.Body))
		b.Finish(m.ID)
	}
	b.ExpectNothing(300 * time.Millisecond)
}

// TestEphemeralOverflowDrops: an ephemeral channel keeps at most
// --mem-queue-size messages and silently drops the rest; publishes succeed (§5.10).
func TestEphemeralOverflowDrops(t *testing.T) {
	h := testutil.StartNSQD(t, func(o *nsqd.Options) { o.MemQueueSize = 10 })
	createChannel(t, h, "ephdrop", "e%23ephemeral")
	createChannel(t, h, "ephdrop", "durable")
	pub := testutil.DialV2(t, h.TCPAddr)
	for i := range 30 {
		pub.Publish("ephdrop", []byte(strconv.Itoa(i)))
	}
	testutil.WaitFor(t, 5*time.Second, func() bool {
		s := testutil.GetStats(t, h.HTTPAddr, "&topic=ephdrop")
		e, d := s.Channel("ephdrop", "e#ephemeral"), s.Channel("ephdrop", "durable")
		return e != nil && d != nil && d.Depth == 30
	}, "durable channel holding 30")
	s := testutil.GetStats(t, h.HTTPAddr, "&topic=ephdrop")
	if e := s.Channel("ephdrop", "e#ephemeral"); e.Depth != 10 || e.BackendDepth != 0 {
		t.Fatalf("ephemeral channel depth=%d backend_depth=%d, want 10, 0", e.Depth, e.BackendDepth)
	}
	if tp := s.Topic("ephdrop"); tp.MessageCount != 30 {
		t.Fatalf("topic message_count %d, want 30", tp.MessageCount)
	}
}

// TestSampleRate: a connection with sample_rate 49 gets about half of the
// channel's messages; the rest are consumed and dropped (§5.6).
func TestSampleRate(t *testing.T) {
	const n = 1000
	h := testutil.StartNSQD(t, nil)
	createChannel(t, h, "sample", "c")
	pub := testutil.DialV2(t, h.TCPAddr)
	pub.Send("MPUB sample", testutil.MPUBBody(bodies("s", 0, n)))
	pub.ExpectOK()
	c := subscribe(t, h, "sample", "c", map[string]any{"sample_rate": 49})
	c.Ready(2500)
	// Every message leaves the queue: delivered ones stay in flight (never
	// FIN'd), unsampled ones are dropped.
	var cs *testutil.ChannelStats
	testutil.WaitFor(t, 10*time.Second, func() bool {
		cs = channelStats(t, h, "sample", "c")
		return cs.MessageCount == n && cs.Depth == 0
	}, "the channel to have taken all %d messages", n)
	got := 0
	for {
		f, err := c.ReadNonHeartbeat(500 * time.Millisecond)
		if err != nil {
			break // the queue is empty: nothing more after 500 ms of silence
		}
		if f.Type != testutil.FrameTypeMessage {
			t.Fatalf("got %v", f)
		}
		got++
	}
	// Expected 500 (delivered iff r <= 49 of 0..99); 6 standard deviations is ±95.
	if got < 400 || got > 600 {
		t.Fatalf("sample_rate 49 delivered %d of %d, want about 500", got, n)
	}
	if cs = channelStats(t, h, "sample", "c"); cs.InFlightCount != got || cs.Depth != 0 {
		t.Fatalf("channel in_flight=%d depth=%d, want %d (the deliveries) and 0", cs.InFlightCount, cs.Depth, got)
	}
}

// TestREQClampAndDPUBZero: REQ above --max-req-timeout is clamped silently;
// DPUB with 0 is an ordinary publish (§3.8, §3.14).
func TestREQClampAndDPUBZero(t *testing.T) {
	h := testutil.StartNSQD(t, func(o *nsqd.Options) { o.MaxReqTimeout = time.Second })
	createChannel(t, h, "clamp", "c")
	c := subscribe(t, h, "clamp", "c", nil)
	c.Ready(1)
	c.Send("DPUB clamp 0", []byte("now"))
	c.ExpectOK()
	m := c.ExpectMessageWithin(time.Second)
	sent := time.Now()
	c.Send("REQ "+m.ID+" 60000", nil)
	m2 := c.ExpectMessageWithin(5 * time.Second)
	if d := time.Since(sent); d < time.Second || d > 2500*time.Millisecond {
		t.Fatalf("REQ 60000 with --max-req-timeout=1s redelivered after %v, want ~1s", d)
	}
	if m2.ID != m.ID || m2.Attempts != 2 {
		t.Fatalf("redelivery id=%s attempts=%d", m2.ID, m2.Attempts)
	}
	c.Send("DPUB clamp 1001", []byte("too late"))
	c.ExpectError("E_INVALID DPUB timeout 1001 out of range 0-1000")
}

// TestAuthTTLExpiry: after ttl seconds nsqd asks the auth server again; a
// refusal then fails the next checked command (§12.3).
func TestAuthTTLExpiry(t *testing.T) {
	auth := testutil.StartAuthServer(t)
	auth.Allow("short", testutil.AuthResponse{TTL: 1, Identity: "brief", Authorizations: []testutil.Authorization{
		{Topic: ".*", Channels: []string{".*"}, Permissions: []string{"publish", "subscribe"}},
	}})
	h := testutil.StartNSQD(t, func(o *nsqd.Options) { o.AuthHTTPAddresses = []string{auth.Addr} })
	c := testutil.DialV2(t, h.TCPAddr)
	c.Send("AUTH", []byte("short"))
	c.ExpectResponse(`{"identity":"brief","identity_url":"","permission_count":1}`)
	c.Publish("ttl", []byte("fresh"))
	if n := len(auth.Requests()); n != 1 {
		t.Fatalf("%d auth requests before expiry, want 1", n)
	}
	auth.Deny("short")
	c.ExpectNothing(1200 * time.Millisecond) // let the 1 s ttl run out
	c.Send("PUB ttl", []byte("stale"))
	c.ExpectError("E_AUTH_FAILED AUTH failed")
	c.WaitClosed(3 * time.Second)
	if n := len(auth.Requests()); n != 2 {
		t.Fatalf("%d auth requests, want 2 (the re-query after expiry)", n)
	}
}
