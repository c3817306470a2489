// Package crashtest kills real nsqd processes with SIGKILL at random points
// while producers and consumers run against a durable topic, restarts them
// on the same data, and checks what was delivered against a model:
// acknowledged ⊆ delivered, finished messages not redelivered, deferred
// messages not early, duplicates within the in-flight bound.
package crashtest

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBuilds()
	os.Exit(code)
}

// nsqdBinary builds apps/nsqd once per test binary.
func nsqdBinary(t *testing.T) string {
	return testutil.BuildApp(t, "github.com/sluicemq/sluice/apps/nsqd")
}

// node is an nsqd child process on fixed ports and a data path that
// outlive its restarts.
type node struct {
	t                 *testing.T
	bin, data         string
	tcpAddr, httpAddr string
	extra             []string
	cmd               *exec.Cmd
	exited            chan struct{}
	stderr            *lockedBuffer
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func newNode(t *testing.T, data string, extra ...string) *node {
	n := &node{t: t, bin: nsqdBinary(t), data: data, extra: extra,
		tcpAddr:  fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		httpAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
	}
	t.Cleanup(n.kill)
	return n
}

func (n *node) start() {
	n.t.Helper()
	args := append([]string{"--tcp-address=" + n.tcpAddr, "--http-address=" + n.httpAddr,
		"--https-address=", "--data-path=" + n.data, "--log-level=warn"}, n.extra...)
	n.cmd = exec.Command(n.bin, args...)
	n.stderr = &lockedBuffer{}
	n.cmd.Stderr = n.stderr
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		cmd.Wait()
		close(done)
	}(n.cmd, n.exited)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if r, err := http.Get("http://" + n.httpAddr + "/ping"); err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return
			}
		}
		select {
		case <-n.exited:
			n.t.Fatalf("nsqd exited at start: %s", n.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	n.t.Fatalf("nsqd did not answer /ping: %s", n.stderr.String())
}

// kill sends SIGKILL and waits for the process to be gone.
func (n *node) kill() {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	n.cmd.Process.Kill()
	<-n.exited
	n.cmd = nil
}

func (n *node) post(path string) {
	n.t.Helper()
	r, err := http.Post("http://"+n.httpAddr+path, "", nil)
	if err != nil {
		n.t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 200 {
		n.t.Fatalf("POST %s: %s", path, r.Status)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.b) < 1<<20 {
		l.b = append(l.b, p...)
	}
	return len(p), nil
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

// envInt reads an integer setting from the environment.
func envInt(t *testing.T, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return v
}

// v2 is a raw protocol connection for the crash test's clients.
type v2 struct {
	c  net.Conn
	r  *bufio.Reader
	mu sync.Mutex // serializes writes
}

func dial(addr string) (*v2, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write([]byte("  V2")); err != nil {
		c.Close()
		return nil, err
	}
	return &v2{c: c, r: bufio.NewReaderSize(c, 64<<10)}, nil
}

func (v *v2) send(b []byte) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := v.c.Write(b)
	return err
}
