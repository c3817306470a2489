package nsqd_test

import (
	"crypto/tls"
	"errors"
	"net"
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
