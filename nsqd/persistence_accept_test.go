package nsqd_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/nsqd"
)

// TestMetadataFile: nsqd.dat lists non-ephemeral topics and channels with
// their paused flags, on one line, keys as §6.2.
func TestMetadataFile(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	createChannel(t, h, "meta", "a")
	testutil.MustPost(t, h.URL("/channel/create?topic=meta&channel=b%23ephemeral"), nil)
	testutil.MustPost(t, h.URL("/channel/pause?topic=meta&channel=a"), nil)
	testutil.MustPost(t, h.URL("/topic/pause?topic=meta"), nil)
	testutil.MustPost(t, h.URL("/topic/create?topic=lonely"), nil)
	testutil.MustPost(t, h.URL("/topic/create?topic=gone%23ephemeral"), nil)

	path := filepath.Join(h.DataPath, "nsqd.dat")
	var raw []byte
	var doc struct {
		Topics []json.RawMessage `json:"topics"`
	}
	ok := testutil.Eventually(5*time.Second, func() bool {
		b, err := os.ReadFile(path)
		if err != nil || json.Unmarshal(b, &doc) != nil {
			return false
		}
		raw = b
		// creations are persisted in the background (as in NSQ): wait for lonely too
		return strings.Contains(string(b), `"paused":true,"channels":[{"name":"a","paused":true}]`) &&
			strings.Contains(string(b), `"name":"lonely"`)
	})
	if !ok {
		t.Fatalf("nsqd.dat never showed paused topic meta with paused channel a; last content %q", raw)
	}
	if strings.ContainsAny(string(raw), "\n") {
		t.Errorf("nsqd.dat is not a single line without newline: %q", raw)
	}
	keys, err := testutil.ObjectKeys(raw)
	if err != nil || !slices.Equal(keys, []string{"topics", "version"}) {
		t.Errorf("nsqd.dat keys %v (%v), want [topics version]", keys, err)
	}
	if strings.Contains(string(raw), "ephemeral") {
		t.Errorf("nsqd.dat lists an ephemeral topic or channel: %s", raw)
	}
	got := map[string]string{}
	for _, tr := range doc.Topics {
		var v struct {
			Name string `json:"name"`
		}
		json.Unmarshal(tr, &v)
		got[v.Name] = string(tr)
	}
	wantTopics := map[string]string{
		"meta":   `{"name":"meta","paused":true,"channels":[{"name":"a","paused":true}]}`,
		"lonely": `{"name":"lonely","paused":false,"channels":null}`,
	}
	for name, w := range wantTopics {
		if got[name] != w {
			t.Errorf("nsqd.dat topic %s = %s, want %s", name, got[name], w)
		}
	}
	if len(got) != 2 {
		t.Errorf("nsqd.dat has topics %v, want exactly meta and lonely", keysOf(got))
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() != 0o600 {
		t.Errorf("nsqd.dat mode %v, want 0600", fi.Mode().Perm())
	}
}

func keysOf(m map[string]string) []string {
	var k []string
	for s := range m {
		k = append(k, s)
	}
	slices.Sort(k)
	return k
}

// TestDiskQueueFiles: overflowing messages land in go-diskqueue files named
// per §6.3 (<topic>:<channel>.diskqueue.NNNNNN.dat, .meta.dat).
func TestDiskQueueFiles(t *testing.T) {
	h := testutil.StartNSQD(t, func(o *nsqd.Options) { o.MemQueueSize = 0 })
	createChannel(t, h, "files", "c")
	pub := testutil.DialV2(t, h.TCPAddr)
	pub.Send("MPUB files", testutil.MPUBBody(bodies("f", 0, 10)))
	pub.ExpectOK()
	var cs *testutil.ChannelStats
	if !testutil.Eventually(5*time.Second, func() bool {
		cs = channelStats(t, h, "files", "c")
		return cs.Depth == 10 && cs.BackendDepth == 10
	}) {
		t.Errorf("--mem-queue-size=0: channel depth=%d backend_depth=%d, want 10 and 10 (all on disk)", cs.Depth, cs.BackendDepth)
	}
	h.Exit()
	for _, name := range []string{"files:c.diskqueue.000000.dat", "files:c.diskqueue.meta.dat", "files.diskqueue.meta.dat"} {
		if _, err := os.Stat(filepath.Join(h.DataPath, name)); err != nil {
			t.Errorf("expected disk queue file: %v", err)
		}
	}
	meta, err := os.ReadFile(filepath.Join(h.DataPath, "files:c.diskqueue.meta.dat"))
	if err != nil {
		t.Fatal(err)
	}
	// Three LF-terminated lines: depth, readFileNum,readPos, writeFileNum,writePos.
	if !regexp.MustCompile(`^10\n\d+,\d+\n\d+,\d+\n$`).Match(meta) {
		t.Errorf("channel disk queue metadata %q, want \"10\\n<n>,<pos>\\n<n>,<pos>\\n\"", meta)
	}
}

// TestDataPathLocked: a second nsqd cannot start on a data path in use (§6.1).
func TestDataPathLocked(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	opts := nsqd.NewOptions()
	opts.TCPAddress, opts.HTTPAddress, opts.HTTPSAddress = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	opts.BroadcastAddress = "127.0.0.1"
	opts.Logger = testutil.TestLogger()
	opts.DataPath = h.DataPath
	n, err := nsqd.New(opts)
	if err == nil {
		err = n.Start()
		defer n.Exit()
	}
	if err == nil {
		t.Fatalf("second nsqd started on data path %s in use", h.DataPath)
	}
	// The first one is unaffected.
	testutil.DialV2(t, h.TCPAddr).Publish("locked", []byte("x"))
}

// TestRestartDeliversDeferred: deferred messages (REQ with delay, DPUB) are
// written to disk at shutdown and deliverable right after restart (§5.5, §6.4).
func TestRestartDeliversDeferred(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	createChannel(t, h, "deferred", "c")
	c := subscribe(t, h, "deferred", "c", nil)
	c.Ready(1)
	pub := testutil.DialV2(t, h.TCPAddr)
	pub.Publish("deferred", []byte("requeued"))
	m := c.ExpectMessage()
	c.Send("REQ "+m.ID+" 3600000", nil)
	pub.Send("DPUB deferred 3600000", []byte("dpub"))
	pub.ExpectOK()
	testutil.WaitFor(t, 5*time.Second, func() bool { return channelStats(t, h, "deferred", "c").DeferredCount == 2 }, "2 deferred")

	h = testutil.RestartNSQD(t, h)
	c = subscribe(t, h, "deferred", "c", nil)
	c.Ready(2)
	got := map[string]uint16{}
	for range 2 {
		m := c.ExpectMessage()
		got[string(m.Body)] = m.Attempts
		c.Finish(m.ID)
	}
	if len(got) != 2 || got["requeued"] != 2 || got["dpub"] != 1 {
		t.Fatalf("after restart got %v, want requeued (attempts 2) and dpub (attempts 1)", got)
	}
}

// TestTLSRequired: with --tls-required, commands before the TLS upgrade are
// refused and plain HTTP answers 403 TLS_REQUIRED (§3.1, §9, §13).
func TestTLSRequired(t *testing.T) {
	certs := testutil.GenerateTLS(t)
	h := testutil.StartNSQD(t, func(o *nsqd.Options) {
		o.TLSCert, o.TLSKey = certs.CertFile, certs.KeyFile
		o.TLSRequired = nsqd.TLSRequired
	})
	c := testutil.DialV2(t, h.TCPAddr)
	c.Write(frame("PUB tlsreq\n", 1, "x"))
	c.ExpectError("E_INVALID cannot PUB in current state (TLS required)")
	c.WaitClosed(3 * time.Second)

	r := testutil.HTTPDo(t, "GET", h.URL("/ping"), nil)
	_, port, _ := strings.Cut(h.HTTPSAddr, ":")
	if r.Status != 403 || string(r.Body) != `{"message": "TLS_REQUIRED", "https_port": `+port+`}` {
		t.Fatalf("plain HTTP with TLS required: %v, want 403 {\"message\": \"TLS_REQUIRED\", \"https_port\": %s}", r, port)
	}

	cfg := testutil.NewConfig()
	cfg.TlsV1 = true
	cfg.TlsConfig = certs.ClientConfig()
	got := testutil.NewCollector()
	testutil.NewConsumer(t, h.TCPAddr, "tlsreq", "c", cfg, got)
	if err := testutil.NewProducer(t, h.TCPAddr, cfg).Publish("tlsreq", []byte("secure")); err != nil {
		t.Fatalf("publish over TLS: %v", err)
	}
	testutil.WaitFor(t, 5*time.Second, func() bool { return got.Len() == 1 }, "delivery over TLS")
}
