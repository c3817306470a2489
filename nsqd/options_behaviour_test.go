package nsqd_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/nsqd"
)

// --max-bytes-per-file rolls the disk queue into numbered files, none over
// the limit, and a consumer still gets every message from them.
func TestMaxBytesPerFileRollsDiskQueue(t *testing.T) {
	h := testutil.StartNSQD(t, func(o *nsqd.Options) {
		o.MemQueueSize = 0
		o.MaxBytesPerFile = 1024
	})
	p := testutil.DialV2(t, h.TCPAddr)
	c := testutil.DialV2(t, h.TCPAddr)
	c.Identify(map[string]any{"heartbeat_interval": 5000})
	c.Subscribe("roll", "ch") // the channel exists before publishing
	const n = 100
	body := strings.Repeat("x", 90)
	for i := 0; i < n; i++ {
		p.Publish("roll", []byte(body))
	}
	files, _ := filepath.Glob(filepath.Join(h.DataPath, "roll:ch.diskqueue.*.dat"))
	var data []string
	for _, f := range files {
		if !strings.HasSuffix(f, ".meta.dat") {
			data = append(data, f)
		}
	}
	// 100 records of 4+26+90 bytes in 1 KiB files: at least 11 files
	if len(data) < 11 {
		t.Fatalf("%d data files for %d messages with --max-bytes-per-file=1024: %v", len(data), n, data)
	}
	for _, f := range data {
		if st, err := os.Stat(f); err == nil && st.Size() > 1024 {
			t.Errorf("%s is %d bytes, over --max-bytes-per-file", f, st.Size())
		}
	}
	c.Send("RDY 100", nil)
	for i := 0; i < n; i++ {
		m := c.ExpectMessage()
		c.Send("FIN "+string(m.ID[:]), nil)
	}
	c.ExpectNothing(200 * time.Millisecond)
	testutil.WaitFor(t, 5*time.Second, func() bool {
		ch := testutil.GetStats(t, h.HTTPAddr, "").Channel("roll", "ch")
		return ch != nil && ch.Depth == 0 && ch.InFlightCount == 0
	}, "channel drained")
}

// --statsd-exclude-ephemeral leaves out #ephemeral topics and channels, and
// --statsd-mem-stats=false leaves out the mem.* gauges.
func TestStatsdExcludeEphemeralAndMemStats(t *testing.T) {
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	h := testutil.StartNSQD(t, func(o *nsqd.Options) {
		o.StatsdAddress = udp.LocalAddr().String()
		o.StatsdInterval = time.Second
		o.StatsdExcludeEphemeral = true
		o.StatsdMemStats = false
	})
	p := testutil.DialV2(t, h.TCPAddr)
	p.Publish("durable", []byte("a"))
	p.Publish("fleeting#ephemeral", []byte("b"))
	var got strings.Builder
	buf := make([]byte, 65536)
	deadline := time.Now().Add(2500 * time.Millisecond)
	for time.Now().Before(deadline) {
		udp.SetReadDeadline(deadline)
		n, _, err := udp.ReadFrom(buf)
		if err != nil {
			break
		}
		got.Write(buf[:n])
	}
	s := got.String()
	if !strings.Contains(s, ".topic.durable.message_count:1|c") {
		t.Fatalf("no durable topic counter in:\n%s", s)
	}
	if strings.Contains(s, "ephemeral") {
		t.Errorf("ephemeral topic sent despite --statsd-exclude-ephemeral:\n%s", s)
	}
	if strings.Contains(s, ".mem.") {
		t.Errorf("mem stats sent despite --statsd-mem-stats=false:\n%s", s)
	}
}
