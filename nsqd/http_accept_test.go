package nsqd_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/testutil"
)

// jsonObj decodes a JSON object into its raw members and its key order.
func jsonObj(t *testing.T, raw []byte) (map[string]json.RawMessage, []string) {
	t.Helper()
	keys, err := testutil.ObjectKeys(raw)
	if err != nil {
		t.Fatalf("%q: %v", raw, err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%q: %v", raw, err)
	}
	return m, keys
}

func jsonArr(t *testing.T, raw []byte) []json.RawMessage {
	t.Helper()
	var a []json.RawMessage
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatalf("%q: %v", raw, err)
	}
	return a
}

func wantKeys(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s keys\n got %v\nwant %v", what, got, want)
	}
}

// wantEmpty200 checks a 200 action reply: empty body, Content-Length 0, no Content-Type.
func wantEmpty200(t *testing.T, r testutil.HTTPResponse, what string) {
	t.Helper()
	if r.Status != 200 || len(r.Body) != 0 {
		t.Fatalf("%s: got %v, want 200 with empty body", what, r)
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		t.Errorf("%s: Content-Type %q, want none", what, ct)
	}
	if cl := r.Header.Get("Content-Length"); cl != "0" {
		t.Errorf("%s: Content-Length %q, want 0", what, cl)
	}
	if v := r.Header.Get("X-NSQ-Content-Type"); v != "nsq; version=1.0" {
		t.Errorf("%s: X-NSQ-Content-Type %q", what, v)
	}
}

// TestHTTPPingInfo checks /ping and /info (§9.1, §9.2).
func TestHTTPPingInfo(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	r := testutil.HTTPDo(t, "GET", h.URL("/ping"), nil)
	if r.Status != 200 || string(r.Body) != "OK" || r.Header.Get("Content-Type") != "text/plain; charset=utf-8" || r.Header.Get("X-NSQ-Content-Type") != "" {
		t.Fatalf("/ping: %v headers %v", r, r.Header)
	}
	r = testutil.HTTPDo(t, "GET", h.URL("/info"), nil)
	if r.Status != 200 || r.Header.Get("Content-Type") != "application/json; charset=utf-8" {
		t.Fatalf("/info: %v", r)
	}
	m, keys := jsonObj(t, r.Body)
	wantKeys(t, "/info", keys, []string{"version", "broadcast_address", "hostname", "http_port", "tcp_port", "start_time", "max_heartbeat_interval", "max_output_buffer_size", "max_output_buffer_timeout", "max_deflate_level"})
	_, tcpPort, _ := strings.Cut(h.TCPAddr, ":")
	_, httpPort, _ := strings.Cut(h.HTTPAddr, ":")
	for k, v := range map[string]string{"version": `"1.3.0"`, "broadcast_address": `"127.0.0.1"`, "tcp_port": tcpPort, "http_port": httpPort,
		"max_heartbeat_interval": "60000000000", "max_output_buffer_size": "65536", "max_output_buffer_timeout": "30000000000", "max_deflate_level": "6"} {
		if string(m[k]) != v {
			t.Errorf("/info %s = %s, want %s", k, m[k], v)
		}
	}
}

// TestHTTPPublish: /pub, /pub?defer, /mpub text and binary (§9.3, §9.4).
func TestHTTPPublish(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	createChannel(t, h, "hpub", "c")
	r := testutil.MustPost(t, h.URL("/pub?topic=hpub"), []byte("single"))
	if string(r.Body) != "OK" || r.Header.Get("Content-Type") != "text/plain; charset=utf-8" || r.Header.Get("X-NSQ-Content-Type") != "nsq; version=1.0" {
		t.Fatalf("/pub reply %v headers %v", r, r.Header)
	}
	testutil.MustPost(t, h.URL("/mpub?topic=hpub"), []byte("t1\nt2\n\nt3\r\nt4"))
	testutil.MustPost(t, h.URL("/mpub?topic=hpub&binary=true"), testutil.MPUBBody([][]byte{[]byte("b1"), []byte("b\n2")}))
	testutil.MustPost(t, h.URL("/mpub?topic=hpub&binary=1"), testutil.MPUBBody([][]byte{[]byte("b3")}))
	if r := testutil.MustPost(t, h.URL("/mpub?topic=hpub"), []byte{}); string(r.Body) != "OK" {
		t.Fatalf("empty /mpub: %v", r)
	}
	want := []string{"single", "t1", "t2", "t3\r", "t4", "b1", "b\n2", "b3"}
	testutil.WaitFor(t, 5*time.Second, func() bool { return channelStats(t, h, "hpub", "c").Depth == int64(len(want)) }, "%d queued", len(want))
	if tp := topicStats(t, h, "hpub"); tp.MessageCount != uint64(len(want)) {
		t.Fatalf("topic message_count %d, want %d", tp.MessageCount, len(want))
	}
	c := subscribe(t, h, "hpub", "c", nil)
	c.Ready(100)
	var got []string
	for range want {
		m := c.ExpectMessage()
		got = append(got, string(m.Body))
		c.Finish(m.ID)
	}
	c.ExpectNothing(200 * time.Millisecond)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("delivered %q, want %q", got, want)
	}
}

// TestHTTPStatsShape checks /stats?format=json keys, order and values (§9.5).
func TestHTTPStatsShape(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	createChannel(t, h, "shape", "c")
	cons := subscribe(t, h, "shape", "c", map[string]any{"client_id": "cons", "hostname": "chost", "user_agent": "cua", "sample_rate": 0})
	cons.Ready(3)
	prod := testutil.DialV2(t, h.TCPAddr)
	prod.Identify(map[string]any{"client_id": "prod", "hostname": "phost", "user_agent": "pua"})
	prod.Publish("shape", []byte("hello"))
	m := cons.ExpectMessage()
	testutil.WaitFor(t, 5*time.Second, func() bool { return channelStats(t, h, "shape", "c").InFlightCount == 1 }, "1 in flight")

	r := testutil.HTTPDo(t, "GET", h.URL("/stats?format=json"), nil)
	if r.Status != 200 || r.Header.Get("Content-Type") != "application/json; charset=utf-8" || r.Header.Get("X-NSQ-Content-Type") != "nsq; version=1.0" {
		t.Fatalf("/stats: %v %v", r, r.Header)
	}
	top, keys := jsonObj(t, r.Body)
	wantKeys(t, "stats", keys, []string{"version", "health", "start_time", "topics", "memory", "producers"})
	if string(top["version"]) != `"1.3.0"` || string(top["health"]) != `"OK"` {
		t.Errorf("version %s health %s", top["version"], top["health"])
	}
	topics := jsonArr(t, top["topics"])
	if len(topics) != 1 {
		t.Fatalf("%d topics, want 1", len(topics))
	}
	tp, keys := jsonObj(t, topics[0])
	wantKeys(t, "topic", keys, []string{"topic_name", "channels", "depth", "backend_depth", "message_count", "message_bytes", "paused", "e2e_processing_latency"})
	for k, v := range map[string]string{"topic_name": `"shape"`, "depth": "0", "backend_depth": "0", "message_count": "1", "message_bytes": "5", "paused": "false", "e2e_processing_latency": `{"count":0,"percentiles":null}`} {
		if string(tp[k]) != v {
			t.Errorf("topic %s = %s, want %s", k, tp[k], v)
		}
	}
	chans := jsonArr(t, tp["channels"])
	if len(chans) != 1 {
		t.Fatalf("%d channels, want 1", len(chans))
	}
	ch, keys := jsonObj(t, chans[0])
	wantKeys(t, "channel", keys, []string{"channel_name", "depth", "backend_depth", "in_flight_count", "deferred_count", "message_count", "requeue_count", "timeout_count", "client_count", "clients", "paused", "e2e_processing_latency"})
	for k, v := range map[string]string{"channel_name": `"c"`, "depth": "0", "in_flight_count": "1", "deferred_count": "0", "message_count": "1", "requeue_count": "0", "timeout_count": "0", "client_count": "1", "paused": "false", "e2e_processing_latency": `{"count":0,"percentiles":null}`} {
		if string(ch[k]) != v {
			t.Errorf("channel %s = %s, want %s", k, ch[k], v)
		}
	}
	clientKeys := []string{"client_id", "hostname", "version", "remote_address", "state", "ready_count", "in_flight_count", "message_count", "finish_count", "requeue_count", "connect_ts", "sample_rate", "deflate", "snappy", "user_agent", "tls", "tls_cipher_suite", "tls_version", "tls_negotiated_protocol", "tls_negotiated_protocol_is_mutual"}
	clients := jsonArr(t, ch["clients"])
	if len(clients) != 1 {
		t.Fatalf("%d clients, want 1", len(clients))
	}
	cl, keys := jsonObj(t, clients[0])
	wantKeys(t, "consumer", keys, clientKeys)
	for k, v := range map[string]string{"client_id": `"cons"`, "hostname": `"chost"`, "version": `"V2"`, "state": "3", "ready_count": "3", "in_flight_count": "1", "message_count": "1", "finish_count": "0", "user_agent": `"cua"`, "tls": "false", "tls_cipher_suite": `""`, "tls_negotiated_protocol_is_mutual": "false"} {
		if string(cl[k]) != v {
			t.Errorf("consumer %s = %s, want %s", k, cl[k], v)
		}
	}
	if ra := strings.Trim(string(cl["remote_address"]), `"`); ra != cons.Conn.LocalAddr().String() {
		t.Errorf("consumer remote_address %s, want %s", ra, cons.Conn.LocalAddr())
	}
	if ts, _ := strconv.ParseInt(string(cl["connect_ts"]), 10, 64); time.Since(time.Unix(ts, 0)) > time.Minute {
		t.Errorf("consumer connect_ts %s is not recent", cl["connect_ts"])
	}
	mem, keys := jsonObj(t, top["memory"])
	wantKeys(t, "memory", keys, []string{"heap_objects", "heap_idle_bytes", "heap_in_use_bytes", "heap_released_bytes", "gc_pause_usec_100", "gc_pause_usec_99", "gc_pause_usec_95", "next_gc_bytes", "gc_total_runs"})
	if string(mem["heap_objects"]) == "0" {
		t.Errorf("memory heap_objects is 0")
	}
	producers := jsonArr(t, top["producers"])
	if len(producers) != 1 {
		t.Fatalf("%d producers, want 1", len(producers))
	}
	pr, keys := jsonObj(t, producers[0])
	wantKeys(t, "producer", keys, slices.Insert(slices.Clone(clientKeys), slices.Index(clientKeys, "tls"), "pub_counts"))
	for k, v := range map[string]string{"client_id": `"prod"`, "state": "0", "pub_counts": `[{"topic":"shape","count":1}]`} {
		if string(pr[k]) != v {
			t.Errorf("producer %s = %s, want %s", k, pr[k], v)
		}
	}
	cons.Finish(m.ID)

	// Filters and switches.
	get := func(q string) map[string]json.RawMessage {
		r := testutil.HTTPDo(t, "GET", h.URL("/stats?format=json"+q), nil)
		if r.Status != 200 {
			t.Fatalf("/stats%s: %v", q, r)
		}
		m, _ := jsonObj(t, r.Body)
		return m
	}
	if m := get("&include_mem=false"); m["memory"] != nil {
		t.Errorf("include_mem=false still has memory")
	}
	m2 := get("&include_clients=false")
	if string(m2["producers"]) != "null" {
		t.Errorf("include_clients=false producers = %s, want null", m2["producers"])
	}
	ch2, _ := jsonObj(t, jsonArr(t, mustObj(t, jsonArr(t, m2["topics"])[0])["channels"])[0])
	if string(ch2["clients"]) != "null" || string(ch2["client_count"]) != "1" {
		t.Errorf("include_clients=false channel clients=%s client_count=%s, want null, 1", ch2["clients"], ch2["client_count"])
	}
	if m := get("&topic=nope"); string(m["topics"]) != "null" {
		t.Errorf("unknown topic filter: topics = %s, want null", m["topics"])
	}
	if m := get("&topic=shape&channel=nope"); string(m["topics"]) != "[]" {
		t.Errorf("unknown channel filter: topics = %s, want []", m["topics"])
	}
	r = testutil.HTTPDo(t, "GET", h.URL("/stats"), nil)
	if r.Status != 200 || !strings.HasPrefix(string(r.Body), "nsqd v1.3.0 (built w/") || r.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Errorf("text /stats: %v", r)
	}
}

func mustObj(t *testing.T, raw []byte) map[string]json.RawMessage {
	t.Helper()
	m, _ := jsonObj(t, raw)
	return m
}

// TestHTTPTopicChannelActions: create, empty, pause (persisted across a
// restart), channel empty and delete (closing consumers), topic delete (§5.8, §5.9, §9.6, §9.7).
func TestHTTPTopicChannelActions(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	post := func(path string) {
		t.Helper()
		wantEmpty200(t, testutil.HTTPPost(t, h.URL(path), nil), path)
	}
	post("/topic/create?topic=act")
	post("/topic/create?topic=act") // existing: no-op success
	testutil.MustPost(t, h.URL("/mpub?topic=act"), []byte("1\n2\n3\n"))
	if tp := topicStats(t, h, "act"); tp.Depth != 3 || len(tp.Channels) != 0 {
		t.Fatalf("topic without channels: %+v, want depth 3", tp)
	}
	post("/topic/empty?topic=act")
	if tp := topicStats(t, h, "act"); tp.Depth != 0 {
		t.Fatalf("topic depth %d after empty", tp.Depth)
	}
	post("/channel/create?topic=act&channel=c")
	post("/channel/create?topic=act&channel=c")
	post("/topic/pause?topic=act")
	testutil.MustPost(t, h.URL("/mpub?topic=act"), []byte("4\n5\n"))
	testutil.WaitFor(t, 5*time.Second, func() bool {
		tp := topicStats(t, h, "act")
		return tp.Paused && tp.Depth == 2 && tp.Channels[0].Depth == 0
	}, "paused topic holding 2")
	post("/topic/unpause?topic=act")
	testutil.WaitFor(t, 5*time.Second, func() bool { return channelStats(t, h, "act", "c").Depth == 2 }, "channel depth 2")
	post("/channel/pause?topic=act&channel=c")
	post("/topic/pause?topic=act")

	h = testutil.RestartNSQD(t, h)
	tp := topicStats(t, h, "act")
	if tp == nil || !tp.Paused || len(tp.Channels) != 1 || !tp.Channels[0].Paused || tp.Channels[0].Depth != 2 {
		t.Fatalf("after restart topic %+v, want paused topic with paused channel c holding 2", tp)
	}
	post("/topic/unpause?topic=act")
	post("/channel/unpause?topic=act&channel=c")

	c := subscribe(t, h, "act", "c", nil)
	c.Ready(1)
	m := c.ExpectMessage()
	testutil.WaitFor(t, 5*time.Second, func() bool {
		cs := channelStats(t, h, "act", "c")
		return cs.InFlightCount == 1 && cs.Depth == 1
	}, "1 in flight, 1 queued")
	// RDY 0 first, so that nothing can be delivered right after the empty
	// (the reference races here); the PUB's OK orders it before the empty.
	c.Ready(0)
	c.Publish("act_sync", []byte("sync"))
	post("/channel/empty?topic=act&channel=c")
	cs := channelStats(t, h, "act", "c")
	if cs.Depth != 0 || cs.InFlightCount != 0 || cs.Clients[0].InFlightCount != 0 {
		t.Fatalf("after channel empty: depth=%d in_flight=%d client in_flight=%d", cs.Depth, cs.InFlightCount, cs.Clients[0].InFlightCount)
	}
	c.Send("FIN "+m.ID, nil)
	c.ExpectError(fmt.Sprintf("E_FIN_FAILED FIN %s failed ID not in flight", m.ID))
	// The connection stays open and, RDY 1 with nothing in flight, gets new messages.
	c.Ready(1)
	testutil.MustPost(t, h.URL("/pub?topic=act"), []byte("fresh"))
	if m := c.ExpectMessage(); string(m.Body) != "fresh" {
		t.Fatalf("got %q after empty, want fresh", m.Body)
	}

	post("/channel/delete?topic=act&channel=c")
	c.WaitClosed(5 * time.Second)
	if cs := channelStats(t, h, "act", "c"); cs != nil {
		t.Fatalf("deleted channel still in /stats: %+v", cs)
	}
	post("/topic/delete?topic=act")
	if tp := topicStats(t, h, "act"); tp != nil {
		t.Fatalf("deleted topic still in /stats: %+v", tp)
	}
	if r := testutil.HTTPPost(t, h.URL("/topic/delete?topic=act"), nil); r.Status != http.StatusNotFound || testutil.ErrorMessage(r) != "TOPIC_NOT_FOUND" {
		t.Fatalf("second delete: %v", r)
	}
}
