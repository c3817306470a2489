package nsqd_test

import (
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/nsqd"
	"github.com/sluicemq/sluice/protocol"
)

// A consumer FINs every message; /stats then reports e2e latency
// percentiles in the configured order for the channel and its topic.
func TestE2ELatencyPercentilesInStats(t *testing.T) {
	h := testutil.StartNSQD(t, func(o *nsqd.Options) {
		o.E2EProcessingLatencyPercentiles = []float64{0.99, 0.5}
	})
	c := testutil.DialV2(t, h.TCPAddr)
	c.Identify(map[string]any{"heartbeat_interval": 5000})
	c.Subscribe("lat", "ch")
	c.Send("RDY 10", nil)
	p := testutil.DialV2(t, h.TCPAddr)
	for i := 0; i < 5; i++ {
		p.Publish("lat", []byte("m"))
	}
	for i := 0; i < 5; i++ {
		m := c.ExpectMessage()
		c.Send("FIN "+string(m.ID[:]), nil)
	}
	var ch *testutil.ChannelStats
	testutil.WaitFor(t, 5*time.Second, func() bool {
		ch = testutil.GetStats(t, h.HTTPAddr, "").Channel("lat", "ch")
		return ch != nil && ch.E2E.Count == 5
	}, "5 e2e samples on lat/ch")
	if len(ch.E2E.Percentiles) != 2 || ch.E2E.Percentiles[0].Quantile != 0.99 || ch.E2E.Percentiles[1].Quantile != 0.5 {
		t.Fatalf("channel percentiles %+v", ch.E2E.Percentiles)
	}
	if v := ch.E2E.Percentiles[0].Value; v <= 0 || v > float64(5*time.Second) {
		t.Fatalf("p99 %v ns is not a plausible latency", v)
	}
	top := testutil.GetStats(t, h.HTTPAddr, "").Topic("lat")
	if top.E2E.Count != 5 || len(top.E2E.Percentiles) != 2 {
		t.Fatalf("topic e2e %+v", top.E2E)
	}
}

// nsqd pushes statsd lines with the expanded prefix, counters and gauges.
func TestStatsdPush(t *testing.T) {
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	h := testutil.StartNSQD(t, func(o *nsqd.Options) {
		o.StatsdAddress = udp.LocalAddr().String()
		o.StatsdInterval = time.Second
		o.BroadcastAddress = "127.0.0.1"
	})
	p := testutil.DialV2(t, h.TCPAddr)
	for i := 0; i < 3; i++ {
		p.Publish("sd", []byte("hello"))
	}
	_, port, _ := net.SplitHostPort(h.HTTPAddr)
	prefix := "nsq.127_0_0_1_" + port + "."
	want := []string{
		prefix + "topic.sd.message_count:3|c",
		prefix + "topic.sd.message_bytes:15|c",
		prefix + "topic.sd.depth:3|g",
	}
	var got strings.Builder
	buf := make([]byte, 65536)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		udp.SetReadDeadline(deadline)
		n, _, err := udp.ReadFrom(buf)
		if err != nil {
			break
		}
		got.Write(buf[:n])
		all := true
		for _, w := range want {
			all = all && strings.Contains(got.String(), w+"\n")
		}
		if all {
			return
		}
	}
	t.Fatalf("statsd lines missing; want %q in:\n%s", want, got.String())
}

// GET and PUT /config/<opt> (§9.8).
func TestConfigEndpoint(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	cases := map[string]string{
		"/config/mem_queue_size":           "10000",
		"/config/msg_timeout":              "60000000000",
		"/config/tls_min_version":          "769",
		"/config/log_level":                "2",
		"/config/max_rdy_count":            "2500",
		"/config/nsqlookupd_tcp_addresses": "[]",
	}
	for path, want := range cases {
		r := testutil.HTTPDo(t, "GET", h.URL(path), nil)
		if r.Status != 200 || strings.TrimSpace(string(r.Body)) != want {
			t.Errorf("GET %s = %d %q, want %q", path, r.Status, r.Body, want)
		}
	}
	if r := testutil.HTTPDo(t, "GET", h.URL("/config/nope"), nil); r.Status != 400 || testutil.ErrorMessage(r) != "INVALID_OPTION" {
		t.Errorf("unknown option: %s", r)
	}
	if r := testutil.HTTPDo(t, "PUT", h.URL("/config/log_level"), []byte("debug")); r.Status != 200 || string(r.Body) != "1" {
		t.Errorf("PUT log_level: %s", r)
	}
	if r := testutil.HTTPDo(t, "PUT", h.URL("/config/log_level"), []byte("loud")); r.Status != 400 || testutil.ErrorMessage(r) != "INVALID_VALUE" {
		t.Errorf("PUT bad log_level: %s", r)
	}
	if r := testutil.HTTPDo(t, "PUT", h.URL("/config/mem_queue_size"), []byte("5")); r.Status != 400 || testutil.ErrorMessage(r) != "INVALID_OPTION" {
		t.Errorf("PUT read-only option: %s", r)
	}
	r := testutil.HTTPDo(t, "PUT", h.URL("/config/nsqlookupd_tcp_addresses"), []byte(`["127.0.0.1:1"]`))
	var addrs []string
	if r.Status != 200 || json.Unmarshal(r.Body, &addrs) != nil || len(addrs) != 1 || addrs[0] != "127.0.0.1:1" {
		t.Errorf("PUT nsqlookupd_tcp_addresses: %s", r)
	}
}

// nsqd listens on a Unix socket when --tcp-address is a path; /info then
// reports tcp_port -1.
func TestUnixSocketListener(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nsqd.sock")
	opts := nsqd.NewOptions()
	opts.TCPAddress = sock
	opts.HTTPAddress = "127.0.0.1:0"
	opts.DataPath = t.TempDir()
	opts.Logger = testutil.TestLogger()
	n, err := nsqd.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	defer n.Exit()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	conn.Write(append([]byte(protocol.MagicV2), protocol.AppendPUB(nil, "unix", []byte("over a socket"))...))
	if ft, data, err := protocol.ReadFrame(conn); err != nil || ft != protocol.FrameTypeResponse || string(data) != "OK" {
		t.Fatalf("PUB over unix socket: %v %d %q", err, ft, data)
	}
	r := testutil.HTTPDo(t, "GET", "http://"+n.HTTPAddr().String()+"/info", nil)
	var info struct {
		TCPPort int `json:"tcp_port"`
	}
	if err := json.Unmarshal(r.Body, &info); err != nil || info.TCPPort != -1 {
		t.Fatalf("/info tcp_port: %s", r)
	}
}

func TestStatsListsATopicWithoutChannelsWithAnEmptyChannelList(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	testutil.MustPost(t, h.URL("/topic/create?topic=bare"), nil)
	r := testutil.HTTPDo(t, http.MethodGet, h.URL("/stats?format=json&topic=bare"), nil)
	if !strings.Contains(string(r.Body), `"topic_name":"bare","channels":[]`) {
		t.Fatalf("/stats: %s", r.Body)
	}
}
