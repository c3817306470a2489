package admin

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"
)

// testNSQD is one nsqd of a test cluster.
type testNSQD struct {
	TCP, HTTP string
	stop      func()
}

// testCluster is an nsqlookupd and its nsqds, started by startCluster.
type testCluster struct {
	LookupdHTTP string
	LookupdTCP  string
	NSQDs       []*testNSQD
}

// waitRegistered waits until lookupd lists every nsqd.
func (c *testCluster) waitRegistered(t *testing.T) {
	t.Helper()
	waitFor(t, 10*time.Second, "every nsqd registered in nsqlookupd", func() bool {
		var resp struct {
			Producers []json.RawMessage `json:"producers"`
		}
		return getJSONErr("http://"+c.LookupdHTTP+"/nodes", &resp) == nil && len(resp.Producers) == len(c.NSQDs)
	})
}

// kill stops nsqd i.
func (c *testCluster) kill(i int) { c.NSQDs[i].stop() }

// lookupdTopics returns nsqlookupd's /topics.
func (c *testCluster) lookupdTopics(t *testing.T) []string {
	t.Helper()
	var resp struct {
		Topics []string `json:"topics"`
	}
	getJSON(t, "http://"+c.LookupdHTTP+"/topics", &resp)
	return resp.Topics
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func getJSONErr(u string, out any) error {
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", u, resp.StatusCode, body)
	}
	return json.Unmarshal(body, out)
}

func getJSON(t testing.TB, u string, out any) {
	t.Helper()
	if err := getJSONErr(u, out); err != nil {
		t.Fatal(err)
	}
}

// call sends method u with an optional JSON body and headers, returning status and body.
func call(t testing.TB, method, u string, body any, header map[string]string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// mustPost POSTs to an nsqd or lookupd action endpoint and requires 200.
func mustPost(t testing.TB, addr, path string, q url.Values) {
	t.Helper()
	code, body := call(t, http.MethodPost, "http://"+addr+path+"?"+q.Encode(), nil, nil)
	if code != http.StatusOK {
		t.Fatalf("POST %s%s?%s: %d %s", addr, path, q.Encode(), code, body)
	}
}

// nodeStatsOf reads an nsqd's /stats?format=json.
func nodeStatsOf(t testing.TB, httpAddr string) *nodeStats {
	t.Helper()
	var s nodeStats
	getJSON(t, "http://"+httpAddr+"/stats?format=json", &s)
	return &s
}

func (s *nodeStats) topic(name string) *rawTopic {
	for _, t := range s.Topics {
		if t.TopicName == name {
			return t
		}
	}
	return nil
}

func (s *nodeStats) channel(topic, name string) *rawChannel {
	if t := s.topic(topic); t != nil {
		for _, c := range t.Channels {
			if c.ChannelName == name {
				return c
			}
		}
	}
	return nil
}

// startAdmin starts an admin in cluster mode over c with a fast sampler; mutate may adjust options.
func startAdmin(t *testing.T, c *testCluster, mutate func(*Options)) *Admin {
	t.Helper()
	o := NewOptions()
	o.HTTPAddress = "127.0.0.1:0"
	o.NSQLookupdHTTPAddresses = []string{c.LookupdHTTP}
	o.SampleInterval = time.Second
	o.Logger = testLogger()
	if mutate != nil {
		mutate(o)
	}
	a, err := New(o)
	if err != nil {
		t.Fatalf("admin.New: %v", err)
	}
	if err := a.Start(); err != nil {
		t.Fatalf("admin Start: %v", err)
	}
	t.Cleanup(a.Exit)
	return a
}

func testLogger() *slog.Logger {
	if os.Getenv("SLUICE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func (a *Admin) url(path string) string { return "http://" + a.HTTPAddr().String() + path }

// notificationSink is a real HTTP server recording the admin's notifications.
type notificationSink struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []Notification
}

func newNotificationSink(t *testing.T) *notificationSink {
	s := &notificationSink{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n Notification
		if r.Method != http.MethodPost || json.NewDecoder(r.Body).Decode(&n) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.got = append(s.got, n)
		s.mu.Unlock()
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *notificationSink) all() []Notification {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// newProducer connects a go-nsq producer to an nsqd.
func newProducer(t testing.TB, tcpAddr string) *nsq.Producer {
	t.Helper()
	cfg := nsq.NewConfig()
	cfg.UserAgent = "sluice-admin-test-producer/1.0"
	p, err := nsq.NewProducer(tcpAddr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.SetLogger(nil, nsq.LogLevelError)
	if err := p.Ping(); err != nil {
		t.Fatalf("producer ping %s: %v", tcpAddr, err)
	}
	t.Cleanup(p.Stop)
	return p
}

// countingHandler finishes every message and counts them.
type countingHandler struct {
	mu sync.Mutex
	n  int
}

func (h *countingHandler) HandleMessage(*nsq.Message) error {
	h.mu.Lock()
	h.n++
	h.mu.Unlock()
	return nil
}

func (h *countingHandler) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// newConsumer subscribes topic/channel on every given nsqd directly.
func newConsumer(t testing.TB, topic, channel string, tcpAddrs []string, h nsq.Handler) *nsq.Consumer {
	t.Helper()
	cfg := nsq.NewConfig()
	cfg.MaxInFlight = 10
	cfg.UserAgent = "sluice-admin-test-consumer/1.0"
	c, err := nsq.NewConsumer(topic, channel, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetLogger(nil, nsq.LogLevelError)
	c.AddHandler(h)
	if err := c.ConnectToNSQDs(tcpAddrs); err != nil {
		t.Fatalf("consumer connect: %v", err)
	}
	t.Cleanup(func() {
		c.Stop()
		select {
		case <-c.StopChan:
		case <-time.After(5 * time.Second):
		}
	})
	return c
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
