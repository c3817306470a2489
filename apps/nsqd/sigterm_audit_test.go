package main

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/testutil"
)

// auditNSQD is the apps/nsqd binary running as a child process.
type auditNSQD struct {
	cmd      *exec.Cmd
	tcpAddr  string
	httpAddr string
	done     chan error
}

func auditStartNSQD(t *testing.T, bin, dataPath string) *auditNSQD {
	t.Helper()
	ports := testutil.FreePorts(t, 2)
	p := &auditNSQD{
		tcpAddr:  "127.0.0.1:" + strconv.Itoa(ports[0]),
		httpAddr: "127.0.0.1:" + strconv.Itoa(ports[1]),
		done:     make(chan error, 1),
	}
	p.cmd = exec.Command(bin, "--tcp-address="+p.tcpAddr, "--http-address="+p.httpAddr, "--data-path="+dataPath, "--log-level=warn")
	if os.Getenv(testutil.LogEnv) != "" {
		p.cmd.Stderr = os.Stderr
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	testutil.WaitFor(t, 20*time.Second, func() bool {
		r, err := http.Get("http://" + p.httpAddr + "/ping")
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == http.StatusOK
	}, "nsqd child process answers /ping")
	return p
}

// TestAuditSIGTERMWithQueuedAndInFlight: the nsqd binary gets a real SIGTERM
// with 50,000 messages queued and 500 in flight; it exits 0, and the binary
// restarted on the same --data-path delivers every message exactly once more,
// the 500 that were in flight with attempts >= 2.
func TestAuditSIGTERMWithQueuedAndInFlight(t *testing.T) {
	const queued, inFlight = 50_000, 500
	const n = queued + inFlight
	bin := filepath.Join(t.TempDir(), "nsqd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	data := t.TempDir()
	p := auditStartNSQD(t, bin, data)
	testutil.MustPost(t, "http://"+p.httpAddr+"/topic/create?topic=sigterm", nil)
	testutil.MustPost(t, "http://"+p.httpAddr+"/channel/create?topic=sigterm&channel=c", nil)

	prod := testutil.NewProducer(t, p.tcpAddr, nil)
	for i := 0; i < n; i += 500 {
		batch := make([][]byte, 0, 500)
		for j := i; j < i+500; j++ {
			batch = append(batch, []byte(strconv.Itoa(j)))
		}
		if err := prod.MultiPublish("sigterm", batch); err != nil {
			t.Fatalf("MPUB: %v", err)
		}
	}
	prod.Stop()

	c := testutil.DialV2(t, p.tcpAddr)
	c.Identify(map[string]any{"client_id": "holder"})
	c.Subscribe("sigterm", "c")
	c.Ready(inFlight)
	held := make(map[string]bool, inFlight)
	for range inFlight {
		m := c.ExpectMessage()
		if m.Attempts != 1 {
			t.Fatalf("first delivery of %q has attempts %d", m.Body, m.Attempts)
		}
		held[string(m.Body)] = true
	}
	testutil.WaitFor(t, 10*time.Second, func() bool {
		ch := testutil.GetStats(t, p.httpAddr, "&topic=sigterm").Channel("sigterm", "c")
		return ch != nil && ch.InFlightCount == inFlight && ch.Depth == queued
	}, "%d in flight and %d queued", inFlight, queued)

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.done <- err // for Cleanup
		if err != nil {
			t.Fatalf("nsqd exit after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("nsqd did not exit within 30s of SIGTERM")
	}
	c.Close()

	p2 := auditStartNSQD(t, bin, data)
	testutil.WaitFor(t, 10*time.Second, func() bool {
		ch := testutil.GetStats(t, p2.httpAddr, "&topic=sigterm").Channel("sigterm", "c")
		return ch != nil && ch.Depth == n
	}, "channel depth %d after restart", n)

	col := testutil.NewCollector()
	cfg := testutil.NewConfig()
	cfg.MaxInFlight = 1000
	cons := testutil.NewConsumer(t, p2.tcpAddr, "sigterm", "c", cfg, col)
	testutil.WaitFor(t, 60*time.Second, func() bool { return col.Len() >= n }, "%d deliveries after restart", n)
	testutil.StopConsumer(t, cons)
	if got := col.Len(); got != n {
		t.Fatalf("%d deliveries after restart, want exactly %d", got, n)
	}
	counts := col.Counts()
	for i := range n {
		if k := counts[strconv.Itoa(i)]; k != 1 {
			t.Fatalf("message %d delivered %d times after restart, want 1", i, k)
		}
	}
	redelivered := 0
	for _, d := range col.Deliveries() {
		if d.Attempts >= 2 {
			redelivered++
			if !held[d.Body] {
				t.Errorf("message %s has attempts %d but was not in flight at SIGTERM", d.Body, d.Attempts)
			}
		} else if held[d.Body] {
			t.Errorf("message %s was in flight at SIGTERM but came back with attempts %d", d.Body, d.Attempts)
		}
	}
	if redelivered != inFlight {
		t.Fatalf("%d deliveries with attempts >= 2, want %d", redelivered, inFlight)
	}
}
