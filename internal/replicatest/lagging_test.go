package replicatest

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"

	"github.com/sluicemq/sluice/internal/lookupdtest"
	"github.com/sluicemq/sluice/internal/testutil"
)

// TestLaggingNodeNeverTakesANewReplicatedTopicForAPlainOne: a node that
// kept its disk but whose copy of the placement lags (frozen with
// SIGSTOP, or cut off from its peers, while a replicated topic placed on
// it is created on the others) is published to from the moment it is
// back, over TCP (a go-nsq producer that retries what was refused) and
// over HTTP (/pub). It must not create a plain topic of that name before
// it has heard of the placement (its replica could then never open
// there); it may refuse (retryable) or hand the publish to the group. In
// the end its replica is open and a consumer receives every acknowledged
// message.
func TestLaggingNodeNeverTakesANewReplicatedTopicForAPlainOne(t *testing.T) {
	bin := testutil.BuildApp(t, "github.com/sluicemq/sluice/apps/nsqd")
	for _, how := range []string{"frozen", "cut off"} {
		t.Run(strings.ReplaceAll(how, " ", "-"), func(t *testing.T) {
			lk := lookupdtest.Start(t, nil)
			ns := startNodes(t, bin, lk, 3, how == "cut off", "--log-level=info")
			dumpLogsOnFailure(t, ns)
			// The meta group forms with a first replicated topic: every
			// node is one of its three voters.
			createReplicated(t, ns[0], "first", 3)
			waitLeader(t, ns, "first", 20*time.Second)

			lagging := ns[2]
			switch how {
			case "frozen":
				lagging.freeze(t)
			default:
				lagging.proxy.cut()
			}
			back := false
			t.Cleanup(func() {
				if !back && how == "frozen" {
					lagging.thaw(t)
				}
			})
			// Three replicas on three nodes: placed on the lagging node too.
			createReplicated(t, ns[0], "orders", 3)
			waitLeader(t, ns[:2], "orders", 20*time.Second)
			if code, body, err := ns[0].post("/channel/create?topic=orders&channel=c"); err != nil || code != 200 {
				t.Fatalf("channel/create: %d %s %v", code, body, err)
			}
			switch how {
			case "frozen":
				lagging.thaw(t)
			default:
				lagging.proxy.restore()
			}
			back = true

			led := newLedger()
			plain := watchPlain(t, lagging, "orders")
			refused := publishRetrying(t, lagging, "orders", led, 40, 90*time.Second)
			t.Logf("publishes refused through %s once back: tcp %d, http %d (%v)", lagging.name, refused[0], refused[1], led.errKinds())
			// Watched until the replica is open (or a plain topic shows).
			testutil.WaitFor(t, 30*time.Second, func() bool {
				ts, ok := lagging.topicStats("orders")
				return plain.seen() != "" || ok && ts.Replicas != nil && hasChannel(ts, "c")
			}, "the replica of orders opens on %s", lagging.name)
			if s := plain.stop(); s != "" {
				t.Fatalf("%s, %s while orders was created, showed a plain (not replicated) topic orders: %s", lagging.name, how, s)
			}
			if b, err := os.ReadFile(lagging.logPath); err == nil && strings.Contains(string(b), "not replicated") {
				t.Fatalf("%s refused its replica of orders: a plain topic of that name was in the way", lagging.name)
			}
			lookupdConsumer(t, lk, "orders", "c", 100, led)
			testutil.WaitFor(t, 30*time.Second, func() bool { return len(led.missing()) == 0 },
				"every acknowledged message delivered")
		})
	}
}

// plainWatch polls a node's /stats for a topic and records the first
// plain (not replicated) topic of that name it sees.
type plainWatch struct {
	first atomic.Value // string
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

// watchPlain watches until stop, or the end of the test.
func watchPlain(t *testing.T, n *node, topic string) *plainWatch {
	w := &plainWatch{done: make(chan struct{})}
	t.Cleanup(func() { w.stop() })
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			if ts, ok := n.topicStats(topic); ok && ts.Replicas == nil {
				w.first.CompareAndSwap(nil, fmt.Sprintf("%+v", ts))
			}
			select {
			case <-w.done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return w
}

// seen returns the first plain topic seen so far, or "".
func (w *plainWatch) seen() string {
	s, _ := w.first.Load().(string)
	return s
}

// stop ends the watch and returns what seen does.
func (w *plainWatch) stop() string {
	w.once.Do(func() { close(w.done) })
	w.wg.Wait()
	return w.seen()
}

// publishRetrying publishes each messages to topic through n over TCP (a
// go-nsq producer, started again after a refusal closed its connection)
// and as many over HTTP (/pub) at the same time, each made again after
// a refusal until it is acknowledged, within the given time. Every attempt
// and acknowledgement goes to led. It returns how many publishes each
// refused.
func publishRetrying(t *testing.T, n *node, topic string, led *ledger, each int, within time.Duration) [2]int64 {
	t.Helper()
	var prod *nsq.Producer
	defer func() {
		if prod != nil {
			prod.Stop()
		}
	}()
	publishers := []func(string) error{
		func(b string) error {
			if prod == nil {
				var err error
				if prod, err = nsq.NewProducer(n.tcpAddr, testutil.NewConfig()); err != nil {
					return err
				}
				prod.SetLogger(testutil.GoNSQLogger())
			}
			err := prod.Publish(topic, []byte(b))
			if err != nil { // a refusal closes the connection: start over
				prod.Stop()
				prod = nil
			}
			return err
		},
		func(b string) error {
			resp, err := postClient.Post("http://"+n.httpAddr+"/pub?topic="+topic, "", strings.NewReader(b))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			reply, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("/pub: %d %s", resp.StatusCode, reply)
			}
			return nil
		},
	}
	var refused [2]atomic.Int64
	deadline := time.Now().Add(within)
	var wg sync.WaitGroup
	for i, publish := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < each; j++ {
				b := fmt.Sprintf("p%d-%03d", i, j)
				led.attempt([]string{b})
				for {
					err := publish(b)
					if err == nil {
						led.ack([]string{b})
						break
					}
					refused[i].Add(1)
					led.pubErr(err)
					if time.Now().After(deadline) {
						t.Errorf("publisher %d: %s not acknowledged through %s within %v: %v", i, b, n.name, within, err)
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	return [2]int64{refused[0].Load(), refused[1].Load()}
}

// TestCutOffNodeRefusesANewTopicItCannotConfirmIsNotReplicated: a node cut
// off from its peers (a minority side) cannot confirm with the meta group
// that a name its placement does not know is not replicated: a publish,
// /pub, /topic/create or SUB to such a name is refused, retryably, and
// nothing is created; an ephemeral name (never replicated) is created at
// once; once the node is back, the same publish creates a plain topic.
func TestCutOffNodeRefusesANewTopicItCannotConfirmIsNotReplicated(t *testing.T) {
	bin := testutil.BuildApp(t, "github.com/sluicemq/sluice/apps/nsqd")
	lk := lookupdtest.Start(t, nil)
	ns := startNodes(t, bin, lk, 3, true, "--log-level=info")
	dumpLogsOnFailure(t, ns)
	createReplicated(t, ns[0], "first", 3)
	waitLeader(t, ns, "first", 20*time.Second)
	cut := ns[2]
	cut.proxy.cut()
	restored := false
	t.Cleanup(func() {
		if !restored {
			cut.proxy.restore()
		}
	})

	const refusal = "cannot confirm with the cluster's meta group that the topic is not replicated"
	if code, body, err := pubHTTP(cut, "plain", "m"); err != nil || code != http.StatusServiceUnavailable ||
		!strings.Contains(body, "PUB_FAILED") || !strings.Contains(body, refusal) {
		t.Fatalf("/pub of a new name on a cut off node: %d %s %v, want 503 PUB_FAILED (%s)", code, body, err, refusal)
	}
	prod, err := nsq.NewProducer(cut.tcpAddr, testutil.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	prod.SetLogger(testutil.GoNSQLogger())
	err = prod.Publish("plain", []byte("m"))
	prod.Stop()
	if err == nil || !strings.Contains(err.Error(), "E_PUB_FAILED") || !strings.Contains(err.Error(), refusal) {
		t.Fatalf("PUB of a new name on a cut off node: %v, want E_PUB_FAILED (%s)", err, refusal)
	}
	if code, body, err := cut.post("/topic/create?topic=plain"); err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, refusal) {
		t.Fatalf("/topic/create of a new name on a cut off node: %d %s %v, want 503 (%s)", code, body, err, refusal)
	}
	conn := testutil.DialV2(t, cut.tcpAddr)
	conn.Identify(map[string]any{"heartbeat_interval": 5000})
	conn.Send("SUB plain c", nil)
	if f := conn.MustFrame(); !strings.Contains(f.String(), "E_SUB_FAILED") || !strings.Contains(f.String(), refusal) {
		t.Fatalf("SUB to a new name on a cut off node: %s, want E_SUB_FAILED (%s)", f, refusal)
	}
	if _, ok := cut.topicStats("plain"); ok {
		t.Fatal("a refused name was created all the same")
	}
	// An ephemeral name is never replicated: created at once.
	if code, body, err := pubHTTP(cut, "scratch#ephemeral", "m"); err != nil || code != http.StatusOK {
		t.Fatalf("/pub of an ephemeral name on a cut off node: %d %s %v", code, body, err)
	}

	cut.proxy.restore()
	restored = true
	testutil.WaitFor(t, 30*time.Second, func() bool {
		code, _, err := pubHTTP(cut, "plain", "m")
		return err == nil && code == http.StatusOK
	}, "a publish of the new name through %s once it is back", cut.name)
	if ts, ok := cut.topicStats("plain"); !ok || ts.Replicas != nil {
		t.Fatalf("once confirmed, the new name is a plain topic: %+v %v", ts, ok)
	}
}

// pubHTTP publishes body to topic through n's /pub and returns the status
// and the reply.
func pubHTTP(n *node, topic, body string) (int, string, error) {
	resp, err := postClient.Post("http://"+n.httpAddr+"/pub?topic="+url.QueryEscape(topic), "", strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(reply), err
}
