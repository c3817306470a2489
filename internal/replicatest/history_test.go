package replicatest

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/lookupdtest"
	"github.com/sluicemq/sluice/internal/testutil"
)

// A replica that replaces a lost one after the others compacted their Raft
// logs starts from a snapshot and copies the retained history it skipped
// from them. Killed with SIGKILL while it copies, it goes on with the copy
// when it restarts, and in the end its topic log holds the same messages
// under the same IDs as the replica it replaced a peer of.
func TestReplicaKilledWhileCopyingItsHistoryFinishesTheCopyAfterARestart(t *testing.T) {
	bin := testutil.BuildApp(t, "github.com/sluicemq/sluice/apps/nsqd")
	lk := lookupdtest.Start(t, nil)
	ns := startNodes(t, bin, lk, 4, false, "--replica-timeout=2s", "--replica-compact-entries=50", "--retention-time=1h")
	dumpLogsOnFailure(t, ns)
	createReplicated(t, ns[0], "orders", 3)
	var members []*node
	var spare *node
	testutil.WaitFor(t, 20*time.Second, func() bool {
		members, spare = nil, nil
		for _, n := range ns {
			if _, ok := n.topicStats("orders"); ok {
				members = append(members, n)
			} else {
				spare = n
			}
		}
		return len(members) == 3 && spare != nil
	}, "3 nodes hold the topic")
	lead := waitLeader(t, members, "orders", 20*time.Second)
	if code, body, err := lead.post("/channel/create?topic=orders&channel=c"); err != nil || code != http.StatusOK {
		t.Fatalf("channel/create: %d %s %v", code, body, err)
	}

	// 40 MB of history, all of it consumed, so that every replica
	// compacts its Raft log.
	const batches, batch = 200, 200
	p := testutil.NewProducer(t, lead.tcpAddr, nil)
	pad := make([]byte, 1000)
	for i := range pad {
		pad[i] = 'a' + byte(i%26)
	}
	for b := range batches {
		bodies := make([][]byte, batch)
		for i := range bodies {
			bodies[i] = fmt.Appendf(nil, "m%06d-%s", b*batch+i, pad)
		}
		if err := p.MultiPublish("orders", bodies); err != nil {
			t.Fatalf("publish batch %d: %v", b, err)
		}
	}
	p.Stop()
	col := testutil.NewCollector()
	cons := lookupdConsumer(t, lk, "orders", "c", 500, col)
	testutil.WaitFor(t, 60*time.Second, func() bool { return len(col.Counts()) == batches*batch }, "all %d consumed", batches*batch)
	cons.Stop()
	<-cons.StopChan
	for _, m := range members {
		testutil.WaitFor(t, 30*time.Second, func() bool {
			snaps, _ := filepath.Glob(filepath.Join(m.dataPath, "replicated", "groups", "*", "*.snap"))
			return len(snaps) > 0
		}, "a snapshot on %s", m.name)
	}

	// Lose a member that does not lead; the spare replaces it, restores
	// the snapshot and starts copying. Kill it soon after the copy starts.
	lost := members[0]
	if lost == lead {
		lost = members[1]
	}
	lost.kill9(t)
	hist := filepath.Join(spare.dataPath, "durable", "orders.log", "history.json")
	testutil.WaitFor(t, 60*time.Second, func() bool {
		_, err := os.Stat(hist)
		return err == nil
	}, "%s restores the snapshot and starts copying its history", spare.name)
	time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
	spare.kill9(t)
	_, err := os.Stat(hist)
	interrupted := err == nil
	t.Logf("%s killed %s its history copy", spare.name, map[bool]string{true: "during", false: "after"}[interrupted])
	spare.start(t)
	testutil.WaitFor(t, 60*time.Second, func() bool {
		_, err := os.Stat(hist)
		return os.IsNotExist(err)
	}, "%s finishes copying its history after the restart", spare.name)

	// Compare the copy with a replica that was there all along.
	var keeper *node
	for _, m := range members {
		if m != lost {
			keeper = m
			break
		}
	}
	spare.stop(t)
	keeper.stop(t)
	want := readTopicLog(t, keeper, "orders")
	got := readTopicLog(t, spare, "orders")
	if len(want) != batches*batch {
		t.Fatalf("%s's log holds %d messages, want %d", keeper.name, len(want), batches*batch)
	}
	sameTopicLogs(t, keeper.name, want, spare.name, got)
}
