package testutil

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
)

// HTTPResponse is a fully read HTTP response.
type HTTPResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

// String renders the response for failure messages.
func (r HTTPResponse) String() string {
	return fmt.Sprintf("%d %q", r.Status, r.Body)
}

var httpClient = &http.Client{
	Timeout: 10 * time.Second,
	// Redirects are part of what tests check; never follow them.
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// HTTPDo performs a request (body may be nil) and reads the whole response.
func HTTPDo(t testing.TB, method, url string, body []byte) HTTPResponse {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatalf("new request %s %s: %v", method, url, err)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return HTTPResponse{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// HTTPPost is HTTPDo with POST.
func HTTPPost(t testing.TB, url string, body []byte) HTTPResponse {
	t.Helper()
	return HTTPDo(t, http.MethodPost, url, body)
}

// MustPost POSTs and fails unless the status is 200.
func MustPost(t testing.TB, url string, body []byte) HTTPResponse {
	t.Helper()
	r := HTTPPost(t, url, body)
	if r.Status != http.StatusOK {
		t.Fatalf("POST %s: got %v, want 200", url, r)
	}
	return r
}

// ErrorMessage decodes a V1 error body {"message":"..."}.
func ErrorMessage(r HTTPResponse) string {
	var v struct {
		Message string `json:"message"`
	}
	if err := json.Unmarshal(r.Body, &v); err != nil {
		return fmt.Sprintf("<undecodable %q>", r.Body)
	}
	return v.Message
}

// Stats is nsqd's /stats?format=json document (protocol.md §9.5).
type Stats struct {
	Version   string          `json:"version"`
	Health    string          `json:"health"`
	StartTime int64           `json:"start_time"`
	Topics    []TopicStats    `json:"topics"`
	Memory    *MemoryStats    `json:"memory"`
	Producers []ClientStats   `json:"producers"`
	Raw       json.RawMessage `json:"-"`
}

// TopicStats is one topic in /stats.
type TopicStats struct {
	TopicName    string         `json:"topic_name"`
	Channels     []ChannelStats `json:"channels"`
	Depth        int64          `json:"depth"`
	BackendDepth int64          `json:"backend_depth"`
	MessageCount uint64         `json:"message_count"`
	MessageBytes uint64         `json:"message_bytes"`
	Paused       bool           `json:"paused"`
	E2E          E2EStats       `json:"e2e_processing_latency"`
}

// ChannelStats is one channel in /stats.
type ChannelStats struct {
	ChannelName   string        `json:"channel_name"`
	Depth         int64         `json:"depth"`
	BackendDepth  int64         `json:"backend_depth"`
	InFlightCount int           `json:"in_flight_count"`
	DeferredCount int           `json:"deferred_count"`
	MessageCount  uint64        `json:"message_count"`
	RequeueCount  uint64        `json:"requeue_count"`
	TimeoutCount  uint64        `json:"timeout_count"`
	ClientCount   int           `json:"client_count"`
	Clients       []ClientStats `json:"clients"`
	Paused        bool          `json:"paused"`
	E2E           E2EStats      `json:"e2e_processing_latency"`
}

// E2EStats is an e2e_processing_latency object.
type E2EStats struct {
	Count       int `json:"count"`
	Percentiles []struct {
		Quantile float64 `json:"quantile"`
		Value    float64 `json:"value"`
	} `json:"percentiles"`
}

// ClientStats is one client (consumer or producer) in /stats.
type ClientStats struct {
	ClientID        string `json:"client_id"`
	Hostname        string `json:"hostname"`
	Version         string `json:"version"`
	RemoteAddress   string `json:"remote_address"`
	State           int    `json:"state"`
	ReadyCount      int64  `json:"ready_count"`
	InFlightCount   int64  `json:"in_flight_count"`
	MessageCount    uint64 `json:"message_count"`
	FinishCount     uint64 `json:"finish_count"`
	RequeueCount    uint64 `json:"requeue_count"`
	ConnectTS       int64  `json:"connect_ts"`
	SampleRate      int32  `json:"sample_rate"`
	Deflate         bool   `json:"deflate"`
	Snappy          bool   `json:"snappy"`
	UserAgent       string `json:"user_agent"`
	Authed          bool   `json:"authed"`
	AuthIdentity    string `json:"auth_identity"`
	AuthIdentityURL string `json:"auth_identity_url"`
	PubCounts       []struct {
		Topic string `json:"topic"`
		Count uint64 `json:"count"`
	} `json:"pub_counts"`
	TLS            bool   `json:"tls"`
	TLSCipherSuite string `json:"tls_cipher_suite"`
	TLSVersion     string `json:"tls_version"`
}

// MemoryStats is the memory object in /stats.
type MemoryStats struct {
	HeapObjects int64 `json:"heap_objects"`
	NextGCBytes int64 `json:"next_gc_bytes"`
	GCTotalRuns int64 `json:"gc_total_runs"`
}

// GetStats fetches http://<httpAddr>/stats?format=json<extraQuery> (extraQuery
// like "&topic=t") and decodes it; Raw holds the undecoded body.
func GetStats(t testing.TB, httpAddr, extraQuery string) Stats {
	t.Helper()
	r := HTTPDo(t, http.MethodGet, "http://"+httpAddr+"/stats?format=json"+extraQuery, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /stats: %v", r)
	}
	var s Stats
	if err := json.Unmarshal(r.Body, &s); err != nil {
		t.Fatalf("decode /stats %q: %v", r.Body, err)
	}
	s.Raw = r.Body
	return s
}

// Topic returns the named topic's stats, or nil.
func (s Stats) Topic(name string) *TopicStats {
	for i := range s.Topics {
		if s.Topics[i].TopicName == name {
			return &s.Topics[i]
		}
	}
	return nil
}

// Channel returns the named channel's stats, or nil.
func (s Stats) Channel(topic, channel string) *ChannelStats {
	tp := s.Topic(topic)
	if tp == nil {
		return nil
	}
	for i := range tp.Channels {
		if tp.Channels[i].ChannelName == channel {
			return &tp.Channels[i]
		}
	}
	return nil
}

// ObjectKeys returns the keys of the JSON object raw in document order.
func ObjectKeys(raw []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("not a JSON object: %q", truncate(raw))
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// HTTPClientTLS returns an HTTP client using tlsConf (redirects not followed).
func HTTPClientTLS(tlsConf *tls.Config) *http.Client {
	return &http.Client{
		Timeout:       10 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: tlsConf},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
