package main

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/internal/toolstest"
)

func publish(t *testing.T, addr, topic string, bodies ...string) {
	t.Helper()
	p := testutil.NewProducer(t, addr, nil)
	for _, b := range bodies {
		if err := p.Publish(topic, []byte(b)); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
}

func seq(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%03d", prefix, i)
	}
	return out
}

// nsq_tail --n reads back exactly what was published (found through lookupd),
// stops by itself, and leaves the rest queued in its channel.
func TestTailNThroughLookupd(t *testing.T) {
	c := toolstest.StartCluster(t, 1, nil)
	h := c.NSQDs[0]
	want := seq("m", 50)
	publish(t, h.TCPAddr, "tailed", want...)
	publish(t, h.TCPAddr, "tailed", seq("extra", 7)...)
	c.WaitLookup(t, "tailed", 1)

	code, out, stderr := toolstest.RunSync(t, 30*time.Second, run, nil,
		"--topic", "tailed", "--channel", "ch", "--n", "50", "--lookupd-http-address", c.LookupdHTTP)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	got := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("printed %d lines %v..., want %d in order", len(got), got[:min(5, len(got))], len(want))
	}
	// The 7 extra messages are not acknowledged: once the tool's connection
	// is gone they are back in the channel (depth, or in flight until they
	// are requeued).
	if !testutil.Eventually(10*time.Second, func() bool {
		ch := testutil.GetStats(t, h.HTTPAddr, "&topic=tailed").Channel("tailed", "ch")
		return ch != nil && ch.ClientCount == 0 && ch.Depth+int64(ch.InFlightCount)+int64(ch.DeferredCount) == 7
	}) {
		t.Fatalf("not 7 messages left in channel ch: %s\nstderr:\n%s", testutil.GetStats(t, h.HTTPAddr, "&topic=tailed").Raw, stderr)
	}
}

func TestPrintTopicMultipleTopics(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	publish(t, h.TCPAddr, "ta", "x1", "x2")
	publish(t, h.TCPAddr, "tb", "y1")
	code, out, stderr := toolstest.RunSync(t, 30*time.Second, run, nil,
		"--topic", "ta", "--topic", "tb", "--print-topic", "--n", "3", "--nsqd-tcp-address", h.TCPAddr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	sort.Strings(lines)
	if strings.Join(lines, ",") != "ta | x1,ta | x2,tb | y1" {
		t.Fatalf("output %q", out)
	}
}

// Without --n, nsq_tail runs until interrupted and exits 0.
func TestRunsUntilInterrupted(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	r := toolstest.Start(t, run, nil, "--topic", "live", "--nsqd-tcp-address", h.TCPAddr)
	publish(t, h.TCPAddr, "live", "one", "two")
	testutil.WaitFor(t, 10*time.Second, func() bool { return len(r.Stdout.Lines()) == 2 }, "2 lines printed")
	if code := r.Stop(t, 40*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, r.Stderr.String())
	}
	if got := r.Stdout.String(); got != "one\ntwo\n" {
		t.Fatalf("output %q", got)
	}
}

func TestBadInput(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no topic", []string{"--nsqd-tcp-address", "127.0.0.1:1"}, "--topic required"},
		{"no address", []string{"--topic", "t"}, "--nsqd-tcp-address or --lookupd-http-address required"},
		{"both addresses", []string{"--topic", "t", "--nsqd-tcp-address", "127.0.0.1:1", "--lookupd-http-address", "127.0.0.1:1"}, "not both"},
		{"bad topic", []string{"--topic", "a b", "--nsqd-tcp-address", "127.0.0.1:1"}, "invalid topic name"},
		{"bad consumer opt", []string{"--topic", "t", "--nsqd-tcp-address", "127.0.0.1:1", "--consumer-opt", "max_in_flight,x"}, "--consumer-opt: invalid option"},
		{"unreachable nsqd", []string{"--topic", "t", "--nsqd-tcp-address", "127.0.0.1:1"}, "connection refused"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := toolstest.RunSync(t, 20*time.Second, run, nil, tc.args...)
			if code != 1 {
				t.Fatalf("exit %d, want 1; stderr: %s", code, stderr)
			}
			toolstest.CheckErrorLine(t, stderr, "nsq_tail", tc.want)
		})
	}
}

// A topic lookupd does not know yet is waited for, as go-nsq polls lookupd;
// its first messages are printed once it appears.
func TestWaitsForUnknownTopic(t *testing.T) {
	c := toolstest.StartCluster(t, 1, nil)
	h := c.NSQDs[0]
	r := toolstest.Start(t, run, nil, "--topic", "late", "--n", "2", "--lookupd-http-address", c.LookupdHTTP,
		"--consumer-opt", "lookupd_poll_interval,100ms")
	testutil.WaitFor(t, 10*time.Second, func() bool { return strings.Contains(r.Stderr.String(), "TOPIC_NOT_FOUND") }, "lookupd 404 logged")
	if r.Exited() {
		t.Fatalf("exited on an unknown topic: %d %s", r.Code(), r.Stderr.String())
	}
	publish(t, h.TCPAddr, "late", "l1", "l2")
	if code := r.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, r.Stderr.String())
	}
	if got := r.Stdout.String(); got != "l1\nl2\n" {
		t.Fatalf("output %q", got)
	}
}
