package nsqd_test

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	diskqueue "github.com/nsqio/go-diskqueue"

	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/nsqd"
	"github.com/sluicemq/sluice/protocol"
)

// TestRestartOverGoDiskqueueFiles: an nsqd starts over a channel's disk
// queue written and partly read by go-diskqueue itself (the backend of
// NSQ and of earlier Sluice releases), with several rolled files and the
// read position in the middle of one; it reports the depth go-diskqueue
// left and delivers exactly the unread messages. Then, the other way
// round, what nsqd leaves on disk at exit is read back by go-diskqueue.
func TestRestartOverGoDiskqueueFiles(t *testing.T) {
	const total, readBefore, more = 600, 150, 300
	const maxBytes = 4096 // about 120 records a file: five files
	setOpts := func(o *nsqd.Options) {
		o.MemQueueSize = 0
		o.MaxBytesPerFile = maxBytes
	}
	h := testutil.StartNSQD(t, setOpts)
	createChannel(t, h, "legacy", "c")
	h.Exit() // nsqd.dat lists the channel; its queue is empty
	queue := "legacy:c"
	minSize := int32(protocol.MessageHeaderSize)
	maxSize := int32(h.Opts.MaxMsgSize) + minSize
	noLog := func(diskqueue.LogLevel, string, ...any) {}

	dq := diskqueue.New(queue, h.DataPath, maxBytes, minSize, maxSize, 2500, time.Second, noLog)
	now := time.Now().UnixNano()
	for i := range total {
		body := "read-by-go-diskqueue"
		if i >= readBefore {
			body = strconv.Itoa(i - readBefore)
		}
		id := protocol.NewMessageID(uint64(1000 + i))
		if err := dq.Put(protocol.AppendMessage(nil, now, 0, &id, []byte(body))); err != nil {
			t.Fatal(err)
		}
	}
	for range readBefore {
		<-dq.ReadChan()
	}
	if err := dq.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(h.DataPath, queue+".diskqueue.0*.dat"))
	if len(files) < 3 {
		t.Fatalf("go-diskqueue left %d data files, want several (the read position in a later file)", len(files))
	}

	h = testutil.RestartNSQD(t, h)
	if cs := channelStats(t, h, "legacy", "c"); cs == nil || cs.Depth != total-readBefore || cs.BackendDepth != total-readBefore {
		t.Fatalf("channel stats after the restart %+v, want depth and backend_depth %d", cs, total-readBefore)
	}
	got := newIndexedCounter(total - readBefore)
	cfg := testutil.NewConfig()
	cfg.MaxInFlight = 100
	consumer := testutil.NewConsumer(t, h.TCPAddr, "legacy", "c", cfg, got)
	testutil.WaitFor(t, 20*time.Second, func() bool { return got.total.Load() >= total-readBefore },
		"%d deliveries of go-diskqueue's records", total-readBefore)
	testutil.StopConsumer(t, consumer)
	got.check(t, "records written by go-diskqueue", 0)

	// and back: nsqd writes, go-diskqueue reads
	pub := testutil.DialV2(t, h.TCPAddr)
	for i := 0; i < more; i += 100 {
		pub.Send("MPUB legacy", testutil.MPUBBody(bodies("sluice-", i, 100)))
		pub.ExpectOK()
	}
	testutil.WaitFor(t, 10*time.Second, func() bool {
		cs := channelStats(t, h, "legacy", "c")
		return cs != nil && cs.BackendDepth == more
	}, "backend depth %d", more)
	h.Exit()
	dq = diskqueue.New(queue, h.DataPath, maxBytes, minSize, maxSize, 2500, time.Second, noLog)
	defer dq.Close()
	if d := dq.Depth(); d != more {
		t.Fatalf("go-diskqueue depth %d over nsqd's files, want %d", d, more)
	}
	for i := range more {
		var b []byte
		select {
		case b = <-dq.ReadChan():
		case <-time.After(10 * time.Second):
			t.Fatalf("go-diskqueue read %d of %d records", i, more)
		}
		m, err := testutil.DecodeMessage(b)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if want := "sluice-" + strconv.Itoa(i); string(m.Body) != want {
			t.Fatalf("record %d has body %q, want %q", i, m.Body, want)
		}
	}
	if _, err := os.Stat(filepath.Join(h.DataPath, queue+".diskqueue.meta.dat")); err != nil {
		t.Fatal(err)
	}
}
