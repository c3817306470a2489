package nsqd_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/nsqd"
)

// Durable PUB replies are written by the committer's side after the sync
// (see pubreply.go); these tests check what a client sees of that over
// real sockets.

// replyScript builds a pipeline of commands and the frames that must
// answer it, in order.
type replyScript struct {
	cmds bytes.Buffer
	want []string // "OK", or an error frame's code
	pubs []string // bodies of the durable PUBs, in order
}

func (s *replyScript) pub(topic, body string, durable bool) {
	s.cmds.Write(testutil.Command("PUB "+topic, []byte(body)))
	s.want = append(s.want, "OK")
	if durable {
		s.pubs = append(s.pubs, body)
	}
}

// finMarker is a FIN of an ID nothing holds: a soft error answered by the
// reader at once, which must come after the replies owed before it.
func (s *replyScript) finMarker() {
	s.cmds.Write(testutil.Command("FIN 0000000000000000", nil))
	s.want = append(s.want, "E_FIN_FAILED")
}

// readReplies reads n reply frames (heartbeats answered, messages
// skipped) and returns each as "OK" or its error text.
func readReplies(t *testing.T, c *testutil.V2Conn, n int) []string {
	t.Helper()
	var got []string
	for len(got) < n {
		f, err := c.ReadNonHeartbeat(20 * time.Second)
		if err != nil {
			t.Fatalf("after %d of %d replies: %v", len(got), n, err)
		}
		switch f.Type {
		case testutil.FrameTypeResponse:
			got = append(got, string(f.Data))
		case testutil.FrameTypeError:
			got = append(got, string(f.Data))
		}
	}
	return got
}

// A client pipelining many durable PUBs (more than a connection may have
// waiting for their sync), mixed with commands the reader answers itself
// (a non-durable PUB, a failing FIN) and DPUBs, gets every reply in the
// order of its commands, and the messages are stored in that order.
func TestDurablePipelinedPUBsAreAnsweredInOrder(t *testing.T) {
	h := testutil.StartNSQD(t, durableOpts)
	testutil.MustPost(t, h.URL("/topic/create?topic=mem&durable=false"), nil)
	createChannel(t, h, "dur", "c")
	p := testutil.DialV2(t, h.TCPAddr)
	p.Subscribe("side", "c") // FIN is valid (and fails) on a subscribed connection
	var s replyScript
	deferred := 0
	for i := range 600 {
		s.pub("dur", fmt.Sprintf("m%04d", i), true)
		if i%50 == 49 {
			s.finMarker()
			s.pub("mem", "x", false)
			s.cmds.Write(testutil.Command("DPUB dur 10", []byte(fmt.Sprintf("d%04d", i))))
			s.want = append(s.want, "OK")
			deferred++
			s.cmds.WriteString("NOP\n") // no reply
		}
	}
	p.Write(s.cmds.Bytes())
	got := readReplies(t, p, len(s.want))
	for i, w := range s.want {
		if w == "OK" && got[i] != "OK" || w != "OK" && !strings.HasPrefix(got[i], w+" ") {
			t.Fatalf("reply %d is %q, want %s (replies %d-%d: %q)", i, got[i], w, max(i-3, 0), i, got[max(i-3, 0):i+1])
		}
	}
	p.ExpectNothing(50 * time.Millisecond)

	bodies := consumeN(t, h.TCPAddr, "dur", "c", len(s.pubs)+deferred)
	var pubs []string
	for _, b := range bodies {
		if strings.HasPrefix(b, "m") {
			pubs = append(pubs, b)
		}
	}
	if strings.Join(pubs, ",") != strings.Join(s.pubs, ",") {
		t.Fatalf("stored %d PUBs, first %q; want %d in order", len(pubs), pubs[:min(5, len(pubs))], len(s.pubs))
	}
	if ts := topicStats(t, h, "dur"); ts == nil || ts.MessageCount != uint64(len(s.pubs)+deferred) {
		t.Fatalf("dur stats %+v, want message_count %d", ts, len(s.pubs)+deferred)
	}
}

// A connection that consumes the durable topic it publishes to gets its
// messages interleaved with its OKs (the pump writes on the same socket)
// and every OK once.
func TestDurablePublishingConsumerGetsEveryOKAndMessage(t *testing.T) {
	h := testutil.StartNSQD(t, durableOpts)
	c := testutil.DialV2(t, h.TCPAddr)
	c.Subscribe("loop", "c")
	c.Ready(2500)
	const n = 1000
	var cmds bytes.Buffer
	for i := range n {
		cmds.Write(testutil.Command("PUB loop", []byte(fmt.Sprintf("m%04d", i))))
	}
	c.Write(cmds.Bytes())
	oks, msgs := 0, 0
	var fins bytes.Buffer
	for oks < n || msgs < n {
		f, err := c.ReadNonHeartbeat(20 * time.Second)
		if err != nil {
			t.Fatalf("after %d OKs and %d messages: %v", oks, msgs, err)
		}
		switch {
		case f.Type == testutil.FrameTypeResponse && string(f.Data) == "OK":
			oks++
		case f.Type == testutil.FrameTypeMessage:
			m, err := testutil.DecodeMessage(f.Data)
			if err != nil {
				t.Fatal(err)
			}
			msgs++
			fins.Write(testutil.Command("FIN "+string(m.ID[:]), nil))
			if msgs%100 == 0 || msgs == n {
				c.Write(fins.Bytes())
				fins.Reset()
			}
		default:
			t.Fatalf("unexpected frame %v", f)
		}
		if oks > n || msgs > n {
			t.Fatalf("%d OKs and %d messages for %d PUBs", oks, msgs, n)
		}
	}
	c.ExpectNothing(50 * time.Millisecond)
}

// mountTmpfs mounts a small tmpfs (root only, as in CI) and unmounts it
// when the test ends.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("mount a %s tmpfs at %s (needs root, as in CI): %v: %s", size, dir, err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// Durable PUBs whose commit fails (a full disk) are answered E_PUB_FAILED
// (E_DPUB_FAILED) in the order of the commands, around the replies the
// reader gives itself; the connection stays usable, and once space is
// back the same connection's publishes succeed, every acknowledged
// message stored.
func TestDurablePUBsFailingToCommitAreAnsweredInOrder(t *testing.T) {
	dir := mountTmpfs(t, "8m")
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, 7<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	h := testutil.StartNSQDAt(t, data, func(o *nsqd.Options) { o.Durable = true; o.DurableSegmentBytes = 256 << 10 })
	createChannel(t, h, "full", "c")
	p := testutil.DialV2(t, h.TCPAddr)
	p.Subscribe("side", "c")
	pad := strings.Repeat("x", 2000)
	var s replyScript
	for i := range 800 { // 1.6 MB: more than the disk has left
		s.pub("full", fmt.Sprintf("m%04d%s", i, pad), true)
		if i%40 == 39 {
			s.finMarker()
			s.cmds.Write(testutil.Command("DPUB full 10", []byte(fmt.Sprintf("d%04d%s", i, pad))))
			s.want = append(s.want, "DPUB")
		}
	}
	p.Write(s.cmds.Bytes())
	got := readReplies(t, p, len(s.want))
	acked := map[string]bool{}
	failed := 0
	pubIdx := 0
	for i, w := range s.want {
		g := got[i]
		switch w {
		case "E_FIN_FAILED":
			if !strings.HasPrefix(g, "E_FIN_FAILED ") {
				t.Fatalf("reply %d is %.80q, want E_FIN_FAILED", i, g)
			}
		case "DPUB":
			if g != "OK" && !strings.HasPrefix(g, "E_DPUB_FAILED DPUB failed: durable write failed: ") {
				t.Fatalf("reply %d is %.80q, want OK or E_DPUB_FAILED", i, g)
			}
		default:
			switch {
			case g == "OK":
				acked[s.pubs[pubIdx]] = true
			case strings.HasPrefix(g, "E_PUB_FAILED PUB failed: durable write failed: "):
				failed++
			default:
				t.Fatalf("reply %d is %.80q, want OK or E_PUB_FAILED", i, g)
			}
			pubIdx++
		}
	}
	if failed == 0 || len(acked) == 0 {
		t.Fatalf("%d PUBs acknowledged and %d failed: the disk did not fill up in the middle", len(acked), failed)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	last := "after" + pad
	deadline := time.Now().Add(20 * time.Second)
	for { // the same connection publishes again once the disk has room
		p.Send("PUB full", []byte(last))
		f := p.MustFrame()
		if f.Type == testutil.FrameTypeResponse && string(f.Data) == "OK" {
			acked[last] = true
			break
		}
		if f.Type != testutil.FrameTypeError || !strings.HasPrefix(string(f.Data), "E_PUB_FAILED ") || time.Now().After(deadline) {
			t.Fatalf("publish after freeing space: %v", f)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// every acknowledged message is delivered
	c := testutil.DialV2(t, h.TCPAddr)
	c.Subscribe("full", "c")
	c.Ready(100)
	for len(acked) > 0 {
		f, err := c.ReadNonHeartbeat(10 * time.Second)
		if err != nil {
			t.Fatalf("%d acknowledged messages not delivered: %v", len(acked), err)
		}
		if f.Type != testutil.FrameTypeMessage {
			t.Fatalf("unexpected frame %v", f)
		}
		m, err := testutil.DecodeMessage(f.Data)
		if err != nil {
			t.Fatal(err)
		}
		delete(acked, string(m.Body))
		c.Finish(string(m.ID[:]))
	}
}

// Clients that vanish with durable replies pending (closing right after
// pipelining PUBs, or resetting the connection) cost the daemon nothing:
// every PUB read before the close is committed, the connections go, other
// clients are served, and the daemon exits and restarts with the messages.
func TestDurableClientVanishingWithRepliesPending(t *testing.T) {
	h := testutil.StartNSQD(t, durableOpts)
	createChannel(t, h, "gone", "c")
	createChannel(t, h, "reset", "c")
	const conns, pubs = 16, 50
	pipeline := func(topic string) []byte {
		var b []byte
		for i := range pubs {
			b = append(b, testutil.Command("PUB "+topic, []byte(fmt.Sprintf("m%d", i)))...)
		}
		return b
	}
	// each connection is known to the daemon (its IDENTIFY answered)
	// before it pipelines its PUBs and goes
	dial := func() *testutil.V2Conn {
		c := testutil.DialV2(t, h.TCPAddr)
		c.Identify(map[string]any{"client_id": "vanishing"})
		return c
	}
	for i := range conns {
		c := dial()
		c.Write(pipeline("gone"))
		c.Close() // graceful: the daemon reads every PUB, then EOF
		r := dial()
		r.Write(pipeline("reset"))
		if i%2 == 0 {
			time.Sleep(time.Millisecond) // some resets land while replies are being written
		}
		r.Conn.(*net.TCPConn).SetLinger(0)
		r.Close() // reset: unread PUBs are lost, read ones are committed
	}
	p := testutil.DialV2(t, h.TCPAddr)
	p.Publish("gone", []byte("live"))
	deadline := time.Now().Add(20 * time.Second)
	for {
		s := testutil.GetStats(t, h.HTTPAddr, "")
		if len(s.Producers) == 1 {
			// a connection is gone only once what it published is
			// committed (and counted)
			if ts := s.Topic("gone"); ts == nil || ts.MessageCount != conns*pubs+1 {
				t.Fatalf("gone: %+v once its producers are gone, want message_count %d", ts, conns*pubs+1)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d producers listed, want only the live one", len(s.Producers))
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.Close()
	h = testutil.RestartNSQD(t, h)
	if d := channelStats(t, h, "gone", "c").Depth; d != conns*pubs+1 {
		t.Fatalf("gone:c holds %d messages after the restart, want %d", d, conns*pubs+1)
	}
	if d := channelStats(t, h, "reset", "c").Depth; d > conns*pubs {
		t.Fatalf("reset:c holds %d messages, more than were sent", d)
	}
}
