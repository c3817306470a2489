package nsqd_test

import (
	"crypto/tls"
	"encoding/json"
	"testing"

	"github.com/nsqio/go-nsq"

	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/nsqd"
)

// With --tls-client-auth-policy=require-verify, a client presenting a
// certificate from --tls-root-ca-file is served and the auth server sees its
// common name; a client without one cannot connect.
func TestTLSClientCertificatePolicy(t *testing.T) {
	files := testutil.GenerateTLS(t)
	auth := testutil.StartAuthServer(t)
	auth.Allow("s3cret", testutil.AuthResponse{
		TTL: 60, Identity: "svc",
		Authorizations: []testutil.Authorization{{Topic: "^certs$", Channels: []string{".*"}, Permissions: []string{"publish"}}},
	})
	h := testutil.StartNSQD(t, func(o *nsqd.Options) {
		o.TLSCert, o.TLSKey, o.TLSRootCAFile = files.CertFile, files.KeyFile, files.CAFile
		o.TLSClientAuthPolicy = "require-verify"
		o.AuthHTTPAddresses = []string{auth.Addr}
	})

	cfg := testutil.NewConfig()
	cfg.TlsV1 = true
	cfg.TlsConfig = &tls.Config{RootCAs: files.Pool, Certificates: []tls.Certificate{files.ClientCert}, ServerName: "127.0.0.1"}
	cfg.AuthSecret = "s3cret"
	p, err := nsq.NewProducer(h.TCPAddr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	if err := p.Publish("certs", []byte("with a client certificate")); err != nil {
		t.Fatalf("publish with a client certificate: %v", err)
	}
	reqs := auth.Requests()
	if len(reqs) == 0 {
		t.Fatal("auth server was not asked")
	}
	last := reqs[len(reqs)-1]
	if last.Get("common_name") != testutil.ClientCommonName || last.Get("tls") != "true" {
		t.Fatalf("auth query common_name=%q tls=%q", last.Get("common_name"), last.Get("tls"))
	}

	noCert := testutil.NewConfig()
	noCert.TlsV1 = true
	noCert.TlsConfig = &tls.Config{RootCAs: files.Pool, ServerName: "127.0.0.1"}
	noCert.AuthSecret = "s3cret"
	p2, err := nsq.NewProducer(h.TCPAddr, noCert)
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Stop()
	if err := p2.Publish("certs", []byte("no certificate")); err == nil {
		t.Fatal("publish without a client certificate succeeded under require-verify")
	}
	// plain HTTP is refused; the HTTPS API wants the client certificate too
	if r := testutil.HTTPDo(t, "GET", h.URL("/ping"), nil); r.Status != 403 {
		t.Fatalf("plain HTTP under TLS required: %s", r)
	}
	hc := testutil.HTTPClientTLS(&tls.Config{RootCAs: files.Pool, Certificates: []tls.Certificate{files.ClientCert}})
	resp, err := hc.Get("https://" + h.HTTPSAddr + "/stats?format=json&topic=certs")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s testutil.Stats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	if tp := s.Topic("certs"); tp == nil || tp.MessageCount != 1 {
		t.Fatalf("topic certs: %+v, want exactly 1 message", tp)
	}
}

// --tls-required (set implicitly by a client auth policy) refuses commands
// before the TLS upgrade.
func TestTLSRequiredByClientPolicy(t *testing.T) {
	files := testutil.GenerateTLS(t)
	h := testutil.StartNSQD(t, func(o *nsqd.Options) {
		o.TLSCert, o.TLSKey, o.TLSRootCAFile = files.CertFile, files.KeyFile, files.CAFile
		o.TLSClientAuthPolicy = "require"
	})
	c := testutil.DialV2(t, h.TCPAddr)
	c.Send("PUB plain", []byte("x"))
	c.ExpectError("E_INVALID cannot PUB in current state (TLS required)")
}
