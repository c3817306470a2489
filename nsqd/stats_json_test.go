package nsqd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"

	"github.com/sluicemq/sluice/protocol"
)

// startStatsNSQD starts a daemon with e2e latency percentiles configured,
// so that every part of /stats has something in it.
func startStatsNSQD(t *testing.T) *NSQD {
	t.Helper()
	return startReviewNSQD(t, func(o *Options) { o.E2EProcessingLatencyPercentiles = []float64{0.5, 0.99} })
}

func statsPost(t *testing.T, n *NSQD, path string) {
	t.Helper()
	resp, err := http.Post("http://"+n.HTTPAddr().String()+path, "", nil)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %d %s", path, resp.StatusCode, body)
	}
}

// populateStats gives n every kind of topic and channel /stats shows: plain,
// paused, without channels, ephemeral, durable with retention, with message
// policies, with a dead-letter channel, a consumer and a producer (go-nsq)
// and e2e latency samples.
func populateStats(t *testing.T, n *NSQD) {
	t.Helper()
	for _, p := range []string{
		"/topic/create?topic=plain",
		"/channel/create?topic=plain&channel=a",
		"/channel/create?topic=plain&channel=b",
		"/channel/pause?topic=plain&channel=b",
		"/topic/create?topic=paused",
		"/topic/pause?topic=paused",
		"/channel/create?topic=paused&channel=a",
		"/topic/create?topic=lonely",
		"/topic/create?topic=eph%23ephemeral",
		"/channel/create?topic=eph%23ephemeral&channel=c%23ephemeral",
		"/topic/create?topic=kept&durable=true&retention_time=2h&retention_bytes=1000000",
		"/channel/create?topic=kept&channel=a",
		"/topic/create?topic=limited&ttl=1h&max_depth=500",
		"/channel/create?topic=limited&channel=a",
		"/topic/create?topic=jobs",
		"/channel/create?topic=jobs&channel=a",
		"/channel/create?topic=jobs&channel=w&max_attempts=2&dead_letter_topic=jobs-dead",
	} {
		statsPost(t, n, p)
	}
	cfg := nsq.NewConfig()
	prod, err := nsq.NewProducer(n.TCPAddr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	prod.SetLoggerLevel(nsq.LogLevelError)
	t.Cleanup(prod.Stop)
	for i := 0; i < 20; i++ {
		if err := prod.Publish("plain", []byte(fmt.Sprintf("m%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	got := make(chan struct{}, 20)
	cons, err := nsq.NewConsumer("plain", "a", cfg)
	if err != nil {
		t.Fatal(err)
	}
	cons.SetLoggerLevel(nsq.LogLevelError)
	cons.AddHandler(nsq.HandlerFunc(func(*nsq.Message) error { got <- struct{}{}; return nil }))
	if err := cons.ConnectToNSQD(n.TCPAddr().String()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cons.Stop)
	for i := 0; i < 20; i++ {
		select {
		case <-got:
		case <-time.After(10 * time.Second):
			t.Fatalf("consumer got %d of 20 messages", i)
		}
	}
	// The last FIN is handled after the handler returns.
	waitCond(t, "every message finished", func() bool {
		ch, ok := n.topicByName("plain").existingChannel("a")
		if !ok {
			return false
		}
		cs := ch.stats(false, time.Now()) // under the channel's lock
		return cs.MessageCount == 20 && cs.InFlightCount == 0 && cs.Depth == 0
	})
}

func (n *NSQD) topicByName(name string) *Topic {
	t, _ := n.ExistingTopic(name)
	return t
}

// The streamed /stats JSON is, byte for byte, what encoding/json makes of
// the stats structures, for every filter; the streamed text format is what
// protocol.WriteText makes of them.
func TestStatsJSONStreamEqualsEncodedSnapshot(t *testing.T) {
	n := startStatsNSQD(t)
	populateStats(t, n)
	filters := []StatsFilter{
		{},
		{IncludeClients: true},
		{Topic: "plain"},
		{Topic: "plain", IncludeClients: true},
		{Topic: "plain", Channel: "b"},
		{Topic: "plain", Channel: "missing"},
		{Topic: "missing"},
		{Channel: "a"},
		{Channel: "a", IncludeClients: true},
		{Channel: "missing"},
		{Topic: "kept"},
		{Topic: "limited"},
		{Topic: "jobs", Channel: "w"},
		{Topic: "lonely"},
	}
	for _, f := range filters {
		now := time.Now()
		want, err := json.Marshal(n.statsAt(f, now))
		if err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		if err := n.writeStatsJSON(&got, f, now); err != nil {
			t.Fatalf("%+v: %v", f, err)
		}
		if !bytes.Equal(got.Bytes(), want) {
			t.Errorf("filter %+v:\nstreamed %s\nencoded  %s", f, got.Bytes(), want)
		}
		var wantText, gotText bytes.Buffer
		protocol.WriteText(&wantText, n.statsAt(f, now), now, runtime.Version())
		if err := n.writeStatsText(&gotText, f, now); err != nil {
			t.Fatalf("%+v: %v", f, err)
		}
		if gotText.String() != wantText.String() {
			t.Errorf("filter %+v, text:\nstreamed %s\nwritten  %s", f, gotText.Bytes(), wantText.Bytes())
		}
	}
	// The document covers what populateStats made, so the comparison above
	// compared something.
	var all bytes.Buffer
	if err := n.writeStatsJSON(&all, StatsFilter{IncludeClients: true}, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"durable":true`, `"retention_time":"2h0m0s"`, `"max_depth":500`, `"dead_letter_topic":"jobs-dead"`,
		`"paused":true`, `"eph#ephemeral"`, `"user_agent":"go-nsq/`, `"pub_counts":[{"topic":"plain","count":20}]`, `"quantile":0.99`} {
		if !strings.Contains(all.String(), key) {
			t.Errorf("stats lack %s: %s", key, all.Bytes())
		}
	}
}

// countingWriter counts the writes it receives.
type countingWriter struct {
	bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

// With many channels the document reaches the writer in blocks as it is
// built, and the blocks join into the same document.
func TestStatsJSONStreamsManyChannelsInBlocks(t *testing.T) {
	n := startStatsNSQD(t)
	for i := 0; i < 150; i++ {
		tn := fmt.Sprintf("t%03d", i)
		statsPost(t, n, "/topic/create?topic="+tn)
		for c := 0; c < 4; c++ {
			statsPost(t, n, fmt.Sprintf("/channel/create?topic=%s&channel=c%d", tn, c))
		}
	}
	now := time.Now()
	var w countingWriter
	if err := n.writeStatsJSON(&w, StatsFilter{}, now); err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(n.statsAt(StatsFilter{}, now))
	if !bytes.Equal(w.Bytes(), want) {
		t.Fatalf("streamed document differs from the encoded snapshot")
	}
	if least := len(want) / statsFlushSize; w.writes < least {
		t.Errorf("%d writes for %d bytes, want at least %d", w.writes, len(want), least)
	}
	var s protocol.StatsResponse
	if err := json.Unmarshal(w.Bytes(), &s); err != nil {
		t.Fatal(err)
	}
	if len(s.Topics) != 150 || len(s.Topics[149].Channels) != 4 {
		t.Errorf("decoded %d topics", len(s.Topics))
	}
}

// GET /stats?format=json answers with NSQ's headers and a document that
// decodes into the stats types; a malformed query string answers 400; the
// text format still lists topics and channels.
func TestStatsHTTPFormats(t *testing.T) {
	n := startStatsNSQD(t)
	populateStats(t, n)
	base := "http://" + n.HTTPAddr().String()
	resp, err := http.Get(base + "/stats?format=json&include_clients=true")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json; charset=utf-8" ||
		resp.Header.Get("X-NSQ-Content-Type") != "nsq; version=1.0" {
		t.Fatalf("status %d headers %v", resp.StatusCode, resp.Header)
	}
	var s protocol.StatsResponse
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	if s.Health != "OK" || len(s.Topics) != 7 || len(s.Producers) != 1 {
		t.Errorf("health %q, %d topics, %d producers: %s", s.Health, len(s.Topics), len(s.Producers), body)
	}

	resp, err = http.Get(base + "/stats?format=json&topic=plain&channel=a&include_mem=true")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	s = protocol.StatsResponse{}
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatal(err)
	}
	if len(s.Topics) != 1 || len(s.Topics[0].Channels) != 1 || s.Topics[0].Channels[0].ChannelName != "a" || s.Memory == nil {
		t.Errorf("filtered stats: %s", body)
	}

	resp, err = http.Get(base + "/stats?format=json&topic=%zz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || string(body) != `{"message":"INVALID_REQUEST"}` {
		t.Errorf("malformed query: %d %s", resp.StatusCode, body)
	}

	resp, err = http.Get(base + "/stats?topic=plain")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)
	if resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" || !strings.Contains(text, "[plain          ] depth: 0") ||
		!strings.Contains(text, "[a                        ]") || strings.Contains(text, "[jobs") {
		t.Errorf("text stats: %s", text)
	}
}

func BenchmarkStatsJSON(b *testing.B) {
	for _, size := range []struct{ topics, channels int }{{100, 10}, {1000, 10}} {
		b.Run(fmt.Sprintf("%dx%d", size.topics, size.channels), func(b *testing.B) {
			o := NewOptions()
			o.TCPAddress, o.HTTPAddress, o.HTTPSAddress = "127.0.0.1:0", "127.0.0.1:0", ""
			o.DataPath = b.TempDir()
			o.Logger = slog.New(slog.DiscardHandler)
			n, err := New(o)
			if err != nil {
				b.Fatal(err)
			}
			defer n.Exit()
			for i := 0; i < size.topics; i++ {
				tp, err := n.GetTopic(fmt.Sprintf("topic-%05d", i))
				if err != nil {
					b.Fatal(err)
				}
				for c := 0; c < size.channels; c++ {
					if _, _, err := tp.getChannelFrom(fmt.Sprintf("channel-%02d", c), channelStart{}); err != nil {
						b.Fatal(err)
					}
				}
			}
			per := float64(size.topics * size.channels)
			b.Run("stream", func(b *testing.B) {
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					if err := n.writeStatsJSON(io.Discard, StatsFilter{}, time.Now()); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/per, "ns/channel")
			})
			b.Run("snapshot+encoding-json", func(b *testing.B) {
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					if _, err := json.Marshal(n.statsAt(StatsFilter{}, time.Now())); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/per, "ns/channel")
			})
		})
	}
}
