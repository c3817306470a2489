package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicemq/sluice/protocol"
)

func TestVersion(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"--version"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d, stderr %s", code, errb.String())
	}
	if !regexp.MustCompile(`^nsqlookupd v1\.3\.0 \(built w/go[^)]+\)\n$`).MatchString(out.String()) {
		t.Fatalf("version line %q", out.String())
	}
}

func TestBadInputExitStatus(t *testing.T) {
	for _, args := range [][]string{
		{"--log-level=loud"},
		{"--config=/nonexistent/nsqlookupd.cfg"},
		{"--tcp-address=256.0.0.1:1", "--http-address=127.0.0.1:0"},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, &out, &errb); code == 0 {
			t.Errorf("%q: exit 0, want failure", args)
		}
	}
}

func freeAddrs(t *testing.T, n int) []string {
	var out []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		out = append(out, ln.Addr().String())
	}
	return out
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestConfigFileAndShutdown: the TOML file sets options (explicit flags win),
// the daemon serves, and cancelling (SIGTERM in main) exits 0.
func TestConfigFileAndShutdown(t *testing.T) {
	addrs := freeAddrs(t, 2)
	cfg := filepath.Join(t.TempDir(), "nsqlookupd.cfg")
	os.WriteFile(cfg, []byte(`
tcp_address = "`+addrs[0]+`"
http_address = "127.0.0.1:1"
broadcast_address = "from-file"
tombstone_lifetime = 5000
log_level = "debug"
log_prefix = "[L] "
unknown_key = 1
`), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--config=" + cfg, "--http-address=" + addrs[1]}, io.Discard, &stderr)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addrs[1] + "/ping")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("daemon not serving: %v\n%s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The IDENTIFY reply carries the broadcast address from the file.
	c, err := net.Dial("tcp", addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(protocol.LookupIdentify{BroadcastAddress: "n", TCPPort: 1, HTTPPort: 2, Version: "1.3.0"})
	c.Write(append([]byte(protocol.MagicV1), protocol.AppendLookupIdentify(nil, body)...))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	reply, err := protocol.ReadLookupReply(c, 1<<20)
	c.Close()
	if err != nil || !strings.Contains(string(reply), `"broadcast_address":"from-file"`) {
		t.Fatalf("IDENTIFY reply %q, %v", reply, err)
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not exit after cancel")
	}
	logs := stderr.String()
	if !strings.Contains(logs, "[L] ") || !strings.Contains(logs, "DEBUG: ") {
		t.Fatalf("log prefix/level from file not applied:\n%s", logs)
	}
}
