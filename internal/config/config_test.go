package config

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type testFlags struct {
	fs          *flag.FlagSet
	memQueue    *int64
	msgTimeout  *time.Duration
	syncTimeout *time.Duration
	dataPath    *string
	snappy      *bool
	deflate     *bool
	nodeID      *int64
	ratio       *float64
	lookupd     StringList
	version     *bool
	config      *string
}

func newTestFlags() *testFlags {
	f := &testFlags{fs: flag.NewFlagSet("test", flag.ContinueOnError)}
	f.fs.SetOutput(io.Discard)
	f.memQueue = f.fs.Int64("mem-queue-size", 10000, "")
	f.msgTimeout = f.fs.Duration("msg-timeout", time.Minute, "")
	f.syncTimeout = f.fs.Duration("sync-timeout", 2*time.Second, "")
	f.dataPath = f.fs.String("data-path", "", "")
	f.snappy = f.fs.Bool("snappy", true, "")
	f.deflate = f.fs.Bool("deflate", true, "")
	f.nodeID = f.fs.Int64("node-id", 7, "")
	f.ratio = f.fs.Float64("ratio", 0.5, "")
	f.fs.Var(&f.lookupd, "lookupd-tcp-address", "")
	f.version = f.fs.Bool("version", false, "")
	f.config = f.fs.String("config", "", "")
	return f
}

var overrides = map[string]string{
	"node-id":             "id",
	"lookupd-tcp-address": "nsqlookupd_tcp_addresses",
	"version":             "",
}

func TestLoadPrecedenceAndTypes(t *testing.T) {
	f := newTestFlags()
	if err := f.fs.Parse([]string{"--mem-queue-size=50", "--deflate=true"}); err != nil {
		t.Fatal(err)
	}
	err := LoadString(f.fs, `
mem_queue_size = 999       # loses to the explicit flag
msg_timeout = 5000         # integer = milliseconds
sync_timeout = "1h30m"
data_path = "/var/lib/nsq"
snappy = false
deflate = false            # loses to the explicit flag
id = "42"                  # quoted integer
ratio = 0.25
nsqlookupd_tcp_addresses = ["10.0.0.2:4160", "10.0.0.3:4160"]
version = true             # no config key: ignored
config = "/other.toml"     # never read from the file
unknown_key = "ignored"
`, overrides)
	if err != nil {
		t.Fatal(err)
	}
	if *f.memQueue != 50 {
		t.Errorf("mem-queue-size = %d, want 50 (explicit flag wins)", *f.memQueue)
	}
	if *f.msgTimeout != 5*time.Second {
		t.Errorf("msg-timeout = %v, want 5s", *f.msgTimeout)
	}
	if *f.syncTimeout != 90*time.Minute {
		t.Errorf("sync-timeout = %v", *f.syncTimeout)
	}
	if *f.dataPath != "/var/lib/nsq" {
		t.Errorf("data-path = %q", *f.dataPath)
	}
	if *f.snappy {
		t.Error("snappy = true, want false from file")
	}
	if !*f.deflate {
		t.Error("deflate = false, want true from explicit flag")
	}
	if *f.nodeID != 42 {
		t.Errorf("node-id = %d, want 42", *f.nodeID)
	}
	if *f.ratio != 0.25 {
		t.Errorf("ratio = %v", *f.ratio)
	}
	if got := strings.Join(f.lookupd, " "); got != "10.0.0.2:4160 10.0.0.3:4160" {
		t.Errorf("lookupd = %q", got)
	}
	if *f.version || *f.config != "" {
		t.Errorf("version=%v config=%q must not come from the file", *f.version, *f.config)
	}
}

func TestLoadDefaultsKeptWithoutKeys(t *testing.T) {
	f := newTestFlags()
	if err := f.fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if err := LoadString(f.fs, `other = 1`, overrides); err != nil {
		t.Fatal(err)
	}
	if *f.memQueue != 10000 || *f.msgTimeout != time.Minute || !*f.snappy || *f.nodeID != 7 || len(f.lookupd) != 0 {
		t.Fatalf("defaults changed: %d %v %v %d %v", *f.memQueue, *f.msgTimeout, *f.snappy, *f.nodeID, f.lookupd)
	}
}

func TestLoadListVariants(t *testing.T) {
	for _, tc := range []struct {
		name, toml string
		flags      []string
		want       string
	}{
		{"comma string", `nsqlookupd_tcp_addresses = "a:1,b:2"`, nil, "a:1 b:2"},
		{"single string", `nsqlookupd_tcp_addresses = "a:1"`, nil, "a:1"},
		{"empty array", `nsqlookupd_tcp_addresses = []`, nil, ""},
		{"explicit flag wins", `nsqlookupd_tcp_addresses = ["a:1"]`, []string{"--lookupd-tcp-address=c:3", "--lookupd-tcp-address", "d:4,e:5"}, "c:3 d:4 e:5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newTestFlags()
			if err := f.fs.Parse(tc.flags); err != nil {
				t.Fatal(err)
			}
			if err := LoadString(f.fs, tc.toml, overrides); err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(f.lookupd, " "); got != tc.want {
				t.Fatalf("lookupd = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestLoadValueConversions(t *testing.T) {
	for _, tc := range []struct {
		toml  string
		check func(*testFlags) bool
	}{
		{`msg_timeout = "250ms"`, func(f *testFlags) bool { return *f.msgTimeout == 250*time.Millisecond }},
		{`msg_timeout = "60000"`, func(f *testFlags) bool { return *f.msgTimeout == time.Minute }},
		{`snappy = 0`, func(f *testFlags) bool { return !*f.snappy }},
		{`snappy = "false"`, func(f *testFlags) bool { return !*f.snappy }},
		{`deflate = 1`, func(f *testFlags) bool { return *f.deflate }},
		{`ratio = 1`, func(f *testFlags) bool { return *f.ratio == 1 }},
		{`mem_queue_size = 0`, func(f *testFlags) bool { return *f.memQueue == 0 }},
	} {
		f := newTestFlags()
		if err := f.fs.Parse(nil); err != nil {
			t.Fatal(err)
		}
		if err := LoadString(f.fs, tc.toml, overrides); err != nil {
			t.Errorf("%s: %v", tc.toml, err)
			continue
		}
		if !tc.check(f) {
			t.Errorf("%s: not applied", tc.toml)
		}
	}
}

func TestLoadErrorsNameKey(t *testing.T) {
	for _, tc := range []struct{ toml, want string }{
		{`mem_queue_size = "lots"`, `"mem_queue_size"`},
		{`msg_timeout = "soon"`, `"msg_timeout"`},
		{`id = 1.5`, `"id"`},
		{`snappy = "maybe"`, `"snappy"`},
		{`data_path = 2026-01-01`, `"data_path"`},
		{`mem_queue_size = [[1]]`, `"mem_queue_size"`},
	} {
		f := newTestFlags()
		if err := f.fs.Parse(nil); err != nil {
			t.Fatal(err)
		}
		err := LoadString(f.fs, tc.toml, overrides)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error = %v, want mention of %s", tc.toml, err, tc.want)
		}
	}
}

func TestLoadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nsqd.cfg")
	if err := os.WriteFile(path, []byte("mem_queue_size = 123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newTestFlags()
	if err := f.fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if err := Load(f.fs, path, overrides); err != nil {
		t.Fatal(err)
	}
	if *f.memQueue != 123 {
		t.Fatalf("mem-queue-size = %d", *f.memQueue)
	}
	if err := Load(f.fs, filepath.Join(t.TempDir(), "missing.cfg"), nil); err == nil || !strings.Contains(err.Error(), "missing.cfg") {
		t.Fatalf("missing file error = %v", err)
	}
	if err := os.WriteFile(path, []byte("mem_queue_size = = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Load(f.fs, path, nil); err == nil {
		t.Fatal("bad TOML accepted")
	}
}

func TestStringList(t *testing.T) {
	var l StringList
	for _, v := range []string{"a", "b, c", ",,d,"} {
		if err := l.Set(v); err != nil {
			t.Fatal(err)
		}
	}
	if l.String() != "a,b,c,d" {
		t.Fatalf("list = %q", l.String())
	}
	if got := l.Get().([]string); len(got) != 4 {
		t.Fatalf("Get = %v", got)
	}
}

func TestVersionLine(t *testing.T) {
	got := VersionLine("nsqd")
	if !strings.HasPrefix(got, "nsqd v1.3.0 (built w/go") || !strings.HasSuffix(got, ")") {
		t.Fatalf("version line = %q", got)
	}
}
