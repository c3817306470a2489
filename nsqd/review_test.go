package nsqd_test

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
