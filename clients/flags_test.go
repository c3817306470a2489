package clients_test

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"
	"github.com/sluicemq/sluice/clients"
)

func TestConsumerFlags(t *testing.T) {
	var f clients.ConsumerFlags
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f.Register(fs)
	for name, usage := range map[string]string{
		"nsqd-tcp-address":     "nsqd TCP address (may be given multiple times)",
		"lookupd-http-address": "lookupd HTTP address (may be given multiple times)",
		"consumer-opt":         "option to passthrough to nsq.Consumer (may be given multiple times, http://godoc.org/github.com/nsqio/go-nsq#Config)",
		"max-in-flight":        "max number of messages to allow in flight",
	} {
		fl := fs.Lookup(name)
		if fl == nil || fl.Usage != usage {
			t.Errorf("--%s: %+v, want usage %q", name, fl, usage)
		}
	}
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	cfg, err := f.Config("ua/1")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.UserAgent != "ua/1" || cfg.MaxInFlight != 200 || cfg.MaxAttempts != 0 {
		t.Fatalf("defaults: ua=%q max_in_flight=%d max_attempts=%d", cfg.UserAgent, cfg.MaxInFlight, cfg.MaxAttempts)
	}

	err = fs.Parse([]string{"--nsqd-tcp-address", "a:1", "--nsqd-tcp-address", "b:1", "--lookupd-http-address", "c:2",
		"--max-in-flight", "7", "--consumer-opt", "max_attempts,3", "--consumer-opt", "max_in_flight,9"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(f.NSQDAddrs, ",") != "a:1,b:1" || strings.Join(f.LookupdAddrs, ",") != "c:2" {
		t.Fatalf("addresses %v %v", f.NSQDAddrs, f.LookupdAddrs)
	}
	// --consumer-opt wins over --max-in-flight and the unlimited attempts.
	if cfg, err = f.Config("ua/1"); err != nil || cfg.MaxInFlight != 9 || cfg.MaxAttempts != 3 {
		t.Fatalf("Config = %+v, %v", cfg, err)
	}
	f.Opts = clients.ConfigOpts{"nosuch,1"}
	if _, err := f.Config("ua/1"); err == nil || !strings.HasPrefix(err.Error(), `--consumer-opt: invalid option "nosuch,1"`) {
		t.Fatalf("bad --consumer-opt: %v", err)
	}
}

func TestProducerConfig(t *testing.T) {
	cfg, err := clients.ProducerConfig("ua/2", clients.ConfigOpts{"snappy"})
	if err != nil || cfg.UserAgent != "ua/2" || !cfg.Snappy || cfg.MaxAttempts != nsq.NewConfig().MaxAttempts {
		t.Fatalf("ProducerConfig = %+v, %v", cfg, err)
	}
	if _, err := clients.ProducerConfig("ua/2", clients.ConfigOpts{"nosuch,1"}); err == nil || !strings.HasPrefix(err.Error(), `--producer-opt: invalid option "nosuch,1"`) {
		t.Fatalf("bad --producer-opt: %v", err)
	}
}

func TestHTTPClientFlags(t *testing.T) {
	var f clients.HTTPClientFlags
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	f.Register(fs, 20*time.Second)
	if fs.Lookup("http-client-connect-timeout").Usage != "timeout for HTTP connect" || fs.Lookup("http-client-request-timeout").Usage != "timeout for HTTP request" {
		t.Fatal("help texts changed")
	}
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if f.ConnectTimeout != 2*time.Second || f.RequestTimeout != 20*time.Second {
		t.Fatalf("defaults %+v", f)
	}
	if err := fs.Parse([]string{"--http-client-request-timeout", "3s"}); err != nil {
		t.Fatal(err)
	}
	if hc := f.Client(); hc.Timeout != 3*time.Second {
		t.Fatalf("client timeout %v", hc.Timeout)
	}
}

func TestStringsFlagUnique(t *testing.T) {
	s := clients.StringsFlag{"b", "a", "b", "c", "a"}
	if got := strings.Join(s.Unique(), ","); got != "b,a,c" {
		t.Fatalf("Unique = %q", got)
	}
	if got := (clients.StringsFlag)(nil).Unique(); len(got) != 0 {
		t.Fatalf("Unique(nil) = %q", got)
	}
}
