// Package replicatest holds the integration tests of replicated topics
// (issue 11): nsqlookupd and several nsqd on 127.0.0.1, NSQ clients
// (go-nsq) unchanged, publishing to every node and consuming through
// nsqlookupd.
package replicatest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"

	"github.com/sluicemq/sluice/internal/lookupdtest"
	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/lookupd"
	"github.com/sluicemq/sluice/nsqd"
	"github.com/sluicemq/sluice/store"
)

type cluster struct {
	t       *testing.T
	lookupd *lookupd.Daemon
	nodes   []*testutil.NSQDHandle
}

func startCluster(t *testing.T, n int) *cluster {
	t.Helper()
	c := &cluster{t: t, lookupd: lookupdtest.Start(t, nil)}
	for range n {
		c.nodes = append(c.nodes, testutil.StartNSQD(t, func(o *nsqd.Options) {
			o.NSQLookupdTCPAddresses = []string{c.lookupd.TCPAddr().String()}
			o.LookupdPingInterval = time.Second
		}))
	}
	testutil.WaitFor(t, 10*time.Second, func() bool { return c.registered() == n }, "%d nodes on nsqlookupd", n)
	return c
}

func (c *cluster) registered() int {
	var body struct {
		Producers []json.RawMessage `json:"producers"`
	}
	req, _ := http.NewRequest("GET", "http://"+c.lookupd.HTTPAddr().String()+"/nodes", nil)
	req.Header.Set("Accept", "application/vnd.nsq; version=1.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(&body)
	return len(body.Producers)
}

// topicStats is the part of a replicated topic's /stats this test reads.
type topicStats struct {
	TopicName  string            `json:"topic_name"`
	Durable    bool              `json:"durable"`
	Replicas   *int              `json:"replicas"`
	Leader     *string           `json:"leader"`
	ReplicaLag map[string]uint64 `json:"replica_lag"`
	Depth      int64             `json:"depth"`
	Channels   []struct {
		ChannelName string `json:"channel_name"`
		Depth       int64  `json:"depth"`
		InFlight    int64  `json:"in_flight_count"`
	} `json:"channels"`
}

func statsOf(t *testing.T, h *testutil.NSQDHandle, topic string) (topicStats, bool) {
	t.Helper()
	resp, err := http.Get(h.URL("/stats?format=json&topic=" + topic))
	if err != nil {
		return topicStats{}, false
	}
	defer resp.Body.Close()
	var body struct {
		Topics []topicStats `json:"topics"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("decode /stats: %v", err)
	}
	for _, ts := range body.Topics {
		if ts.TopicName == topic {
			return ts, true
		}
	}
	return topicStats{}, false
}

// leader returns the node that leads topic, as every live node reports it.
func (c *cluster) leader(topic string, live []*testutil.NSQDHandle, timeout time.Duration) *testutil.NSQDHandle {
	c.t.Helper()
	var lead *testutil.NSQDHandle
	testutil.WaitFor(c.t, timeout, func() bool {
		lead = nil
		var addr string
		for _, h := range live {
			ts, ok := statsOf(c.t, h, topic)
			if !ok || ts.Leader == nil || *ts.Leader == "" {
				return false
			}
			if addr == "" {
				addr = *ts.Leader
			} else if addr != *ts.Leader {
				return false
			}
		}
		for _, h := range live {
			if h.TCPAddr == addr {
				lead = h
			}
		}
		return lead != nil
	}, "one leader of %s known to every live replica", topic)
	return lead
}

// replicated creates topic with 3 replicas on node 0 and returns its
// leader and one follower once every node agrees on the leader.
func (c *cluster) replicated(topic string) (lead, follower *testutil.NSQDHandle) {
	c.t.Helper()
	testutil.MustPost(c.t, c.nodes[0].URL("/topic/create?topic="+topic+"&replicas=3"), nil)
	lead = c.leader(topic, c.nodes, 15*time.Second)
	for _, h := range c.nodes {
		if h != lead {
			follower = h
		}
	}
	return lead, follower
}

// collector counts deliveries per body.
type collector struct {
	mu     sync.Mutex
	counts map[string]int
	total  int
}

func (c *collector) HandleMessage(m *nsq.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts == nil {
		c.counts = make(map[string]int)
	}
	c.counts[string(m.Body)]++
	c.total++
	return nil
}

func (c *collector) distinct() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.counts)
}

func (c *collector) report() (distinct, dups int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.counts), c.total - len(c.counts)
}

func (c *collector) has(body string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[body] > 0
}

func (c *cluster) consumer(topic, channel string, h nsq.Handler) *nsq.Consumer {
	c.t.Helper()
	cfg := testutil.NewConfig()
	cfg.LookupdPollInterval = 500 * time.Millisecond
	cfg.MaxInFlight = 50
	cons, err := nsq.NewConsumer(topic, channel, cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	cons.SetLogger(testutil.GoNSQLogger())
	cons.AddHandler(h)
	if err := cons.ConnectToNSQLookupd(c.lookupd.HTTPAddr().String()); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { testutil.StopConsumer(c.t, cons) })
	return cons
}

func TestReplicatedTopicCommitsOnEveryReplicaAndOnlyTheLeaderDelivers(t *testing.T) {
	c := startCluster(t, 3)
	testutil.MustPost(t, c.nodes[1].URL("/topic/create?topic=orders&replicas=3"), nil)
	lead := c.leader("orders", c.nodes, 15*time.Second)
	for _, h := range c.nodes {
		ts, _ := statsOf(t, h, "orders")
		if ts.Replicas == nil || *ts.Replicas != 3 || !ts.Durable {
			t.Fatalf("node %s: /stats replicas=%v durable=%v, want 3 and true", h.TCPAddr, ts.Replicas, ts.Durable)
		}
		if h == lead && len(ts.ReplicaLag) != 3 {
			t.Fatalf("leader's replica_lag %v, want one key per replica", ts.ReplicaLag)
		}
		if h != lead && ts.ReplicaLag != nil {
			t.Fatalf("follower %s shows replica_lag", h.TCPAddr)
		}
	}
	// A topic that is not replicated keeps NSQ's /stats shape.
	testutil.MustPost(t, c.nodes[0].URL("/topic/create?topic=plain"), nil)
	if ts, _ := statsOf(t, c.nodes[0], "plain"); ts.Replicas != nil || ts.Leader != nil {
		t.Fatal("a topic that is not replicated shows replication keys")
	}

	col := &collector{}
	c.consumer("orders", "audit", col)
	const perNode = 100
	var acked []string
	for i, h := range c.nodes {
		p := testutil.NewProducer(t, h.TCPAddr, nil)
		for j := range perNode {
			body := fmt.Sprintf("n%d-%d", i, j)
			if err := p.Publish("orders", []byte(body)); err != nil {
				t.Fatalf("publish to %s: %v", h.TCPAddr, err)
			}
			acked = append(acked, body)
		}
	}
	testutil.WaitFor(t, 20*time.Second, func() bool { return col.distinct() == len(acked) }, "%d delivered", len(acked))
	for _, b := range acked {
		if !col.has(b) {
			t.Fatalf("acknowledged %q never delivered", b)
		}
	}
	if _, dups := col.report(); dups != 0 {
		t.Fatalf("%d duplicates without any fault", dups)
	}
	// Every replica holds every message; only the leader delivered.
	for _, h := range c.nodes {
		testutil.WaitFor(t, 10*time.Second, func() bool {
			ts, _ := statsOf(t, h, "orders")
			return ts.Depth == 0 || h != lead
		}, "leader drained")
	}
}

func TestPublishWithoutAMajorityIsRefusedNeverAcknowledged(t *testing.T) {
	c := startCluster(t, 3)
	testutil.MustPost(t, c.nodes[0].URL("/topic/create?topic=orders&replicas=3"), nil)
	c.leader("orders", c.nodes, 15*time.Second)
	p := testutil.NewProducer(t, c.nodes[2].TCPAddr, nil)
	if err := p.Publish("orders", []byte("with-majority")); err != nil {
		t.Fatal(err)
	}
	c.nodes[0].Exit()
	c.nodes[1].Exit()
	start := time.Now()
	err := p.Publish("orders", []byte("without-majority"))
	if err == nil {
		t.Fatal("a publish with 2 of 3 replicas stopped was acknowledged")
	}
	took := time.Since(start)
	t.Logf("refused after %v: %v", took, err)
	if !strings.Contains(err.Error(), "E_PUB_FAILED") {
		t.Fatalf("error %q, want E_PUB_FAILED", err)
	}
	if took > 12*time.Second {
		t.Fatalf("refusal took %v, want it within a few seconds", took)
	}
}

func TestLeaderLossElectsAnotherAndConsumersCarryOn(t *testing.T) {
	c := startCluster(t, 3)
	testutil.MustPost(t, c.nodes[0].URL("/topic/create?topic=orders&replicas=3"), nil)
	lead := c.leader("orders", c.nodes, 15*time.Second)
	col := &collector{}
	c.consumer("orders", "work", col)
	var acked []string
	publishTo := func(h *testutil.NSQDHandle, prefix string, n int) {
		p := testutil.NewProducer(t, h.TCPAddr, nil)
		for i := range n {
			body := fmt.Sprintf("%s-%d", prefix, i)
			if err := p.Publish("orders", []byte(body)); err != nil {
				t.Fatalf("publish to %s: %v", h.TCPAddr, err)
			}
			acked = append(acked, body)
		}
		p.Stop()
	}
	var survivors []*testutil.NSQDHandle
	for _, h := range c.nodes {
		if h != lead {
			survivors = append(survivors, h)
		}
	}
	publishTo(survivors[0], "before", 200)
	testutil.WaitFor(t, 20*time.Second, func() bool { return col.distinct() == 200 }, "200 delivered before the loss")
	time.Sleep(500 * time.Millisecond) // the leader replicates the channel's progress
	lead.Exit()
	start := time.Now()
	next := c.leader("orders", survivors, 15*time.Second)
	t.Logf("new leader %s after %v", next.TCPAddr, time.Since(start))
	publishTo(survivors[1], "after", 100)
	testutil.WaitFor(t, 30*time.Second, func() bool { return col.distinct() == 300 }, "all 300 delivered")
	for _, b := range acked {
		if !col.has(b) {
			t.Fatalf("acknowledged %q never delivered", b)
		}
	}
	_, dups := col.report()
	t.Logf("duplicates after the leader's loss: %d", dups)
	if dups > 200 {
		t.Fatalf("%d duplicates: finished messages were delivered again", dups)
	}
}

func TestReplicasParameterIsValidated(t *testing.T) {
	c := startCluster(t, 1)
	for _, q := range []string{"replicas=0", "replicas=abc", "replicas=8", "replicas=3&durable=false"} {
		r := testutil.HTTPPost(t, c.nodes[0].URL("/topic/create?topic=orders&"+q), nil)
		if r.Status != 400 || !strings.Contains(r.String(), "INVALID_ARG_REPLICAS") {
			t.Fatalf("%s: %d %s, want 400 naming replicas", q, r.Status, r)
		}
	}
	// One node cannot hold three replicas: refused, and nothing is created.
	r := testutil.HTTPPost(t, c.nodes[0].URL("/topic/create?topic=orders&replicas=3"), nil)
	if r.Status == 200 {
		t.Fatal("replicas=3 on a one-node cluster was accepted")
	}
	t.Logf("replicas=3 on one node: %d %s", r.Status, r)
	if _, ok := statsOf(t, c.nodes[0], "orders"); ok {
		t.Fatal("a refused replicated topic was created")
	}
	// Without nsqlookupd there is no replication.
	solo := testutil.StartNSQD(t, nil)
	r = testutil.HTTPPost(t, solo.URL("/topic/create?topic=orders&replicas=1"), nil)
	if r.Status != 400 || !strings.Contains(r.String(), "lookupd") {
		t.Fatalf("replicas without nsqlookupd: %d %s, want 400 saying replication needs nsqlookupd", r.Status, r)
	}
}

func TestNodeWithoutAReplicaForwardsPublishesAndRefusesSubscribers(t *testing.T) {
	c := startCluster(t, 4)
	testutil.MustPost(t, c.nodes[0].URL("/topic/create?topic=orders&replicas=3"), nil)
	testutil.WaitFor(t, 15*time.Second, func() bool {
		ts, _ := statsOf(t, c.nodes[0], "orders")
		return ts.Leader != nil && *ts.Leader != ""
	}, "a leader of orders")
	var outside *testutil.NSQDHandle
	testutil.WaitFor(t, 10*time.Second, func() bool {
		outside = nil
		holders := 0
		for _, h := range c.nodes {
			if _, ok := statsOf(t, h, "orders"); ok {
				holders++
			} else {
				outside = h
			}
		}
		return holders == 3 && outside != nil
	}, "3 replicas and one node without")
	col := &collector{}
	c.consumer("orders", "work", col)
	time.Sleep(time.Second) // the consumer finds the replicas through nsqlookupd
	p := testutil.NewProducer(t, outside.TCPAddr, nil)
	for i := range 30 {
		if err := p.Publish("orders", fmt.Appendf(nil, "fwd%d", i)); err != nil {
			t.Fatalf("publish through a node without a replica: %v", err)
		}
	}
	testutil.WaitFor(t, 15*time.Second, func() bool { return col.distinct() == 30 }, "30 forwarded messages delivered")
	if _, ok := statsOf(t, outside, "orders"); ok {
		t.Fatal("the node without a replica lists the topic")
	}
	conn := testutil.DialV2(t, outside.TCPAddr)
	conn.Identify(map[string]any{"heartbeat_interval": 5000})
	conn.Send("SUB orders direct", nil)
	f := conn.MustFrame()
	if !strings.Contains(f.String(), "E_SUB_FAILED") || !strings.Contains(f.String(), "replicated on other nodes") {
		t.Fatalf("SUB on a node without a replica: %s, want E_SUB_FAILED saying where the topic is", f)
	}
}

func TestEveryReplicaRestartedKeepsTheTopicAndItsProgress(t *testing.T) {
	l := lookupdtest.Start(t, nil)
	var addrs []string
	for _, p := range testutil.FreePorts(t, 6) {
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", p))
	}
	var nodes []*testutil.NSQDHandle
	for i := range 3 {
		nodes = append(nodes, testutil.StartNSQD(t, func(o *nsqd.Options) {
			o.TCPAddress, o.HTTPAddress = addrs[2*i], addrs[2*i+1]
			o.NSQLookupdTCPAddresses = []string{l.TCPAddr().String()}
			o.LookupdPingInterval = time.Second
		}))
	}
	c := &cluster{t: t, lookupd: l, nodes: nodes}
	testutil.WaitFor(t, 10*time.Second, func() bool { return c.registered() == 3 }, "3 nodes")
	testutil.MustPost(t, nodes[0].URL("/topic/create?topic=orders&replicas=3"), nil)
	testutil.MustPost(t, nodes[0].URL("/channel/create?topic=orders&channel=work"), nil)
	c.leader("orders", nodes, 15*time.Second)
	p := testutil.NewProducer(t, nodes[1].TCPAddr, nil)
	for i := range 100 {
		if err := p.Publish("orders", fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	p.Stop()
	// Finish 60 on the leader; leave the other 40 in flight.
	lead := c.leader("orders", nodes, 15*time.Second)
	col := &collector{}
	conn := testutil.DialV2(t, lead.TCPAddr)
	conn.Identify(map[string]any{"heartbeat_interval": 5000})
	conn.Subscribe("orders", "work")
	conn.Ready(100)
	for i := range 100 {
		m := conn.ExpectMessageWithin(10 * time.Second)
		if i < 60 {
			conn.Finish(m.ID)
			col.HandleMessage(&nsq.Message{Body: m.Body})
		}
	}
	time.Sleep(600 * time.Millisecond) // the leader replicates the channel's progress
	conn.Close()
	for _, h := range nodes {
		h.Exit()
	}
	for i, h := range nodes {
		nodes[i] = testutil.RestartNSQD(t, h)
	}
	c.nodes = nodes
	c.leader("orders", nodes, 20*time.Second)
	rest := &collector{}
	c.consumer("orders", "work", rest)
	testutil.WaitFor(t, 20*time.Second, func() bool { return rest.distinct() == 40 }, "the 40 unfinished delivered after the restart")
	for i := range 100 {
		body := fmt.Sprintf("m%d", i)
		if !col.has(body) && !rest.has(body) {
			t.Fatalf("%s lost across the restart of every replica", body)
		}
	}
	time.Sleep(time.Second)
	distinct, dups := rest.report()
	redelivered := 0
	for i := range 100 {
		if col.has(fmt.Sprintf("m%d", i)) && rest.has(fmt.Sprintf("m%d", i)) {
			redelivered++
		}
	}
	t.Logf("after the restart: %d delivered, %d duplicates, %d finished before and delivered again", distinct, dups, redelivered)
	if redelivered > 0 {
		t.Fatalf("%d messages finished before the restart were delivered again", redelivered)
	}
}

func TestPoliciesSetOnAnyReplicaApplyOnEveryReplica(t *testing.T) {
	c := startCluster(t, 3)
	testutil.MustPost(t, c.nodes[0].URL("/topic/create?topic=orders&replicas=3&max_depth=500"), nil)
	lead := c.leader("orders", c.nodes, 15*time.Second)
	var follower *testutil.NSQDHandle
	for _, h := range c.nodes {
		if h != lead {
			follower = h
		}
	}
	testutil.MustPost(t, follower.URL("/channel/create?topic=orders&channel=work"), nil)
	testutil.MustPost(t, follower.URL("/topic/config?topic=orders&ttl=90s"), nil)
	for _, h := range c.nodes {
		testutil.WaitFor(t, 10*time.Second, func() bool {
			_, ok := statsOf(t, h, "orders")
			return ok && hasChannelOn(t, h, "orders", "work")
		}, "channel work on %s", h.TCPAddr)
	}
	testutil.MustPost(t, follower.URL("/channel/config?topic=orders&channel=work&max_attempts=4"), nil)
	for _, h := range c.nodes {
		testutil.WaitFor(t, 10*time.Second, func() bool {
			raw := rawStats(t, h)
			return strings.Contains(raw, `"ttl":"1m30s"`) && strings.Contains(raw, `"max_depth":500`) && strings.Contains(raw, `"max_attempts":4`)
		}, "the topic's ttl and max_depth and the channel's max_attempts on %s", h.TCPAddr)
	}
	// A bad value is refused where it is given, and reaches no replica.
	r := testutil.HTTPPost(t, follower.URL("/topic/config?topic=orders&ttl=soon"), nil)
	if r.Status != 400 || !strings.Contains(r.String(), "INVALID_TTL") {
		t.Fatalf("bad ttl: %s", r)
	}
}

func rawStats(t *testing.T, h *testutil.NSQDHandle) string {
	t.Helper()
	resp, err := http.Get(h.URL("/stats?format=json&topic=orders"))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return b.String()
}

func hasChannelOn(t *testing.T, h *testutil.NSQDHandle, topic, channel string) bool {
	ts, _ := statsOf(t, h, topic)
	return hasChannel(ts, channel)
}

// TestReplicaLoadedWithReplicationOffRefusesPublishes: a node that holds a
// replica on disk but runs without replication (restarted without
// --lookupd-tcp-address, or its replication failed to start) answers a
// publish to the topic with E_PUB_FAILED; it used to dereference its nil
// cluster and crash. The chaos test met the same crash on a node restarted
// after kill -9: a producer's PUB arrived before replication had started.
func TestReplicaLoadedWithReplicationOffRefusesPublishes(t *testing.T) {
	lk := lookupdtest.Start(t, nil)
	var off atomic.Bool
	c := &cluster{t: t, lookupd: lk}
	for range 3 {
		c.nodes = append(c.nodes, testutil.StartNSQD(t, func(o *nsqd.Options) {
			if !off.Load() {
				o.NSQLookupdTCPAddresses = []string{lk.TCPAddr().String()}
				o.LookupdPingInterval = time.Second
			}
		}))
	}
	testutil.WaitFor(t, 10*time.Second, func() bool { return c.registered() == 3 }, "3 nodes on nsqlookupd")
	testutil.MustPost(t, c.nodes[0].URL("/topic/create?topic=orders&replicas=3"), nil)
	c.leader("orders", c.nodes, 15*time.Second)
	off.Store(true)
	h := testutil.RestartNSQD(t, c.nodes[0])
	p := testutil.NewProducer(t, h.TCPAddr, nil)
	err := p.Publish("orders", []byte("m"))
	if err == nil || !strings.Contains(err.Error(), "E_PUB_FAILED") {
		t.Fatalf("publish to a replica without replication: %v, want E_PUB_FAILED", err)
	}
	t.Logf("refused: %v", err)
}

// TestChannelCreatedOnAFollowerIsCreatedOnEveryReplica: /channel/create on
// a follower creates the channel on every replica through the topic's
// group, so the leader delivers on it everything published after it was
// created. (It used to be created on that follower only: the leader
// created it when a consumer subscribed, at the end of its log, and never
// delivered the messages published in between.)
func TestChannelCreatedOnAFollowerIsCreatedOnEveryReplica(t *testing.T) {
	c := startCluster(t, 3)
	lead, f := c.replicated("orders")
	// A first channel, so that a new one starts at the end of the log.
	testutil.MustPost(t, lead.URL("/channel/create?topic=orders&channel=first"), nil)
	testutil.MustPost(t, f.URL("/channel/create?topic=orders&channel=later"), nil)
	for _, h := range c.nodes {
		testutil.WaitFor(t, 5*time.Second, func() bool {
			ts, _ := statsOf(t, h, "orders")
			return hasChannel(ts, "later")
		}, "channel created on a follower listed by %s", h.TCPAddr)
	}
	p := testutil.NewProducer(t, f.TCPAddr, nil)
	const n = 20
	for i := range n {
		if err := p.Publish("orders", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	col := &collector{}
	c.consumer("orders", "later", col)
	testutil.WaitFor(t, 10*time.Second, func() bool { return col.distinct() == n }, "%d delivered on the channel created on a follower", n)
}

func TestChannelDeletedOnAnyReplicaIsDeletedOnEveryReplica(t *testing.T) {
	c := startCluster(t, 3)
	lead, follower := c.replicated("orders")
	for _, ch := range []string{"a", "b"} {
		testutil.MustPost(t, follower.URL("/channel/create?topic=orders&channel="+ch), nil)
	}
	p := testutil.NewProducer(t, lead.TCPAddr, nil)
	for i := range 10 {
		if err := p.Publish("orders", fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond) // cursors of both channels replicated
	testutil.MustPost(t, lead.URL("/channel/delete?topic=orders&channel=a"), nil)
	testutil.MustPost(t, follower.URL("/channel/delete?topic=orders&channel=b"), nil)
	for _, h := range c.nodes {
		testutil.WaitFor(t, 10*time.Second, func() bool {
			return !hasChannelOn(t, h, "orders", "a") && !hasChannelOn(t, h, "orders", "b")
		}, "channels a and b deleted on %s", h.TCPAddr)
	}
	time.Sleep(time.Second) // a cursor command in flight must not bring them back
	for _, h := range c.nodes {
		if hasChannelOn(t, h, "orders", "a") || hasChannelOn(t, h, "orders", "b") {
			t.Fatalf("a deleted channel came back on %s", h.TCPAddr)
		}
	}
}

// compactingNode sets a node of a cluster on l that replaces a replica
// gone 2 s, snapshots its topics every 50 entries and keeps their
// messages an hour, so a replacement starts from a snapshot and copies
// the history it skipped.
func compactingNode(l *lookupd.Daemon) func(*nsqd.Options) {
	return func(o *nsqd.Options) {
		o.NSQLookupdTCPAddresses = []string{l.TCPAddr().String()}
		o.LookupdPingInterval = time.Second
		o.ReplicaTimeout = 2 * time.Second
		o.ReplicaCompactEntries = 50
		o.RetentionTime = time.Hour
	}
}

func snapshotFiles(dataPath string) []string {
	m, _ := filepath.Glob(filepath.Join(dataPath, "replicated", "groups", "*", "*.snap"))
	return m
}

// TestCompactedLogCatchesUpANewReplicaFromASnapshot: replicas drop the Raft
// entries whose messages every channel finished (after a snapshot), and a
// replica that replaces a lost one starts from that snapshot plus the
// entries after it, holding every message not yet finished; then it copies
// the retained history the snapshot skipped from the others, so its topic
// log holds every message, under the same IDs, as theirs do.
func TestCompactedLogCatchesUpANewReplicaFromASnapshot(t *testing.T) {
	l := lookupdtest.Start(t, nil)
	c := &cluster{t: t, lookupd: l}
	for range 4 {
		c.nodes = append(c.nodes, testutil.StartNSQD(t, compactingNode(l)))
	}
	testutil.WaitFor(t, 10*time.Second, func() bool { return c.registered() == 4 }, "4 nodes")
	testutil.MustPost(t, c.nodes[0].URL("/topic/create?topic=orders&replicas=3"), nil)
	testutil.MustPost(t, c.nodes[0].URL("/channel/create?topic=orders&channel=work"), nil)
	var members []*testutil.NSQDHandle
	var spare *testutil.NSQDHandle
	testutil.WaitFor(t, 10*time.Second, func() bool {
		members, spare = nil, nil
		for _, h := range c.nodes {
			if _, ok := statsOf(t, h, "orders"); ok {
				members = append(members, h)
			} else {
				spare = h
			}
		}
		return len(members) == 3 && spare != nil
	}, "3 replicas")
	c.leader("orders", members, 15*time.Second)
	p := testutil.NewProducer(t, c.nodes[0].TCPAddr, nil)
	for i := range 200 {
		if err := p.Publish("orders", fmt.Appendf(nil, "old%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	col := &collector{}
	cons := c.consumer("orders", "work", col)
	testutil.WaitFor(t, 15*time.Second, func() bool { return col.distinct() == 200 }, "200 finished")
	testutil.StopConsumer(t, cons)
	for _, h := range members {
		testutil.WaitFor(t, 20*time.Second, func() bool { return len(snapshotFiles(h.DataPath)) > 0 }, "a snapshot on %s", h.TCPAddr)
	}
	for i := range 50 {
		if err := p.Publish("orders", fmt.Appendf(nil, "new%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	var lost *testutil.NSQDHandle
	for _, h := range members {
		if h != c.nodes[0] {
			lost = h
			break
		}
	}
	lost.Exit()
	testutil.WaitFor(t, 30*time.Second, func() bool {
		ts, ok := statsOf(t, spare, "orders")
		return ok && len(ts.Channels) == 1 && ts.Channels[0].Depth == 50
	}, "the new replica holds the 50 unfinished messages")
	if len(snapshotFiles(spare.DataPath)) == 0 {
		t.Fatal("the new replica did not start from a snapshot")
	}
	// Only the new replica and node 0 remain of the three: the 50 are
	// delivered from whichever leads.
	rest := &collector{}
	c.consumer("orders", "work", rest)
	testutil.WaitFor(t, 30*time.Second, func() bool { return rest.distinct() == 50 }, "the 50 delivered after the replacement")
	for i := range 50 {
		if !rest.has(fmt.Sprintf("new%d", i)) {
			t.Fatalf("new%d lost", i)
		}
	}

	// The retained history: the new replica's log holds the 200 finished
	// messages too, below the 50, numbered as on the replica it read.
	dir := filepath.Join(spare.DataPath, "durable", "orders.log")
	testutil.WaitFor(t, 30*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(dir, "history.json"))
		return errors.Is(err, os.ErrNotExist)
	}, "the new replica copied its history")
	spare.Exit()
	tl, _, err := store.OpenLog(store.OSFS{}, dir, store.LogOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	rd := tl.NewReader(0)
	var recs []store.Record
	for {
		n := len(recs)
		if recs, err = rd.Read(recs, 100); err != nil {
			t.Fatal(err)
		}
		if len(recs) == n {
			break
		}
	}
	if len(recs) != 250 {
		t.Fatalf("the new replica's log holds %d messages, want the 250 published", len(recs))
	}
	for i, rec := range recs {
		want := fmt.Sprintf("old%d", i)
		if i >= 200 {
			want = fmt.Sprintf("new%d", i-200)
		}
		if string(rec.Body) != want || rec.Seq != recs[0].Seq+uint64(i) {
			t.Fatalf("message %d of the new replica's log: %q (sequence %d), want %q (sequence %d)", i, rec.Body, rec.Seq, want, recs[0].Seq+uint64(i))
		}
	}
}
