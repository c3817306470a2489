package clients_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"
	"github.com/sluicemq/sluice/clients"
	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/internal/toolstest"
)

func TestConfigOpts(t *testing.T) {
	var opts clients.ConfigOpts
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Var(&opts, "consumer-opt", "")
	if err := fs.Parse([]string{"--consumer-opt", "max_attempts,7", "--consumer-opt", "snappy", "--consumer-opt", "lookupd_poll_interval,5s"}); err != nil {
		t.Fatal(err)
	}
	cfg := nsq.NewConfig()
	if err := opts.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.MaxAttempts != 7 || !cfg.Snappy || cfg.LookupdPollInterval != 5*time.Second {
		t.Fatalf("config not applied: attempts=%d snappy=%v poll=%v", cfg.MaxAttempts, cfg.Snappy, cfg.LookupdPollInterval)
	}
	for _, bad := range []string{"nosuch,1", "max_in_flight,abc", "max_in_flight,-1"} {
		if err := (clients.ConfigOpts{bad}).Apply(nsq.NewConfig()); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("Apply(%q) error %v, want one naming the option", bad, err)
		}
	}
}

func TestStringsFlag(t *testing.T) {
	var s clients.StringsFlag
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Var(&s, "topic", "")
	if err := fs.Parse([]string{"--topic", "a", "--topic=b"}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(s, ",") != "a,b" {
		t.Fatalf("got %v", s)
	}
}

func TestNSQLoggerLevels(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if lvl := clients.NSQLogLevel(l); lvl != nsq.LogLevelWarning {
		t.Fatalf("NSQLogLevel = %v", lvl)
	}
	nl := clients.NSQLogger{L: l}
	nl.Output(2, "INF    1 [t/c] connecting")
	nl.Output(2, "ERR    1 [t/c] broken")
	out := buf.String()
	if strings.Contains(out, "connecting") || !strings.Contains(out, "level=ERROR") || !strings.Contains(out, `msg="1 [t/c] broken"`) {
		t.Fatalf("log output %q", out)
	}
}

func TestLookupHelpers(t *testing.T) {
	c := toolstest.StartCluster(t, 2, nil)
	for _, h := range c.NSQDs {
		testutil.MustPost(t, h.URL("/topic/create?topic=lk"), nil)
	}
	testutil.MustPost(t, c.NSQDs[0].URL("/topic/create?topic=only0"), nil)
	c.WaitLookup(t, "lk", 2)
	c.WaitLookup(t, "only0", 1)
	hc := clients.NewHTTPClient(time.Second, 2*time.Second)
	// A dead lookupd next to a live one is tolerated.
	addrs := []string{"127.0.0.1:1", c.LookupdHTTP}
	ps, err := clients.LookupProducers(t.Context(), hc, addrs, "lk")
	if err != nil || len(ps) != 2 {
		t.Fatalf("LookupProducers = %v, %v", ps, err)
	}
	want := map[string]bool{c.NSQDs[0].HTTPAddr: true, c.NSQDs[1].HTTPAddr: true}
	for _, p := range ps {
		if !want[p.HTTPAddress()] {
			t.Errorf("unexpected producer %+v", p)
		}
	}
	topics, err := clients.LookupTopics(t.Context(), hc, addrs)
	if err != nil || strings.Join(topics, ",") != "lk,only0" {
		t.Fatalf("LookupTopics = %v, %v", topics, err)
	}
	if _, err := clients.LookupProducers(t.Context(), hc, []string{c.LookupdHTTP}, "nope"); err == nil || !strings.Contains(err.Error(), "TOPIC_NOT_FOUND") {
		t.Fatalf("unknown topic error %v", err)
	}
	if _, err := clients.LookupTopics(t.Context(), hc, []string{"127.0.0.1:1"}); err == nil || !strings.Contains(err.Error(), "failed to query any nsqlookupd") {
		t.Fatalf("dead lookupd error %v", err)
	}
}

// Legacy lookupd answers wrap producers in "data".
func TestLookupProducersLegacyShape(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Accept") != "application/vnd.nsq; version=1.0" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"status_code": 200, "data": map[string]any{
			"producers": []map[string]any{{"broadcast_address": "h", "tcp_port": 1, "http_port": 2}},
		}})
	}))
	defer srv.Close()
	ps, err := clients.LookupProducers(t.Context(), http.DefaultClient, []string{srv.URL}, "t")
	if err != nil || len(ps) != 1 || ps[0].HTTPAddress() != "h:2" || ps[0].TCPAddress() != "h:1" {
		t.Fatalf("got %+v, %v", ps, err)
	}
}

func TestStartConsumerErrors(t *testing.T) {
	if _, err := clients.StartConsumer(clients.ConsumerOptions{Topic: "t", Channel: "c", Handler: nsq.HandlerFunc(func(*nsq.Message) error { return nil })}); err == nil {
		t.Error("no addresses accepted")
	}
	if _, err := clients.StartConsumer(clients.ConsumerOptions{Topic: "t", Channel: "c", NSQDAddrs: []string{"127.0.0.1:1"}, Handler: nsq.HandlerFunc(func(*nsq.Message) error { return nil })}); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("unreachable nsqd: %v", err)
	}
}
