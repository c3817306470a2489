package replicatest

// The chaos test of replicated topics (issue 11, "What it must show" 1):
// three nsqd processes, each behind a TCP proxy written here, find each
// other through an nsqlookupd; a replicated topic (replicas=3) takes
// publishes from a producer on every node and is consumed by go-nsq
// through nsqlookupd, while the test kills a node with SIGKILL (the
// leader at least once) and restarts it as the same node, freezes one with
// SIGSTOP/SIGCONT, cuts one off with its proxy (what reaches it: its peers'
// replication traffic and its consumers), partitions one (cut off, and
// its own replication connections to the others refused too: a minority
// of one, which must acknowledge nothing) and wipes one (SIGKILL, its
// data path emptied, restarted: a lost disk; SLUICE_CHAOS_WIPE=0 leaves
// it out), and asks a random node for a step-down (a planned change of
// leader, /topic/step-down). At the end it checks, as Jepsen's queue checker does, that
// every acknowledged message was delivered (acknowledged ⊆ delivered),
// and reports duplicates, publish errors, failover times and the longest
// gap in delivery after a leader kill.
//
// CI runs a short schedule (SLUICE_CHAOS_DURATION, default 40s). The long
// one, by hand:
//
//	SLUICE_LONG=1 go test -count=1 -timeout 20m -run Chaos -v ./internal/replicatest/
//
// Replay a schedule with SLUICE_CHAOS_SEED=<the seed printed by the run>:
// the kinds of fault, their durations and the random targets repeat; which
// node leads (the target of a leader kill) and the timing of the processes
// do not. SLUICE_CHAOS_DURATION=2m sets any other length. The nodes' logs
// (stderr, --log-level=warn) are printed when the test fails; with
// SLUICE_CHAOS_LOGS=<dir> they are kept in dir (appended to) as well.

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"

	"github.com/sluicemq/sluice/internal/lookupdtest"
	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/lookupd"
	"github.com/sluicemq/sluice/store"
)

const (
	chaosTopic   = "chaos"
	chaosChannel = "checker"
)

func chaosDuration(t *testing.T) time.Duration {
	if s := os.Getenv("SLUICE_CHAOS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("SLUICE_CHAOS_DURATION=%q: %v", s, err)
		}
		return d
	}
	if os.Getenv("SLUICE_LONG") == "1" {
		return 5 * time.Minute
	}
	return 40 * time.Second
}

func chaosSeed(t *testing.T) uint64 {
	if s := os.Getenv("SLUICE_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SLUICE_CHAOS_SEED=%q: %v", s, err)
		}
		return v
	}
	return uint64(time.Now().UnixNano())
}

// lookupdNodes returns how many nsqd are registered with l.
func lookupdNodes(l *lookupd.Daemon) int {
	c := &cluster{lookupd: l}
	return c.registered()
}

// agreedLeader returns the leader every node of ns reports for topic, ""
// when they do not all report the same non-empty one.
func agreedLeader(ns []*node, topic string) string {
	var lead string
	for _, n := range ns {
		l := n.leaderSeen(topic)
		if l == "" || (lead != "" && l != lead) {
			return ""
		}
		lead = l
	}
	return lead
}

// leadersSeen is what each node reports as the leader, for messages.
func leadersSeen(ns []*node, topic string) string {
	var parts []string
	for _, n := range ns {
		parts = append(parts, fmt.Sprintf("%s=%q", n.name, n.leaderSeen(topic)))
	}
	return strings.Join(parts, " ")
}

// ledger is the checker's history: every body a producer tried, those
// acknowledged (OK received) and every delivery.
type ledger struct {
	mu        sync.Mutex
	attempted map[string]bool
	acked     map[string]time.Time
	ackTimes  []time.Time
	delivered map[string]int
	delTimes  []time.Time
	unknown   []string // delivered bodies no producer ever sent
	pubErrs   map[string]int
	total     int
}

func newLedger() *ledger {
	return &ledger{attempted: map[string]bool{}, acked: map[string]time.Time{},
		delivered: map[string]int{}, pubErrs: map[string]int{}}
}

func (l *ledger) attempt(bodies []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, b := range bodies {
		l.attempted[b] = true
	}
}

func (l *ledger) ack(bodies []string) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, b := range bodies {
		l.acked[b] = now
	}
	l.ackTimes = append(l.ackTimes, now)
}

// anyAddr matches the addresses in errors, so errors of a kind count as one.
var anyAddr = regexp.MustCompile(`127\.0\.0\.1:[0-9]+`)

func (l *ledger) pubErr(err error) {
	msg := anyAddr.ReplaceAllString(err.Error(), "127.0.0.1:<port>")
	// Keep the kind of error, not the message's details.
	if i := strings.IndexAny(msg, ":"); i > 0 && strings.HasPrefix(msg, "E_") {
		msg = msg[:i]
	} else if len(msg) > 60 {
		msg = msg[:60]
	}
	l.mu.Lock()
	l.pubErrs[msg]++
	l.mu.Unlock()
}

// HandleMessage implements nsq.Handler: it records the delivery (the
// message is finished when it returns nil).
func (l *ledger) HandleMessage(m *nsq.Message) error {
	now := time.Now()
	b := string(m.Body)
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.attempted[b] {
		l.unknown = append(l.unknown, b)
	}
	l.delivered[b]++
	l.total++
	l.delTimes = append(l.delTimes, now)
	return nil
}

// missing returns the acknowledged bodies not delivered yet, sorted.
func (l *ledger) missing() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for b := range l.acked {
		if l.delivered[b] == 0 {
			out = append(out, b)
		}
	}
	sort.Strings(out)
	return out
}

// longestGap returns the longest interval within [from, to] without an
// event of times (sorted), counting from from.
func longestGap(times []time.Time, from, to time.Time) time.Duration {
	i := sort.Search(len(times), func(i int) bool { return !times[i].Before(from) })
	prev, gap := from, time.Duration(0)
	for ; i < len(times) && !times[i].After(to); i++ {
		if d := times[i].Sub(prev); d > gap {
			gap = d
		}
		prev = times[i]
	}
	if d := to.Sub(prev); d > gap {
		gap = d
	}
	return gap
}

// producerLoop publishes unique bodies to one node, synchronously, until
// stopped: mostly PUB, sometimes an MPUB of a few bodies.
type producerLoop struct {
	node   *node
	idx    int
	led    *ledger
	rng    *rand.Rand
	stop   chan struct{}
	done   chan struct{}
	ok     atomic.Int64
	errs   atomic.Int64
	seq    int
	pubbed atomic.Int64 // bodies acknowledged
	// Read once done is closed.
	ackTimes []time.Time
	errTimes []time.Time
	errMsgs  []string
}

func (p *producerLoop) run() {
	defer close(p.done)
	var prod *nsq.Producer
	defer func() {
		if prod != nil {
			prod.Stop()
		}
	}()
	cfg := testutil.NewConfig()
	for {
		select {
		case <-p.stop:
			return
		default:
		}
		if prod == nil {
			var err error
			if prod, err = nsq.NewProducer(p.node.tcpAddr, cfg); err != nil {
				panic(err) // only a bad config fails here
			}
			prod.SetLogger(testutil.GoNSQLogger())
		}
		n := 1
		if p.rng.IntN(10) == 0 {
			n = 2 + p.rng.IntN(8)
		}
		bodies := make([]string, n)
		for i := range bodies {
			p.seq++
			bodies[i] = fmt.Sprintf("n%d-%07d", p.idx, p.seq)
		}
		p.led.attempt(bodies)
		var err error
		if n == 1 {
			err = prod.Publish(chaosTopic, []byte(bodies[0]))
		} else {
			bs := make([][]byte, n)
			for i := range bodies {
				bs[i] = []byte(bodies[i])
			}
			err = prod.MultiPublish(chaosTopic, bs)
		}
		pause := time.Duration(2+p.rng.IntN(4)) * time.Millisecond
		if err == nil {
			p.led.ack(bodies)
			p.ok.Add(1)
			p.pubbed.Add(int64(n))
			p.ackTimes = append(p.ackTimes, time.Now())
		} else {
			p.errs.Add(1)
			p.led.pubErr(err)
			p.errTimes = append(p.errTimes, time.Now())
			p.errMsgs = append(p.errMsgs, err.Error())
			// The connection may be gone or closed by a fatal error:
			// start over with a new producer.
			prod.Stop()
			prod = nil
			pause = 100 * time.Millisecond
		}
		select {
		case <-p.stop:
			return
		case <-time.After(pause):
		}
	}
}

// fault is one fault injected, for the report.
type fault struct {
	kind     string // kill, stop, cut, partition, step-down, wipe
	target   string
	node     *node
	leader   bool // the target led the topic when the fault began
	start    time.Time
	healed   time.Time
	failover time.Duration // kill or partition of the leader: until the others agreed on another
	agreed   time.Duration // after healing: until all three agreed on a leader
}

type chaos struct {
	t      *testing.T
	rng    *rand.Rand
	nodes  []*node
	faults []*fault
	events []string
	start  time.Time
	end    time.Time // no fault outlasts it by much
}

func (c *chaos) logf(format string, args ...any) {
	line := fmt.Sprintf("%8.3fs ", time.Since(c.start).Seconds()) + fmt.Sprintf(format, args...)
	c.events = append(c.events, line)
	if testing.Verbose() {
		c.t.Log(line)
	}
}

// between returns a random duration in [lo, hi].
func (c *chaos) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(c.rng.Int64N(int64(hi-lo)+1))
}

// span is between, cut short (not below lo) so that a fault ends about
// when the run's faults should.
func (c *chaos) span(lo, hi time.Duration) time.Duration {
	return min(c.between(lo, hi), max(lo, time.Until(c.end)))
}

func (c *chaos) byIdent(ident string) *node {
	for _, n := range c.nodes {
		if n.ident == ident {
			return n
		}
	}
	return nil
}

// currentLeader returns the node that the live nodes report as leader
// (the most reported one), nil when none reports one.
func (c *chaos) currentLeader() *node {
	votes := map[string]int{}
	for _, n := range c.nodes {
		if l := n.leaderSeen(chaosTopic); l != "" {
			votes[l]++
		}
	}
	var best string
	for l, v := range votes {
		if best == "" || v > votes[best] || (v == votes[best] && l < best) {
			best = l
		}
	}
	return c.byIdent(best)
}

// waitAgreed waits until every node in ns reports the same leader; it
// returns it and how long it took, or "" after timeout.
func (c *chaos) waitAgreed(ns []*node, not string, timeout time.Duration) (string, time.Duration) {
	start := time.Now()
	deadline := start.Add(timeout)
	for time.Now().Before(deadline) {
		if l := agreedLeader(ns, chaosTopic); l != "" && l != not {
			return l, time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "", time.Since(start)
}

func (c *chaos) others(n *node) []*node {
	var out []*node
	for _, o := range c.nodes {
		if o != n {
			out = append(out, o)
		}
	}
	return out
}

// inject runs one fault of kind and heals it.
func (c *chaos) inject(kind string) *fault {
	t := c.t
	lead := c.currentLeader()
	var target *node
	switch kind {
	case "kill-leader":
		kind, target = "kill", lead
		if target == nil {
			c.logf("no leader known for kill-leader: a random node instead")
		}
	}
	if target == nil {
		target = c.nodes[c.rng.IntN(len(c.nodes))]
	}
	f := &fault{kind: kind, target: target.name, node: target, leader: target == lead, start: time.Now()}
	c.faults = append(c.faults, f)
	c.logf("fault %d: %s %s (leader: %v)", len(c.faults), kind, target.name, f.leader)
	switch kind {
	case "kill", "wipe":
		down := c.span(time.Second, 3*time.Second)
		target.kill9(t)
		if kind == "wipe" {
			// Its disk is lost: it comes back empty under its address.
			if err := os.RemoveAll(target.dataPath); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(target.dataPath, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if f.leader {
			l, took := c.waitAgreed(c.others(target), target.ident, 15*time.Second)
			f.failover = took
			if l == "" {
				t.Errorf("fault %d: after the leader %s was killed, the others agreed on no new leader within %v (%s)",
					len(c.faults), target.name, took, leadersSeen(c.others(target), chaosTopic))
			} else {
				c.logf("  new leader %s after %v", c.byIdent(l).name, took)
			}
		}
		if rest := down - time.Since(f.start); rest > 0 {
			time.Sleep(rest)
		}
		target.start(t)
		c.logf("  %s restarted", target.name)
	case "stop":
		target.freeze(t)
		time.Sleep(c.span(time.Second, 4*time.Second))
		target.thaw(t)
	case "cut":
		target.proxy.cut()
		time.Sleep(c.span(2*time.Second, 6*time.Second))
		target.proxy.restore()
	case "step-down":
		// A planned change of leader, asked on any node: it must lose
		// nothing. (Where the leadership goes is not checked: a replica
		// still copying what a restore skipped hands it on again.)
		if code, body, err := target.post("/topic/step-down?topic=" + chaosTopic); err != nil {
			c.logf("  step-down: %v", err)
		} else {
			c.logf("  step-down: %d %s", code, strings.TrimSpace(body))
		}
	case "partition":
		// Long enough, at times, for the minority's publishes to time out.
		d := c.span(4*time.Second, 14*time.Second)
		c.partition(target, true)
		if f.leader {
			l, took := c.waitAgreed(c.others(target), target.ident, d)
			f.failover = took
			if l != "" {
				c.logf("  new leader %s after %v", c.byIdent(l).name, took)
			} else {
				c.logf("  no new leader on the majority side after %v", took)
			}
		}
		if rest := d - time.Since(f.start); rest > 0 {
			time.Sleep(rest)
		}
		c.partition(target, false)
	}
	f.healed = time.Now()
	l, took := c.waitAgreed(c.nodes, "", 30*time.Second)
	f.agreed = took
	if l == "" {
		t.Errorf("fault %d (%s %s): the three nodes agreed on no leader within %v after it was healed (%s)",
			len(c.faults), kind, target.name, took, leadersSeen(c.nodes, chaosTopic))
	} else {
		c.logf("  healed; all agree on leader %s after %v", c.byIdent(l).name, took)
	}
	return f
}

// partition cuts n off from the others both ways (on) or heals that.
func (c *chaos) partition(n *node, on bool) {
	if on {
		n.proxy.cut()
	} else {
		n.proxy.restore()
	}
	for _, o := range c.others(n) {
		if on {
			o.proxy.block(n.id)
		} else {
			o.proxy.unblock(n.id)
		}
	}
}

// heal restarts what is down, thaws what is frozen and restores every
// proxy.
func (c *chaos) heal() {
	for _, n := range c.nodes {
		c.partition(n, false)
		if n.proxy != nil && n.proxy.isCut() {
			n.proxy.restore()
		}
		n.mu.Lock()
		frozen := n.frozen
		n.mu.Unlock()
		if frozen {
			n.thaw(c.t)
		}
		if !n.running() {
			n.start(c.t)
		}
	}
}

func TestChaosReplicatedTopic(t *testing.T) {
	dur := chaosDuration(t)
	seed := chaosSeed(t)
	t.Logf("seed %d, duration %v (replay: SLUICE_CHAOS_SEED=%d SLUICE_CHAOS_DURATION=%v)", seed, dur, seed, dur)
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	bin := testutil.BuildApp(t, "github.com/sluicemq/sluice/apps/nsqd")

	lk := lookupdtest.Start(t, nil)
	c := &chaos{t: t, rng: rng, start: time.Now()}
	for i := range 3 {
		c.nodes = append(c.nodes, newNode(t, bin, nodeSpec{
			name:    fmt.Sprintf("node%d", i),
			lookupd: lk.TCPAddr().String(),
			proxied: true,
			// Every message stays in the topic logs, so that they can be
			// compared at the end, and the Raft logs are compacted often,
			// so that nodes that fall behind or lose their disk are caught
			// up from snapshots and copy the history they skipped.
			extra: []string{"--retention-time=1h", "--replica-compact-entries=" + strconv.Itoa(chaosCompactEntries)},
		}))
	}
	dumpLogsOnFailure(t, c.nodes)
	defer func() {
		if t.Failed() && !testing.Verbose() {
			t.Logf("events:\n%s", strings.Join(c.events, "\n"))
		}
	}()
	for _, n := range c.nodes {
		n.start(t)
		c.logf("%s started: tcp %s, http %s, identity (proxy) %s", n.name, n.tcpAddr, n.httpAddr, n.ident)
	}
	testutil.WaitFor(t, 20*time.Second, func() bool { return lookupdNodes(lk) == 3 }, "3 nsqd registered with nsqlookupd")

	// The topic, then the channel (so it starts before the first message).
	createReplicated(t, c.nodes[0], chaosTopic, 3)
	lead, took := c.waitAgreed(c.nodes, "", 20*time.Second)
	if lead == "" {
		t.Fatalf("no leader agreed by all three nodes within %v: %s", took, leadersSeen(c.nodes, chaosTopic))
	}
	c.logf("topic %s created; leader %s", chaosTopic, c.byIdent(lead).name)
	testutil.WaitFor(t, 20*time.Second, func() bool {
		code, _, err := c.byIdent(lead).post("/channel/create?topic=" + chaosTopic + "&channel=" + chaosChannel)
		return err == nil && code == 200
	}, "channel created on the leader")
	// A second channel nobody consumes: every message stays unfinished on
	// it, so every snapshot has a backlog, and a node restored from one
	// must copy it before it may deliver.
	testutil.WaitFor(t, 20*time.Second, func() bool {
		code, _, err := c.byIdent(lead).post("/channel/create?topic=" + chaosTopic + "&channel=" + chaosIdleChannel)
		return err == nil && code == 200
	}, "idle channel created on the leader")
	testutil.WaitFor(t, 20*time.Second, func() bool {
		for _, n := range c.nodes {
			ts, ok := n.topicStats(chaosTopic)
			if !ok || !hasChannel(ts, chaosChannel) || !hasChannel(ts, chaosIdleChannel) {
				return false
			}
		}
		return true
	}, "channels on every replica")

	led := newLedger()
	lookupdConsumer(t, lk, chaosTopic, chaosChannel, 300, led)

	var prods []*producerLoop
	for i, n := range c.nodes {
		p := &producerLoop{node: n, idx: i, led: led, rng: rand.New(rand.NewPCG(seed, uint64(i+1))),
			stop: make(chan struct{}), done: make(chan struct{})}
		prods = append(prods, p)
		go p.run()
	}
	stopProducers := func() {
		for _, p := range prods {
			select {
			case <-p.stop:
			default:
				close(p.stop)
			}
		}
		for _, p := range prods {
			select {
			case <-p.done:
			case <-time.After(30 * time.Second):
				t.Errorf("the producer of %s did not stop within 30s (a publish that never returns)", p.node.name)
			}
		}
	}
	defer stopProducers()

	// Traffic without faults first, so the run starts from a working state.
	testutil.WaitFor(t, 20*time.Second, func() bool {
		led.mu.Lock()
		defer led.mu.Unlock()
		return len(led.acked) > 100 && led.total > 100
	}, "publishes acknowledged and delivered before the first fault")
	c.logf("traffic flows; faults for %v", dur)

	// The first faults are one of each kind in a random order (the
	// leader's kill among them); then any, a kill of the leader as likely
	// as one of a random node.
	kinds := []string{"kill-leader", "stop", "cut", "partition", "step-down", "wipe"}
	mixed := []string{"kill-leader", "kill", "stop", "cut", "partition", "step-down", "wipe"}
	if os.Getenv("SLUICE_CHAOS_WIPE") == "0" {
		kinds, mixed = kinds[:len(kinds)-1], mixed[:len(mixed)-1]
	}
	rng.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	c.end = time.Now().Add(dur)
	for i := 0; time.Now().Before(c.end); i++ {
		kind := ""
		if i < len(kinds) {
			kind = kinds[i]
		} else {
			kind = mixed[rng.IntN(len(mixed))]
		}
		c.inject(kind)
		if t.Failed() {
			break
		}
		pause := c.between(time.Second, 3*time.Second)
		if time.Until(c.end) < pause {
			break
		}
		time.Sleep(pause)
	}

	// Heal, stop publishing, let everything acknowledged be delivered.
	c.heal()
	c.logf("healed; producers stop")
	stopProducers()
	stopped := time.Now()
	var missing []string
	drained := testutil.Eventually(60*time.Second, func() bool {
		if missing = led.missing(); len(missing) == 0 {
			return true
		}
		time.Sleep(100 * time.Millisecond) // missing() walks every acknowledged body
		return false
	})
	c.logf("drain: %d acknowledged not delivered after %v", len(missing), time.Since(stopped))

	// Every node eventually names the same leader.
	finalLead, took := c.waitAgreed(c.nodes, "", 30*time.Second)
	if finalLead == "" {
		t.Errorf("at the end the nodes agree on no leader within %v: %s", took, leadersSeen(c.nodes, chaosTopic))
	}

	// The report.
	led.mu.Lock()
	acked, attempted := len(led.acked), len(led.attempted)
	distinct, total := len(led.delivered), led.total
	unknown := slices.Clone(led.unknown)
	pubErrs := make([]string, 0, len(led.pubErrs))
	for k, v := range led.pubErrs {
		pubErrs = append(pubErrs, fmt.Sprintf("%dx %s", v, k))
	}
	delTimes := slices.Clone(led.delTimes)
	ackTimes := slices.Clone(led.ackTimes)
	deliveredUnacked := 0
	for b := range led.delivered {
		if _, ok := led.acked[b]; !ok {
			deliveredUnacked++
		}
	}
	led.mu.Unlock()
	sort.Strings(pubErrs)
	slices.SortFunc(delTimes, func(a, b time.Time) int { return a.Compare(b) })
	slices.SortFunc(ackTimes, func(a, b time.Time) int { return a.Compare(b) })

	kindCount := map[string]int{}
	var worstGap, worstAckGap, worstFailover, worstPartGap, worstPartFailover time.Duration
	for i, f := range c.faults {
		k := f.kind
		if f.leader {
			k += " (leader)"
		}
		kindCount[k]++
		if f.kind == "partition" {
			c.checkMinority(i+1, f, prods[slices.Index(c.nodes, f.node)])
		}
		if !f.leader || (f.kind != "kill" && f.kind != "partition") {
			continue
		}
		// The window after a leader kill: until the next fault, at most 20 s.
		to := f.start.Add(20 * time.Second)
		if i+1 < len(c.faults) && c.faults[i+1].start.Before(to) {
			to = c.faults[i+1].start
		}
		if to.After(stopped) {
			to = stopped
		}
		gap := longestGap(delTimes, f.start, to)
		ackGap := longestGap(ackTimes, f.start, to)
		c.logf("leader %s %d (%s): failover %v, longest delivery gap %v, longest acknowledgement gap %v",
			f.kind, i+1, f.target, f.failover, gap, ackGap)
		if f.kind == "partition" {
			worstPartGap = max(worstPartGap, gap)
			worstPartFailover = max(worstPartFailover, f.failover)
			continue
		}
		worstGap = max(worstGap, gap)
		worstAckGap = max(worstAckGap, ackGap)
		worstFailover = max(worstFailover, f.failover)
		if f.failover > 10*time.Second {
			t.Errorf("leader kill %d: a new leader after %v, the issue promises 10 s", i+1, f.failover)
		}
	}
	var kinds2 []string
	for k, v := range kindCount {
		kinds2 = append(kinds2, fmt.Sprintf("%s: %d", k, v))
	}
	sort.Strings(kinds2)
	var errLines []string
	for _, n := range c.nodes {
		errs, crashes := n.logScan()
		errLines = append(errLines, fmt.Sprintf("%s: %d", n.name, errs))
		for _, line := range crashes {
			t.Errorf("%s crashed: %s", n.name, line)
		}
	}
	dups := total - distinct
	ratio := 0.0
	if distinct > 0 {
		ratio = float64(dups) / float64(distinct)
	}
	t.Logf("chaos report (seed %d, %v of faults):", seed, dur)
	t.Logf("  published: %d bodies tried, %d acknowledged, %d not; publish errors [%s]",
		attempted, acked, attempted-acked, strings.Join(pubErrs, ", "))
	for _, p := range prods {
		t.Logf("    producer on %s: %d publishes OK (%d bodies), %d errors", p.node.name, p.ok.Load(), p.pubbed.Load(), p.errs.Load())
	}
	t.Logf("  delivered: %d deliveries of %d distinct bodies (%d not acknowledged: publishes whose outcome was unknown)",
		total, distinct, deliveredUnacked)
	t.Logf("  lost (acknowledged, never delivered): %d", len(missing))
	t.Logf("  duplicates: %d (%.4f of distinct bodies)", dups, ratio)
	t.Logf("  faults: %d [%s]", len(c.faults), strings.Join(kinds2, ", "))
	t.Logf("  after a leader kill: longest failover %v, longest delivery gap %v, longest acknowledgement gap %v",
		worstFailover, worstGap, worstAckGap)
	t.Logf("  after a leader partition: longest failover %v, longest delivery gap %v", worstPartFailover, worstPartGap)
	t.Logf("  ERROR lines in the nodes' logs: %s", strings.Join(errLines, ", "))
	for _, n := range c.nodes {
		t.Logf("  %s: started %d times; exits %v", n.name, n.starts, n.exitList())
	}
	if testing.Verbose() {
		t.Logf("events:\n%s", strings.Join(c.events, "\n"))
	}

	if len(unknown) > 0 {
		t.Errorf("%d deliveries of bodies no producer sent, e.g. %q", len(unknown), unknown[:min(10, len(unknown))])
	}
	if !drained || len(missing) > 0 {
		show := missing
		if len(show) > 50 {
			show = show[:50]
		}
		led.mu.Lock()
		var detail []string
		for _, b := range show {
			detail = append(detail, fmt.Sprintf("%s (acked %s)", b, led.acked[b].Sub(c.start).Truncate(time.Millisecond)))
		}
		led.mu.Unlock()
		t.Errorf("%d acknowledged messages never delivered (lost), e.g.:\n  %s", len(missing), strings.Join(detail, "\n  "))
		for _, n := range c.nodes {
			if ts, ok := n.topicStats(chaosTopic); ok {
				t.Logf("%s /stats: depth %d, leader %v, lag %v, channels %+v", n.name, ts.Depth, deref(ts.Leader), ts.ReplicaLag, ts.Channels)
			}
		}
	}
	if len(c.faults) == 0 {
		t.Errorf("no fault was injected")
	}
	if !t.Failed() {
		c.checkReplicaLogs()
	}
}

// chaosIdleChannel is the chaos topic's channel without consumers.
const chaosIdleChannel = "idle"

// chaosCompactEntries is the chaos nodes' --replica-compact-entries.
const chaosCompactEntries = 2000

// checkReplicaLogs stops the nodes once every replica has copied the
// history it skipped, and checks that their topic logs hold the same
// messages under the same sequence numbers (message IDs): what a new
// leader delivers, a replay reads and a FIN names is the same message on
// every replica.
func (c *chaos) checkReplicaLogs() {
	t := c.t
	testutil.WaitFor(t, 60*time.Second, func() bool {
		for _, n := range c.nodes {
			if _, err := os.Stat(filepath.Join(n.dataPath, "durable", chaosTopic+".log", "history.json")); err == nil {
				return false
			}
		}
		return true
	}, "every replica has copied the history it skipped")
	logs := make([]map[uint64]logMsg, len(c.nodes))
	for i, n := range c.nodes {
		n.stop(t)
		logs[i] = readTopicLog(t, n, chaosTopic)
	}
	var snaps []string
	for i, n := range c.nodes {
		snaps = append(snaps, fmt.Sprintf("%s %d messages", n.name, len(logs[i])))
	}
	c.logf("topic logs after the run: %s", strings.Join(snaps, ", "))
	for i := 1; i < len(logs); i++ {
		sameTopicLogs(t, c.nodes[0].name, logs[0], c.nodes[i].name, logs[i])
	}
}

// logMsg is a message of a topic log as the log holds it.
type logMsg struct {
	ts, at int64
	body   string
}

// readTopicLog reads the whole topic log of a stopped node.
func readTopicLog(t *testing.T, n *node, topic string) map[uint64]logMsg {
	t.Helper()
	dir := filepath.Join(n.dataPath, "durable", topic+".log")
	l, rep, err := store.OpenLog(store.OSFS{}, dir, store.LogOptions{})
	if err != nil {
		t.Fatalf("%s: open its topic log: %v", n.name, err)
	}
	defer l.Close()
	if len(rep.Cut)+len(rep.Quarantined) > 0 {
		t.Errorf("%s: its topic log, closed cleanly, needed repairs: %+v", n.name, rep)
	}
	out := map[uint64]logMsg{}
	rd := l.NewReader(0)
	var recs []store.Record
	for {
		if recs, err = rd.Read(recs[:0], 512); err != nil {
			t.Fatalf("%s: read its topic log: %v", n.name, err)
		}
		if len(recs) == 0 {
			return out
		}
		for _, r := range recs {
			out[r.Seq] = logMsg{r.TS, r.DeliverAt, string(r.Body)}
		}
	}
}

// sameTopicLogs checks that two replicas' logs hold the same messages
// under the same sequence numbers.
func sameTopicLogs(t *testing.T, an string, a map[uint64]logMsg, bn string, b map[uint64]logMsg) {
	t.Helper()
	bad := 0
	for seq, m := range a {
		if o, ok := b[seq]; !ok || o != m {
			if bad++; bad <= 5 {
				t.Errorf("message %d: %s holds %+v, %s holds %+v (present %v)", seq, an, m, bn, o, ok)
			}
		}
	}
	for seq, o := range b {
		if _, ok := a[seq]; !ok {
			if bad++; bad <= 5 {
				t.Errorf("message %d: %s holds %+v, %s does not", seq, bn, o, an)
			}
		}
	}
	if bad > 0 {
		t.Errorf("the topic logs of %s and %s differ in %d messages", an, bn, bad)
	}
}

// checkMinority checks what the producer on a partitioned node saw: no
// publish acknowledged while the node was cut off (a second of slack for
// what was answered as the cut began), and, when the partition lasted
// 10 s or more, E_PUB_FAILED (E_MPUB_FAILED) within 10 s (plus a second
// of slack).
func (c *chaos) checkMinority(i int, f *fault, p *producerLoop) {
	t := c.t
	from := f.start.Add(time.Second)
	for _, at := range p.ackTimes {
		if at.After(from) && at.Before(f.healed) {
			t.Errorf("fault %d: a publish to %s was acknowledged %v into its partition (healed after %v)",
				i, f.target, at.Sub(f.start), f.healed.Sub(f.start))
			break
		}
	}
	refused := time.Duration(-1)
	var seen []string
	for j, at := range p.errTimes {
		if !at.After(f.start) || !at.Before(f.healed) {
			continue
		}
		seen = append(seen, fmt.Sprintf("%v: %s", at.Sub(f.start), p.errMsgs[j]))
		if refused < 0 && (strings.Contains(p.errMsgs[j], "E_PUB_FAILED") || strings.Contains(p.errMsgs[j], "E_MPUB_FAILED")) {
			refused = at.Sub(f.start)
		}
	}
	lasted := f.healed.Sub(f.start)
	first := "none during it"
	if refused >= 0 {
		first = "first after " + refused.String()
	}
	c.logf("partition %d (%s) lasted %v: E_PUB_FAILED on it: %s", i, f.target, lasted, first)
	if lasted >= 11*time.Second && (refused < 0 || refused > 11*time.Second) {
		t.Errorf("fault %d: %s was cut off for %v and its producer got no E_PUB_FAILED within 10 s (first after %v); its errors meanwhile: %q",
			i, f.target, lasted, refused, seen)
	}
}

// channelDepth is the depth of a channel in ts, -1 if it is not there.
func channelDepth(ts topicStats, name string) int64 {
	for _, ch := range ts.Channels {
		if ch.ChannelName == name {
			return ch.Depth
		}
	}
	return -1
}

func hasChannel(ts topicStats, name string) bool {
	for _, ch := range ts.Channels {
		if ch.ChannelName == name {
			return true
		}
	}
	return false
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

// TestKill9TwoOfThreeRefusesPublishes (issue 11, "What it must show" 2,
// with processes): with two of three nodes killed with SIGKILL, a publish
// to the third gets E_PUB_FAILED within a few seconds, never OK; once they
// are back, publishes are acknowledged again and everything acknowledged
// is delivered.
func TestKill9TwoOfThreeRefusesPublishes(t *testing.T) {
	bin := testutil.BuildApp(t, "github.com/sluicemq/sluice/apps/nsqd")
	lk := lookupdtest.Start(t, nil)
	ns := startNodes(t, bin, lk, 3, false)
	dumpLogsOnFailure(t, ns)
	createReplicated(t, ns[0], "orders", 3)
	waitLeader(t, ns, "orders", 20*time.Second)

	p := testutil.NewProducer(t, ns[2].tcpAddr, nil)
	if err := p.Publish("orders", []byte("with-majority")); err != nil {
		t.Fatal(err)
	}
	ns[0].kill9(t)
	ns[1].kill9(t)
	start := time.Now()
	err := p.Publish("orders", []byte("without-majority"))
	took := time.Since(start)
	if err == nil {
		t.Fatal("a publish with 2 of 3 replicas killed was acknowledged")
	}
	t.Logf("refused after %v: %v", took, err)
	if !strings.Contains(err.Error(), "E_PUB_FAILED") {
		t.Fatalf("error %q, want E_PUB_FAILED", err)
	}
	if took > 12*time.Second {
		t.Fatalf("refusal took %v, want it within a few seconds", took)
	}
	// E_PUB_FAILED ends the connection (NSQ's fatal error): a new one.
	p.Stop()
	p = testutil.NewProducer(t, ns[2].tcpAddr, nil)

	ns[0].start(t)
	ns[1].start(t)
	waitLeader(t, ns, "orders", 30*time.Second)
	back := time.Now()
	testutil.WaitFor(t, 30*time.Second, func() bool {
		if err := p.Publish("orders", []byte("after-restart")); err != nil {
			p.Stop()
			p = testutil.NewProducer(t, ns[2].tcpAddr, nil)
			return false
		}
		return true
	}, "a publish acknowledged once the killed nodes are back")
	t.Logf("acknowledged again %v after the nodes were back", time.Since(back))
	col := &collector{}
	lookupdConsumer(t, lk, "orders", "c", 100, col)
	testutil.WaitFor(t, 30*time.Second, func() bool { return col.has("with-majority") && col.has("after-restart") },
		"the acknowledged messages delivered")
}

// addrCollector counts deliveries per body and per nsqd address.
type addrCollector struct {
	mu     sync.Mutex
	bodies map[string]int
	from   map[string]int // NSQDAddress -> deliveries
}

func (c *addrCollector) HandleMessage(m *nsq.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bodies[string(m.Body)]++
	c.from[m.NSQDAddress]++
	return nil
}

// TestLostReplicaReplacedAndTheNewOneHoldsEveryMessage (issue 11, "What
// it must show" 3, with processes): with --replica-timeout=2s, a replica
// killed for good is replaced by the spare node, which catches up; made
// leader (the others frozen in turn until it wins an election), it
// delivers every message acknowledged before it joined. The messages are
// not consumed before, and the replicas compact their Raft logs all the
// same (--replica-compact-entries=50): the spare starts from a snapshot
// whose messages are unfinished, copies them from the others, and
// delivers only once it holds them.
func TestLostReplicaReplacedAndTheNewOneHoldsEveryMessage(t *testing.T) {
	bin := testutil.BuildApp(t, "github.com/sluicemq/sluice/apps/nsqd")
	lk := lookupdtest.Start(t, nil)
	ns := startNodes(t, bin, lk, 4, false, "--replica-timeout=2s", "--replica-compact-entries=50")
	dumpLogsOnFailure(t, ns)
	createReplicated(t, ns[0], "orders", 3)
	holders := func() (in, out []*node) {
		for _, n := range ns {
			if !n.running() {
				continue
			}
			if _, ok := n.topicStats("orders"); ok {
				in = append(in, n)
			} else {
				out = append(out, n)
			}
		}
		return in, out
	}
	var members, spares []*node
	testutil.WaitFor(t, 20*time.Second, func() bool {
		members, spares = holders()
		return len(members) == 3
	}, "3 nodes hold the topic")
	spare := spares[0]
	lead := waitLeader(t, members, "orders", 20*time.Second)
	if code, body, err := lead.post("/channel/create?topic=orders&channel=c"); err != nil || code != http.StatusOK {
		t.Fatalf("channel/create: %d %s %v", code, body, err)
	}
	const total = 300
	p := testutil.NewProducer(t, members[0].tcpAddr, nil)
	for i := range total {
		if err := p.Publish("orders", []byte(fmt.Sprintf("m%04d", i))); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	p.Stop()
	for _, m := range members {
		testutil.WaitFor(t, 30*time.Second, func() bool { return len(snapshotFiles(m.dataPath)) > 0 },
			"%s compacts its Raft log though nothing was consumed", m.name)
	}

	// Kill a member that is not the leader of the topic, for good.
	lost := members[0]
	if lost == lead {
		lost = members[1]
	}
	lost.kill9(t)
	killed := time.Now()
	var survivors []*node
	for _, m := range members {
		if m != lost {
			survivors = append(survivors, m)
		}
	}
	group := append(slices.Clone(survivors), spare)
	testutil.WaitFor(t, 60*time.Second, func() bool {
		ts, ok := spare.topicStats("orders")
		return ok && ts.Leader != nil && *ts.Leader != "" && channelDepth(ts, "c") == total
	}, "the spare %s holds the topic with its %d messages", spare.name, total)
	t.Logf("%s replaced %s and caught up %v after the kill", spare.name, lost.name, time.Since(killed))
	if len(snapshotFiles(spare.dataPath)) == 0 {
		t.Fatalf("%s did not start from a snapshot", spare.name)
	}
	testutil.WaitFor(t, 20*time.Second, func() bool {
		for _, n := range group {
			if ts, ok := n.topicStats("orders"); ok && ts.ReplicaLag != nil {
				_, stale := ts.ReplicaLag[lost.ident]
				return len(ts.ReplicaLag) == 3 && !stale
			}
		}
		return false
	}, "the lost replica removed from the group (the leader's replica_lag)")

	// Freeze the leader until the new replica wins an election.
	for attempt := 0; ; attempt++ {
		l := waitLeader(t, group, "orders", 20*time.Second)
		if l == spare {
			t.Logf("%s leads after %d freezes", spare.name, attempt)
			break
		}
		if attempt == 20 {
			t.Fatalf("%s never won an election in %d attempts", spare.name, attempt)
		}
		l.freeze(t)
		var others []*node
		for _, n := range group {
			if n != l {
				others = append(others, n)
			}
		}
		testutil.WaitFor(t, 15*time.Second, func() bool {
			a := agreedLeader(others, "orders")
			return a != "" && a != l.ident
		}, "a new leader while %s is frozen", l.name)
		l.thaw(t)
	}
	col := &addrCollector{bodies: map[string]int{}, from: map[string]int{}}
	lookupdConsumer(t, lk, "orders", "c", 100, col)
	testutil.WaitFor(t, 30*time.Second, func() bool {
		col.mu.Lock()
		defer col.mu.Unlock()
		return len(col.bodies) == total
	}, "all %d messages delivered", total)
	col.mu.Lock()
	defer col.mu.Unlock()
	if col.from[spare.ident] < total {
		t.Fatalf("deliveries per nsqd %v: want all %d from the new replica %s", col.from, total, spare.ident)
	}
}
