package main

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/sluicemq/sluice/admin"
)

func TestDefaultsMatchNSQAdmin(t *testing.T) {
	o, _, err := parseOptions([]string{"--lookupd-http-address=127.0.0.1:4161"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.HTTPAddress != "0.0.0.0:4171" || o.BasePath != "/" || o.ACLHTTPHeader != "X-Forwarded-User" ||
		o.AllowConfigFromCIDR != "127.0.0.1/8" || o.HTTPClientConnectTimeout != 2*time.Second ||
		o.HTTPClientRequestTimeout != 5*time.Second || o.StatsdPrefix != "nsq.%s" || o.StatsdInterval != time.Minute ||
		o.StatsdCounterFormat != "stats.counters.%s.count" || o.StatsdGaugeFormat != "stats.gauges.%s" {
		t.Fatalf("defaults = %+v", o)
	}
}

func TestConfigFileAndPrecedence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nsqadmin.cfg")
	cfg := `
http_address = "127.0.0.1:4999"
base_path = "/ops"
nsqlookupd_http_addresses = ["10.0.0.1:4161", "10.0.0.2:4161"]
admin_users = ["alice", "bob"]
acl_http_header = "X-User"
http_client_connect_timeout = 1500
http_client_request_timeout = "7s"
notification_http_endpoint = "http://hooks.local/nsq"
allow_config_from_cidr = "10.0.0.0/8"
log_level = "debug"
`
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	o, _, err := parseOptions([]string{"--config=" + path, "--acl-http-header=X-Flag"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.HTTPAddress != "127.0.0.1:4999" || o.BasePath != "/ops" ||
		!slices.Equal(o.NSQLookupdHTTPAddresses, []string{"10.0.0.1:4161", "10.0.0.2:4161"}) ||
		!slices.Equal(o.AdminUsers, []string{"alice", "bob"}) || o.ACLHTTPHeader != "X-Flag" ||
		o.HTTPClientConnectTimeout != 1500*time.Millisecond || o.HTTPClientRequestTimeout != 7*time.Second ||
		o.NotificationHTTPEndpoint != "http://hooks.local/nsq" || o.AllowConfigFromCIDR != "10.0.0.0/8" ||
		o.LogLevel.Level().String() != "DEBUG" {
		t.Fatalf("options from config = %+v", o)
	}
	if _, err := admin.New(o); err != nil {
		t.Fatalf("options from config rejected: %v", err)
	}
}

func TestExactlyOneAddressList(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"--lookupd-http-address=127.0.0.1:4161", "--nsqd-http-address=127.0.0.1:4151"},
	} {
		o, _, err := parseOptions(args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := admin.New(o); err == nil {
			t.Fatalf("%v accepted", args)
		}
	}
	o, _, _ := parseOptions([]string{"--nsqd-http-address=127.0.0.1:4151,127.0.0.1:4251", "--admin-user=a", "--admin-user=b"}, io.Discard)
	if !slices.Equal(o.NSQDHTTPAddresses, []string{"127.0.0.1:4151", "127.0.0.1:4251"}) || !slices.Equal(o.AdminUsers, []string{"a", "b"}) {
		t.Fatalf("lists = %v %v", o.NSQDHTTPAddresses, o.AdminUsers)
	}
}

// TestUnsafeOptionsRefused checks the options that would unbound upstream calls or let an
// anonymous request act are refused, and that --history-max-series reaches the options.
func TestUnsafeOptionsRefused(t *testing.T) {
	o, _, err := parseOptions([]string{"--lookupd-http-address=127.0.0.1:4161", "--history-max-series=123"}, io.Discard)
	if err != nil || o.HistoryMaxSeries != 123 {
		t.Fatalf("--history-max-series: %v %+v", err, o)
	}
	for _, args := range [][]string{
		{"--lookupd-http-address=127.0.0.1:4161", "--http-client-request-timeout=0"},
		{"--lookupd-http-address=127.0.0.1:4161", "--http-client-connect-timeout=0"},
		{"--lookupd-http-address=127.0.0.1:4161", "--admin-user=boss", "--acl-http-header="},
		{"--lookupd-http-address=127.0.0.1:4161", "--history-max-series=-1"},
		{"--lookupd-http-address=127.0.0.1:4161", "--sample-interval=1ms", "--history-window=24h"},
	} {
		o, _, err := parseOptions(args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := admin.New(o); err == nil {
			t.Fatalf("%v accepted", args)
		}
	}
}
