package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/internal/toolstest"
)

// sink is a test HTTP endpoint recording what it accepted.
type sink struct {
	mu       sync.Mutex
	accepted map[string]int // body (or query value) -> 200 answers
	failed   map[string]int // -> 500 answers
	headers  []http.Header
	// failFirst answers 500 to the first request of every body.
	failFirst bool
	// hang blocks requests until it is closed.
	hang chan struct{}
}

func newSink(t *testing.T) (*sink, *httptest.Server) {
	s := &sink{accepted: map[string]int{}, failed: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method == http.MethodGet {
			body = []byte(r.URL.Query().Get("m"))
		}
		s.mu.Lock()
		hang := s.hang
		s.mu.Unlock()
		if hang != nil {
			select {
			case <-hang:
			case <-r.Context().Done():
				return
			}
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		k := string(body)
		if s.failFirst && s.failed[k] == 0 {
			s.failed[k]++
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		s.accepted[k]++
		s.headers = append(s.headers, r.Header.Clone())
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	return s, srv
}

func (s *sink) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.accepted {
		n += c
	}
	return n
}

// exactlyOnce checks every want body was accepted exactly once and nothing else.
func (s *sink) exactlyOnce(t *testing.T, want []string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.accepted) != len(want) {
		t.Errorf("accepted %d distinct bodies, want %d", len(s.accepted), len(want))
	}
	for _, b := range want {
		if s.accepted[b] != 1 {
			t.Errorf("body %q accepted %d times, want 1", b, s.accepted[b])
		}
	}
}

func publish(t *testing.T, h *testutil.NSQDHandle, topic string, bodies []string) {
	t.Helper()
	testutil.MustPost(t, h.URL("/mpub?topic="+topic), []byte(strings.Join(bodies, "\n")))
}

func bodies(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s %d&x=y", prefix, i)
	}
	return out
}

func drained(t *testing.T, h *testutil.NSQDHandle, topic, channel string) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, func() bool {
		s := testutil.GetStats(t, h.HTTPAddr, "&topic="+topic)
		tp, ch := s.Topic(topic), s.Channel(topic, channel)
		// the topic must have handed its whole backlog to the channel (which
		// happens asynchronously when the channel is created after the
		// publishes) and the channel must have nothing left
		return tp != nil && ch != nil && tp.Depth == 0 && ch.MessageCount == tp.MessageCount &&
			ch.Depth == 0 && ch.InFlightCount == 0 && ch.DeferredCount == 0
	}, "channel %s/%s drained", topic, channel)
}

// fast retry settings so requeued messages come back quickly.
var fastRetry = []string{"--consumer-opt", "default_requeue_delay,20ms", "--consumer-opt", "backoff_multiplier,10ms", "--consumer-opt", "max_backoff_duration,50ms"}

// A 500 requeues the message; the retry delivers it; every message ends up
// accepted exactly once, with the configured Content-Type and headers.
func TestPostRetriesOn5xx(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	s, srv := newSink(t)
	s.failFirst = true
	want := bodies("p", 30)
	publish(t, h, "hp", want)
	args := append([]string{"--topic", "hp", "--nsqd-tcp-address", h.TCPAddr, "--post", srv.URL + "/in",
		"--content-type", "text/plain", "--header", "X-Test: yes"}, fastRetry...)
	r := toolstest.Start(t, run, nil, args...)
	testutil.WaitFor(t, 30*time.Second, func() bool { return s.total() == 30 }, "30 accepted")
	drained(t, h, "hp", "nsq_to_http")
	if code := r.Stop(t, 40*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, r.Stderr.String())
	}
	s.exactlyOnce(t, want)
	ch := testutil.GetStats(t, h.HTTPAddr, "&topic=hp").Channel("hp", "nsq_to_http")
	if ch.RequeueCount != 30 {
		t.Errorf("requeue_count = %d, want 30 (one per 500)", ch.RequeueCount)
	}
	for _, hd := range s.headers {
		if hd.Get("Content-Type") != "text/plain" || hd.Get("X-Test") != "yes" {
			t.Fatalf("request headers %v", hd)
		}
	}
}

func TestGetSubstitutesEscapedBody(t *testing.T) {
	c := toolstest.StartCluster(t, 1, nil)
	h := c.NSQDs[0]
	s, srv := newSink(t)
	want := bodies("g", 10)
	publish(t, h, "hg", want)
	c.WaitLookup(t, "hg", 1)
	r := toolstest.Start(t, run, nil, "--topic", "hg", "--lookupd-http-address", c.LookupdHTTP, "--get", srv.URL+"/in?m=%s")
	testutil.WaitFor(t, 30*time.Second, func() bool { return s.total() == 10 }, "10 accepted")
	drained(t, h, "hg", "nsq_to_http")
	if code := r.Stop(t, 40*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, r.Stderr.String())
	}
	s.exactlyOnce(t, want)
}

// A server that hangs: requests time out, messages are requeued and none is
// finished; once the server answers again every message is delivered.
func TestHangingServerRequeues(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	s, srv := newSink(t)
	s.hang = make(chan struct{})
	want := bodies("h", 5)
	publish(t, h, "hh", want)
	args := append([]string{"--topic", "hh", "--nsqd-tcp-address", h.TCPAddr, "--post", srv.URL,
		"--http-client-request-timeout", "100ms"}, fastRetry...)
	r := toolstest.Start(t, run, nil, args...)
	testutil.WaitFor(t, 30*time.Second, func() bool {
		ch := testutil.GetStats(t, h.HTTPAddr, "&topic=hh").Channel("hh", "nsq_to_http")
		return ch != nil && ch.RequeueCount >= 10
	}, "timed-out requests requeued")
	ch := testutil.GetStats(t, h.HTTPAddr, "&topic=hh").Channel("hh", "nsq_to_http")
	if n := ch.Depth + int64(ch.InFlightCount) + int64(ch.DeferredCount); n != 5 {
		t.Fatalf("%d messages left in the channel while the server hangs, want 5", n)
	}
	s.mu.Lock()
	close(s.hang)
	s.hang = nil
	s.mu.Unlock()
	testutil.WaitFor(t, 30*time.Second, func() bool { return s.total() >= 5 }, "5 accepted")
	drained(t, h, "hh", "nsq_to_http")
	if code := r.Stop(t, 40*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, r.Stderr.String())
	}
	if !strings.Contains(r.Stderr.String(), "delivery failed, requeueing") {
		t.Errorf("no failure logged:\n%s", r.Stderr.String())
	}
	// A request that timed out may still have reached the handler after
	// the hang ended: at-least-once, so count distinct bodies.
	s.mu.Lock()
	defer s.mu.Unlock()
	var got []string
	for b := range s.accepted {
		got = append(got, b)
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("accepted %q, want %q", got, want)
	}
}

func TestModes(t *testing.T) {
	for _, tc := range []struct {
		mode   string
		each   int // messages each endpoint must accept
		sumAll int
	}{
		{"round-robin", 10, 20},
		{"multicast", 20, 40},
		{"hostpool", -1, 20},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			h := testutil.StartNSQD(t, nil)
			s1, srv1 := newSink(t)
			s2, srv2 := newSink(t)
			publish(t, h, "hm", bodies("m", 20))
			r := toolstest.Start(t, run, nil, "--topic", "hm", "--nsqd-tcp-address", h.TCPAddr,
				"--post", srv1.URL, "--post", srv2.URL, "--mode", tc.mode)
			testutil.WaitFor(t, 30*time.Second, func() bool { return s1.total()+s2.total() == tc.sumAll }, "%d accepted", tc.sumAll)
			drained(t, h, "hm", "nsq_to_http")
			if code := r.Stop(t, 40*time.Second); code != 0 {
				t.Fatalf("exit %d: %s", code, r.Stderr.String())
			}
			if tc.each >= 0 && (s1.total() != tc.each || s2.total() != tc.each) {
				t.Errorf("split %d/%d, want %d each", s1.total(), s2.total(), tc.each)
			}
		})
	}
}

// hostpool fails over to the live endpoint within the same attempt.
func TestHostPoolFailover(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	s, srv := newSink(t)
	want := bodies("f", 20)
	publish(t, h, "hf", want)
	r := toolstest.Start(t, run, nil, "--topic", "hf", "--nsqd-tcp-address", h.TCPAddr,
		"--post", "http://127.0.0.1:1/", "--post", srv.URL)
	testutil.WaitFor(t, 30*time.Second, func() bool { return s.total() == 20 }, "20 accepted")
	drained(t, h, "hf", "nsq_to_http")
	if code := r.Stop(t, 40*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, r.Stderr.String())
	}
	s.exactlyOnce(t, want)
	if ch := testutil.GetStats(t, h.HTTPAddr, "&topic=hf").Channel("hf", "nsq_to_http"); ch.RequeueCount != 0 {
		t.Errorf("requeue_count = %d, want 0", ch.RequeueCount)
	}
}

func TestBadInput(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no topic", []string{"--nsqd-tcp-address", "127.0.0.1:1", "--post", "x"}, "--topic and --channel are required"},
		{"no endpoint", []string{"--topic", "t", "--nsqd-tcp-address", "127.0.0.1:1"}, "--get or --post required"},
		{"get and post", []string{"--topic", "t", "--nsqd-tcp-address", "127.0.0.1:1", "--get", "a", "--post", "b"}, "use --get or --post not both"},
		{"bad mode", []string{"--topic", "t", "--nsqd-tcp-address", "127.0.0.1:1", "--post", "b", "--mode", "x"}, `invalid --mode "x"`},
		{"bad header", []string{"--topic", "t", "--nsqd-tcp-address", "127.0.0.1:1", "--post", "b", "--header", "nocolon"}, `invalid --header "nocolon"`},
		{"bad sample", []string{"--topic", "t", "--nsqd-tcp-address", "127.0.0.1:1", "--post", "b", "--sample", "2"}, "invalid --sample 2"},
		{"unreachable nsqd", []string{"--topic", "t", "--nsqd-tcp-address", "127.0.0.1:1", "--post", "b"}, "connection refused"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := toolstest.RunSync(t, 20*time.Second, run, nil, tc.args...)
			if code != 1 {
				t.Fatalf("exit %d, want 1; stderr: %s", code, stderr)
			}
			toolstest.CheckErrorLine(t, stderr, "nsq_to_http", tc.want)
		})
	}
}
