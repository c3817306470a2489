package nsqd_test

import (
	"crypto/tls"
	"net/http"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"

	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/nsqd"
)

// TestAuditTLSMinVersion: with --tls-min-version=tls1.2 a client limited to
// TLS 1.1 fails the TCP upgrade and the HTTPS handshake, while a TLS 1.2
// client publishes over both (§13.1).
func TestAuditTLSMinVersion(t *testing.T) {
	certs := testutil.GenerateTLS(t)
	h := testutil.StartNSQD(t, func(o *nsqd.Options) {
		o.TLSCert, o.TLSKey = certs.CertFile, certs.KeyFile
		o.TLSMinVersion = tls.VersionTLS12
	})
	clientTLS := func(maxVersion uint16) *tls.Config {
		c := certs.ClientConfig()
		c.MinVersion = tls.VersionTLS10
		c.MaxVersion = maxVersion
		return c
	}

	old := testutil.NewConfig()
	old.TlsV1 = true
	old.TlsConfig = clientTLS(tls.VersionTLS11)
	p, err := nsq.NewProducer(h.TCPAddr, old)
	if err != nil {
		t.Fatal(err)
	}
	l, lvl := testutil.GoNSQLogger()
	p.SetLogger(l, lvl)
	defer p.Stop()
	if err := p.Publish("tlsmin", []byte("old")); err == nil {
		t.Fatal("TLS 1.1 client published over TCP with --tls-min-version=tls1.2")
	}

	cur := testutil.NewConfig()
	cur.TlsV1 = true
	cur.TlsConfig = clientTLS(tls.VersionTLS12)
	if err := testutil.NewProducer(t, h.TCPAddr, cur).Publish("tlsmin", []byte("new")); err != nil {
		t.Fatalf("TLS 1.2 publish over TCP: %v", err)
	}

	oldHTTPS := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: clientTLS(tls.VersionTLS11)}}
	if r, err := oldHTTPS.Get("https://" + h.HTTPSAddr + "/ping"); err == nil {
		r.Body.Close()
		t.Fatal("TLS 1.1 HTTPS client accepted with --tls-min-version=tls1.2")
	}
	newHTTPS := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: clientTLS(tls.VersionTLS12)}}
	r, err := newHTTPS.Post("https://"+h.HTTPSAddr+"/pub?topic=tlsmin", "text/plain", nil)
	if err != nil {
		t.Fatalf("TLS 1.2 HTTPS: %v", err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusBadRequest { // empty body: MSG_EMPTY, but the handshake worked
		t.Fatalf("HTTPS /pub with empty body: %d, want 400", r.StatusCode)
	}
	if tp := testutil.GetStats(t, h.HTTPAddr, "&topic=tlsmin").Topic("tlsmin"); tp == nil || tp.MessageCount != 1 {
		t.Fatalf("topic tlsmin %+v, want message_count 1 (only the TLS 1.2 publish)", tp)
	}
}

// TestAuditTLSRequiredTCPHTTPS: --tls-required=tcp-https refuses plain TCP
// publishing but leaves plain HTTP open (§13.1, §15.2).
func TestAuditTLSRequiredTCPHTTPS(t *testing.T) {
	certs := testutil.GenerateTLS(t)
	h := testutil.StartNSQD(t, func(o *nsqd.Options) {
		o.TLSCert, o.TLSKey = certs.CertFile, certs.KeyFile
		o.TLSRequired = nsqd.TLSRequiredExceptHTTP
	})
	c := testutil.DialV2(t, h.TCPAddr)
	c.Write(frame("PUB tcphttps\n", 1, "x"))
	c.ExpectError("E_INVALID cannot PUB in current state (TLS required)")
	c.WaitClosed(3 * time.Second)

	if r := testutil.HTTPDo(t, http.MethodPost, h.URL("/pub?topic=tcphttps"), []byte("plain")); r.Status != http.StatusOK {
		t.Fatalf("plain HTTP /pub with tcp-https: %v, want 200", r)
	}
	if tp := testutil.GetStats(t, h.HTTPAddr, "&topic=tcphttps").Topic("tcphttps"); tp == nil || tp.MessageCount != 1 {
		t.Fatalf("topic tcphttps %+v, want message_count 1", tp)
	}
}

// TestAuditDebugPprof: /debug/pprof redirects to /debug/pprof/, whose index
// and named profiles answer 200 (§9.9).
func TestAuditDebugPprof(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	noRedirect := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	r, err := noRedirect.Get(h.URL("/debug/pprof"))
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusMovedPermanently || r.Header.Get("Location") != "/debug/pprof/" {
		t.Fatalf("/debug/pprof: %d Location %q, want 301 to /debug/pprof/", r.StatusCode, r.Header.Get("Location"))
	}
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/heap", "/debug/pprof/cmdline"} {
		if r := testutil.HTTPDo(t, http.MethodGet, h.URL(p), nil); r.Status != http.StatusOK || len(r.Body) == 0 {
			t.Errorf("GET %s: %d (%d bytes), want 200 with a body", p, r.Status, len(r.Body))
		}
	}
}
