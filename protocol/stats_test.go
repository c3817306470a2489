package protocol

import (
	"bytes"
	"encoding/json"
	"runtime"
	"testing"
	"time"
)

// specStatsExample is the [V] example of protocol.md §9.5, byte for byte.
const specStatsExample = `{"version":"1.3.0","health":"OK","start_time":1795310868,"topics":[{"topic_name":"s1","channels":[{"channel_name":"c1","depth":0,"backend_depth":0,"in_flight_count":1,"deferred_count":0,"message_count":1,"requeue_count":0,"timeout_count":0,"client_count":1,"clients":[{"client_id":"cons","hostname":"chost","version":"V2","remote_address":"127.0.0.1:42096","state":3,"ready_count":3,"in_flight_count":1,"message_count":1,"finish_count":0,"requeue_count":0,"connect_ts":1795310946,"sample_rate":50,"deflate":false,"snappy":false,"user_agent":"cua","tls":false,"tls_cipher_suite":"","tls_version":"","tls_negotiated_protocol":"","tls_negotiated_protocol_is_mutual":false}],"paused":false,"e2e_processing_latency":{"count":0,"percentiles":[{"quantile":0.99,"value":0},{"quantile":0.5,"value":0}]}}],"depth":0,"backend_depth":0,"message_count":1,"message_bytes":1,"paused":false,"e2e_processing_latency":{"count":0,"percentiles":[{"quantile":0.99,"value":0},{"quantile":0.5,"value":0}]}}],"producers":[{"client_id":"prod","hostname":"ph","version":"V2","remote_address":"127.0.0.1:42092","state":0,"ready_count":0,"in_flight_count":0,"message_count":0,"finish_count":0,"requeue_count":0,"connect_ts":1795310946,"sample_rate":0,"deflate":false,"snappy":false,"user_agent":"pua","pub_counts":[{"topic":"s1","count":1}],"tls":false,"tls_cipher_suite":"","tls_version":"","tls_negotiated_protocol":"","tls_negotiated_protocol_is_mutual":false}]}`

func TestStatsJSONRoundTripSpecExample(t *testing.T) {
	var s StatsResponse
	if err := json.Unmarshal([]byte(specStatsExample), &s); err != nil {
		t.Fatal(err)
	}
	if s.Memory != nil || len(s.Topics) != 1 || len(s.Topics[0].Channels) != 1 ||
		s.Topics[0].Channels[0].Clients[0].SampleRate != 50 || s.Producers[0].PubCounts[0].Count != 1 ||
		s.Topics[0].E2ELatency.Percentiles[1].Quantile != 0.5 {
		t.Fatalf("decoded wrongly: %+v", s)
	}
	out, err := json.Marshal(&s)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != specStatsExample {
		t.Fatalf("re-encoded differs:\n got %s\nwant %s", out, specStatsExample)
	}
}

func TestStatsJSONNullsAndOmissions(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   any
		want string
	}{
		{"unknown topic filter, no mem, no producers", StatsResponse{Version: "1.3.0", Health: "OK", StartTime: 5},
			`{"version":"1.3.0","health":"OK","start_time":5,"topics":null,"producers":null}`},
		{"topic filtered out by channel", StatsResponse{Version: "1.3.0", Health: "NOK - disk", Topics: []TopicStats{}, Memory: &MemStats{HeapObjects: 7, GCTotalRuns: 2}},
			`{"version":"1.3.0","health":"NOK - disk","start_time":0,"topics":[],"memory":{"heap_objects":7,"heap_idle_bytes":0,"heap_in_use_bytes":0,"heap_released_bytes":0,"gc_pause_usec_100":0,"gc_pause_usec_99":0,"gc_pause_usec_95":0,"next_gc_bytes":0,"gc_total_runs":2},"producers":null}`},
		{"topic without channels never null (producers set Channels non-nil)", TopicStats{TopicName: "t", Channels: []ChannelStats{}},
			`{"topic_name":"t","channels":[],"depth":0,"backend_depth":0,"message_count":0,"message_bytes":0,"paused":false,"e2e_processing_latency":{"count":0,"percentiles":null}}`},
		{"topic pointer", &TopicStats{TopicName: "t", Paused: true, Channels: []ChannelStats{}},
			`{"topic_name":"t","channels":[],"depth":0,"backend_depth":0,"message_count":0,"message_bytes":0,"paused":true,"e2e_processing_latency":{"count":0,"percentiles":null}}`},
		{"channel with clients excluded", ChannelStats{ChannelName: "c", ClientCount: 2},
			`{"channel_name":"c","depth":0,"backend_depth":0,"in_flight_count":0,"deferred_count":0,"message_count":0,"requeue_count":0,"timeout_count":0,"client_count":2,"clients":null,"paused":false,"e2e_processing_latency":{"count":0,"percentiles":null}}`},
		{"channel with no clients", ChannelStats{ChannelName: "c", Clients: []ClientStats{}},
			`{"channel_name":"c","depth":0,"backend_depth":0,"in_flight_count":0,"deferred_count":0,"message_count":0,"requeue_count":0,"timeout_count":0,"client_count":0,"clients":[],"paused":false,"e2e_processing_latency":{"count":0,"percentiles":null}}`},
		{"authed TLS client", ClientStats{ClientID: "x", Version: "V2", Authed: true, AuthIdentity: "id", AuthIdentityURL: "http://u", TLS: true, TLSVersion: "TLS1.3", TLSNegotiatedProtocolIsMutual: true},
			`{"client_id":"x","hostname":"","version":"V2","remote_address":"","state":0,"ready_count":0,"in_flight_count":0,"message_count":0,"finish_count":0,"requeue_count":0,"connect_ts":0,"sample_rate":0,"deflate":false,"snappy":false,"user_agent":"","authed":true,"auth_identity":"id","auth_identity_url":"http://u","tls":true,"tls_cipher_suite":"","tls_version":"TLS1.3","tls_negotiated_protocol":"","tls_negotiated_protocol_is_mutual":true}`},
		{"latency", E2ELatency{Count: 3, Percentiles: []Percentile{{1, 4832904016}, {0.99, 225139517.5}}},
			`{"count":3,"percentiles":[{"quantile":1,"value":4832904016},{"quantile":0.99,"value":225139517.5}]}`},
	} {
		out, err := json.Marshal(tc.in)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if string(out) != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, out, tc.want)
		}
	}
}

// TestStatsText compares against the layout captured from the reference
// nsqd 1.3.0 (values adapted).
func TestStatsText(t *testing.T) {
	utc := time.UTC
	now := time.Date(2026, 11, 22, 2, 54, 16, 512967833, utc)
	pct := func(v float64) E2ELatency {
		return E2ELatency{Count: 3, Percentiles: []Percentile{{1, v}, {0.99, v}, {0.5, 0}}}
	}
	s := &StatsResponse{
		Version: "1.3.0", Health: "OK", StartTime: time.Date(2026, 11, 22, 2, 53, 3, 0, utc).Unix(),
		Memory: &MemStats{HeapObjects: 4352, HeapIdleBytes: 5562368, HeapInUseBytes: 2334720, HeapReleasedBytes: 5488640,
			GCPauseUsec100: 120, GCPauseUsec99: 99, GCPauseUsec95: 95, NextGCBytes: 4194304, GCTotalRuns: 3},
		Topics: []TopicStats{
			{TopicName: "averyveryverylongtopicname_more_than_fifteen"},
			{TopicName: "fast", MessageCount: 3, E2ELatency: pct(225139517), Channels: []ChannelStats{{
				ChannelName: "c", MessageCount: 3, ClientCount: 1, E2ELatency: pct(225139517),
				Clients: []ClientStats{{ClientID: "vm", Hostname: "vm", Version: "V2", RemoteAddress: "127.0.0.1:56352",
					State: 3, ReadyCount: 200, MessageCount: 3, FinishCount: 3, ConnectTS: now.Unix() - 2, UserAgent: "nsq_tail/1.3.0 go-nsq/1.1.0"}},
			}}},
			{TopicName: "paused1", Paused: true, E2ELatency: pct(0), Channels: []ChannelStats{{ChannelName: "pc", Paused: true, E2ELatency: pct(0)}}},
			{TopicName: "t1", Depth: 12, BackendDepth: 2, MessageCount: 5, E2ELatency: pct(4832904016), Channels: []ChannelStats{{
				ChannelName: "ch1", Depth: 7, BackendDepth: 1, InFlightCount: 1, DeferredCount: 4, RequeueCount: 2, TimeoutCount: 1,
				MessageCount: 5, E2ELatency: pct(4832904016),
				Clients: []ClientStats{{Hostname: "chost", Version: "V2", RemoteAddress: "[::1]:42096", State: 3, ReadyCount: 3,
					InFlightCount: 1, MessageCount: 1, ConnectTS: now.Unix() - 75, UserAgent: "cua"}},
			}}},
		},
		Producers: []ClientStats{
			{Hostname: "vm", Version: "V2", RemoteAddress: "127.0.0.1:56364", UserAgent: "to_nsq/1.3.0 go-nsq/1.1.0",
				ConnectTS: now.Unix() - 1, PubCounts: []PubCount{{"fast", 2}}},
			{Hostname: "ph", Version: "V2", RemoteAddress: "127.0.0.1:42092", UserAgent: "pua",
				ConnectTS: now.Unix() - 1, PubCounts: []PubCount{{"s1", 1}, {"s2", 4}}},
		},
	}
	want := "nsqd v1.3.0 (built w/go1.21.5)\n" +
		"start_time 2026-11-22T02:53:03Z\n" +
		"uptime 1m13.512967833s\n" +
		"\n" +
		"Health: OK\n" +
		"\n" +
		"Memory:\n" +
		"   heap_objects             \t4352\n" +
		"   heap_idle_bytes          \t5562368\n" +
		"   heap_in_use_bytes        \t2334720\n" +
		"   heap_released_bytes      \t5488640\n" +
		"   gc_pause_usec_100        \t120\n" +
		"   gc_pause_usec_99         \t99\n" +
		"   gc_pause_usec_95         \t95\n" +
		"   next_gc_bytes            \t4194304\n" +
		"   gc_total_runs            \t3\n" +
		"\n" +
		"Topics:\n" +
		"   [averyveryverylongtopicname_more_than_fifteen] depth: 0     be-depth: 0     msgs: 0        e2e%: \n" +
		"\n" +
		"   [fast           ] depth: 0     be-depth: 0     msgs: 3        e2e%: 225.1ms, 225.1ms, 0.0ns\n" +
		"      [c                        ] depth: 0     be-depth: 0     inflt: 0    def: 0    re-q: 0     timeout: 0     msgs: 3        e2e%: 225.1ms, 225.1ms, 0.0ns\n" +
		"        [V2 vm:56352 nsq_tail/1.3.0 go-nsq/1.1.0] state: 3 inflt: 0    rdy: 200  fin: 3        re-q: 0        msgs: 3        connected: 2s\n" +
		"\n" +
		"*P [paused1        ] depth: 0     be-depth: 0     msgs: 0        e2e%: 0.0ns, 0.0ns, 0.0ns\n" +
		"   *P [pc                       ] depth: 0     be-depth: 0     inflt: 0    def: 0    re-q: 0     timeout: 0     msgs: 0        e2e%: 0.0ns, 0.0ns, 0.0ns\n" +
		"\n" +
		"   [t1             ] depth: 12    be-depth: 2     msgs: 5        e2e%: 4.8s, 4.8s, 0.0ns\n" +
		"      [ch1                      ] depth: 7     be-depth: 1     inflt: 1    def: 4    re-q: 2     timeout: 1     msgs: 5        e2e%: 4.8s, 4.8s, 0.0ns\n" +
		"        [V2 chost:42096 cua      ] state: 3 inflt: 1    rdy: 3    fin: 0        re-q: 0        msgs: 1        connected: 1m15s\n" +
		"\n" +
		"Producers:\n" +
		"   [V2 vm:56364 to_nsq/1.3.0 go-nsq/1.1.0] msgs: 2        topics: fast=2 connected: 1s\n" +
		"   [V2 ph:42092 pua         ] msgs: 5        topics: s1=1 s2=4 connected: 1s\n"
	var buf bytes.Buffer
	WriteText(&buf, s, now, "go1.21.5")
	if buf.String() != want {
		t.Fatalf("text differs:\n--- got ---\n%s\n--- want ---\n%s", buf.String(), want)
	}
}

func TestStatsTextEmpty(t *testing.T) {
	now := time.Date(2026, 11, 22, 2, 53, 4, 15632378, time.UTC)
	s := &StatsResponse{Version: "1.3.0", Health: "NOK - disk full", StartTime: now.Unix() - 1}
	want := "nsqd v1.3.0 (built w/go1.26.8)\nstart_time 2026-11-22T02:53:03Z\nuptime 1.015632378s\n\n" +
		"Health: NOK - disk full\n\nTopics: None\n\nProducers: None\n"
	var buf bytes.Buffer
	WriteText(&buf, s, now, "go1.26.8")
	if buf.String() != want {
		t.Fatalf("got %q\nwant %q", buf.String(), want)
	}
	// start_time is printed in now's zone, like the reference (local time).
	tokyo := time.FixedZone("JST", 9*3600)
	buf.Reset()
	WriteText(&buf, s, now.In(tokyo), "go1.26.8")
	if !bytes.Contains(buf.Bytes(), []byte("start_time 2026-11-22T11:53:03+09:00\n")) {
		t.Fatalf("zone: %q", buf.String())
	}
}

func TestFormatLatency(t *testing.T) {
	for ns, want := range map[float64]string{
		0: "0.0ns", 999: "999.0ns", 1000: "1.0us", 1500: "1.5us", 225139517: "225.1ms",
		4832904016: "4.8s", 70e9: "70.0s", 12.34: "12.3ns",
		770624: "770.6us", 157522: "157.5us", // reference 1.3.0 output
	} {
		if got := FormatLatency(ns); got != want {
			t.Errorf("FormatLatency(%v) = %q, want %q", ns, got, want)
		}
	}
}

func TestNewMemStats(t *testing.T) {
	var ms runtime.MemStats
	ms.NumGC = 300 // ring buffer wrapped: all 256 slots are recent
	for i := range ms.PauseNs {
		ms.PauseNs[i] = uint64(i+1) * 1000 // 1..256 µs
	}
	ms.HeapObjects, ms.HeapIdle, ms.HeapInuse, ms.HeapReleased, ms.NextGC = 1, 2, 3, 4, 5
	got := NewMemStats(&ms)
	want := MemStats{HeapObjects: 1, HeapIdleBytes: 2, HeapInUseBytes: 3, HeapReleasedBytes: 4, NextGCBytes: 5,
		GCPauseUsec100: 256, GCPauseUsec99: 253, GCPauseUsec95: 243, GCTotalRuns: 300}
	if *got != want {
		t.Fatalf("got %+v\nwant %+v", *got, want)
	}

	var few runtime.MemStats
	few.NumGC = 2
	few.PauseNs[0], few.PauseNs[1] = 5000, 9000
	if g := NewMemStats(&few); g.GCPauseUsec100 != 9 || g.GCPauseUsec95 != 9 || g.GCTotalRuns != 2 {
		t.Fatalf("few GCs: %+v", *g)
	}
	if g := NewMemStats(&runtime.MemStats{}); g.GCPauseUsec100 != 0 {
		t.Fatalf("no GC: %+v", *g)
	}
	runtime.ReadMemStats(&ms)
	if NewMemStats(&ms).HeapInUseBytes == 0 {
		t.Fatal("live runtime stats empty")
	}
}
