package nsqd_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"

	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/nsqd"
)

// BUG (identify.go upgradeTLS / client.go sendHeartbeat): the heartbeat timer
// keeps writing plaintext _heartbeat_ frames on the raw socket after the
// IDENTIFY reply negotiated tls_v1 and before the TLS handshake finished, so
// a client that starts its handshake later than one heartbeat interval reads
// a non-TLS record and the handshake fails (§4.3: after the JSON reply the
// next server bytes are the TLS handshake).
func TestReviewNoPlaintextHeartbeatBeforeTLSHandshake(t *testing.T) {
	files := testutil.GenerateTLS(t)
	h := testutil.StartNSQD(t, func(o *nsqd.Options) {
		o.TLSCert, o.TLSKey = files.CertFile, files.KeyFile
	})
	c := testutil.DialV2(t, h.TCPAddr)
	c.Identify(map[string]any{"feature_negotiation": true, "tls_v1": true, "heartbeat_interval": 1000})
	// a slow client: nothing may arrive in plaintext before it sends ClientHello
	if f, err := c.ReadFrame(1500 * time.Millisecond); err == nil {
		t.Fatalf("server wrote %v on the raw socket before the TLS handshake", f)
	} else {
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("raw read: %v", err)
		}
	}
	c.Conn.SetReadDeadline(time.Time{})
	cfg := files.ClientConfig()
	cfg.ServerName = "127.0.0.1"
	tc := tls.Client(c.Conn, cfg)
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake after a 1.5 s pause: %v", err)
	}
}

// BUG (channel.go removeClient): when a durable channel is deleted while a
// consumer holds in-flight messages and memory is full (here
// --mem-queue-size=0), the consumer's disconnect requeues those messages into
// the channel's already deleted disk queue; go-diskqueue returns "exiting",
// diskBackend.put reports it to setHealth and nsqd stays "NOK - ..." until the
// next successful disk write anywhere.
func TestReviewDeleteChannelWithInFlightKeepsHealth(t *testing.T) {
	h := testutil.StartNSQD(t, func(o *nsqd.Options) { o.MemQueueSize = 0 })
	for i := 0; i < 20; i++ {
		ch := "c" + strings.Repeat("x", i)
		c := subscribe(t, h, "review_health", ch, nil)
		c.Ready(5)
		for j := 0; j < 5; j++ {
			testutil.MustPost(t, h.URL("/pub?topic=review_health"), []byte("m"))
		}
		for j := 0; j < 5; j++ {
			c.ExpectMessage()
		}
		testutil.MustPost(t, h.URL("/channel/delete?topic=review_health&channel="+ch), nil)
		c.WaitClosed(5 * time.Second)
		// the disconnect is handled asynchronously; give it a moment to run
		testutil.Eventually(300*time.Millisecond, func() bool {
			return h.Server.(*nsqd.NSQD).Health() != "OK"
		})
		if got := h.Server.(*nsqd.NSQD).Health(); got != "OK" {
			t.Fatalf("round %d: health after deleting a channel with in-flight messages = %q", i, got)
		}
	}
}

// BUG (topic.go put/distribute): on the direct path (the topic has channels
// and nothing queued) a publish is written straight into the channels, and a
// channel's failed disk write is only logged by Topic.distribute: the
// publisher gets OK although the message was stored nowhere (§5.11: a failed
// disk write makes the publish fail with E_PUB_FAILED). The failure is forced
// by putting a directory where the channel's first disk queue file goes.
func TestReviewDirectPublishReportsChannelDiskFailure(t *testing.T) {
	h := testutil.StartNSQD(t, func(o *nsqd.Options) { o.MemQueueSize = 0 })
	createChannel(t, h, "review_diskfail", "ch")
	if err := os.Mkdir(filepath.Join(h.DataPath, "review_diskfail:ch.diskqueue.000000.dat"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := testutil.DialV2(t, h.TCPAddr)
	c.Send("PUB review_diskfail", []byte("lost?"))
	f := c.MustFrame()
	if f.Type == testutil.FrameTypeResponse && string(f.Data) == "OK" {
		cs := channelStats(t, h, "review_diskfail", "ch")
		ts := topicStats(t, h, "review_diskfail")
		t.Fatalf("PUB acknowledged although the channel's disk write failed (health %q, channel depth %d, topic depth %d)",
			h.Server.(*nsqd.NSQD).Health(), cs.Depth, ts.Depth)
	}
	if f.Type != testutil.FrameTypeError || !strings.HasPrefix(string(f.Data), "E_PUB_FAILED") {
		t.Fatalf("PUB: got %v, want E_PUB_FAILED", f)
	}
}

// Coverage: without channels the publish goes to the topic's own disk queue
// and a failed write there is reported to the publisher.
func TestReviewTopicPublishReportsDiskFailure(t *testing.T) {
	h := testutil.StartNSQD(t, func(o *nsqd.Options) { o.MemQueueSize = 0 })
	testutil.MustPost(t, h.URL("/topic/create?topic=review_tdiskfail"), nil)
	if err := os.Mkdir(filepath.Join(h.DataPath, "review_tdiskfail.diskqueue.000000.dat"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := testutil.DialV2(t, h.TCPAddr)
	c.Send("PUB review_tdiskfail", []byte("x"))
	f := c.MustFrame()
	if f.Type != testutil.FrameTypeError || !strings.HasPrefix(string(f.Data), "E_PUB_FAILED") {
		t.Fatalf("PUB: got %v, want E_PUB_FAILED", f)
	}
	if got := h.Server.(*nsqd.NSQD).Health(); !strings.HasPrefix(got, "NOK") {
		t.Fatalf("health = %q after a failed disk write", got)
	}
}

// BUG (client.go writeFrame/flushLocked): write deadlines are only set while
// the heartbeat interval is positive, never cleared. A connection that wrote
// something (here a PUB reply) before IDENTIFY set heartbeat_interval -1
// keeps that stale deadline, and its first write after it passes fails and
// closes the connection (§3.16: H = 0 means no read or write deadlines).
func TestReviewHeartbeatDisabledClearsWriteDeadline(t *testing.T) {
	h := testutil.StartNSQD(t, func(o *nsqd.Options) { o.ClientTimeout = 2 * time.Second }) // default H = 1 s
	c := testutil.DialV2(t, h.TCPAddr)
	c.Publish("review_wdl", []byte("a")) // reply written with deadline now+1s
	c.Identify(map[string]any{"heartbeat_interval": -1})
	time.Sleep(1500 * time.Millisecond) // the scenario: an idle publisher
	c.Send("PUB review_wdl", []byte("b"))
	f, err := c.ReadFrame(3 * time.Second)
	if err != nil {
		t.Fatalf("PUB after 1.5 s idle with heartbeats disabled: %v (connection closed by a stale write deadline)", err)
	}
	if f.Type != testutil.FrameTypeResponse || string(f.Data) != "OK" {
		t.Fatalf("PUB: got %v", f)
	}
}

// stressHandler finishes every message except the first delivery of bodies
// divisible by 5, which it requeues (go-nsq sends REQ 0 and backs off, so RDY
// toggles between 0 and 1 as well).
type stressHandler struct {
	mu        sync.Mutex
	finished  map[string]int
	delivered map[string]int
}

func (s *stressHandler) HandleMessage(m *nsq.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := string(m.Body)
	s.delivered[b]++
	var i int
	fmt.Sscanf(b, "m%d", &i)
	if i%5 == 0 && m.Attempts == 1 {
		return errors.New("requeue once")
	}
	s.finished[b]++
	return nil
}

func (s *stressHandler) finishedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.finished)
}

// Coverage: with a tiny memory queue (disk overflow and refill), two
// channels, three consumers each, concurrent MPUBs, REQs and go-nsq backoff,
// every message is finished exactly once per channel, delivered at most
// twice (once more only when requeued) and the accounting ends at zero.
func TestReviewStressOverflowRequeueAccounting(t *testing.T) {
	h := testutil.StartNSQD(t, func(o *nsqd.Options) { o.MemQueueSize = 3 })
	const total = 3000
	createChannel(t, h, "review_stress", "a")
	createChannel(t, h, "review_stress", "b")
	handlers := map[string]*stressHandler{}
	for _, chName := range []string{"a", "b"} {
		sh := &stressHandler{finished: map[string]int{}, delivered: map[string]int{}}
		handlers[chName] = sh
		for k := 0; k < 3; k++ {
			cfg := testutil.NewConfig()
			cfg.MaxInFlight = 4
			cfg.MaxBackoffDuration = 50 * time.Millisecond
			testutil.NewConsumer(t, h.TCPAddr, "review_stress", chName, cfg, sh)
		}
	}
	p := testutil.NewProducer(t, h.TCPAddr, nil)
	for i := 0; i < total; i += 100 {
		if err := p.MultiPublish("review_stress", bodies("m", i, 100)); err != nil {
			t.Fatal(err)
		}
	}
	for name, sh := range handlers {
		testutil.WaitFor(t, 60*time.Second, func() bool { return sh.finishedCount() == total },
			"channel %s: all %d messages finished", name, total)
	}
	for name, sh := range handlers {
		sh.mu.Lock()
		for b, n := range sh.finished {
			if n != 1 {
				t.Errorf("channel %s: %s finished %d times", name, b, n)
			}
		}
		for b, n := range sh.delivered {
			var i int
			fmt.Sscanf(b, "m%d", &i)
			want := 1
			if i%5 == 0 {
				want = 2
			}
			if n != want {
				t.Errorf("channel %s: %s delivered %d times, want %d", name, b, n, want)
			}
		}
		sh.mu.Unlock()
	}
	testutil.WaitFor(t, 10*time.Second, func() bool {
		for _, name := range []string{"a", "b"} {
			cs := channelStats(t, h, "review_stress", name)
			if cs.Depth != 0 || cs.InFlightCount != 0 || cs.DeferredCount != 0 || cs.RequeueCount != total/5 || cs.MessageCount != total {
				return false
			}
			for _, c := range cs.Clients {
				if c.InFlightCount != 0 {
					return false
				}
			}
		}
		return true
	}, "channel accounting back to zero")
}

// BUG (nsqd.go DeleteTopic; also backend.go delete, see
// TestReviewDeleteRemovesDiskFiles): the topic is removed from the topic map before
// it is closed and its files deleted. A publish racing with the delete does
// not fail with EXITING (§5.9) but creates a new topic of the same name whose
// go-diskqueue uses the same file names while the old one still owns them;
// the old queue's Delete then unlinks the file the new topic writes to. The
// new topic keeps working from its open file handles, but after a restart
// the messages it acknowledged are gone. The delete is slowed down by giving
// the topic many channels.
func TestReviewPublishRacingTopicDeleteSurvivesRestart(t *testing.T) {
	h := testutil.StartNSQD(t, func(o *nsqd.Options) { o.MemQueueSize = 0 })
	const topic = "review_delrace"
	var accepted int64
	for attempt := 0; attempt < 10 && accepted == 0; attempt++ {
		testutil.MustPost(t, h.URL("/topic/create?topic="+topic), nil)
		for i := 0; i < 100; i++ {
			testutil.MustPost(t, h.URL(fmt.Sprintf("/channel/create?topic=%s&channel=c%d", topic, i)), nil)
		}
		testutil.MustPost(t, h.URL("/topic/pause?topic="+topic), nil)
		for i := 0; i < 10; i++ { // queued on the old topic's disk queue
			testutil.MustPost(t, h.URL("/pub?topic="+topic), []byte("old"))
		}
		pub := testutil.DialV2(t, h.TCPAddr)
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := pub.TryWrite(testutil.Command("PUB "+topic, []byte("new"))); err != nil {
					return
				}
				if _, err := pub.ReadNonHeartbeat(5 * time.Second); err != nil {
					return
				}
			}
		}()
		testutil.WaitFor(t, 5*time.Second, func() bool {
			ts := topicStats(t, h, topic)
			return ts != nil && ts.MessageCount > 10
		}, "publisher running")
		testutil.MustPost(t, h.URL("/topic/delete?topic="+topic), nil)
		close(stop)
		<-done
		pub.Close()
		ts := topicStats(t, h, topic)
		if ts == nil {
			continue // no publish landed in the window
		}
		testutil.WaitFor(t, 5*time.Second, func() bool {
			ts = topicStats(t, h, topic)
			return ts.MessageCount == uint64(ts.Depth)
		}, "recreated topic holds what it accepted")
		accepted = ts.Depth
	}
	if accepted == 0 {
		t.Log("no publish raced with the delete; nothing to check")
		return
	}
	h = testutil.RestartNSQD(t, h)
	ts := topicStats(t, h, topic)
	if ts == nil || ts.Depth != accepted {
		var depth int64 = -1
		if ts != nil {
			depth = ts.Depth
		}
		t.Fatalf("recreated topic held %d acknowledged messages before the restart, depth %d after", accepted, depth)
	}
	c := subscribe(t, h, topic, "drain", nil)
	c.Ready(100)
	got := int64(0)
	for {
		f, err := c.ReadNonHeartbeat(time.Second)
		if err != nil {
			break
		}
		if f.Type == testutil.FrameTypeMessage {
			got++
			m, _ := testutil.DecodeMessage(f.Data)
			c.Finish(m.ID)
		}
	}
	if got != accepted {
		t.Fatalf("recreated topic held %d acknowledged messages before the restart; %d delivered after it", accepted, got)
	}
}

// BUG (backend.go diskBackend.delete): go-diskqueue's Delete only closes the
// queue without syncing; it does not remove any file (NSQ empties the queue
// first). Deleting a topic or channel therefore leaves its data files (and
// possibly metadata) on disk (§5.9: "removes its disk files"), and a topic or
// channel later created with the same name reads them back: deleted messages
// are resurrected.
func TestReviewDeleteRemovesDiskFiles(t *testing.T) {
	for _, kind := range []string{"topic", "channel"} {
		t.Run(kind, func(t *testing.T) {
			h := testutil.StartNSQD(t, func(o *nsqd.Options) { o.MemQueueSize = 0 })
			topic := "review_delfiles_" + kind
			prefix := topic + "."
			if kind == "channel" {
				createChannel(t, h, topic, "ch")
				prefix = topic + ":ch."
			}
			for i := 0; i < 5; i++ {
				testutil.MustPost(t, h.URL("/pub?topic="+topic), []byte("deleted"))
			}
			h = testutil.RestartNSQD(t, h) // the queue is on disk with its metadata
			if kind == "channel" {
				testutil.MustPost(t, h.URL("/channel/delete?topic="+topic+"&channel=ch"), nil)
			} else {
				testutil.MustPost(t, h.URL("/topic/delete?topic="+topic), nil)
			}
			ents, err := os.ReadDir(h.DataPath)
			if err != nil {
				t.Fatal(err)
			}
			var left []string
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), prefix) {
					left = append(left, e.Name())
				}
			}
			// recreate it: it must start empty
			if kind == "channel" {
				createChannel(t, h, topic, "ch")
				if cs := channelStats(t, h, topic, "ch"); cs.Depth != 0 {
					t.Errorf("recreated channel has depth %d", cs.Depth)
				}
			} else {
				testutil.MustPost(t, h.URL("/topic/create?topic="+topic), nil)
				if ts := topicStats(t, h, topic); ts.Depth != 0 {
					t.Errorf("recreated topic has depth %d", ts.Depth)
				}
			}
			if len(left) > 0 {
				t.Fatalf("files left after deleting the %s: %v", kind, left)
			}
		})
	}
}

// BUG (channel.go memRoomLocked): with --mem-queue-size=0 an ephemeral
// channel's hand-off room is len(c.waiters), which also counts stale entries
// of consumers that stopped being ready. After a consumer went RDY 1 then
// RDY 0, a publish is kept in memory (depth 1) instead of being dropped, and
// is delivered later although no consumer was ready when it arrived (§5.10).
func TestReviewEphemeralZeroMemDropsWithoutReadyConsumer(t *testing.T) {
	h := testutil.StartNSQD(t, func(o *nsqd.Options) { o.MemQueueSize = 0 })
	const topic, ch = "review_eph0", "c#ephemeral"
	c := subscribe(t, h, topic, ch, nil)
	// each PUB reply proves the RDY before it was acted upon
	c.Send("RDY 1", nil)
	c.Publish("review_eph0_other", []byte("x"))
	c.Publish("review_eph0_other", []byte("x"))
	c.Send("RDY 0", nil)
	c.Publish("review_eph0_other", []byte("x"))
	c.Publish("review_eph0_other", []byte("x"))
	testutil.MustPost(t, h.URL("/pub?topic="+topic), []byte("nobody ready"))
	if cs := channelStats(t, h, topic, ch); cs.Depth != 0 {
		t.Fatalf("ephemeral channel with --mem-queue-size=0 and no ready consumer kept the message: depth %d", cs.Depth)
	}
}
