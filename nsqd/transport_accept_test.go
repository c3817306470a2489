package nsqd_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"
	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/nsqd"
)

// TestTransports: messages flow over TLS, snappy, deflate, TLS+snappy and
// TLS+deflate connections (go-nsq), and /stats reports each connection's
// negotiated features.
func TestTransports(t *testing.T) {
	certs := testutil.GenerateTLS(t)
	h := testutil.StartNSQD(t, func(o *nsqd.Options) {
		o.TLSCert = certs.CertFile
		o.TLSKey = certs.KeyFile
	})
	cases := []struct {
		name                 string
		tls, snappy, deflate bool
	}{
		{"plain", false, false, false},
		{"tls", true, false, false},
		{"snappy", false, true, false},
		{"deflate", false, false, true},
		{"tls+snappy", true, true, false},
		{"tls+deflate", true, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := func() *nsq.Config {
				cfg := testutil.NewConfig()
				cfg.Snappy, cfg.Deflate = tc.snappy, tc.deflate
				cfg.DeflateLevel = 5
				if tc.tls {
					cfg.TlsV1 = true
					cfg.TlsConfig = certs.ClientConfig()
				}
				cfg.MaxInFlight = 50
				cfg.UserAgent = "transport-" + tc.name
				return cfg
			}
			topic := "transport_" + map[bool]string{true: "t", false: "p"}[tc.tls] + map[bool]string{true: "s", false: ""}[tc.snappy] + map[bool]string{true: "d", false: ""}[tc.deflate]
			const n = 200
			got := testutil.NewCollector()
			testutil.NewConsumer(t, h.TCPAddr, topic, "c", cfg(), got)
			p := testutil.NewProducer(t, h.TCPAddr, cfg())
			for i := range n / 2 {
				if err := p.Publish(topic, fmt.Appendf(nil, "%s-%d", tc.name, i)); err != nil {
					t.Fatalf("publish: %v", err)
				}
			}
			if err := p.MultiPublish(topic, bodies(tc.name+"-", n/2, n/2)); err != nil {
				t.Fatalf("multipublish: %v", err)
			}
			testutil.WaitFor(t, 10*time.Second, func() bool { return got.Len() >= n }, "%d deliveries", n)
			counts := got.Counts()
			for i := range n {
				if k := counts[fmt.Sprintf("%s-%d", tc.name, i)]; k != 1 {
					t.Errorf("message %d delivered %d times", i, k)
				}
			}
			s := testutil.GetStats(t, h.HTTPAddr, "&topic="+topic)
			cs := s.Channel(topic, "c")
			if cs == nil || len(cs.Clients) != 1 {
				t.Fatalf("channel stats %+v, want one client", cs)
			}
			cl := cs.Clients[0]
			if cl.TLS != tc.tls || cl.Snappy != tc.snappy || cl.Deflate != tc.deflate || cl.UserAgent != "transport-"+tc.name {
				t.Errorf("consumer stats tls=%v snappy=%v deflate=%v user_agent=%q, want %v %v %v %q", cl.TLS, cl.Snappy, cl.Deflate, cl.UserAgent, tc.tls, tc.snappy, tc.deflate, "transport-"+tc.name)
			}
			if tc.tls && (cl.TLSVersion == "" || cl.TLSCipherSuite == "") {
				t.Errorf("TLS consumer stats tls_version=%q tls_cipher_suite=%q, want both set", cl.TLSVersion, cl.TLSCipherSuite)
			}
			if !tc.tls && (cl.TLSVersion != "" || cl.TLSCipherSuite != "") {
				t.Errorf("plain consumer stats tls_version=%q tls_cipher_suite=%q, want empty", cl.TLSVersion, cl.TLSCipherSuite)
			}

			// Both connections go idle (a plain one is parked, see
			// client.serve) and then work on, on the same connections.
			time.Sleep(1200 * time.Millisecond)
			if err := p.Publish(topic, []byte(tc.name+"-after-idle")); err != nil {
				t.Fatalf("publish after idling: %v", err)
			}
			testutil.WaitFor(t, 10*time.Second, func() bool { return got.Len() >= n+1 }, "the message published after idling")
			s = testutil.GetStats(t, h.HTTPAddr, "&topic="+topic)
			if cs := s.Channel(topic, "c"); cs == nil || len(cs.Clients) != 1 || cs.Clients[0].RemoteAddress != cl.RemoteAddress {
				t.Errorf("consumer after idling: %+v, want the same connection %s", cs, cl.RemoteAddress)
			}
			if len(s.Producers) != 1 || len(s.Producers[0].PubCounts) != 1 || s.Producers[0].PubCounts[0].Count != n+1 {
				t.Errorf("producers after idling: %+v, want one connection with all %d publishes", s.Producers, n+1)
			}
		})
	}
	t.Run("https listener", func(t *testing.T) {
		if h.HTTPSAddr == "" {
			t.Fatalf("nsqd with a TLS certificate reports no HTTPS address")
		}
		c := testutil.HTTPClientTLS(certs.ClientConfig())
		resp, err := c.Get("https://" + h.HTTPSAddr + "/ping")
		if err != nil {
			t.Fatalf("GET /ping over HTTPS: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET /ping over HTTPS: %d", resp.StatusCode)
		}
	})
}

// TestIdentifyNegotiation checks the IDENTIFY reply keys, in order, and values (§4.2).
func TestIdentifyNegotiation(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	c := testutil.DialV2(t, h.TCPAddr)
	reply := c.Identify(map[string]any{"feature_negotiation": true, "client_id": "cid", "hostname": "hn", "msg_timeout": 5000, "deflate_level": 9, "heartbeat_interval": 2000})
	keys, err := testutil.ObjectKeys(reply)
	if err != nil {
		t.Fatalf("IDENTIFY reply %q: %v", reply, err)
	}
	want := []string{"max_rdy_count", "version", "max_msg_timeout", "msg_timeout", "tls_v1", "deflate", "deflate_level", "max_deflate_level", "snappy", "sample_rate", "auth_required", "output_buffer_size", "output_buffer_timeout"}
	if fmt.Sprint(keys) != fmt.Sprint(want) {
		t.Errorf("IDENTIFY reply keys %v, want %v", keys, want)
	}
	var r map[string]any
	if err := json.Unmarshal(reply, &r); err != nil {
		t.Fatal(err)
	}
	wantVals := map[string]any{"max_rdy_count": 2500.0, "version": "1.3.0", "max_msg_timeout": 900000.0, "msg_timeout": 5000.0,
		"tls_v1": false, "deflate": false, "deflate_level": 6.0, "max_deflate_level": 6.0, "snappy": false, "sample_rate": 0.0,
		"auth_required": false, "output_buffer_size": 16384.0, "output_buffer_timeout": 250.0}
	for k, v := range wantVals {
		if r[k] != v {
			t.Errorf("IDENTIFY reply %s = %v, want %v", k, r[k], v)
		}
	}
	c.Publish("ident", []byte("x")) // makes it a producer in /stats
	s := testutil.GetStats(t, h.HTTPAddr, "")
	if len(s.Producers) != 1 || s.Producers[0].ClientID != "cid" || s.Producers[0].Hostname != "hn" {
		t.Fatalf("producers %+v, want one with client_id cid hostname hn", s.Producers)
	}
}

// authHandle starts an auth server with the standard secrets and an nsqd using it.
func authHandle(t *testing.T) (*testutil.NSQDHandle, *testutil.AuthServer) {
	auth := testutil.StartAuthServer(t)
	auth.Allow("pubsub", testutil.AuthResponse{TTL: 3600, Identity: "alice", IdentityURL: "https://id.example/alice", Authorizations: []testutil.Authorization{
		{Topic: "^authed$", Channels: []string{".*"}, Permissions: []string{"subscribe", "publish"}},
	}})
	auth.Allow("pubonly", testutil.AuthResponse{TTL: 3600, Identity: "bob", Authorizations: []testutil.Authorization{
		{Topic: "^authed$", Channels: []string{".*"}, Permissions: []string{"publish"}},
	}})
	// Channel pattern that cannot match "": SUB allowed, publishing never (§12.3).
	auth.Allow("subonly", testutil.AuthResponse{TTL: 3600, Identity: "carol", Authorizations: []testutil.Authorization{
		{Topic: "authed", Channels: []string{"^c$"}, Permissions: []string{"subscribe", "publish"}},
		{Topic: "other", Channels: []string{".*"}, Permissions: []string{"subscribe"}},
	}})
	auth.Allow("badperm", testutil.AuthResponse{TTL: 3600, Identity: "mallory", Authorizations: []testutil.Authorization{
		{Topic: ".*", Channels: []string{".*"}, Permissions: []string{"admin"}},
	}})
	h := testutil.StartNSQD(t, func(o *nsqd.Options) { o.AuthHTTPAddresses = []string{auth.Addr} })
	return h, auth
}

// TestAuthAllowsAndDenies: AUTH allows and denies exactly as the auth server says (§12).
func TestAuthAllowsAndDenies(t *testing.T) {
	h, auth := authHandle(t)

	t.Run("go-nsq with a good secret", func(t *testing.T) {
		cfg := testutil.NewConfig()
		cfg.AuthSecret = "pubsub"
		got := testutil.NewCollector()
		testutil.NewConsumer(t, h.TCPAddr, "authed", "c", cfg, got)
		p := testutil.NewProducer(t, h.TCPAddr, cfg)
		for _, b := range bodies("a", 0, 10) {
			if err := p.Publish("authed", b); err != nil {
				t.Fatalf("authorized publish: %v", err)
			}
		}
		testutil.WaitFor(t, 5*time.Second, func() bool { return got.Len() == 10 }, "10 deliveries")
		cs := channelStats(t, h, "authed", "c")
		if len(cs.Clients) != 1 || !cs.Clients[0].Authed || cs.Clients[0].AuthIdentity != "alice" || cs.Clients[0].AuthIdentityURL != "https://id.example/alice" {
			t.Fatalf("consumer stats %+v, want authed alice", cs.Clients)
		}
		reqs := auth.Requests()
		if len(reqs) == 0 {
			t.Fatalf("auth server saw no request")
		}
		q := reqs[0]
		if q.Get("secret") != "pubsub" || q.Get("remote_ip") != "127.0.0.1" || q.Get("tls") != "false" || !q.Has("common_name") || q.Get("common_name") != "" {
			t.Fatalf("auth request query %v, want secret=pubsub remote_ip=127.0.0.1 tls=false common_name=", q)
		}
	})

	t.Run("IDENTIFY reports auth_required", func(t *testing.T) {
		c := testutil.DialV2(t, h.TCPAddr)
		var r struct {
			AuthRequired bool `json:"auth_required"`
		}
		if err := json.Unmarshal(c.Identify(map[string]any{"feature_negotiation": true}), &r); err != nil || !r.AuthRequired {
			t.Fatalf("auth_required=%v err=%v, want true", r.AuthRequired, err)
		}
	})

	t.Run("AUTH reply", func(t *testing.T) {
		c := testutil.DialV2(t, h.TCPAddr)
		c.Send("AUTH", []byte("pubsub"))
		c.ExpectResponse(`{"identity":"alice","identity_url":"https://id.example/alice","permission_count":1}`)
		c.Publish("authed", []byte("ok"))
	})

	deny := []struct {
		name, secret string
		send         []byte
		want         string
	}{
		{"publish to another topic", "pubsub", frame("PUB other\n", 1, "x"), `E_UNAUTHORIZED AUTH failed for PUB on "other" ""`},
		{"MPUB to another topic", "pubsub", frame("MPUB other\n", 9, 1, 1, "x"), `E_UNAUTHORIZED AUTH failed for MPUB on "other" ""`},
		{"DPUB to another topic", "pubsub", frame("DPUB other 10\n", 1, "x"), `E_UNAUTHORIZED AUTH failed for DPUB on "other" ""`},
		{"subscribe to another topic", "pubsub", []byte("SUB other c\n"), `E_UNAUTHORIZED AUTH failed for SUB on "other" "c"`},
		{"publish-only subscribes", "pubonly", []byte("SUB authed c\n"), `E_UNAUTHORIZED AUTH failed for SUB on "authed" "c"`},
		{"channel regex not matching empty publishes", "subonly", frame("PUB authed\n", 1, "x"), `E_UNAUTHORIZED AUTH failed for PUB on "authed" ""`},
		{"subscribe-only subscribes to another channel", "subonly", []byte("SUB authed d\n"), `E_UNAUTHORIZED AUTH failed for SUB on "authed" "d"`},
	}
	for _, tc := range deny {
		t.Run("deny "+tc.name, func(t *testing.T) {
			c := testutil.DialV2(t, h.TCPAddr)
			c.Send("AUTH", []byte(tc.secret))
			if f := c.MustFrame(); f.Type != testutil.FrameTypeResponse {
				t.Fatalf("AUTH %s: %v", tc.secret, f)
			}
			_ = c.TryWrite(tc.send)
			c.ExpectError(tc.want)
			c.WaitClosed(3 * time.Second)
		})
	}

	t.Run("allow publish-only publishes", func(t *testing.T) {
		c := testutil.DialV2(t, h.TCPAddr)
		c.Send("AUTH", []byte("pubonly"))
		c.MustFrame()
		c.Publish("authed", []byte("bob"))
		c.Send("MPUB authed", testutil.MPUBBody(bodies("bob", 0, 2)))
		c.ExpectOK()
		c.Send("DPUB authed 10", []byte("bob-later"))
		c.ExpectOK()
	})
	t.Run("allow subscribe-only subscribes", func(t *testing.T) {
		c := testutil.DialV2(t, h.TCPAddr)
		c.Send("AUTH", []byte("subonly"))
		c.ExpectResponse(`{"identity":"carol","identity_url":"","permission_count":2}`)
		c.Subscribe("authed", "c")
	})
	t.Run("unknown permission rejects the answer", func(t *testing.T) {
		c := testutil.DialV2(t, h.TCPAddr)
		c.Send("AUTH", []byte("badperm"))
		c.ExpectError("E_AUTH_FAILED AUTH failed")
		c.WaitClosed(3 * time.Second)
	})
	t.Run("go-nsq with a bad secret cannot consume", func(t *testing.T) {
		cfg := testutil.NewConfig()
		cfg.AuthSecret = "wrong"
		cons, err := nsq.NewConsumer("authed", "c", cfg)
		if err != nil {
			t.Fatal(err)
		}
		cons.SetLogger(testutil.GoNSQLogger())
		cons.AddHandler(testutil.NewCollector())
		defer testutil.StopConsumer(t, cons)
		if err := cons.ConnectToNSQD(h.TCPAddr); err == nil {
			t.Fatalf("ConnectToNSQD with a wrong secret succeeded")
		}
	})
}
