package clustertest

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"

	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/lookupd"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBuilds()
	os.Exit(code)
}

// buildNSQD builds apps/nsqd once per test binary run.
func buildNSQD(t *testing.T) string {
	return testutil.BuildApp(t, "github.com/sluicemq/sluice/apps/nsqd")
}

// subprocessNSQD is an nsqd binary run as a child process.
type subprocessNSQD struct {
	cmd               *exec.Cmd
	tcpAddr, httpAddr string
}

func startSubprocessNSQD(t *testing.T, bin string, lookupdTCP []string) *subprocessNSQD {
	t.Helper()
	ports := testutil.FreePorts(t, 2)
	tcpPort, httpPort := ports[0], ports[1]
	args := []string{
		"--tcp-address=127.0.0.1:" + strconv.Itoa(tcpPort),
		"--http-address=127.0.0.1:" + strconv.Itoa(httpPort),
		"--broadcast-address=127.0.0.1",
		"--data-path=" + t.TempDir(),
		"--log-level=warn",
	}
	for _, a := range lookupdTCP {
		args = append(args, "--lookupd-tcp-address="+a)
	}
	cmd := exec.Command(bin, args...)
	if os.Getenv(testutil.LogEnv) != "" {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &subprocessNSQD{cmd: cmd, tcpAddr: fmt.Sprintf("127.0.0.1:%d", tcpPort), httpAddr: fmt.Sprintf("127.0.0.1:%d", httpPort)}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return s
}

// TestKill9NSQD: one nsqd of three is killed with SIGKILL; it disappears from
// /lookup and /nodes on every lookupd, and the lookupd-based consumer keeps
// receiving everything published to the other two.
func TestKill9NSQD(t *testing.T) {
	bin := buildNSQD(t)
	// The subprocess PINGs every 15 s (NSQ's fixed interval), so the
	// inactive timeout must exceed it; removal after kill -9 comes from the
	// closed connection, well before the timeout.
	c := startCluster(t, 3, 2, func(o *lookupd.Options) { o.InactiveProducerTimeout = 20 * time.Second })
	sub := startSubprocessNSQD(t, bin, c.lookupdTCPAddrs())
	for _, l := range c.lookupds {
		testutil.WaitFor(t, 20*time.Second, func() bool { return len(c.nodes(l)) == 3 },
			"subprocess nsqd identified on %s", l.HTTPAddr())
	}

	const perNode = 50
	addrs := []string{c.nsqds[0].TCPAddr, c.nsqds[1].TCPAddr, sub.tcpAddr}
	for i, a := range addrs {
		publish(t, a, "k9", fmt.Sprintf("before-%d", i), perNode)
	}
	all := slices.Clone(addrs)
	slices.Sort(all)
	c.waitLookup("k9", all)

	counter := &lockedCounter{n: map[string]int{}}
	col := testutil.NewCollector()
	c.lookupdConsumer("k9", "ch", handlerPair{col, counter})
	waitExact(t, col, 3*perNode)
	if got := counter.get(); got[sub.tcpAddr] != perNode {
		t.Fatalf("deliveries per nsqd %v, want %d from the subprocess", got, perNode)
	}

	if err := sub.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	sub.cmd.Wait()
	killed := time.Now()

	survivors := c.nsqdTCPAddrs(c.nsqds...)
	c.waitLookup("k9", survivors)
	for _, l := range c.lookupds {
		testutil.WaitFor(t, 10*time.Second, func() bool {
			ns := c.nodes(l)
			got := []string{}
			for _, n := range ns {
				got = append(got, fmt.Sprintf("%s:%d", n.BroadcastAddress, n.TCPPort))
			}
			slices.Sort(got)
			return slices.Equal(got, survivors)
		}, "killed nsqd gone from /nodes on %s", l.HTTPAddr())
	}
	t.Logf("killed nsqd gone from every lookupd's /lookup and /nodes after %v", time.Since(killed))

	for i, h := range c.nsqds {
		publish(t, h.TCPAddr, "k9", fmt.Sprintf("after-%d", i), perNode)
	}
	waitExact(t, col, 5*perNode)
}

// handlerPair feeds every message to two handlers.
type handlerPair struct {
	a *testutil.Collector
	b *lockedCounter
}

func (h handlerPair) HandleMessage(m *nsq.Message) error {
	h.b.HandleMessage(m)
	return h.a.HandleMessage(m)
}

// TestFrozenNSQDHiddenThenDropped: an nsqd that stops answering without
// closing its connections (SIGSTOP: a hung process or a host that vanished)
// is first hidden from /lookup and /nodes by --inactive-producer-timeout,
// still listed in /debug, then dropped entirely when lookupd's read deadline
// (--peer-read-timeout) closes the silent connection. The subprocess PINGs
// every 15 s like NSQ, so the timeouts here must exceed that: ~25 s test.
func TestFrozenNSQDHiddenThenDropped(t *testing.T) {
	bin := buildNSQD(t)
	c := startCluster(t, 2, 1, func(o *lookupd.Options) {
		o.InactiveProducerTimeout = 16 * time.Second
		o.PeerReadTimeout = 24 * time.Second
	})
	sub := startSubprocessNSQD(t, bin, c.lookupdTCPAddrs())
	for _, l := range c.lookupds {
		testutil.WaitFor(t, 20*time.Second, func() bool { return len(c.nodes(l)) == 2 },
			"subprocess nsqd identified on %s", l.HTTPAddr())
	}
	publish(t, sub.tcpAddr, "frozen", "m", 1)
	publish(t, c.nsqds[0].TCPAddr, "frozen", "m", 1)
	both := []string{c.nsqds[0].TCPAddr, sub.tcpAddr}
	slices.Sort(both)
	c.waitLookup("frozen", both)

	if err := sub.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer sub.cmd.Process.Signal(syscall.SIGCONT)
	frozen := time.Now()
	subHandle := &testutil.NSQDHandle{TCPAddr: sub.tcpAddr}
	for _, l := range c.lookupds {
		testutil.WaitFor(t, 30*time.Second, func() bool {
			return slices.Equal(c.lookupTCP(l, "frozen"), []string{c.nsqds[0].TCPAddr}) && len(c.nodes(l)) == 1
		}, "frozen nsqd hidden on %s", l.HTTPAddr())
		// Hidden, not removed.
		if keys := debugKeys(t, l, subHandle); !slices.Contains(keys, "topic:frozen:") {
			t.Fatalf("frozen nsqd removed before the read deadline: /debug keys %q", keys)
		}
	}
	t.Logf("frozen nsqd hidden after %v", time.Since(frozen))
	for _, l := range c.lookupds {
		testutil.WaitFor(t, 40*time.Second, func() bool { return len(debugKeys(t, l, subHandle)) == 0 },
			"frozen nsqd dropped by the read deadline on %s", l.HTTPAddr())
	}
	t.Logf("frozen nsqd dropped after %v", time.Since(frozen))
}
