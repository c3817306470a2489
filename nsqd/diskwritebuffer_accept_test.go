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
	testutil.WaitFor(t, 5*time.Second, func() bool { return channelStats(t, h, "wbuf", "c").BackendDepth == away }, "messages on disk")

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
