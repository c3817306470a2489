package nsqd_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/nsqd"
)

// TestDiskWriteBufferDeliversAndKeepsMessages: with --disk-write-buffer and
// --mem-queue-size=0 every PUB goes through the channel's buffered disk
// queue: a go-nsq consumer gets each message once, and the messages
// published while it is away are all there after a clean restart, in
// go-diskqueue's files.
func TestDiskWriteBufferDeliversAndKeepsMessages(t *testing.T) {
	opts := func(o *nsqd.Options) {
		o.MemQueueSize = 0
		o.DiskWriteBuffer = 64 << 10
		o.SyncTimeout = time.Hour // only the write buffer's own timer and reads write records
	}
	h := testutil.StartNSQD(t, opts)
	createChannel(t, h, "wbuf", "c")
	p := testutil.NewProducer(t, h.TCPAddr, nil)
	col := testutil.NewCollector()
	cfg := testutil.NewConfig()
	cfg.MaxInFlight = 50
	cons := testutil.NewConsumer(t, h.TCPAddr, "wbuf", "c", cfg, col)
	const live, away = 500, 300
	for i := range live {
		if err := p.Publish("wbuf", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 10*time.Second, func() bool { return col.Len() >= live }, "every message delivered")
	// every FIN has landed before the consumer goes: a message still in
	// flight at its close would be requeued and counted on disk below
	testutil.WaitFor(t, 10*time.Second, func() bool {
		cs := channelStats(t, h, "wbuf", "c")
		return cs.InFlightCount == 0 && cs.Depth == 0
	}, "every delivered message finished")
	testutil.StopConsumer(t, cons)
	counts := col.Counts()
	for i := range live {
		if counts[strconv.Itoa(i)] != 1 {
			t.Fatalf("message %d delivered %d times", i, counts[strconv.Itoa(i)])
		}
	}
	for i := live; i < live+away; i++ {
		if err := p.Publish("wbuf", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	p.Stop()
	// all queued: with --mem-queue-size=0 on disk, but for one the channel
	// may already have read ahead (counted in depth, written back at exit)
	if !testutil.Eventually(5*time.Second, func() bool {
		cs := channelStats(t, h, "wbuf", "c")
		return cs.Depth == away && cs.BackendDepth >= away-1
	}) {
		cs := channelStats(t, h, "wbuf", "c")
		t.Fatalf("want %d messages queued on disk: depth %d, backend_depth %d, in flight %d, requeued %d",
			away, cs.Depth, cs.BackendDepth, cs.InFlightCount, cs.RequeueCount)
	}

	h = testutil.RestartNSQD(t, h)
	if cs := channelStats(t, h, "wbuf", "c"); cs.BackendDepth != away {
		t.Fatalf("after restart: backend_depth %d, want %d", cs.BackendDepth, away)
	}
	col = testutil.NewCollector()
	testutil.NewConsumer(t, h.TCPAddr, "wbuf", "c", cfg, col)
	testutil.WaitFor(t, 10*time.Second, func() bool { return col.Len() >= away }, "the messages published while away")
	counts = col.Counts()
	for i := live; i < live+away; i++ {
		if counts[strconv.Itoa(i)] != 1 {
			t.Fatalf("after restart: message %d delivered %d times", i, counts[strconv.Itoa(i)])
		}
	}
}
