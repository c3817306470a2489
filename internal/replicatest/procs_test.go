package replicatest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"

	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/lookupd"
	"github.com/sluicemq/sluice/replica"
)

// Helpers of the tests that run nsqd as child processes (chaos_test.go):
// a node with fixed ports and data path that can be killed, frozen and
// restarted as the same node, and a TCP proxy in front of it that can cut
// it off.

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBuilds()
	os.Exit(code)
}

// node is one nsqd child process. Its ports, data path and arguments never
// change, so a restarted process is the same node (its identity is its
// broadcast_address:tcp_port).
type node struct {
	name     string
	bin      string
	args     []string
	tcpAddr  string // the real TCP listener (producers use it)
	httpAddr string
	// ident is broadcast_address:broadcast_tcp_port: the node's identity,
	// what /stats names as leader (the proxy's address when behind one).
	ident   string
	id      uint64 // replica.NodeID(ident)
	logPath string
	proxy   *proxy // nil when the node is not behind one
	// dataPath is the node's --data-path.
	dataPath string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
	frozen bool
	starts int
	// exits records how every process of this node ended, for the report.
	exits []string
}

// nodeSpec describes a node to start.
type nodeSpec struct {
	name    string
	lookupd string // nsqlookupd TCP address
	proxied bool
	extra   []string
}

// newNode prepares a node (ports, data path, proxy) without starting it.
func newNode(t *testing.T, bin string, spec nodeSpec) *node {
	t.Helper()
	ports := testutil.FreePorts(t, 3)
	tcpPort, httpPort, proxyPort := ports[0], ports[1], ports[2]
	dir := t.TempDir()
	n := &node{
		name:     spec.name,
		bin:      bin,
		tcpAddr:  "127.0.0.1:" + strconv.Itoa(tcpPort),
		httpAddr: "127.0.0.1:" + strconv.Itoa(httpPort),
		ident:    "127.0.0.1:" + strconv.Itoa(tcpPort),
		logPath:  filepath.Join(dir, spec.name+".log"),
		dataPath: filepath.Join(dir, "data"),
	}
	if keep := os.Getenv("SLUICE_CHAOS_LOGS"); keep != "" {
		// Kept after the test, e.g. to read a passing run's warnings.
		if err := os.MkdirAll(keep, 0o755); err != nil {
			t.Fatal(err)
		}
		n.logPath = filepath.Join(keep, t.Name()+"-"+spec.name+".log")
	}
	n.args = []string{
		"--tcp-address=" + n.tcpAddr,
		"--http-address=" + n.httpAddr,
		"--broadcast-address=127.0.0.1",
		"--data-path=" + filepath.Join(dir, "data"),
		"--lookupd-tcp-address=" + spec.lookupd,
		"--log-level=warn",
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	if spec.proxied {
		p, err := startProxy("127.0.0.1:"+strconv.Itoa(proxyPort), n.tcpAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.close)
		n.proxy = p
		n.ident = p.addr
		n.args = append(n.args, "--broadcast-tcp-port="+strconv.Itoa(proxyPort))
	}
	n.args = append(n.args, spec.extra...)
	n.id = replica.NodeID(n.ident)
	// Registered after the data path's own cleanup, so it runs first: no
	// process is left writing in a folder being removed.
	t.Cleanup(n.cleanup)
	return n
}

// start starts the node's process and waits until its HTTP port answers.
func (n *node) start(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	n.mu.Lock()
	n.starts++
	fmt.Fprintf(f, "==== test: start #%d of %s at %s: %s %s\n", n.starts, n.name,
		time.Now().Format(time.RFC3339Nano), n.bin, strings.Join(n.args, " "))
	cmd := exec.Command(n.bin, n.args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		n.mu.Unlock()
		f.Close()
		t.Fatalf("start %s: %v", n.name, err)
	}
	exited := make(chan struct{})
	n.cmd, n.exited, n.frozen = cmd, exited, false
	n.mu.Unlock()
	go func() {
		err := cmd.Wait()
		f.Close()
		n.mu.Lock()
		n.exits = append(n.exits, fmt.Sprintf("pid %d: %v", cmd.Process.Pid, errOrOK(err)))
		n.mu.Unlock()
		close(exited)
	}()
	if !testutil.Eventually(20*time.Second, func() bool {
		select {
		case <-exited:
			return true
		default:
		}
		return n.ping()
	}) || !n.running() {
		t.Fatalf("%s did not start (exits %v); its log:\n%s", n.name, n.exitList(), n.tail(40))
	}
}

func errOrOK(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}

// running reports whether the node's process is alive (frozen or not).
func (n *node) running() bool {
	n.mu.Lock()
	ch := n.exited
	n.mu.Unlock()
	if ch == nil {
		return false
	}
	select {
	case <-ch:
		return false
	default:
		return true
	}
}

func (n *node) exitList() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.exits...)
}

// kill9 kills the node's process with SIGKILL and waits for it.
func (n *node) kill9(t *testing.T) {
	t.Helper()
	n.signalAndWait(t, syscall.SIGKILL, 10*time.Second)
}

// stop sends SIGTERM (the node exits cleanly, syncing its logs) and
// waits for the process.
func (n *node) stop(t *testing.T) {
	t.Helper()
	n.signalAndWait(t, syscall.SIGTERM, 30*time.Second)
}

// signalAndWait sends sig to the node's process (thawing it first) and
// waits up to timeout for it to exit.
func (n *node) signalAndWait(t *testing.T, sig syscall.Signal, timeout time.Duration) {
	t.Helper()
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	if sig != syscall.SIGKILL {
		cmd.Process.Signal(syscall.SIGCONT)
	}
	if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("%v to %s: %v", sig, n.name, err)
	}
	select {
	case <-exited:
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %v of %v", n.name, timeout, sig)
	}
}

// freeze sends SIGSTOP; thaw sends SIGCONT.
func (n *node) freeze(t *testing.T) { n.signal(t, syscall.SIGSTOP, true) }
func (n *node) thaw(t *testing.T)   { n.signal(t, syscall.SIGCONT, false) }

func (n *node) signal(t *testing.T, sig syscall.Signal, frozen bool) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return
	}
	if err := n.cmd.Process.Signal(sig); err != nil {
		t.Errorf("%v to %s: %v", sig, n.name, err)
		return
	}
	n.frozen = frozen
}

// cleanup kills the process (thawing it first) when the test ends.
func (n *node) cleanup() {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-exited:
		return
	default:
	}
	cmd.Process.Signal(syscall.SIGCONT)
	cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
	}
}

// httpClient bounds the reads of /ping and /stats: a frozen node never
// answers. postClient waits longer: /topic/create and /channel/create wait
// for the cluster (the first /topic/create forms its meta group, which
// takes seconds; a request given up midway leaves reservations that delay
// the next attempt).
var (
	httpClient = &http.Client{Timeout: 2 * time.Second}
	postClient = &http.Client{Timeout: 40 * time.Second}
)

func (n *node) ping() bool {
	resp, err := httpClient.Get("http://" + n.httpAddr + "/ping")
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// post sends a POST to the node's HTTP API and returns the status and body.
func (n *node) post(pathAndQuery string) (int, string, error) {
	resp, err := postClient.Post("http://"+n.httpAddr+pathAndQuery, "", nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// topicStats returns the node's /stats object of topic.
func (n *node) topicStats(topic string) (topicStats, bool) {
	resp, err := httpClient.Get("http://" + n.httpAddr + "/stats?format=json&topic=" + topic)
	if err != nil {
		return topicStats{}, false
	}
	defer resp.Body.Close()
	var body struct {
		Topics []topicStats `json:"topics"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return topicStats{}, false
	}
	for _, ts := range body.Topics {
		if ts.TopicName == topic {
			return ts, true
		}
	}
	return topicStats{}, false
}

// leaderSeen returns the leader the node reports for topic ("" if none or
// unreachable).
func (n *node) leaderSeen(topic string) string {
	ts, ok := n.topicStats(topic)
	if !ok || ts.Leader == nil {
		return ""
	}
	return *ts.Leader
}

// tail returns the last lines of the node's log (every process it ran).
func (n *node) tail(lines int) string {
	b, err := os.ReadFile(n.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = append([]string{fmt.Sprintf("... (%d lines before)", len(all)-lines)}, all[len(all)-lines:]...)
	}
	return strings.Join(all, "\n")
}

// logScan counts the lines of the node's log that mention an error level,
// and returns the lines that show a crash (panic, fatal error, data race).
func (n *node) logScan() (errorLines int, crashes []string) {
	f, err := os.Open(n.logPath)
	if err != nil {
		return 0, nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if bytes.Contains(line, []byte("level=ERROR")) {
			errorLines++
		}
		if bytes.HasPrefix(line, []byte("panic:")) || bytes.HasPrefix(line, []byte("fatal error:")) ||
			bytes.Contains(line, []byte("WARNING: DATA RACE")) {
			crashes = append(crashes, string(line))
		}
	}
	return errorLines, crashes
}

// proxy is a TCP proxy in front of a node: what connects to addr is piped
// to target. cut closes every piped connection and closes new ones at once
// until restore: the node is cut off from everything that reaches it
// through the proxy (its peers' replication traffic and its consumers).
// block does the same for the replication connections ("  R1") dialled by
// one node only, recognised by the sender's ID in their hello frame.
type proxy struct {
	addr   string
	target string
	ln     net.Listener

	mu      sync.Mutex
	cutOff  bool
	closed  bool
	blocked map[uint64]bool
	conns   map[*piped]struct{}
	wg      sync.WaitGroup
}

// piped is one connection through the proxy; from is the node ID of the
// sender of an R1 connection (0 for any other).
type piped struct {
	in, out net.Conn
	from    uint64
}

func (pc *piped) close() {
	pc.in.Close()
	pc.out.Close()
}

func startProxy(addr, target string) (*proxy, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	p := &proxy{addr: addr, target: target, ln: ln, blocked: make(map[uint64]bool), conns: make(map[*piped]struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := p.cutOff || p.closed
		p.mu.Unlock()
		if refuse {
			c.Close()
			continue
		}
		p.wg.Add(1)
		go p.pipe(c)
	}
}

// peek reads the start of a connection: the magic, and for an R1
// connection its hello's sender ID. It returns the bytes read.
func peek(c net.Conn) ([]byte, uint64) {
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	head := make([]byte, 4, 24)
	if n, err := io.ReadFull(c, head); err != nil {
		return head[:n], 0
	}
	if string(head) != "  R1" {
		return head, 0
	}
	head = head[:24] // size u32, from u64, to u64
	if n, err := io.ReadFull(c, head[4:]); err != nil {
		return head[:4+n], 0
	}
	return head, binary.BigEndian.Uint64(head[8:16])
}

func (p *proxy) pipe(in net.Conn) {
	defer p.wg.Done()
	head, from := peek(in)
	out, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		in.Close()
		return
	}
	pc := &piped{in: in, out: out, from: from}
	p.mu.Lock()
	refuse := p.cutOff || p.closed || (from != 0 && p.blocked[from])
	if !refuse {
		p.conns[pc] = struct{}{}
	}
	p.mu.Unlock()
	if refuse {
		pc.close()
		return
	}
	done := make(chan struct{}, 2)
	copyThenClose := func(dst, src net.Conn) {
		io.Copy(dst, src)
		pc.close()
		done <- struct{}{}
	}
	if _, err := out.Write(head); err != nil {
		pc.close()
	}
	go copyThenClose(out, in)
	go copyThenClose(in, out)
	<-done
	<-done
	p.mu.Lock()
	delete(p.conns, pc)
	p.mu.Unlock()
}

// cut closes every piped connection and refuses new ones until restore.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutOff = true
	for pc := range p.conns {
		pc.close()
	}
}

func (p *proxy) restore() {
	p.mu.Lock()
	p.cutOff = false
	p.mu.Unlock()
}

func (p *proxy) isCut() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cutOff
}

// block closes the replication connections from node id and refuses new
// ones until unblock.
func (p *proxy) block(id uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blocked[id] = true
	for pc := range p.conns {
		if pc.from == id {
			pc.close()
		}
	}
}

func (p *proxy) unblock(id uint64) {
	p.mu.Lock()
	delete(p.blocked, id)
	p.mu.Unlock()
}

func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for pc := range p.conns {
		pc.close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// startNodes starts n nsqd processes (node0...) registered with lk and
// waits until nsqlookupd lists them all.
func startNodes(t *testing.T, bin string, lk *lookupd.Daemon, n int, proxied bool, extra ...string) []*node {
	t.Helper()
	var ns []*node
	for i := range n {
		nd := newNode(t, bin, nodeSpec{name: fmt.Sprintf("node%d", i), lookupd: lk.TCPAddr().String(), proxied: proxied, extra: extra})
		nd.start(t)
		ns = append(ns, nd)
	}
	testutil.WaitFor(t, 20*time.Second, func() bool { return lookupdNodes(lk) == n }, "%d nsqd registered with nsqlookupd", n)
	return ns
}

// dumpLogsOnFailure prints the tail of every node's log when the test
// fails.
func dumpLogsOnFailure(t *testing.T, ns []*node) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, n := range ns {
			t.Logf("==== %s (tcp %s, http %s, identity %s; exits %v), log tail:\n%s",
				n.name, n.tcpAddr, n.httpAddr, n.ident, n.exitList(), n.tail(60))
		}
	})
}

// createReplicated creates topic with replicas through n's HTTP API,
// retried while the cluster forms.
func createReplicated(t *testing.T, n *node, topic string, replicas int) {
	t.Helper()
	var last string
	if !testutil.Eventually(60*time.Second, func() bool {
		code, body, err := n.post(fmt.Sprintf("/topic/create?topic=%s&replicas=%d", topic, replicas))
		last = fmt.Sprintf("%d %s %v", code, body, err)
		if err == nil && code == http.StatusOK {
			return true
		}
		time.Sleep(200 * time.Millisecond)
		return false
	}) {
		t.Fatalf("create replicated topic %s on %s: %s", topic, n.name, last)
	}
}

// waitLeader waits until every node of ns names the same leader of topic
// and returns the node among ns that it names (nil if none of them).
func waitLeader(t *testing.T, ns []*node, topic string, timeout time.Duration) *node {
	t.Helper()
	var lead string
	if !testutil.Eventually(timeout, func() bool {
		lead = agreedLeader(ns, topic)
		return lead != ""
	}) {
		t.Fatalf("no leader of %s agreed by %d nodes within %v: %s", topic, len(ns), timeout, leadersSeen(ns, topic))
	}
	for _, n := range ns {
		if n.ident == lead {
			return n
		}
	}
	return nil
}

// lookupdConsumer consumes topic/channel through nsqlookupd (polled every
// second) with h; it is stopped when the test ends.
func lookupdConsumer(t *testing.T, lk *lookupd.Daemon, topic, channel string, maxInFlight int, h nsq.Handler) *nsq.Consumer {
	t.Helper()
	cfg := testutil.NewConfig()
	cfg.LookupdPollInterval = time.Second
	cfg.MaxInFlight = maxInFlight
	cfg.MaxAttempts = 0 // go-nsq would finish a message delivered 5 times without handing it over
	cons, err := nsq.NewConsumer(topic, channel, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cons.SetLogger(testutil.GoNSQLogger())
	cons.AddHandler(h)
	if err := cons.ConnectToNSQLookupd(lk.HTTPAddr().String()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testutil.StopConsumer(t, cons) })
	return cons
}
