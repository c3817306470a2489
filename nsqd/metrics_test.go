package nsqd_test

import (
	"bytes"
	"fmt"
	"net/http"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/nsqd"
)

// metricsScrape is one parsed GET /metrics.
type metricsScrape map[string]*dto.MetricFamily

// scrapeMetrics fetches http://<addr>/metrics and parses the text exposition.
func scrapeMetrics(t testing.TB, h *testutil.NSQDHandle) metricsScrape {
	t.Helper()
	r := testutil.HTTPDo(t, http.MethodGet, h.URL("/metrics"), nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /metrics: %v", r)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("GET /metrics Content-Type = %q, want text/plain; version=0.0.4...", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(r.Body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, r.Body)
	}
	return fams
}

// promLabelKey renders labels as k=v,... sorted by name.
func promLabelKey(lps []*dto.LabelPair) string {
	parts := make([]string, len(lps))
	for i, lp := range lps {
		parts[i] = lp.GetName() + "=" + lp.GetValue()
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// series returns the value of every series of family name keyed by promLabelKey,
// failing unless the family exists with type typ.
func (s metricsScrape) series(t testing.TB, name string, typ dto.MetricType) map[string]float64 {
	t.Helper()
	f, ok := s[name]
	if !ok {
		t.Fatalf("metric family %s missing", name)
	}
	if f.GetType() != typ {
		t.Fatalf("%s has type %v, want %v", name, f.GetType(), typ)
	}
	if f.GetHelp() == "" {
		t.Errorf("%s has no HELP", name)
	}
	out := make(map[string]float64, len(f.GetMetric()))
	for _, m := range f.GetMetric() {
		var v float64
		switch typ {
		case dto.MetricType_GAUGE:
			v = m.GetGauge().GetValue()
		case dto.MetricType_COUNTER:
			v = m.GetCounter().GetValue()
		default:
			v = m.GetUntyped().GetValue()
		}
		out[promLabelKey(m.GetLabel())] = v
	}
	return out
}

// value returns one series' value, failing when it is absent.
func (s metricsScrape) value(t testing.TB, name string, typ dto.MetricType, labels string) float64 {
	t.Helper()
	all := s.series(t, name, typ)
	v, ok := all[labels]
	if !ok {
		t.Fatalf("%s{%s} missing; have %v", name, labels, all)
	}
	return v
}

const (
	promGauge   = dto.MetricType_GAUGE
	promCounter = dto.MetricType_COUNTER
)

func topicLbl(topic string) string    { return "topic=" + topic }
func chanLbl(topic, ch string) string { return "channel=" + ch + ",topic=" + topic }
func chanQLbl(topic, ch, q string) string {
	return "channel=" + ch + ",quantile=" + q + ",topic=" + topic
}

// expectFamily checks that family name holds exactly want (label key -> value).
func (s metricsScrape) expectFamily(t testing.TB, name string, typ dto.MetricType, want map[string]float64) {
	t.Helper()
	if _, ok := s[name]; !ok && len(want) == 0 {
		return // a family without series is not exposed
	}
	got := s.series(t, name, typ)
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("%s{%s} missing, want %v", name, k, w)
			continue
		}
		if g != w {
			t.Errorf("%s{%s} = %v, want %v", name, k, g, w)
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected series %s{%s} = %v", name, k, g)
		}
	}
}

// TestMetricsTopicsAndChannels drives one topic through publishes, a deferred
// publish, FIN, a deferred REQ, a timeout and a held in-flight message, and
// checks every topic and channel metric's exact value.
func TestMetricsTopicsAndChannels(t *testing.T) {
	h := testutil.StartNSQD(t, func(o *nsqd.Options) {
		o.E2EProcessingLatencyPercentiles = []float64{1, 0.5}
	})
	const topic, c1, c2, idle = "metrics_t", "c1", "c2", "metrics_idle"

	// Empty daemon: no topic series, healthy, runtime collectors present.
	s := scrapeMetrics(t, h)
	if v := s.value(t, "nsqd_healthy", promGauge, ""); v != 1 {
		t.Errorf("nsqd_healthy = %v, want 1", v)
	}
	if v := s.value(t, "nsqd_topics", promGauge, ""); v != 0 {
		t.Errorf("nsqd_topics = %v, want 0", v)
	}
	s.expectFamily(t, "nsqd_topic_depth", promGauge, map[string]float64{})
	if v := s.value(t, "nsqd_start_time_seconds", promGauge, ""); v <= 0 || v > float64(time.Now().Unix()) {
		t.Errorf("nsqd_start_time_seconds = %v", v)
	}
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_resident_memory_bytes", "process_start_time_seconds", "process_open_fds"} {
		if v := s.value(t, name, promGauge, ""); v <= 0 {
			t.Errorf("%s = %v, want > 0", name, v)
		}
	}
	if v := s.value(t, "go_info", promGauge, "version="+runtime.Version()); v != 1 {
		t.Errorf("go_info{version=%q} = %v, want 1", runtime.Version(), v)
	}

	testutil.MustPost(t, h.URL("/topic/create?topic="+topic), nil)
	for _, ch := range []string{c1, c2} {
		testutil.MustPost(t, h.URL("/channel/create?topic="+topic+"&channel="+ch), nil)
	}
	testutil.MustPost(t, h.URL("/topic/create?topic="+idle), nil)
	var bodyBytes int
	for i := range 5 {
		b := []byte(fmt.Sprintf("message-%d-%s", i, strings.Repeat("x", i*10)))
		bodyBytes += len(b)
		testutil.MustPost(t, h.URL("/pub?topic="+topic), b)
	}
	deferred := []byte("deferred")
	bodyBytes += len(deferred)
	testutil.MustPost(t, h.URL("/pub?topic="+topic+"&defer=3600000"), deferred)
	var last testutil.Stats
	if !testutil.Eventually(10*time.Second, func() bool {
		last = testutil.GetStats(t, h.HTTPAddr, "&topic="+topic)
		a, b := last.Channel(topic, c1), last.Channel(topic, c2)
		return a != nil && b != nil && a.Depth == 5 && b.Depth == 5 && a.DeferredCount == 1 && b.DeferredCount == 1
	}) {
		t.Fatalf("want 5 queued and 1 deferred message on both channels, /stats: %s", last.Raw)
	}

	// Connection A (1 s timeout) takes one message and lets it time out.
	a := testutil.DialV2(t, h.TCPAddr)
	a.Identify(map[string]any{"msg_timeout": 1000})
	a.Subscribe(topic, c1)
	a.Ready(1)
	a.ExpectMessage()
	a.Ready(0)
	testutil.WaitFor(t, 10*time.Second, func() bool {
		c := testutil.GetStats(t, h.HTTPAddr, "&topic="+topic).Channel(topic, c1)
		return c.TimeoutCount == 1 && c.InFlightCount == 0 && c.Depth == 5
	}, "the message held by connection A to time out and return to the queue")

	// Connection B takes three: FIN one, REQ one for an hour, hold one.
	b := testutil.DialV2(t, h.TCPAddr)
	b.Subscribe(topic, c1)
	b.Ready(3)
	m1, m2 := b.ExpectMessage(), b.ExpectMessage()
	b.ExpectMessage()
	b.Ready(0)
	b.Finish(m1.ID)
	b.Send("REQ "+m2.ID+" 3600000", nil)
	testutil.WaitFor(t, 10*time.Second, func() bool {
		c := testutil.GetStats(t, h.HTTPAddr, "&topic="+topic).Channel(topic, c1)
		return c.RequeueCount == 1 && c.InFlightCount == 1 && c.DeferredCount == 2 && c.Depth == 2 && c.E2E.Count == 1
	}, "FIN and REQ to be applied on %s", c1)

	s = scrapeMetrics(t, h)
	st := testutil.GetStats(t, h.HTTPAddr, "")
	if v := s.value(t, "nsqd_topics", promGauge, ""); v != 2 {
		t.Errorf("nsqd_topics = %v, want 2", v)
	}
	s.expectFamily(t, "nsqd_topic_depth", promGauge, map[string]float64{topicLbl(topic): 0, topicLbl(idle): 0})
	s.expectFamily(t, "nsqd_topic_backend_depth", promGauge, map[string]float64{topicLbl(topic): 0, topicLbl(idle): 0})
	s.expectFamily(t, "nsqd_topic_paused", promGauge, map[string]float64{topicLbl(topic): 0, topicLbl(idle): 0})
	s.expectFamily(t, "nsqd_topic_channels", promGauge, map[string]float64{topicLbl(topic): 2, topicLbl(idle): 0})
	s.expectFamily(t, "nsqd_topic_messages_total", promCounter, map[string]float64{topicLbl(topic): 6, topicLbl(idle): 0})
	s.expectFamily(t, "nsqd_topic_message_bytes_total", promCounter, map[string]float64{topicLbl(topic): float64(bodyBytes), topicLbl(idle): 0})

	s.expectFamily(t, "nsqd_channel_depth", promGauge, map[string]float64{chanLbl(topic, c1): 2, chanLbl(topic, c2): 5})
	s.expectFamily(t, "nsqd_channel_backend_depth", promGauge, map[string]float64{chanLbl(topic, c1): 0, chanLbl(topic, c2): 0})
	s.expectFamily(t, "nsqd_channel_in_flight", promGauge, map[string]float64{chanLbl(topic, c1): 1, chanLbl(topic, c2): 0})
	s.expectFamily(t, "nsqd_channel_deferred", promGauge, map[string]float64{chanLbl(topic, c1): 2, chanLbl(topic, c2): 1})
	s.expectFamily(t, "nsqd_channel_clients", promGauge, map[string]float64{chanLbl(topic, c1): 2, chanLbl(topic, c2): 0})
	s.expectFamily(t, "nsqd_channel_paused", promGauge, map[string]float64{chanLbl(topic, c1): 0, chanLbl(topic, c2): 0})
	s.expectFamily(t, "nsqd_channel_messages_total", promCounter, map[string]float64{chanLbl(topic, c1): 6, chanLbl(topic, c2): 6})
	s.expectFamily(t, "nsqd_channel_requeued_total", promCounter, map[string]float64{chanLbl(topic, c1): 1, chanLbl(topic, c2): 0})
	s.expectFamily(t, "nsqd_channel_timed_out_total", promCounter, map[string]float64{chanLbl(topic, c1): 1, chanLbl(topic, c2): 0})

	// e2e latency: one FIN on c1, so one sample; quantile values are the
	// /stats figures (ns) in seconds. Nothing changes between the two reads:
	// no message moves and the 10 min window does not slide past the sample.
	tsC1 := st.Channel(topic, c1)
	tsT := st.Topic(topic)
	if tsC1 == nil || tsT == nil || len(tsC1.E2E.Percentiles) != 2 || len(tsT.E2E.Percentiles) != 2 {
		t.Fatalf("unexpected /stats e2e: %s", st.Raw)
	}
	s.expectFamily(t, "nsqd_channel_e2e_processing_latency_samples", promGauge, map[string]float64{
		chanLbl(topic, c1): 1, chanLbl(topic, c2): float64(st.Channel(topic, c2).E2E.Count)})
	if st.Channel(topic, c2).E2E.Count != 0 {
		t.Errorf("c2 e2e count = %d, want 0", st.Channel(topic, c2).E2E.Count)
	}
	wantCh := map[string]float64{}
	for _, ch := range []string{c1, c2} {
		for _, p := range st.Channel(topic, ch).E2E.Percentiles {
			wantCh[chanQLbl(topic, ch, strconv.FormatFloat(p.Quantile, 'g', -1, 64))] = p.Value / 1e9
		}
	}
	if _, ok := wantCh[chanQLbl(topic, c1, "1")]; !ok {
		t.Fatalf("no quantile 1 for c1 in /stats: %s", st.Raw)
	}
	if _, ok := wantCh[chanQLbl(topic, c1, "0.5")]; !ok {
		t.Fatalf("no quantile 0.5 for c1 in /stats: %s", st.Raw)
	}
	if wantCh[chanQLbl(topic, c1, "1")] <= 0 {
		t.Errorf("c1 p100 latency = %v, want > 0", wantCh[chanQLbl(topic, c1, "1")])
	}
	s.expectFamily(t, "nsqd_channel_e2e_processing_latency_seconds", promGauge, wantCh)
	wantT := map[string]float64{}
	for _, p := range tsT.E2E.Percentiles {
		wantT["quantile="+strconv.FormatFloat(p.Quantile, 'g', -1, 64)+",topic="+topic] = p.Value / 1e9
	}
	s.expectFamily(t, "nsqd_topic_e2e_processing_latency_seconds", promGauge, wantT)
	s.expectFamily(t, "nsqd_topic_e2e_processing_latency_samples", promGauge, map[string]float64{topicLbl(topic): 1})

	// Pausing shows, and a closed consumer leaves the client count.
	testutil.MustPost(t, h.URL("/channel/pause?topic="+topic+"&channel="+c2), nil)
	testutil.MustPost(t, h.URL("/topic/pause?topic="+idle), nil)
	a.Close()
	testutil.WaitFor(t, 10*time.Second, func() bool {
		return testutil.GetStats(t, h.HTTPAddr, "&topic="+topic).Channel(topic, c1).ClientCount == 1
	}, "connection A to leave %s", c1)
	s = scrapeMetrics(t, h)
	s.expectFamily(t, "nsqd_channel_paused", promGauge, map[string]float64{chanLbl(topic, c1): 0, chanLbl(topic, c2): 1})
	s.expectFamily(t, "nsqd_topic_paused", promGauge, map[string]float64{topicLbl(topic): 0, topicLbl(idle): 1})
	s.expectFamily(t, "nsqd_channel_clients", promGauge, map[string]float64{chanLbl(topic, c1): 1, chanLbl(topic, c2): 0})

	// Deleting removes the series.
	testutil.MustPost(t, h.URL("/topic/delete?topic="+topic), nil)
	s = scrapeMetrics(t, h)
	s.expectFamily(t, "nsqd_topic_messages_total", promCounter, map[string]float64{topicLbl(idle): 0})
	s.expectFamily(t, "nsqd_channel_depth", promGauge, map[string]float64{})
	if v := s.value(t, "nsqd_topics", promGauge, ""); v != 1 {
		t.Errorf("nsqd_topics = %v, want 1", v)
	}
}

// TestMetricsBackendDepth checks the disk share of topic and channel depth
// with a two-message memory queue.
func TestMetricsBackendDepth(t *testing.T) {
	h := testutil.StartNSQD(t, func(o *nsqd.Options) { o.MemQueueSize = 2 })
	const topic, ch, lone = "metrics_disk", "ch", "metrics_lone"
	testutil.MustPost(t, h.URL("/topic/create?topic="+topic), nil)
	testutil.MustPost(t, h.URL("/channel/create?topic="+topic+"&channel="+ch), nil)
	testutil.MustPost(t, h.URL("/topic/create?topic="+lone), nil)
	// 100 messages through a 2-message memory queue: the topic keeps 2 in
	// memory and 98 on disk; the channel overflows to disk too (how much it
	// pulls back into memory ahead of consumers is nsqd's business, so its
	// disk share is compared with /stats once it has settled).
	const n = 100
	for range n {
		testutil.MustPost(t, h.URL("/pub?topic="+lone), []byte("x"))
	}
	mpub := make([][]byte, n)
	for i := range mpub {
		mpub[i] = []byte("yy")
	}
	testutil.MustPost(t, h.URL("/mpub?topic="+topic+"&binary=true"), testutil.MPUBBody(mpub))
	var prev, cur *testutil.ChannelStats
	if !testutil.Eventually(10*time.Second, func() bool {
		prev, cur = cur, testutil.GetStats(t, h.HTTPAddr, "&topic="+topic).Channel(topic, ch)
		return prev != nil && cur != nil && cur.Depth == n && cur.BackendDepth > 0 && cur.BackendDepth == prev.BackendDepth
	}) {
		t.Fatalf("channel did not settle at depth %d with a disk share: %+v", n, cur)
	}
	s := scrapeMetrics(t, h)
	s.expectFamily(t, "nsqd_topic_depth", promGauge, map[string]float64{topicLbl(topic): 0, topicLbl(lone): n})
	s.expectFamily(t, "nsqd_topic_backend_depth", promGauge, map[string]float64{topicLbl(topic): 0, topicLbl(lone): n - 2})
	s.expectFamily(t, "nsqd_channel_depth", promGauge, map[string]float64{chanLbl(topic, ch): n})
	s.expectFamily(t, "nsqd_channel_backend_depth", promGauge, map[string]float64{chanLbl(topic, ch): float64(cur.BackendDepth)})
	s.expectFamily(t, "nsqd_topic_messages_total", promCounter, map[string]float64{topicLbl(topic): n, topicLbl(lone): n})
	s.expectFamily(t, "nsqd_topic_message_bytes_total", promCounter, map[string]float64{topicLbl(topic): 2 * n, topicLbl(lone): n})
	// No percentiles configured: no latency series at all.
	for _, name := range []string{"nsqd_topic_e2e_processing_latency_seconds", "nsqd_channel_e2e_processing_latency_seconds"} {
		if f, ok := s[name]; ok && len(f.GetMetric()) > 0 {
			t.Errorf("%s present without configured percentiles: %v", name, f)
		}
	}
}

// TestMetricsNegotiation checks that the handler honours the Accept header
// (protobuf for scrapers asking for it) and gzip.
func TestMetricsNegotiation(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	testutil.MustPost(t, h.URL("/topic/create?topic=neg"), nil)

	req, err := http.NewRequest(http.MethodGet, h.URL("/metrics"), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeProtoDelim)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: status %d", resp.StatusCode)
	}
	format := expfmt.ResponseFormat(resp.Header)
	if format.FormatType() != expfmt.TypeProtoDelim {
		t.Fatalf("response format %q, want delimited protobuf", format)
	}
	dec := expfmt.NewDecoder(resp.Body, format)
	found := false
	for {
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); err != nil {
			break
		}
		if mf.GetName() == "nsqd_topic_depth" {
			if len(mf.GetMetric()) != 1 || promLabelKey(mf.GetMetric()[0].GetLabel()) != "topic=neg" || mf.GetMetric()[0].GetGauge().GetValue() != 0 {
				t.Errorf("nsqd_topic_depth = %v", mf.String())
			}
			found = true
		}
	}
	if !found {
		t.Errorf("nsqd_topic_depth not in protobuf metricsScrape")
	}

	// Every other method is refused like the rest of the API.
	r := testutil.HTTPDo(t, http.MethodPost, h.URL("/metrics"), nil)
	if r.Status != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics: %v, want 405", r)
	}
}
