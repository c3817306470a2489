package main

import (
	"bytes"
	"crypto/tls"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluicemq/sluice/nsqd"
)

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	_, done, code := loadOptions([]string{"--version"}, &out, &out)
	if !done || code != 0 || !strings.HasPrefix(out.String(), "nsqd v1.3.0 (built w/go") {
		t.Fatalf("done=%v code=%d out=%q", done, code, out.String())
	}
}

func TestDefaultsMatchNSQ(t *testing.T) {
	opts, done, _ := loadOptions(nil, &bytes.Buffer{}, &bytes.Buffer{})
	if done {
		t.Fatal("exited")
	}
	checks := map[string][2]any{
		"tcp":           {opts.TCPAddress, "0.0.0.0:4150"},
		"http":          {opts.HTTPAddress, "0.0.0.0:4151"},
		"https":         {opts.HTTPSAddress, "0.0.0.0:4152"},
		"mem":           {opts.MemQueueSize, int64(10000)},
		"msgTimeout":    {opts.MsgTimeout, time.Minute},
		"maxMsgTimeout": {opts.MaxMsgTimeout, 15 * time.Minute},
		"maxMsgSize":    {opts.MaxMsgSize, int64(1048576)},
		"maxBodySize":   {opts.MaxBodySize, int64(5242880)},
		"maxReq":        {opts.MaxReqTimeout, time.Hour},
		"rdy":           {opts.MaxRdyCount, int64(2500)},
		"syncEvery":     {opts.SyncEvery, int64(2500)},
		"syncTimeout":   {opts.SyncTimeout, 2 * time.Second},
		"bytesPerFile":  {opts.MaxBytesPerFile, int64(104857600)},
		"obTimeout":     {opts.OutputBufferTimeout, 250 * time.Millisecond},
		"statsdPrefix":  {opts.StatsdPrefix, "nsq.%s"},
		"statsdPacket":  {opts.StatsdUDPPacketSize, 508},
		"tlsMin":        {opts.TLSMinVersion, uint16(tls.VersionTLS10)},
		"deflateLevel":  {opts.MaxDeflateLevel, 6},
		"logLevel":      {opts.LogLevel, "info"},
	}
	for name, c := range checks {
		if !reflect.DeepEqual(c[0], c[1]) {
			t.Errorf("%s = %v, want %v", name, c[0], c[1])
		}
	}
}

func TestConfigFileAndFlagPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "nsqd.toml")
	os.WriteFile(cfg, []byte(`
log_level = "warn"
id = 5150
tcp_address = "127.0.0.1:14150"
nsqlookupd_tcp_addresses = ["10.0.0.2:4160", "10.0.0.3:4160"]
mem_queue_size = 100
msg_timeout = 5000
max_req_timeout = "90s"
e2e_processing_latency_percentiles = [1.0, 0.99, 0.5]
tls_required = "tcp-https"
tls_min_version = "tls1.2"
snappy = false
`), 0o600)
	opts, done, code := loadOptions([]string{"--config", cfg, "--mem-queue-size=50"}, &bytes.Buffer{}, &bytes.Buffer{})
	if done {
		t.Fatalf("exited with %d", code)
	}
	if opts.MemQueueSize != 50 {
		t.Errorf("flag should win over file: mem_queue_size = %d", opts.MemQueueSize)
	}
	if opts.ID != 5150 || opts.TCPAddress != "127.0.0.1:14150" || opts.LogLevel != "warn" {
		t.Errorf("id=%d tcp=%q level=%q", opts.ID, opts.TCPAddress, opts.LogLevel)
	}
	if !reflect.DeepEqual(opts.NSQLookupdTCPAddresses, []string{"10.0.0.2:4160", "10.0.0.3:4160"}) {
		t.Errorf("lookupd addresses %v", opts.NSQLookupdTCPAddresses)
	}
	if opts.MsgTimeout != 5*time.Second || opts.MaxReqTimeout != 90*time.Second {
		t.Errorf("durations %v %v", opts.MsgTimeout, opts.MaxReqTimeout)
	}
	if !reflect.DeepEqual(opts.E2EProcessingLatencyPercentiles, []float64{1.0, 0.99, 0.5}) {
		t.Errorf("percentiles %v", opts.E2EProcessingLatencyPercentiles)
	}
	if opts.TLSRequired != nsqd.TLSRequiredExceptHTTP || opts.TLSMinVersion != tls.VersionTLS12 || opts.SnappyEnabled {
		t.Errorf("tls_required=%d tls_min=%x snappy=%v", opts.TLSRequired, opts.TLSMinVersion, opts.SnappyEnabled)
	}
}

func TestBadInputExitsNonZero(t *testing.T) {
	var errOut bytes.Buffer
	if _, done, code := loadOptions([]string{"--tls-required=maybe"}, &bytes.Buffer{}, &errOut); !done || code == 0 {
		t.Fatalf("bad --tls-required accepted (code %d)", code)
	}
	if _, done, code := loadOptions([]string{"--config", "/nonexistent/nsqd.toml"}, &bytes.Buffer{}, &errOut); !done || code != 1 {
		t.Fatalf("missing config file: code %d", code)
	}
	opts, _, _ := loadOptions([]string{"--max-deflate-level=12"}, &bytes.Buffer{}, &errOut)
	if _, err := nsqd.New(opts); err == nil || !strings.Contains(err.Error(), "max-deflate-level") {
		t.Fatalf("invalid --max-deflate-level: %v", err)
	}
}

func TestDurableOptionsFromFlagsAndConfigFile(t *testing.T) {
	opts, done, _ := loadOptions(nil, &bytes.Buffer{}, &bytes.Buffer{})
	if done || opts.Durable || opts.RetentionTime != 0 || opts.RetentionBytes != 0 || opts.DurableSegmentBytes != 16<<20 {
		t.Fatalf("durable defaults: %v %v %v %v", opts.Durable, opts.RetentionTime, opts.RetentionBytes, opts.DurableSegmentBytes)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "nsqd.toml")
	os.WriteFile(cfg, []byte("durable = true\nretention_time = \"72h\"\nretention_bytes = 1000\n"), 0o600)
	opts, done, code := loadOptions([]string{"--config", cfg, "--retention-bytes=5000"}, &bytes.Buffer{}, &bytes.Buffer{})
	if done {
		t.Fatalf("exited with %d", code)
	}
	if !opts.Durable || opts.RetentionTime != 72*time.Hour || opts.RetentionBytes != 5000 {
		t.Fatalf("durable=%v retention_time=%v retention_bytes=%d", opts.Durable, opts.RetentionTime, opts.RetentionBytes)
	}
	opts, _, _ = loadOptions([]string{"--retention-time=-1s"}, &bytes.Buffer{}, &bytes.Buffer{})
	if _, err := nsqd.New(opts); err == nil || !strings.Contains(err.Error(), "retention-time") {
		t.Fatalf("negative --retention-time: %v", err)
	}
}

func TestMaxAttemptsFromFlagAndConfigFile(t *testing.T) {
	opts, _, _ := loadOptions(nil, &bytes.Buffer{}, &bytes.Buffer{})
	if opts.MaxAttempts != 0 {
		t.Fatalf("default --max-attempts %d, want 0 (unlimited, as NSQ)", opts.MaxAttempts)
	}
	cfg := filepath.Join(t.TempDir(), "nsqd.toml")
	os.WriteFile(cfg, []byte("max_attempts = 20\n"), 0o600)
	if opts, done, code := loadOptions([]string{"--config", cfg}, &bytes.Buffer{}, &bytes.Buffer{}); done || opts.MaxAttempts != 20 {
		t.Fatalf("max_attempts from TOML: %d (exit %v %d)", opts.MaxAttempts, done, code)
	}
	if opts, _, _ := loadOptions([]string{"--config", cfg, "--max-attempts=5"}, &bytes.Buffer{}, &bytes.Buffer{}); opts.MaxAttempts != 5 {
		t.Fatalf("flag over TOML: %d", opts.MaxAttempts)
	}
	for _, bad := range []string{"--max-attempts=-1", "--max-attempts=65536"} {
		opts, _, _ := loadOptions([]string{bad}, &bytes.Buffer{}, &bytes.Buffer{})
		if _, err := nsqd.New(opts); err == nil || !strings.Contains(err.Error(), "max-attempts") {
			t.Fatalf("%s: %v", bad, err)
		}
	}
}
