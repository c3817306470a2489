package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"
	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/internal/toolstest"
)

// proc is a running sluice binary.
type proc struct {
	cmd    *exec.Cmd
	addrs  map[string]string // "nsqd.tcp", "nsqd.http", "nsqlookupd.http", "nsqadmin.http", ...
	stderr *toolstest.Buffer
	done   chan error
}

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "sluice")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startSluice starts the binary on ephemeral ports and waits for its
// "ready" line. The process is killed at the end of the test if still
// running.
func startSluice(t *testing.T, bin, dataPath string, extra ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--data-path", dataPath,
		"--nsqd-tcp-address", "127.0.0.1:0", "--nsqd-http-address", "127.0.0.1:0",
		"--nsqlookupd-tcp-address", "127.0.0.1:0", "--nsqlookupd-http-address", "127.0.0.1:0",
		"--nsqadmin-http-address", "127.0.0.1:0"}, extra...)...)
	p := &proc{cmd: cmd, addrs: map[string]string{}, stderr: &toolstest.Buffer{}, done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.done != nil {
			cmd.Process.Kill()
			<-p.done
		}
	})
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) > 1 && strings.HasPrefix(f[0], "ns") {
				for _, kv := range f[1:] {
					k, v, _ := strings.Cut(kv, "=")
					p.addrs[f[0]+"."+k] = v
				}
			}
			if strings.HasPrefix(sc.Text(), "sluice ready") {
				ready <- nil
				break
			}
		}
		io.Copy(io.Discard, stdout) // until the process exits
		ready <- errors.New("stdout closed before ready")
	}()
	go func() { p.done <- cmd.Wait() }()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("%v; stderr:\n%s", err, p.stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("sluice not ready within 20s; stderr:\n%s", p.stderr.String())
	}
	return p
}

// interrupt sends SIGINT and waits for a clean exit.
func (p *proc) interrupt(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.done = nil
		if err != nil {
			t.Fatalf("sluice exited with %v; stderr:\n%s", err, p.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("sluice did not exit within 30s of SIGINT")
	}
	// No process left behind: the pid is gone (reaped by Wait).
	if err := syscall.Kill(p.cmd.Process.Pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("process %d still exists after exit: %v", p.cmd.Process.Pid, err)
	}
}

type collector struct{ got chan string }

func (c collector) HandleMessage(m *nsq.Message) error {
	c.got <- string(m.Body)
	return nil
}

// receive consumes topic/channel (through lookupd when lookupdHTTP is set,
// else directly) until n messages arrived, then stops the consumer.
func receive(t *testing.T, nsqdTCP, lookupdHTTP, topic, channel string, n int) []string {
	t.Helper()
	cfg := nsq.NewConfig()
	cfg.LookupdPollInterval = 200 * time.Millisecond
	c, err := nsq.NewConsumer(topic, channel, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetLogger(nil, nsq.LogLevelError)
	col := collector{got: make(chan string, n+100)}
	c.AddHandler(col)
	if lookupdHTTP != "" {
		err = c.ConnectToNSQLookupd(lookupdHTTP)
	} else {
		err = c.ConnectToNSQD(nsqdTCP)
	}
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	deadline := time.After(20 * time.Second)
	for len(got) < n {
		select {
		case b := <-col.got:
			got = append(got, b)
		case <-deadline:
			t.Fatalf("received %d of %d messages", len(got), n)
		}
	}
	c.Stop()
	<-c.StopChan
	if extra := len(col.got); extra != 0 {
		t.Fatalf("%d messages more than the %d expected", extra, n)
	}
	sort.Strings(got)
	return got
}

func bodies(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	sort.Strings(out)
	return out
}

// The one-command cluster: producer and consumer (discovering nsqd through
// the embedded lookupd) exchange messages; nsqadmin answers; SIGINT exits
// cleanly with nothing left running, and what was queued is delivered after
// a restart.
func TestClusterExchangeAndRestart(t *testing.T) {
	bin := buildBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	p := startSluice(t, bin, data)

	prod, err := nsq.NewProducer(p.addrs["nsqd.tcp"], nsq.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	prod.SetLogger(nil, nsq.LogLevelError)
	defer prod.Stop()
	first := bodies("first", 20)
	for _, b := range first {
		if err := prod.Publish("laptop", []byte(b)); err != nil {
			t.Fatal(err)
		}
	}
	if got := receive(t, "", p.addrs["nsqlookupd.http"], "laptop", "c", 20); strings.Join(got, ",") != strings.Join(first, ",") {
		t.Fatalf("received %v", got)
	}
	resp, err := http.Get("http://" + p.addrs["nsqadmin.http"] + "/")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("nsqadmin GET /: %v %v", resp, err)
	}
	resp.Body.Close()

	// Queue messages with no consumer, then interrupt.
	queued := bodies("queued", 25)
	for _, b := range queued {
		if err := prod.Publish("laptop", []byte(b)); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 10*time.Second, func() bool {
		ch := testutil.GetStats(t, p.addrs["nsqd.http"], "&topic=laptop").Channel("laptop", "c")
		return ch != nil && ch.Depth == 25
	}, "25 messages queued in laptop/c")
	prod.Stop()
	p.interrupt(t)

	p2 := startSluice(t, bin, data)
	if got := receive(t, p2.addrs["nsqd.tcp"], "", "laptop", "c", 25); strings.Join(got, ",") != strings.Join(queued, ",") {
		t.Fatalf("after restart received %v", got)
	}
	p2.interrupt(t)
}

// With --durable, what was published survives kill -9 of the whole process.
func TestDurableLaptopClusterSurvivesKill9(t *testing.T) {
	bin := buildBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	p := startSluice(t, bin, data, "--durable")
	prod, err := nsq.NewProducer(p.addrs["nsqd.tcp"], nsq.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	prod.SetLogger(nil, nsq.LogLevelError)
	want := bodies("kept", 30)
	for _, b := range want {
		if err := prod.Publish("ledger", []byte(b)); err != nil {
			t.Fatal(err)
		}
	}
	prod.Stop()
	p.cmd.Process.Kill()
	<-p.done
	p.done = nil
	p2 := startSluice(t, bin, data, "--durable")
	if got := receive(t, p2.addrs["nsqd.tcp"], "", "ledger", "c", 30); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("after kill -9 received %v", got)
	}
	p2.interrupt(t)
}

func TestBadFlags(t *testing.T) {
	var out, errb strings.Builder
	if code := run(t.Context(), []string{"--nsqd-tcp-address", "256.0.0.1:1", "--data-path", t.TempDir(),
		"--nsqlookupd-tcp-address", "127.0.0.1:0", "--nsqlookupd-http-address", "127.0.0.1:0"}, nil, &out, &errb); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	lines := strings.Split(strings.TrimRight(errb.String(), "\n"), "\n")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "sluice: nsqd: ") {
		t.Errorf("last stderr line %q", last)
	}
}

func TestNodesRunsALocalClusterThatReplicatesATopic(t *testing.T) {
	bin := buildBinary(t)
	p := startSluice(t, bin, t.TempDir(), "--nodes=3")
	for i := 0; i < 3; i++ {
		if p.addrs[fmt.Sprintf("nsqd-%d.tcp", i)] == "" {
			t.Fatalf("no address of nsqd-%d in the output: %v", i, p.addrs)
		}
	}
	testutil.MustPost(t, "http://"+p.addrs["nsqd-0.http"]+"/topic/create?topic=orders&replicas=3", nil)
	prod := testutil.NewProducer(t, p.addrs["nsqd-2.tcp"], nil)
	for i := range 10 {
		if err := prod.Publish("orders", fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatalf("publish to a replica: %v", err)
		}
	}
	for i := 0; i < 3; i++ {
		addr := p.addrs[fmt.Sprintf("nsqd-%d.http", i)]
		testutil.WaitFor(t, 10*time.Second, func() bool {
			resp, err := http.Get("http://" + addr + "/stats?format=json&topic=orders")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return strings.Contains(string(b), `"replicas":3`) && strings.Contains(string(b), `"message_count":10`)
		}, "nsqd-%d holds the replicated topic's 10 messages", i)
	}
}
