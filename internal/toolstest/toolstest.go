// Package toolstest holds what the command-line tools' tests share: a
// lookupd+nsqd cluster started in-process on ephemeral ports, a way to run a
// tool's run function in-process with captured output, and a goroutine-safe
// buffer.
package toolstest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/lookupd"
	"github.com/sluicemq/sluice/nsqd"
)

// Cluster is one nsqlookupd and the nsqds registered with it.
type Cluster struct {
	Lookupd     *lookupd.Daemon
	LookupdHTTP string // host:port
	LookupdTCP  string // host:port
	NSQDs       []*testutil.NSQDHandle
}

// StartLookupd starts an nsqlookupd on 127.0.0.1 ephemeral ports, exited
// when the test ends.
func StartLookupd(t testing.TB) *lookupd.Daemon {
	t.Helper()
	opts := lookupd.NewOptions()
	opts.TCPAddress, opts.HTTPAddress = "127.0.0.1:0", "127.0.0.1:0"
	opts.BroadcastAddress = "127.0.0.1"
	opts.Logger = testutil.TestLogger()
	l, err := lookupd.New(opts)
	if err != nil {
		t.Fatalf("lookupd.New: %v", err)
	}
	if err := l.Start(); err != nil {
		t.Fatalf("lookupd Start: %v", err)
	}
	t.Cleanup(l.Exit)
	return l
}

// StartCluster starts a lookupd and n nsqds registered with it. mutate (may
// be nil) adjusts every nsqd's options.
func StartCluster(t testing.TB, n int, mutate func(*nsqd.Options)) *Cluster {
	t.Helper()
	l := StartLookupd(t)
	c := &Cluster{Lookupd: l, LookupdHTTP: l.HTTPAddr().String(), LookupdTCP: l.TCPAddr().String()}
	for i := 0; i < n; i++ {
		c.NSQDs = append(c.NSQDs, testutil.StartNSQD(t, func(o *nsqd.Options) {
			o.NSQLookupdTCPAddresses = []string{c.LookupdTCP}
			if mutate != nil {
				mutate(o)
			}
		}))
	}
	return c
}

// WaitLookup waits until lookupd's /lookup for topic lists n producers.
func (c *Cluster) WaitLookup(t testing.TB, topic string, n int) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, func() bool {
		var resp struct {
			Producers []json.RawMessage `json:"producers"`
		}
		r, err := http.Get("http://" + c.LookupdHTTP + "/lookup?topic=" + url.QueryEscape(topic))
		if err != nil {
			return false
		}
		defer r.Body.Close()
		if r.StatusCode != http.StatusOK || json.NewDecoder(r.Body).Decode(&resp) != nil {
			return false
		}
		return len(resp.Producers) == n
	}, "lookupd to list %d producers of %q", n, topic)
}

// Buffer is a bytes.Buffer safe for one writer and concurrent readers.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Lines returns the non-empty lines written so far.
func (b *Buffer) Lines() []string {
	var out []string
	for _, l := range strings.Split(b.String(), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// RunFunc is a tool's in-process entry point.
type RunFunc func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int

// Run is a tool running in-process in a goroutine.
type Run struct {
	Stdout, Stderr Buffer
	cancel         context.CancelFunc
	done           chan int
	code           int
}

// Start runs fn(args) in a goroutine with stdin (may be nil) and captured
// output. The tool is cancelled (as by SIGINT) and waited for when the test
// ends, if it has not exited by then.
func Start(t testing.TB, fn RunFunc, stdin io.Reader, args ...string) *Run {
	t.Helper()
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Run{cancel: cancel, done: make(chan int, 1)}
	go func() { r.done <- fn(ctx, args, stdin, &r.Stdout, &r.Stderr) }()
	t.Cleanup(func() {
		cancel()
		r.Wait(t, 40*time.Second)
	})
	return r
}

// Stop cancels the tool (like SIGINT) and waits for its exit status.
func (r *Run) Stop(t testing.TB, timeout time.Duration) int {
	t.Helper()
	r.cancel()
	return r.Wait(t, timeout)
}

// Wait waits up to timeout for the tool to exit and returns its status.
func (r *Run) Wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	if r.done == nil {
		return r.code
	}
	select {
	case r.code = <-r.done:
		r.done = nil
		return r.code
	case <-time.After(timeout):
		t.Fatalf("tool did not exit within %v; stderr:\n%s", timeout, r.Stderr.String())
		return -1
	}
}

// Exited reports whether the tool has exited, without waiting.
func (r *Run) Exited() bool {
	if r.done == nil {
		return true
	}
	select {
	case r.code = <-r.done:
		r.done = nil
		return true
	default:
		return false
	}
}

// Code returns the exit status after Wait, Stop or a true Exited.
func (r *Run) Code() int { return r.code }

// RunSync runs fn(args) to completion (bounded by timeout) and returns its
// exit status and output.
func RunSync(t testing.TB, timeout time.Duration, fn RunFunc, stdin io.Reader, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	r := Start(t, fn, stdin, args...)
	code = r.Wait(t, timeout)
	return code, r.Stdout.String(), r.Stderr.String()
}

// ErrorLines returns the lines of stderr a tool wrote about its own failure
// ("<tool>: ..."), skipping go-nsq's and the logger's lines (which may be
// written around it by connection goroutines).
func ErrorLines(stderr, tool string) []string {
	var out []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, tool+": ") {
			out = append(out, l)
		}
	}
	return out
}

// CheckErrorLine fails the test unless stderr holds exactly one
// "<tool>: ..." line and it contains want.
func CheckErrorLine(t testing.TB, stderr, tool, want string) {
	t.Helper()
	lines := ErrorLines(stderr, tool)
	if len(lines) != 1 || !strings.Contains(lines[0], want) {
		t.Errorf("error lines %q, want one %q line containing %q; stderr:\n%s", lines, tool+": ...", want, stderr)
	}
}
