package statsd

import (
	"context"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicemq/sluice/protocol"
)

func TestPrefix(t *testing.T) {
	for _, tc := range []struct {
		tmpl, addr string
		port       int
		want       string
	}{
		{"nsq.%s", "10.0.0.5", 4151, "nsq.10_0_0_5_4151."},
		{"nsq.%s.", "127.0.0.1", 16095, "nsq.127_0_0_1_16095."},
		{"", "10.0.0.5", 4151, ""},
		{"static", "h", 1, "static."},
		{"a.%s.b.%s", "::1", 80, "a.__1_80.b.__1_80."},
		{"nsq.%s", "host.example.com", 4151, "nsq.host_example_com_4151."},
	} {
		if got := Prefix(tc.tmpl, tc.addr, tc.port); got != tc.want {
			t.Errorf("Prefix(%q, %q, %d) = %q, want %q", tc.tmpl, tc.addr, tc.port, got, tc.want)
		}
	}
}

func pct(v float64) protocol.E2ELatency {
	return protocol.E2ELatency{Count: 1, Percentiles: []protocol.Percentile{{Quantile: 1, Value: v}, {Quantile: 0.99, Value: v}, {Quantile: 0.5, Value: v}}}
}

// referenceSnapshot reproduces the state of the reference nsqd 1.3.0 when it
// pushed testdata/reference_push.txt.
func referenceSnapshot() *protocol.StatsResponse {
	return &protocol.StatsResponse{
		Version: "1.3.0", Health: "OK",
		Topics: []protocol.TopicStats{
			{TopicName: "averyveryverylongtopicname_more_than_fifteen"},
			{TopicName: "empty1"},
			{TopicName: "paused1", Paused: true, E2ELatency: pct(0), Channels: []protocol.ChannelStats{{ChannelName: "pc", Paused: true, E2ELatency: pct(0)}}},
			{TopicName: "t1", MessageCount: 5, MessageBytes: 39, E2ELatency: pct(344584903.7), Channels: []protocol.ChannelStats{{
				ChannelName: "ch1", MessageCount: 5, DeferredCount: 4, ClientCount: 1, E2ELatency: pct(344584903),
			}}},
		},
		Memory: &protocol.MemStats{HeapObjects: 3452, HeapIdleBytes: 5873664, HeapInUseBytes: 2023424,
			HeapReleasedBytes: 5775360, NextGCBytes: 4194304},
	}
}

func TestLinesAndPackMatchReference(t *testing.T) {
	raw, err := os.ReadFile("testdata/reference_push.txt")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Split(strings.TrimPrefix(string(raw), "--- datagram\n"), "--- datagram\n")
	lines := Lines(Prefix("nsq.%s", "127.0.0.1", 34151), nil, referenceSnapshot(), Options{MemStats: true})
	got := Pack(lines, 508)
	if len(got) != len(want) {
		t.Fatalf("%d datagrams, want %d", len(got), len(want))
	}
	for i := range want {
		if string(got[i]) != want[i] {
			t.Errorf("datagram %d:\n got %q\nwant %q", i, got[i], want[i])
		}
	}
}

func TestLinesDeltasAndOptions(t *testing.T) {
	prev := &protocol.StatsResponse{
		Topics: []protocol.TopicStats{
			{TopicName: "t", MessageCount: 10, MessageBytes: 100, Channels: []protocol.ChannelStats{
				{ChannelName: "c", MessageCount: 10, RequeueCount: 3, TimeoutCount: 1},
				{ChannelName: "gone", MessageCount: 99},
			}},
			{TopicName: "recreated", MessageCount: 50},
		},
		Memory: &protocol.MemStats{GCTotalRuns: 7},
	}
	cur := &protocol.StatsResponse{
		Topics: []protocol.TopicStats{
			{TopicName: "t", MessageCount: 15, MessageBytes: 160, Depth: 4, BackendDepth: 1, Channels: []protocol.ChannelStats{
				{ChannelName: "c", MessageCount: 14, RequeueCount: 3, TimeoutCount: 2, Depth: 3, InFlightCount: 2, ClientCount: 2},
				{ChannelName: "new", MessageCount: 5},
				{ChannelName: "c#ephemeral", MessageCount: 1},
			}},
			{TopicName: "recreated", MessageCount: 4},
			{TopicName: "e#ephemeral", MessageCount: 1},
		},
		Memory: &protocol.MemStats{GCTotalRuns: 9, HeapObjects: 11},
	}
	got := Lines("p.", prev, cur, Options{ExcludeEphemeral: true})
	want := []string{
		"p.topic.t.message_count:5|c",
		"p.topic.t.message_bytes:60|c",
		"p.topic.t.depth:4|g",
		"p.topic.t.backend_depth:1|g",
		"p.topic.t.channel.c.message_count:4|c",
		"p.topic.t.channel.c.depth:3|g",
		"p.topic.t.channel.c.backend_depth:0|g",
		"p.topic.t.channel.c.in_flight_count:2|g",
		"p.topic.t.channel.c.deferred_count:0|g",
		"p.topic.t.channel.c.requeue_count:0|c",
		"p.topic.t.channel.c.timeout_count:1|c",
		"p.topic.t.channel.c.clients:2|g",
		"p.topic.t.channel.new.message_count:5|c",
		"p.topic.t.channel.new.depth:0|g",
		"p.topic.t.channel.new.backend_depth:0|g",
		"p.topic.t.channel.new.in_flight_count:0|g",
		"p.topic.t.channel.new.deferred_count:0|g",
		"p.topic.t.channel.new.requeue_count:0|c",
		"p.topic.t.channel.new.timeout_count:0|c",
		"p.topic.t.channel.new.clients:0|g",
		"p.topic.recreated.message_count:4|c",
		"p.topic.recreated.message_bytes:0|c",
		"p.topic.recreated.depth:0|g",
		"p.topic.recreated.backend_depth:0|g",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Ephemeral included, mem stats on, gc_runs as a delta, percentile names.
	cur.Topics = cur.Topics[2:]
	cur.Topics[0].E2ELatency = protocol.E2ELatency{Percentiles: []protocol.Percentile{{Quantile: 0.999, Value: 1}, {Quantile: 0.955, Value: 2}, {Quantile: 0.1, Value: 3.9}}}
	got = Lines("", prev, cur, Options{MemStats: true})
	wantTail := []string{
		"topic.e#ephemeral.e2e_processing_latency_100:1|g",
		"topic.e#ephemeral.e2e_processing_latency_96:2|g",
		"topic.e#ephemeral.e2e_processing_latency_10:3|g",
		"mem.heap_objects:11|g",
		"mem.heap_idle_bytes:0|g",
		"mem.heap_in_use_bytes:0|g",
		"mem.heap_released_bytes:0|g",
		"mem.gc_pause_usec_100:0|g",
		"mem.gc_pause_usec_99:0|g",
		"mem.gc_pause_usec_95:0|g",
		"mem.next_gc_bytes:0|g",
		"mem.gc_runs:2|c",
	}
	if len(got) != 4+len(wantTail) || strings.Join(got[4:], "\n") != strings.Join(wantTail, "\n") {
		t.Fatalf("got:\n%s", strings.Join(got, "\n"))
	}
	if Lines("x.", nil, nil, Options{}) != nil {
		t.Fatal("nil snapshot must give no lines")
	}
}

func TestPack(t *testing.T) {
	lines := []string{"aaaa", "bbbb", "cc", strings.Repeat("x", 12), "d"}
	got := Pack(lines, 10)
	want := []string{"aaaa\nbbbb\n", "cc\n", strings.Repeat("x", 12) + "\n", "d\n"}
	if len(got) != len(want) {
		t.Fatalf("got %q", got)
	}
	for i := range want {
		if string(got[i]) != want[i] {
			t.Fatalf("packet %d = %q, want %q", i, got[i], want[i])
		}
	}
	if Pack(nil, 508) != nil {
		t.Fatal("no lines must give no packets")
	}
}

func TestSendGap(t *testing.T) {
	for _, tc := range []struct {
		interval time.Duration
		n        int
		want     time.Duration
	}{
		{time.Minute, 59, time.Second},
		{3 * time.Second, 7, 2 * time.Second / 7},
		{time.Second, 5, 0},
		{500 * time.Millisecond, 5, 0},
		{time.Minute, 1, 0},
	} {
		if got := sendGap(tc.interval, tc.n); got != tc.want {
			t.Errorf("sendGap(%v, %d) = %v, want %v", tc.interval, tc.n, got, tc.want)
		}
	}
}

// listen opens a real UDP listener and returns its address and a channel of
// received datagrams; the reader stops when the test ends.
func listen(t *testing.T) (string, <-chan string) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			ch <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return pc.LocalAddr().String(), ch
}

func recv(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case d := <-ch:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("no datagram within 10s")
		return ""
	}
}

func TestRunPushesDeltas(t *testing.T) {
	addr, ch := listen(t)
	var calls atomic.Int64
	snapshot := func() *protocol.StatsResponse {
		n := calls.Add(1)
		return &protocol.StatsResponse{Topics: []protocol.TopicStats{{TopicName: "t", MessageCount: 10 * n, Depth: n}}}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		errc <- Run(ctx, addr, 50*time.Millisecond, 508, snapshot, Prefix("nsq.%s", "127.0.0.1", 4151), Options{}, nil)
	}()
	want1 := "nsq.127_0_0_1_4151.topic.t.message_count:10|c\nnsq.127_0_0_1_4151.topic.t.message_bytes:0|c\n" +
		"nsq.127_0_0_1_4151.topic.t.depth:1|g\nnsq.127_0_0_1_4151.topic.t.backend_depth:0|g\n"
	want2 := "nsq.127_0_0_1_4151.topic.t.message_count:10|c\nnsq.127_0_0_1_4151.topic.t.message_bytes:0|c\n" +
		"nsq.127_0_0_1_4151.topic.t.depth:2|g\nnsq.127_0_0_1_4151.topic.t.backend_depth:0|g\n"
	if got := recv(t, ch); got != want1 {
		t.Fatalf("first push %q, want %q", got, want1)
	}
	if got := recv(t, ch); got != want2 {
		t.Fatalf("second push %q, want %q", got, want2)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop after cancel")
	}
}

// TestRunSpreadsDatagrams checks that a push is spread over interval-1s and
// that cancelling in the middle of a push stops Run promptly.
func TestRunSpreadsDatagrams(t *testing.T) {
	addr, ch := listen(t)
	topics := make([]protocol.TopicStats, 4)
	for i := range topics {
		topics[i].TopicName = strings.Repeat(string(rune('a'+i)), 40)
	}
	snap := &protocol.StatsResponse{Topics: topics}
	// Each topic's 4 lines take ~210 bytes: one datagram per topic with a
	// 300-byte packet size, so 4 datagrams spread over 1.4s-1s = 400ms.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		errc <- Run(ctx, addr, 1400*time.Millisecond, 300, func() *protocol.StatsResponse { return snap }, "", Options{}, nil)
	}()
	var times []time.Time
	for i := 0; i < 4; i++ {
		d := recv(t, ch)
		times = append(times, time.Now())
		if !strings.HasPrefix(d, "topic."+topics[i].TopicName+".message_count:0|c\n") || strings.Count(d, "\n") != 4 {
			t.Fatalf("datagram %d = %q", i, d)
		}
	}
	if spread := times[3].Sub(times[0]); spread < 150*time.Millisecond || spread > 1200*time.Millisecond {
		t.Fatalf("4 datagrams arrived over %v, want about 300ms (3 gaps of 100ms)", spread)
	}
	// Cancel during the next push's pauses.
	recv(t, ch)
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop after cancel")
	}
}

func TestRunBadInterval(t *testing.T) {
	if err := Run(context.Background(), "127.0.0.1:1", 0, 508, nil, "", Options{}, nil); err == nil {
		t.Fatal("zero interval accepted")
	}
}
