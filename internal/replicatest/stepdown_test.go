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
	if now := c.leader("orders", c.nodes, 10*time.Second); now != follower {
		t.Fatalf("after a step-down to %s the replicas agree on %s", follower.TCPAddr, now.TCPAddr)
	}
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
		{"topic=bad!name", http.StatusBadRequest, "INVALID_TOPIC"},
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
	l.mu.Lock()
	*l.msgs = append(*l.msgs, r.Message)
	l.mu.Unlock()
	return nil
}
func (l logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l logRecorder) WithGroup(string) slog.Handler      { return l }

func (l logRecorder) logged(prefix string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range *l.msgs {
		if strings.HasPrefix(m, prefix) {
			return true
		}
	}
	return false
}

// TestGatedLeaderHandsItsLeadershipToACompleteReplica: a replica that
// replaced a lost one started from a snapshot taken with a backlog, so it
// copies the unfinished messages from the others (slowly here:
// --replica-history-rate) and its channels do not deliver until it holds
// them. Made leader meanwhile, it hands the leadership to a replica that
// answered its history reads, and the backlog is delivered while its own
// copy still runs.
func TestGatedLeaderHandsItsLeadershipToACompleteReplica(t *testing.T) {
	l := lookupdtest.Start(t, nil)
	c := &cluster{t: t, lookupd: l}
	var logs []logRecorder
	for range 4 {
		rec := newLogRecorder()
		logs = append(logs, rec)
		c.nodes = append(c.nodes, testutil.StartNSQD(t, func(o *nsqd.Options) {
			o.NSQLookupdTCPAddresses = []string{l.TCPAddr().String()}
			o.LookupdPingInterval = time.Second
			o.ReplicaTimeout = 2 * time.Second
			o.ReplicaCompactEntries = 50
			o.RetentionTime = time.Hour
			o.ReplicaHistoryRate = 32 << 10 // a second chunk after 32 s
			o.Logger = slog.New(rec)
		}))
	}
	testutil.WaitFor(t, 10*time.Second, func() bool { return c.registered() == 4 }, "4 nodes")
	testutil.MustPost(t, c.nodes[0].URL("/topic/create?topic=orders&replicas=3"), nil)
	testutil.MustPost(t, c.nodes[0].URL("/channel/create?topic=orders&channel=work"), nil)
	var members []*testutil.NSQDHandle
	spare := -1
	testutil.WaitFor(t, 10*time.Second, func() bool {
		members, spare = nil, -1
		for i, h := range c.nodes {
			if _, ok := statsOf(t, h, "orders"); ok {
				members = append(members, h)
			} else {
				spare = i
			}
		}
		return len(members) == 3 && spare >= 0
	}, "3 replicas")
	lead := c.leader("orders", members, 15*time.Second)

	// A backlog of about 2.6 MB (three history chunks), in 60 entries:
	// the replicas snapshot it unconsumed.
	const batches, per = 60, 200
	p := testutil.NewProducer(t, lead.TCPAddr, nil)
	body := strings.Repeat("x", 200)
	for b := range batches {
		msgs := make([][]byte, per)
		for i := range msgs {
			msgs[i] = fmt.Appendf(nil, "%05d-%s", b*per+i, body)
		}
		if err := p.MultiPublish("orders", msgs); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range members {
		testutil.WaitFor(t, 20*time.Second, func() bool { return len(snapshotFiles(h.DataPath)) > 0 }, "a snapshot on %s", h.TCPAddr)
	}
	var lost *testutil.NSQDHandle
	for _, h := range members {
		if h != lead {
			lost = h
			break
		}
	}
	lost.Exit()

	// The spare replaces it, from the snapshot, gated.
	sp := c.nodes[spare]
	history := filepath.Join(sp.DataPath, "durable", "orders.log", "history.json")
	testutil.WaitFor(t, 30*time.Second, func() bool {
		b, err := os.ReadFile(history)
		return err == nil && strings.Contains(string(b), `"unfinished":true`)
	}, "the new replica copying the unfinished messages")
	var live []*testutil.NSQDHandle
	for _, h := range c.nodes {
		if h != lost {
			live = append(live, h)
		}
	}
	c.leader("orders", live, 15*time.Second)

	// Made leader, it hands the leadership on.
	stepDown(t, lead, "topic=orders&to="+sp.TCPAddr)
	testutil.WaitFor(t, 10*time.Second, func() bool {
		return logs[spare].logged("this replica leads but is still copying unfinished messages")
	}, "the gated leader handing its leadership on")
	if now := c.leader("orders", live, 10*time.Second); now == sp {
		t.Fatal("the gated replica still leads")
	}
	col := &collector{}
	c.consumer("orders", "work", col)
	testutil.WaitFor(t, 20*time.Second, func() bool { return col.distinct() == batches*per }, "the backlog delivered")
	if _, err := os.Stat(history); err != nil {
		t.Fatalf("the new replica's copy ended before the backlog was delivered (%v): nothing showed that another leader delivered it", err)
	}
}
