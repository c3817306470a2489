package replicatest

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/lookupdtest"
	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/nsqd"
)

// agreedOn returns the leader of topic every node in ns names in /stats,
// "" while they do not agree on one.
func agreedOn(t *testing.T, ns []*testutil.NSQDHandle, topic string) string {
	agreed := ""
	for _, h := range ns {
		ts, ok := statsOf(t, h, topic)
		if !ok || ts.Leader == nil || *ts.Leader == "" || (agreed != "" && *ts.Leader != agreed) {
			return ""
		}
		agreed = *ts.Leader
	}
	return agreed
}

// stepDown POSTs /topic/step-down on h and returns the leader it answers.
func stepDown(t *testing.T, h *testutil.NSQDHandle, query string) string {
	t.Helper()
	r := testutil.MustPost(t, h.URL("/topic/step-down?"+query), nil)
	var body struct {
		Leader string `json:"leader"`
	}
	if err := json.Unmarshal(r.Body, &body); err != nil || body.Leader == "" {
		t.Fatalf("step-down answered %v", r)
	}
	return body.Leader
}

func TestStepDownHandsTheLeadershipToAnotherReplicaAndConsumersCarryOn(t *testing.T) {
	c := startCluster(t, 3)
	lead, follower := c.replicated("orders")
	p := testutil.NewProducer(t, c.nodes[0].TCPAddr, nil)
	for i := range 20 {
		if err := p.Publish("orders", fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	col := &collector{}
	c.consumer("orders", "work", col)
	testutil.WaitFor(t, 15*time.Second, func() bool { return col.distinct() == 20 }, "20 delivered")

	// asked on the leader, for a named replica
	if got := stepDown(t, lead, "topic=orders&to="+follower.TCPAddr); got != follower.TCPAddr {
		t.Fatalf("step-down to %s: the leader is %s", follower.TCPAddr, got)
	}
	testutil.WaitFor(t, 10*time.Second, func() bool { return agreedOn(t, c.nodes, "orders") == follower.TCPAddr },
		"every replica naming %s the leader", follower.TCPAddr)
	// asked on a follower without to: it takes the leadership itself
	if got := stepDown(t, lead, "topic=orders"); got != lead.TCPAddr {
		t.Fatalf("step-down asked on the follower %s: the leader is %s", lead.TCPAddr, got)
	}
	c.leader("orders", c.nodes, 10*time.Second)
	// asked on the leader without to: another replica leads
	if got := stepDown(t, lead, "topic=orders"); got == lead.TCPAddr {
		t.Fatalf("the leader %s stepped down and leads again", got)
	}
	for i := 20; i < 40; i++ {
		if err := p.Publish("orders", fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 15*time.Second, func() bool { return col.distinct() == 40 }, "40 delivered")
	if _, dups := col.report(); dups != 0 {
		t.Errorf("%d duplicates with no fault, only leadership handed over", dups)
	}

	testutil.MustPost(t, c.nodes[0].URL("/topic/create?topic=plain"), nil)
	for _, tc := range []struct {
		query  string
		status int
		msg    string
	}{
		{"", http.StatusBadRequest, "MISSING_ARG_TOPIC"},
		{"topic=bad!name", http.StatusBadRequest, "INVALID_ARG_TOPIC"},
		{"topic=nosuch", http.StatusNotFound, "TOPIC_NOT_FOUND"},
		{"topic=plain", http.StatusBadRequest, "NOT_REPLICATED"},
		{"topic=orders&to=127.0.0.1:1", http.StatusBadRequest, "INVALID_ARG_TO"},
	} {
		r := testutil.HTTPPost(t, c.nodes[0].URL("/topic/step-down?"+tc.query), nil)
		if r.Status != tc.status || !strings.HasPrefix(testutil.ErrorMessage(r), tc.msg) {
			t.Errorf("step-down?%s: %v, want %d %s", tc.query, r, tc.status, tc.msg)
		}
	}
}

// logRecorder keeps the messages of the records logged through it.
type logRecorder struct {
	mu   *sync.Mutex
	msgs *[]string
}

func newLogRecorder() logRecorder { return logRecorder{mu: new(sync.Mutex), msgs: new([]string)} }

func (l logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l logRecorder) Handle(_ context.Context, r slog.Record) error {
	if r.Level < slog.LevelInfo {
		return nil
	}
	line := r.Time.Format("15:04:05.000 ") + r.Message
	r.Attrs(func(a slog.Attr) bool {
		line += " " + a.String()
		return true
	})
	l.mu.Lock()
	*l.msgs = append(*l.msgs, line)
	l.mu.Unlock()
	return nil
}

// dump returns what was logged, one record a line.
func (l logRecorder) dump() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(*l.msgs, "\n")
}
func (l logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l logRecorder) WithGroup(string) slog.Handler      { return l }

func (l logRecorder) logged(prefix string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range *l.msgs {
		if strings.HasPrefix(m[len("15:04:05.000 "):], prefix) {
			return true
		}
	}
	return false
}

// restoredReplica is a 4-node cluster where a replica of topic "orders"
// was lost and the fourth node replaced it from a snapshot: it copies the
// messages the snapshot skipped from the others, slowly
// (--replica-history-rate: a second 1 MiB chunk after 32 s).
type restoredReplica struct {
	c        *cluster
	logs     []logRecorder
	lead     *testutil.NSQDHandle // the leader before the loss
	spare    int                  // index in c.nodes of the new replica
	lost     *testutil.NSQDHandle
	live     []*testutil.NSQDHandle
	history  string // the new replica's history.json
	messages int    // published before the loss: fmt.Sprintf("%05d-%s", i, body)
	body     string
}

// startRestoredReplica publishes about 2.6 MB to "orders" (channel
// "work"; consumed when consume is set, else a backlog the snapshots
// hold), then loses a follower and waits for its replacement to copy.
func startRestoredReplica(t *testing.T, consume bool) *restoredReplica {
	l := lookupdtest.Start(t, nil)
	rr := &restoredReplica{c: &cluster{t: t, lookupd: l}, spare: -1}
	c := rr.c
	for range 4 {
		rec := newLogRecorder()
		rr.logs = append(rr.logs, rec)
		c.nodes = append(c.nodes, testutil.StartNSQD(t, func(o *nsqd.Options) {
			compactingNode(l)(o)
			o.ReplicaHistoryRate = 32 << 10
			o.Logger = slog.New(rec)
		}))
	}
	testutil.WaitFor(t, 10*time.Second, func() bool { return c.registered() == 4 }, "4 nodes")
	testutil.MustPost(t, c.nodes[0].URL("/topic/create?topic=orders&replicas=3"), nil)
	testutil.MustPost(t, c.nodes[0].URL("/channel/create?topic=orders&channel=work"), nil)
	var members []*testutil.NSQDHandle
	testutil.WaitFor(t, 10*time.Second, func() bool {
		members, rr.spare = nil, -1
		for i, h := range c.nodes {
			if _, ok := statsOf(t, h, "orders"); ok {
				members = append(members, h)
			} else {
				rr.spare = i
			}
		}
		return len(members) == 3 && rr.spare >= 0
	}, "3 replicas")
	rr.lead = c.leader("orders", members, 15*time.Second)

	// about 2.6 MB (three history chunks) in 60 entries
	const batches, per = 60, 200
	rr.messages = batches * per
	p := testutil.NewProducer(t, rr.lead.TCPAddr, nil)
	rr.body = strings.Repeat("x", 200)
	for b := range batches {
		msgs := make([][]byte, per)
		for i := range msgs {
			msgs[i] = fmt.Appendf(nil, "%05d-%s", b*per+i, rr.body)
		}
		if err := p.MultiPublish("orders", msgs); err != nil {
			t.Fatal(err)
		}
	}
	if consume {
		col := &collector{}
		cons := c.consumer("orders", "work", col)
		testutil.WaitFor(t, 30*time.Second, func() bool { return col.distinct() == rr.messages }, "the messages consumed")
		testutil.StopConsumer(t, cons)
		testutil.WaitFor(t, 10*time.Second, func() bool {
			ts, _ := statsOf(t, rr.lead, "orders")
			return len(ts.Channels) == 1 && ts.Channels[0].Depth == 0 && ts.Channels[0].InFlight == 0
		}, "the channel finished")
		time.Sleep(time.Second) // its progress replicated (every 200 ms)
	}
	for _, h := range members {
		testutil.WaitFor(t, 20*time.Second, func() bool { return len(snapshotFiles(h.DataPath)) > 0 }, "a snapshot on %s", h.TCPAddr)
	}
	for _, h := range members {
		if h != rr.lead {
			rr.lost = h
			break
		}
	}
	rr.lost.Exit()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the new replica's log:\n%s", rr.logs[rr.spare].dump())
		}
	})
	sp := c.nodes[rr.spare]
	rr.history = filepath.Join(sp.DataPath, "durable", "orders.log", "history.json")
	testutil.WaitFor(t, 30*time.Second, func() bool {
		_, err := os.Stat(rr.history)
		return err == nil
	}, "the new replica copying what its snapshot skipped")
	for _, h := range c.nodes {
		if h != rr.lost {
			rr.live = append(rr.live, h)
		}
	}
	c.leader("orders", rr.live, 15*time.Second)
	return rr
}

// gatedNow reports whether the new replica holds its channels back until
// it has copied what they have not finished.
func (rr *restoredReplica) gatedNow() bool {
	b, err := os.ReadFile(rr.history)
	return err == nil && strings.Contains(string(b), `"unfinished":true`)
}

// TestGatedLeaderHandsItsLeadershipToACompleteReplica: a replica that
// replaced a lost one started from a snapshot taken with a backlog, so it
// copies the unfinished messages from the others and its channels do not
// deliver until it holds them. Made leader meanwhile, it hands the
// leadership to a replica that answered its history reads, and the
// backlog is delivered while its own copy still runs.
func TestGatedLeaderHandsItsLeadershipToACompleteReplica(t *testing.T) {
	rr := startRestoredReplica(t, false)
	c, sp := rr.c, rr.c.nodes[rr.spare]
	if !rr.gatedNow() {
		t.Fatal("the new replica restored from a snapshot with a backlog is not gated")
	}
	stepDown(t, rr.lead, "topic=orders&to="+sp.TCPAddr)
	testutil.WaitFor(t, 10*time.Second, func() bool {
		return rr.logs[rr.spare].logged("this replica leads but is still copying unfinished messages")
	}, "the gated leader handing its leadership on")
	// (logged as it asks: the replicas agree on the next leader a moment
	// later)
	testutil.WaitFor(t, 10*time.Second, func() bool {
		l := agreedOn(t, rr.live, "orders")
		return l != "" && l != sp.TCPAddr
	}, "the replicas agreeing on a leader other than the gated replica")
	col := &collector{}
	c.consumer("orders", "work", col)
	testutil.WaitFor(t, 20*time.Second, func() bool { return col.distinct() == rr.messages }, "the backlog delivered")
	if _, err := os.Stat(rr.history); err != nil {
		t.Fatalf("the new replica's copy ended before the backlog was delivered (%v): nothing showed that another leader delivered it", err)
	}
}

// TestChannelCreatedAtEarliestWhileTheLeaderCopiesItsHistoryReplaysAllOfIt:
// the new replica leads while it copies history its channels have
// finished (no gate: it delivers new messages). A channel created then
// with start=earliest must replay the whole retained history, most of it
// not on this replica yet: the replica holds the channel back, hands the
// leadership to a replica that has it all, and nothing is missed.
func TestChannelCreatedAtEarliestWhileTheLeaderCopiesItsHistoryReplaysAllOfIt(t *testing.T) {
	rr := startRestoredReplica(t, true)
	c, sp := rr.c, rr.c.nodes[rr.spare]
	if rr.gatedNow() {
		t.Fatal("the new replica is gated though its snapshot had no backlog")
	}
	if got := stepDown(t, rr.lead, "topic=orders&to="+sp.TCPAddr); got != sp.TCPAddr {
		t.Fatalf("step-down to the new replica: %s leads", got)
	}
	p := testutil.NewProducer(t, sp.TCPAddr, nil)
	if err := p.Publish("orders", []byte("after")); err != nil {
		t.Fatal(err)
	}
	testutil.MustPost(t, sp.URL("/channel/create?topic=orders&channel=replay&start=earliest"), nil)
	col := &collector{}
	c.consumer("orders", "replay", col)
	testutil.WaitFor(t, 20*time.Second, func() bool { return col.distinct() == rr.messages+1 }, "the whole history replayed")
	for i := range rr.messages {
		if !col.has(fmt.Sprintf("%05d-%s", i, rr.body)) {
			t.Fatalf("message %05d never replayed", i)
		}
	}
	if _, err := os.Stat(rr.history); err != nil {
		t.Fatalf("the new replica's copy ended before the replay (%v): the test shows nothing", err)
	}
}
