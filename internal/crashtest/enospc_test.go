package crashtest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicemq/sluice/protocol"
)

// mountTmpfs mounts a small tmpfs at a new directory (root only) and
// unmounts it when the test ends.
func mountTmpfs(t *testing.T, size string) string {
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("mount a %s tmpfs at %s (the full-disk test needs root, as in CI): %v: %s", size, dir, err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// request sends cmd and returns the frame answering it (heartbeats skipped).
func request(c *v2, cmd []byte) (protocol.FrameType, string, error) {
	if err := c.send(cmd); err != nil {
		return 0, "", err
	}
	for {
		c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		ft, data, err := protocol.ReadFrame(c.r)
		if err != nil {
			return 0, "", err
		}
		if ft == protocol.FrameTypeResponse && string(data) == "_heartbeat_" {
			c.send([]byte("NOP\n"))
			continue
		}
		return ft, string(data), nil
	}
}

func mpubCmd(bodies []string) []byte {
	var p []byte
	p = binary.BigEndian.AppendUint32(p, uint32(len(bodies)))
	for _, b := range bodies {
		p = binary.BigEndian.AppendUint32(p, uint32(len(b)))
		p = append(p, b...)
	}
	return putFrameCmd("MPUB "+topic, p)
}

// TestFullDiskFailsPublishesKeepsConnectionAndRecovers fills a tmpfs under
// a durable topic: publishes fail with E_PUB_FAILED / E_MPUB_FAILED naming
// the cause while the connection stays usable; once space is freed the
// same connection publishes again; after a kill -9 every acknowledged
// message is delivered.
func TestFullDiskFailsPublishesKeepsConnectionAndRecovers(t *testing.T) {
	dir := mountTmpfs(t, "16m")
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, 4<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	n := newNode(t, dir, "--durable", "--durable-segment-bytes=1048576")
	n.start()
	n.post("/topic/create?topic=" + topic)
	n.post("/channel/create?topic=" + topic + "&channel=" + channel)
	c, err := dial(n.tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.c.Close()
	pad := strings.Repeat("x", 1000)
	acked := map[string]bool{}
	var pubErr, mpubErr string
	for i := 0; pubErr == "" || mpubErr == ""; i++ {
		if i > 100000 {
			t.Fatal("the disk never filled")
		}
		var ft protocol.FrameType
		var data string
		var bodies []string
		if i%2 == 0 {
			bodies = []string{fmt.Sprintf("p%d-%s", i, pad)}
			ft, data, err = request(c, putFrameCmd("PUB "+topic, []byte(bodies[0])))
		} else {
			for k := range 10 {
				bodies = append(bodies, fmt.Sprintf("m%d-%d-%s", i, k, pad))
			}
			ft, data, err = request(c, mpubCmd(bodies))
		}
		if err != nil {
			t.Fatalf("connection failed on a full disk: %v", err)
		}
		switch {
		case ft == protocol.FrameTypeResponse && data == "OK":
			for _, b := range bodies {
				acked[b] = true
			}
		case ft == protocol.FrameTypeError && strings.HasPrefix(data, "E_PUB_FAILED"):
			pubErr = data
		case ft == protocol.FrameTypeError && strings.HasPrefix(data, "E_MPUB_FAILED"):
			mpubErr = data
		default:
			t.Fatalf("unexpected answer %d %q", ft, data)
		}
	}
	for _, e := range []string{pubErr, mpubErr} {
		if !strings.Contains(e, "no space left on device") {
			t.Fatalf("error does not name the cause: %q", e)
		}
	}
	t.Logf("%d messages acknowledged before the disk filled; errors: %q", len(acked), pubErr)
	// a topic created while the disk is full fails the same way
	big := strings.Repeat("b", 64<<10)
	for _, cmd := range [][]byte{putFrameCmd("PUB fresh", []byte(big)), mpubCmd([]string{big, big})} {
		ft, data, err := request(c, cmd)
		if err != nil || ft != protocol.FrameTypeError || !(strings.HasPrefix(data, "E_PUB_FAILED") || strings.HasPrefix(data, "E_MPUB_FAILED")) {
			t.Fatalf("publish to a new topic on a full disk: %d %q %v", ft, data, err)
		}
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		b := fmt.Sprintf("after-%d", i)
		ft, data, err := request(c, putFrameCmd("PUB "+topic, []byte(b)))
		if err != nil || ft != protocol.FrameTypeResponse || data != "OK" {
			t.Fatalf("publish on the same connection after space returned: %d %q %v", ft, data, err)
		}
		acked[b] = true
	}
	n.kill()
	n.start()
	expectDelivered(t, n, acked)
}

// TestDiskWriteBufferFullDiskFailsPublishes: NSQ's storage with
// --disk-write-buffer on a small tmpfs: single publishes (collected in
// the channel's buffer, their space reserved as they are acknowledged)
// and batches fill the disk; publishes then fail with NSQ's 503 (over
// HTTP: a failed TCP PUB closes the connection, as in NSQ) and /ping names
// the cause; after space returns, publishes succeed again,
// and after nsqd is stopped (SIGTERM) and started again, every
// acknowledged message is delivered.
func TestDiskWriteBufferFullDiskFailsPublishes(t *testing.T) {
	dir := mountTmpfs(t, "16m")
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, 4<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	n := newNode(t, dir, "--mem-queue-size=0", "--disk-write-buffer=65536", "--max-bytes-per-file=1048576")
	n.start()
	n.post("/topic/create?topic=" + topic)
	n.post("/channel/create?topic=" + topic + "&channel=" + channel)
	publish := func(path string, body string) (int, string) {
		r, err := http.Post("http://"+n.httpAddr+path+"?topic="+topic, "", strings.NewReader(body))
		if err != nil {
			t.Fatalf("POST %s on a full disk: %v", path, err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r.StatusCode, string(b)
	}
	pad := strings.Repeat("x", 1000)
	acked := map[string]bool{}
	var pubErr, mpubErr string
	for i := 0; pubErr == "" || mpubErr == ""; i++ {
		if i > 100000 {
			t.Fatal("the disk never filled")
		}
		var bodies []string
		var code int
		var answer string
		if i%4 != 3 {
			bodies = []string{fmt.Sprintf("p%d-%s", i, pad)}
			code, answer = publish("/pub", bodies[0])
		} else {
			for k := range 10 {
				bodies = append(bodies, fmt.Sprintf("m%d-%d-%s", i, k, pad))
			}
			code, answer = publish("/mpub", strings.Join(bodies, "\n"))
		}
		switch {
		case code == 200:
			for _, b := range bodies {
				acked[b] = true
			}
		case code == 503 && len(bodies) == 1:
			pubErr = answer
		case code == 503:
			mpubErr = answer
		default:
			t.Fatalf("unexpected answer %d %q", code, answer)
		}
	}
	ping := func() string {
		r, err := http.Get("http://" + n.httpAddr + "/ping")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return string(b)
	}
	if h := ping(); !strings.Contains(h, "no space left on device") {
		t.Fatalf("/ping on a full disk: %q, want the cause", h)
	}
	t.Logf("%d messages acknowledged before the disk filled; errors: %q, %q; /ping: %q", len(acked), pubErr, mpubErr, ping())
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		b := fmt.Sprintf("after-%d", i)
		if code, answer := publish("/pub", b); code != 200 {
			t.Fatalf("publish after space returned: %d %q", code, answer)
		}
		acked[b] = true
	}
	if h := ping(); h != "OK" {
		t.Fatalf("/ping after space returned: %q", h)
	}
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
		n.cmd = nil
	case <-time.After(30 * time.Second):
		t.Fatal("nsqd did not stop on SIGTERM")
	}
	n.start()
	expectDelivered(t, n, acked)
}

// TestUnreadableDataPathStopsStartWithOneLine: nsqd refuses to start when
// its durable folder cannot be read, with one clear line and a non-zero exit.
func TestUnreadableDataPathStopsStartWithOneLine(t *testing.T) {
	data := t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "durable"), []byte("not a folder"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := newNode(t, data, "--durable")
	cmd := exec.Command(n.bin, "--tcp-address="+n.tcpAddr, "--http-address="+n.httpAddr, "--https-address=", "--data-path="+data, "--durable")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("nsqd started on a broken data path: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	last := lines[len(lines)-1]
	if !strings.Contains(last, "durable") {
		t.Fatalf("start failure does not say what is wrong: %q", out)
	}
	t.Logf("start refused: %s", last)
}

// expectDelivered consumes from n until every acknowledged body has been
// delivered (for 30 s at most) and fails the test for each that was not.
func expectDelivered(t *testing.T, n *node, acked map[string]bool) {
	t.Helper()
	got := map[string]int{}
	m := newModel()
	m.life = 1
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- consume(n.tcpAddr, m, stop) }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		m.mu.Lock()
		for b, ts := range m.delivered {
			got[b] = len(ts)
		}
		m.mu.Unlock()
		if len(got) >= len(acked) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	if err := <-done; err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatal(err)
	}
	for b := range acked {
		if got[b] == 0 {
			t.Fatalf("acknowledged message %.20s... lost (%d of %d delivered)", b, len(got), len(acked))
		}
	}
}
