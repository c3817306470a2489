package clustertest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"

	"github.com/sluicemq/sluice/internal/lookupdtest"
	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/lookupd"
	"github.com/sluicemq/sluice/nsqd"
)

// pingInterval is the nsqd -> lookupd PING period used by in-process nsqds
// (NSQ's is 15 s; 1 s keeps the restart test short while leaving room for
// scheduling noise in the "within one PING interval" assertion).
const pingInterval = time.Second

// cluster is N lookupds and M nsqds registered with all of them.
type cluster struct {
	t        *testing.T
	lookupds []*lookupd.Daemon
	nsqds    []*testutil.NSQDHandle
}

func startLookupd(t *testing.T, tcpAddr string, mod func(*lookupd.Options)) *lookupd.Daemon {
	t.Helper()
	return lookupdtest.Start(t, func(o *lookupd.Options) {
		o.TCPAddress = tcpAddr
		if mod != nil {
			mod(o)
		}
	})
}

func startCluster(t *testing.T, nLookupd, nNSQD int, lookupdMod func(*lookupd.Options)) *cluster {
	t.Helper()
	c := &cluster{t: t}
	for range nLookupd {
		c.lookupds = append(c.lookupds, startLookupd(t, "127.0.0.1:0", lookupdMod))
	}
	for range nNSQD {
		c.nsqds = append(c.nsqds, testutil.StartNSQD(t, func(o *nsqd.Options) {
			o.NSQLookupdTCPAddresses = c.lookupdTCPAddrs()
			o.LookupdPingInterval = pingInterval
		}))
	}
	// Every nsqd is identified on every lookupd.
	for _, l := range c.lookupds {
		testutil.WaitFor(t, 10*time.Second, func() bool { return len(c.nodes(l)) == nNSQD },
			"%d nodes on lookupd %s", nNSQD, l.HTTPAddr())
	}
	return c
}

func (c *cluster) lookupdTCPAddrs() []string {
	out := []string{}
	for _, l := range c.lookupds {
		out = append(out, l.TCPAddr().String())
	}
	return out
}

func (c *cluster) lookupdHTTPAddrs() []string {
	out := []string{}
	for _, l := range c.lookupds {
		out = append(out, l.HTTPAddr().String())
	}
	return out
}

// getJSON GETs http://addr+path and decodes a 200 reply into v; it returns
// the status.
func getJSON(t testing.TB, addr, path string, v any) int {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
	req.Header.Set("Accept", "application/vnd.nsq; version=1.0")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == 200 && v != nil {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("GET %s%s: decode: %v", addr, path, err)
		}
	}
	return resp.StatusCode
}

type producer struct {
	RemoteAddress    string   `json:"remote_address"`
	BroadcastAddress string   `json:"broadcast_address"`
	TCPPort          int      `json:"tcp_port"`
	HTTPPort         int      `json:"http_port"`
	Version          string   `json:"version"`
	Topics           []string `json:"topics"`
	Tombstones       []bool   `json:"tombstones"`
}

// lookupTCP returns the sorted broadcast_address:tcp_port of /lookup?topic=
// on l (nil on 404).
func (c *cluster) lookupTCP(l *lookupd.Daemon, topic string) []string {
	var body struct {
		Channels  []string   `json:"channels"`
		Producers []producer `json:"producers"`
	}
	if getJSON(c.t, l.HTTPAddr().String(), "/lookup?topic="+topic, &body) != 200 {
		return nil
	}
	out := []string{}
	for _, p := range body.Producers {
		out = append(out, fmt.Sprintf("%s:%d", p.BroadcastAddress, p.TCPPort))
	}
	slices.Sort(out)
	return out
}

func (c *cluster) nodes(l *lookupd.Daemon) []producer {
	var body struct {
		Producers []producer `json:"producers"`
	}
	getJSON(c.t, l.HTTPAddr().String(), "/nodes", &body)
	return body.Producers
}

func (c *cluster) channels(l *lookupd.Daemon, topic string) []string {
	var body struct {
		Channels []string `json:"channels"`
	}
	getJSON(c.t, l.HTTPAddr().String(), "/channels?topic="+topic, &body)
	return body.Channels
}

// debugKeys returns the /debug registration keys that list nsqd h as producer.
func debugKeys(t testing.TB, l *lookupd.Daemon, h *testutil.NSQDHandle) []string {
	var body map[string][]struct {
		BroadcastAddress string `json:"broadcast_address"`
		TCPPort          int    `json:"tcp_port"`
	}
	getJSON(t, l.HTTPAddr().String(), "/debug", &body)
	out := []string{}
	for k, ps := range body {
		for _, p := range ps {
			if fmt.Sprintf("%s:%d", p.BroadcastAddress, p.TCPPort) == h.TCPAddr {
				out = append(out, k)
			}
		}
	}
	slices.Sort(out)
	return out
}

func (c *cluster) nsqdTCPAddrs(hs ...*testutil.NSQDHandle) []string {
	out := []string{}
	for _, h := range hs {
		out = append(out, h.TCPAddr)
	}
	slices.Sort(out)
	return out
}

// waitLookup waits until every lookupd answers /lookup?topic= with exactly
// want (broadcast:tcp addresses).
func (c *cluster) waitLookup(topic string, want []string) {
	c.t.Helper()
	for _, l := range c.lookupds {
		testutil.WaitFor(c.t, 10*time.Second, func() bool { return slices.Equal(c.lookupTCP(l, topic), want) },
			"lookupd %s /lookup?topic=%s = %q", l.HTTPAddr(), topic, want)
	}
}

// createChannel creates topic (if needed) and channel on nsqd h over HTTP
// (nsqd's /channel/create requires an existing topic, like NSQ's).
func createChannel(t testing.TB, h *testutil.NSQDHandle, topic, channel string) {
	t.Helper()
	testutil.MustPost(t, h.URL("/topic/create?topic="+topic), nil)
	testutil.MustPost(t, h.URL("/channel/create?topic="+topic+"&channel="+strings.ReplaceAll(channel, "#", "%23")), nil)
}

func publish(t testing.TB, addr, topic string, prefix string, n int) {
	t.Helper()
	p := testutil.NewProducer(t, addr, nil)
	for i := range n {
		if err := p.Publish(topic, fmt.Appendf(nil, "%s-%d", prefix, i)); err != nil {
			t.Fatalf("publish to %s: %v", addr, err)
		}
	}
	p.Stop()
}

// lookupdConsumer starts a go-nsq consumer discovering nsqds through every
// lookupd of the cluster.
func (c *cluster) lookupdConsumer(topic, channel string, h nsq.Handler) *nsq.Consumer {
	c.t.Helper()
	cfg := testutil.NewConfig()
	cfg.MaxInFlight = 10
	consumer, err := nsq.NewConsumer(topic, channel, cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	consumer.SetLogger(testutil.GoNSQLogger())
	consumer.AddHandler(h)
	c.t.Cleanup(func() { testutil.StopConsumer(c.t, consumer) })
	if err := consumer.ConnectToNSQLookupds(c.lookupdHTTPAddrs()); err != nil {
		c.t.Fatal(err)
	}
	return consumer
}

// waitExact waits until col has exactly n deliveries, each body once, and
// checks that no more arrive shortly after.
func waitExact(t *testing.T, col *testutil.Collector, n int) {
	t.Helper()
	testutil.WaitFor(t, 20*time.Second, func() bool { return col.Len() >= n }, "%d deliveries", n)
	// No extra (duplicate) deliveries trickle in.
	time.Sleep(200 * time.Millisecond) // observation window for duplicates, not a wait for state
	if got := col.Len(); got != n {
		t.Fatalf("deliveries = %d, want exactly %d", got, n)
	}
	for body, k := range col.Counts() {
		if k != 1 {
			t.Fatalf("body %q delivered %d times", body, k)
		}
	}
}

// TestConsumerViaLookupdReceivesFromEveryNSQD: 3 lookupds + 3 nsqds; a go-nsq
// consumer connected to the lookupds receives every message published to
// each nsqd, exactly once.
func TestConsumerViaLookupdReceivesFromEveryNSQD(t *testing.T) {
	c := startCluster(t, 3, 3, nil)
	const perNode = 100
	for i, h := range c.nsqds {
		publish(t, h.TCPAddr, "orders", fmt.Sprintf("n%d", i), perNode)
	}
	c.waitLookup("orders", c.nsqdTCPAddrs(c.nsqds...))

	col := testutil.NewCollector()
	c.lookupdConsumer("orders", "archive", col)
	waitExact(t, col, 3*perNode)

	// The consumer's channel is registered by every nsqd on every lookupd.
	for _, l := range c.lookupds {
		testutil.WaitFor(t, 10*time.Second, func() bool { return slices.Equal(c.channels(l, "orders"), []string{"archive"}) },
			"channel archive on %s", l.HTTPAddr())
		for _, n := range c.nodes(l) {
			if !slices.Equal(n.Topics, []string{"orders"}) || !slices.Equal(n.Tombstones, []bool{false}) {
				t.Fatalf("node %s:%d topics %q tombstones %v", n.BroadcastAddress, n.TCPPort, n.Topics, n.Tombstones)
			}
		}
	}
}

// TestChannelPrecreation: a topic created on a fresh nsqd gets the channels
// the lookupds know, so messages published there before any consumer
// connects wait for the existing channel instead of being lost.
func TestChannelPrecreation(t *testing.T) {
	c := startCluster(t, 2, 2, nil)
	a, b := c.nsqds[0], c.nsqds[1]
	createChannel(t, a, "pre", "ch1")
	createChannel(t, a, "pre", "tmp#ephemeral")
	for _, l := range c.lookupds {
		testutil.WaitFor(t, 10*time.Second, func() bool {
			return slices.Equal(c.channels(l, "pre"), []string{"ch1", "tmp#ephemeral"})
		}, "channels registered on %s", l.HTTPAddr())
	}
	// First use of the topic on b: PUB creates it, pre-creating ch1 (not the
	// ephemeral channel) before the message is distributed.
	publish(t, b.TCPAddr, "pre", "b", 10)
	stats := testutil.GetStats(t, b.HTTPAddr, "&topic=pre")
	tp := stats.Topic("pre")
	if tp == nil {
		t.Fatalf("topic pre missing on b")
	}
	names := []string{}
	for _, ch := range tp.Channels {
		names = append(names, ch.ChannelName)
	}
	if !slices.Equal(names, []string{"ch1"}) {
		t.Fatalf("channels pre-created on b: %q, want [ch1]", names)
	}
	if d := stats.Channel("pre", "ch1").Depth; d != 10 {
		t.Fatalf("ch1 depth on b = %d, want 10", d)
	}
}

// TestLookupdRestartReregistration: a restarted lookupd (empty registry)
// gets every topic and channel of every nsqd back within one PING interval.
func TestLookupdRestartReregistration(t *testing.T) {
	c := startCluster(t, 3, 3, nil)
	for i, h := range c.nsqds {
		createChannel(t, h, "shared", "c")
		testutil.MustPost(t, h.URL(fmt.Sprintf("/topic/create?topic=own-%d", i)), nil)
		createChannel(t, h, fmt.Sprintf("own-%d", i), fmt.Sprintf("x%d", i))
	}
	want := map[string][]string{"shared": c.nsqdTCPAddrs(c.nsqds...)}
	for i, h := range c.nsqds {
		want[fmt.Sprintf("own-%d", i)] = []string{h.TCPAddr}
	}
	for topic, addrs := range want {
		c.waitLookup(topic, addrs)
	}

	old := c.lookupds[0]
	addr := old.TCPAddr().String()
	old.Exit()
	restarted := startLookupd(t, addr, nil)
	c.lookupds[0] = restarted
	start := time.Now()
	testutil.WaitFor(t, 10*time.Second, func() bool {
		for topic, addrs := range want {
			if !slices.Equal(c.lookupTCP(restarted, topic), addrs) {
				return false
			}
		}
		return true
	}, "every topic re-registered on the restarted lookupd")
	elapsed := time.Since(start)
	for i := range c.nsqds {
		if got := c.channels(restarted, fmt.Sprintf("own-%d", i)); !slices.Equal(got, []string{fmt.Sprintf("x%d", i)}) {
			t.Fatalf("channels of own-%d: %q", i, got)
		}
	}
	if got := c.channels(restarted, "shared"); !slices.Equal(got, []string{"c"}) {
		t.Fatalf("channels of shared: %q", got)
	}
	if n := len(c.nodes(restarted)); n != 3 {
		t.Fatalf("nodes on restarted lookupd: %d", n)
	}
	// Within one PING interval (+ slack for -race on a shared 2-core box).
	if elapsed > pingInterval+500*time.Millisecond {
		t.Fatalf("re-registration took %v, want about one PING interval (%v)", elapsed, pingInterval)
	}
	t.Logf("re-registration after lookupd restart: %v (PING interval %v)", elapsed, pingInterval)
}

// TestTombstoneThenDelete follows nsqadmin's "delete topic on one node" flow:
// tombstone the node for the topic on every lookupd (hidden from /lookup,
// flagged in /nodes), delete the topic on that nsqd (UNREGISTER), and the
// node is gone from the topic for good.
func TestTombstoneThenDelete(t *testing.T) {
	c := startCluster(t, 2, 3, func(o *lookupd.Options) { o.TombstoneLifetime = 2 * time.Second })
	for _, h := range c.nsqds {
		testutil.MustPost(t, h.URL("/topic/create?topic=tomb"), nil)
		testutil.MustPost(t, h.URL("/topic/create?topic=other"), nil)
	}
	c.waitLookup("tomb", c.nsqdTCPAddrs(c.nsqds...))
	victim := c.nsqds[0]
	for _, l := range c.lookupds {
		testutil.MustPost(t, "http://"+l.HTTPAddr().String()+"/topic/tombstone?topic=tomb&node="+victim.HTTPAddr, nil)
	}
	c.waitLookup("tomb", c.nsqdTCPAddrs(c.nsqds[1:]...))
	c.waitLookup("other", c.nsqdTCPAddrs(c.nsqds...))
	for _, l := range c.lookupds {
		for _, n := range c.nodes(l) {
			isVictim := fmt.Sprintf("%s:%d", n.BroadcastAddress, n.HTTPPort) == victim.HTTPAddr
			if len(n.Topics) != 2 || len(n.Tombstones) != 2 {
				t.Fatalf("node topics %q tombstones %v", n.Topics, n.Tombstones)
			}
			for i, topic := range n.Topics {
				if want := isVictim && topic == "tomb"; n.Tombstones[i] != want {
					t.Fatalf("node %d topic %s tombstoned=%v want %v", n.HTTPPort, topic, n.Tombstones[i], want)
				}
			}
		}
	}
	testutil.MustPost(t, victim.URL("/topic/delete?topic=tomb"), nil)
	for _, l := range c.lookupds {
		testutil.WaitFor(t, 10*time.Second, func() bool {
			return slices.Equal(debugKeys(t, l, victim), []string{"client::", "topic:other:"})
		}, "victim unregistered from tomb on %s", l.HTTPAddr())
	}
	// After the tombstone lifetime the victim does not come back.
	for _, l := range c.lookupds {
		testutil.WaitFor(t, 10*time.Second, func() bool {
			for _, n := range c.nodes(l) {
				if slices.Contains(n.Tombstones, true) {
					return false
				}
			}
			return true
		}, "tombstones expired on %s", l.HTTPAddr())
	}
	c.waitLookup("tomb", c.nsqdTCPAddrs(c.nsqds[1:]...))
}

// TestDeleteOnNSQDUnregisters: deleting a channel or topic on an nsqd removes
// that nsqd from the registration on every lookupd (the names stay listed
// with no producers, like NSQ).
func TestDeleteOnNSQDUnregisters(t *testing.T) {
	c := startCluster(t, 2, 2, nil)
	a, b := c.nsqds[0], c.nsqds[1]
	for _, h := range c.nsqds {
		createChannel(t, h, "del", "c1")
		createChannel(t, h, "del", "c2")
	}
	c.waitLookup("del", c.nsqdTCPAddrs(a, b))
	for _, l := range c.lookupds {
		testutil.WaitFor(t, 10*time.Second, func() bool {
			return slices.Equal(debugKeys(t, l, a), []string{"channel:del:c1", "channel:del:c2", "client::", "topic:del:"})
		}, "a fully registered on %s", l.HTTPAddr())
	}

	testutil.MustPost(t, a.URL("/channel/delete?topic=del&channel=c1"), nil)
	for _, l := range c.lookupds {
		testutil.WaitFor(t, 10*time.Second, func() bool {
			return slices.Equal(debugKeys(t, l, a), []string{"channel:del:c2", "client::", "topic:del:"})
		}, "a unregistered from c1 on %s", l.HTTPAddr())
		if got := debugKeys(t, l, b); !slices.Equal(got, []string{"channel:del:c1", "channel:del:c2", "client::", "topic:del:"}) {
			t.Fatalf("b disturbed: %q", got)
		}
	}

	testutil.MustPost(t, a.URL("/topic/delete?topic=del"), nil)
	c.waitLookup("del", c.nsqdTCPAddrs(b))
	for _, l := range c.lookupds {
		testutil.WaitFor(t, 10*time.Second, func() bool {
			return slices.Equal(debugKeys(t, l, a), []string{"client::"})
		}, "a unregistered from del on %s", l.HTTPAddr())
	}
}

// TestEphemeralChannelLifecycle: an ephemeral channel's registration goes
// away on every lookupd when its last consumer leaves.
func TestEphemeralChannelLifecycle(t *testing.T) {
	c := startCluster(t, 2, 1, nil)
	h := c.nsqds[0]
	publish(t, h.TCPAddr, "eph", "m", 1)
	col := testutil.NewCollector()
	consumer := testutil.NewConsumer(t, h.TCPAddr, "eph", "tail#ephemeral", nil, col)
	for _, l := range c.lookupds {
		testutil.WaitFor(t, 10*time.Second, func() bool { return slices.Equal(c.channels(l, "eph"), []string{"tail#ephemeral"}) },
			"ephemeral channel registered on %s", l.HTTPAddr())
	}
	testutil.StopConsumer(t, consumer)
	for _, l := range c.lookupds {
		testutil.WaitFor(t, 10*time.Second, func() bool { return len(c.channels(l, "eph")) == 0 },
			"ephemeral channel gone from %s", l.HTTPAddr())
	}
}

// lockedCounter counts deliveries per nsqd address.
type lockedCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (l *lockedCounter) HandleMessage(m *nsq.Message) error {
	l.mu.Lock()
	l.n[m.NSQDAddress]++
	l.mu.Unlock()
	return nil
}

func (l *lockedCounter) get() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for k, v := range l.n {
		out[k] = v
	}
	return out
}
