package main

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"
	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/internal/toolstest"
)

// rowFields parses a data row into its 11 numbers.
func rowFields(t *testing.T, line string) []int64 {
	t.Helper()
	var out []int64
	for _, f := range strings.Fields(strings.ReplaceAll(line, "|", " ")) {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			t.Fatalf("row %q: field %q: %v", line, f, err)
		}
		out = append(out, n)
	}
	if len(out) != 11 {
		t.Fatalf("row %q has %d fields, want 11", line, len(out))
	}
	return out
}

// holder keeps every message it gets in flight until release.
type holder struct {
	mu       sync.Mutex
	held     []*nsq.Message
	released bool
}

func (h *holder) HandleMessage(m *nsq.Message) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.released {
		m.DisableAutoResponse()
		h.held = append(h.held, m)
	}
	return nil
}

func (h *holder) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.held)
}

// release finishes the held messages and every later one.
func (h *holder) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.released = true
	for _, m := range h.held {
		m.Finish()
	}
}

// The figures are the sums over every nsqd of the topic, as /stats reports them.
func TestFiguresMatchStats(t *testing.T) {
	c := toolstest.StartCluster(t, 2, nil)
	a, b := c.NSQDs[0], c.NSQDs[1]
	for _, h := range c.NSQDs {
		testutil.MustPost(t, h.URL("/topic/create?topic=st"), nil)
		testutil.MustPost(t, h.URL("/channel/create?topic=st&channel=ch"), nil)
	}
	for i := 0; i < 10; i++ {
		testutil.MustPost(t, a.URL("/pub?topic=st"), []byte("a"))
	}
	for i := 0; i < 5; i++ {
		testutil.MustPost(t, b.URL("/pub?topic=st&defer=60000"), []byte("b"))
	}
	cfg := testutil.NewConfig()
	cfg.MaxInFlight = 3
	hold := &holder{}
	testutil.NewConsumer(t, a.TCPAddr, "st", "ch", cfg, hold)
	t.Cleanup(hold.release) // before the consumer is stopped
	testutil.WaitFor(t, 10*time.Second, func() bool { return hold.count() == 3 }, "3 messages in flight")
	c.WaitLookup(t, "st", 2)

	for _, args := range [][]string{
		{"--lookupd-http-address", c.LookupdHTTP},
		{"--nsqd-http-address", a.HTTPAddr, "--nsqd-http-address", b.HTTPAddr},
	} {
		args = append(args, "--topic", "st", "--channel", "ch", "--interval", "100ms", "--count", "2")
		code, out, stderr := toolstest.RunSync(t, 20*time.Second, run, nil, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != 4 || !strings.HasPrefix(lines[1], "ingress  egress |   total") {
			t.Fatalf("output:\n%s", out)
		}
		// Expected from /stats directly.
		var depth, inflt, def, msgs, clients int64
		for _, h := range c.NSQDs {
			ch := testutil.GetStats(t, h.HTTPAddr, "&topic=st").Channel("st", "ch")
			depth += ch.Depth
			inflt += int64(ch.InFlightCount)
			def += int64(ch.DeferredCount)
			msgs += int64(ch.MessageCount)
			clients += int64(ch.ClientCount)
		}
		want := []int64{0, 0, depth, depth, 0, inflt, def, 0, 0, msgs, clients}
		if depth != 7 || inflt != 3 || def != 5 || msgs != 15 || clients != 1 {
			t.Fatalf("unexpected /stats sums depth=%d inflt=%d def=%d msgs=%d clients=%d", depth, inflt, def, msgs, clients)
		}
		for _, l := range lines[2:] {
			got := rowFields(t, l)
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("%v: row %q = %v, want %v", args, l, got, want)
				}
			}
		}
	}
}

// Rates are per second over the interval: ingress from the topic's
// message_count, egress from messages finished.
func TestRates(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	testutil.MustPost(t, h.URL("/topic/create?topic=rt"), nil)
	testutil.MustPost(t, h.URL("/channel/create?topic=rt&channel=ch"), nil)
	r := toolstest.Start(t, run, nil, "--nsqd-http-address", h.HTTPAddr, "--topic", "rt", "--channel", "ch", "--interval", "500ms", "--count", "3")
	// Publish once the first row is out, so the 40 messages fall in the
	// intervals of rows 2 and 3.
	testutil.WaitFor(t, 10*time.Second, func() bool { return len(r.Stdout.Lines()) == 3 }, "first row")
	body := []byte(strings.Repeat("m\n", 40))
	if r := testutil.HTTPDo(t, http.MethodPost, h.URL("/mpub?topic=rt"), body); r.Status != 200 {
		t.Fatalf("mpub: %v", r)
	}
	if code := r.Wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, r.Stderr.String())
	}
	lines := r.Stdout.Lines()
	if len(lines) != 5 {
		t.Fatalf("output:\n%s", r.Stdout.String())
	}
	var ingress int64
	for _, l := range lines[2:] {
		ingress += rowFields(t, l)[0]
	}
	if f := rowFields(t, lines[2]); f[0] != 0 || f[9] != 0 {
		t.Errorf("first row %q: want no ingress, no messages", lines[2])
	}
	if f := rowFields(t, lines[4]); f[2] != 40 || f[9] != 40 {
		t.Errorf("last row %q: want depth 40, msgs 40", lines[4])
	}
	if ingress/2 != 40 {
		t.Errorf("ingress rates sum to %d/s over 500ms rows, want 80 (40 messages):\n%s", ingress, r.Stdout.String())
	}
}

func TestBadInput(t *testing.T) {
	c := toolstest.StartCluster(t, 1, nil)
	h := c.NSQDs[0]
	testutil.MustPost(t, h.URL("/topic/create?topic=known"), nil)
	c.WaitLookup(t, "known", 1)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no channel", []string{"--topic", "t", "--nsqd-http-address", h.HTTPAddr}, "--topic and --channel are required"},
		{"no address", []string{"--topic", "t", "--channel", "c"}, "--nsqd-http-address or --lookupd-http-address required"},
		{"unknown topic in lookupd", []string{"--topic", "nope", "--channel", "c", "--lookupd-http-address", c.LookupdHTTP}, "TOPIC_NOT_FOUND"},
		{"unknown channel", []string{"--topic", "known", "--channel", "c", "--lookupd-http-address", c.LookupdHTTP}, "failed to find channel(c) in stats metadata for topic(known)"},
		{"unreachable nsqd", []string{"--topic", "known", "--channel", "c", "--nsqd-http-address", "127.0.0.1:1"}, "failed to get nsqd stats"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := toolstest.RunSync(t, 20*time.Second, run, nil, append(tc.args, "--interval", "50ms", "--count", "1")...)
			if code != 1 {
				t.Fatalf("exit %d, want 1; stderr: %s", code, stderr)
			}
			if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "nsq_stat: ") || !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr %q, want one line nsq_stat: ...%s...", stderr, tc.want)
			}
		})
	}
}

// The two header lines repeat every 25 rows.
func TestHeaderRepeats(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	testutil.MustPost(t, h.URL("/topic/create?topic=hr"), nil)
	testutil.MustPost(t, h.URL("/channel/create?topic=hr&channel=ch"), nil)
	code, out, stderr := toolstest.RunSync(t, 30*time.Second, run, nil, "--nsqd-http-address", h.HTTPAddr,
		"--topic", "hr", "--channel", "ch", "--interval", "5ms", "--count", "30")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 34 {
		t.Fatalf("%d lines, want 30 rows + 2x2 headers:\n%s", len(lines), out)
	}
	for _, i := range []int{0, 27} {
		if !strings.HasPrefix(lines[i], "------rate------+") || !strings.HasPrefix(lines[i+1], "ingress  egress |") {
			t.Errorf("no header at line %d:\n%s", i, out)
		}
	}
}
