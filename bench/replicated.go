package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sluicemq/sluice/lookupd"
)

// Replicated-topic scenarios (Sluice, issue 11): a topic kept on 3 nodes of
// a local cluster (an in-process nsqlookupd and 3 nsqd child processes of
// the target's binary) against a durable topic on a single node of the same
// binary, in the same scenario run, passes alternating.
const (
	// ScenarioReplicated runs every scenario of ReplicatedScenarios.
	ScenarioReplicated = "replicated"
	// ScenarioReplicatedMPUB: MPUB into a replicated topic through its
	// leader, one channel, no consumer; against single-node durable MPUB.
	ScenarioReplicatedMPUB = "replicated-mpub"
	// ScenarioReplicatedPUB64: one PUB per round trip on 64 connections,
	// to the leader and to a follower; against single-node durable.
	ScenarioReplicatedPUB64 = "replicated-pub64"
	// ScenarioReplicatedConsume: the drain of a backlog from the leader;
	// against the drain of a single-node durable backlog.
	ScenarioReplicatedConsume = "replicated-consume"
)

// ReplicatedScenarios are the scenarios ScenarioReplicated stands for, in
// run order; each can also be selected by name.
var ReplicatedScenarios = []string{ScenarioReplicatedMPUB, ScenarioReplicatedPUB64, ScenarioReplicatedConsume}

// IsReplicatedScenario reports whether name is ScenarioReplicated or one of
// ReplicatedScenarios (they need Sluice's nsqd as a child process).
func IsReplicatedScenario(name string) bool {
	return name == ScenarioReplicated || slices.Contains(ReplicatedScenarios, name)
}

const (
	// replicatedNodes is the cluster's size and the topic's replicas.
	replicatedNodes = 3
	// goalReplicatedMPUB: replicated MPUB >= 30 % of single-node durable
	// MPUB (issue 11, "what it must show" 4).
	goalReplicatedMPUB = 0.3

	// The settings a pass measures.
	replLeader   = "leader"   // the replicated topic, through its leader
	replFollower = "follower" // the replicated topic, through a follower
	replSingle   = "single"   // a durable topic on the single node

	// replicatedWarmupDivisor: each setting has an untimed warm-up pass of
	// this fraction of a pass's messages.
	replicatedWarmupDivisor = 5
)

// ReplicatedOptions sizes the replicated-topic scenarios.
type ReplicatedOptions struct {
	// Messages per pass of replicated-mpub, -pub64 and -consume.
	MPUBMessages, PUBMessages, ConsumeMessages int64
	// Rounds repeats the pass order (the settings, then the same in
	// reverse), so that each setting is measured 2 x Rounds times.
	Rounds int
	// CPUProfile, when set, is where the leader's CPU profile
	// (/debug/pprof/profile) over CPUProfileDuration from the start of the
	// first measured replicated-mpub pass is written.
	CPUProfile         string
	CPUProfileDuration time.Duration
}

// replicatedNote explains the replicated scenarios' figures in the report.
var replicatedNote = fmt.Sprintf("replicated-*: one run holds an in-process nsqlookupd, %d nsqd child processes registered with it (the target's binary, --durable, "+
	"--broadcast-address=127.0.0.1, each its own data directory) and one more single node of the same binary with the same flags but no lookupd. "+
	"Each pass is on a fresh topic (replicas=%d, created on node 0, measured once every node's /stats shows the same leader; or durable=true on the single node) deleted after it. "+
	"After an untimed warm-up pass of each setting (1/%d of a pass), the settings alternate (e.g. leader, single, single, leader) --replicated-rounds times. "+
	"msgs_per_sec is messages / time over a setting's passes; median_msgs_per_sec the median pass rate; median_ratio_vs_single the replicated median over the single node's (goal for replicated-mpub: >= %g). "+
	"cpu_us_per_msg is the nsqd processes' utime+stime (/proc) during the passes per message, all %d nodes for the replicated topic. The bench's clients and all 4 nsqd share the machine's cores.",
	replicatedNodes, replicatedNodes, replicatedWarmupDivisor, goalReplicatedMPUB, replicatedNodes)

// ReplicationCapable is implemented by launchers that know whether their
// nsqd has replicated topics.
type ReplicationCapable interface {
	SupportsReplication() bool
}

// SupportsReplication implements ReplicationCapable: the binary's --help
// is read once for the --replica-timeout flag.
func (b *BinaryLauncher) SupportsReplication() bool {
	return strings.Contains(b.helpText(), "-replica-timeout")
}

// replScenario is one of ReplicatedScenarios: its settings (one result
// each, the first the headline), load and size.
type replScenario struct {
	name    string
	modes   []string
	conns   int
	pub     bool // one PUB per round trip, round trips timed
	consume bool
	msgs    int64
}

func (o Options) replScenarioOf(name string) (replScenario, bool) {
	r := o.Replicated
	switch name {
	case ScenarioReplicatedMPUB:
		return replScenario{name, []string{replLeader, replSingle}, o.Conns, false, false, r.MPUBMessages}, true
	case ScenarioReplicatedPUB64:
		return replScenario{name, []string{replLeader, replFollower, replSingle}, durablePUBConns, true, false, r.PUBMessages}, true
	case ScenarioReplicatedConsume:
		return replScenario{name, []string{replLeader, replSingle}, o.Conns, false, true, r.ConsumeMessages}, true
	}
	return replScenario{}, false
}

// resultName is the scenario of the result of setting m: the scenario's
// name for the leader, with "-follower" or "-single" for the others.
func (rs replScenario) resultName(m string) string {
	if m == replLeader {
		return rs.name
	}
	return rs.name + "-" + m
}

func (rs replScenario) loadDesc(o Options) string {
	switch {
	case rs.pub:
		return fmt.Sprintf("%d conns, PUB %d B, one per round trip, into a topic with one channel and no consumer", rs.conns, o.BodySize)
	case rs.consume:
		return fmt.Sprintf("drain of a backlog (published untimed with MPUB %d x %d B on %d conns) by %d consumers RDY %d, FIN each",
			o.Batch, o.BodySize, o.Conns, o.Conns, o.RDY)
	}
	return fmt.Sprintf("%d conns, MPUB %d x %d B, into a topic with one channel and no consumer", rs.conns, o.Batch, o.BodySize)
}

// replPassOrder is the settings, then the settings in reverse, rounds
// times: each setting sits at the same mean position, so that a steady
// drift of the machine's speed cancels out of the ratios.
func replPassOrder(modes []string, rounds int) []string {
	var out []string
	for range max(rounds, 1) {
		out = append(out, modes...)
		for i := len(modes) - 1; i >= 0; i-- {
			out = append(out, modes[i])
		}
	}
	return out
}

// replPass is the outcome of one pass.
type replPass struct {
	mode    string
	msgs    int64
	elapsed time.Duration
	rtts    []int64 // PUB round trips, ns
	// CPU seconds of the nodes during the timed part: the leader, the two
	// followers together, or the single node (as leader).
	leaderCPU, followersCPU float64
	redelivered, timeouts   int64
	// extra counts messages beyond those published found in the channel
	// (a publish retried after a leader change is committed twice).
	extra int64
	// appliedAfter is how long after the last OK every replica had
	// applied the pass's messages (cluster only).
	appliedAfter time.Duration
	// leaderNode is the index of the topic's leader in the cluster.
	leaderNode int
}

// replCluster is the running cluster of a scenario.
type replCluster struct {
	lookupdHTTP string
	nodes       []*Node
}

// RunReplicatedScenario runs one of ReplicatedScenarios on a cluster of 3
// nodes and a single node started by l (which must start Sluice's nsqd as
// a child process): an untimed warm-up pass of each setting, then passes
// in replPassOrder, each on a fresh topic. It returns a result per setting
// (the leader's under the scenario's name). A target without replicated
// topics or not a child process gets a skipped result.
func RunReplicatedScenario(ctx context.Context, l Launcher, o Options, name string) []Result {
	rs, ok := o.replScenarioOf(name)
	if !ok {
		return []Result{{Scenario: name, Target: l.Name(), Error: fmt.Sprintf("unknown replicated scenario (have %v)", ReplicatedScenarios)}}
	}
	rc, ok := l.(ReplicationCapable)
	if !ok {
		return []Result{{Scenario: name, Target: l.Name(), Skipped: "replicated topics need nsqd as child processes (--sluice-process or --sluice-bin)"}}
	}
	if !rc.SupportsReplication() {
		return []Result{{Scenario: name, Target: l.Name(), Skipped: "this nsqd has no replicated topics (no --replica-timeout flag)"}}
	}
	order := replPassOrder(rs.modes, o.Replicated.Rounds)
	var (
		passes  []replPass
		warmup  = map[string]int64{}
		notes   []string
		profile string
	)
	load0 := loadAverage()
	start := time.Now()
	err := o.withNodeConfig(ctx, l, NodeConfig{Durable: true}, func(single *Node) error {
		notes = append(notes, "single node: "+single.Note)
		return o.withCluster(ctx, l, func(c *replCluster) error {
			notes = append(notes, fmt.Sprintf("cluster: %d x %s", len(c.nodes), c.nodes[0].Note))
			for _, mode := range rs.modes {
				msgs := max(rs.msgs/replicatedWarmupDivisor, int64(rs.conns))
				p, err := o.replicatedPass(ctx, l, rs, c, single, mode, "warmup_"+mode, rs.name+" warm-up "+mode, msgs, "")
				if err != nil {
					return fmt.Errorf("warm-up pass (%s): %w", mode, err)
				}
				warmup[mode] = rate(p.msgs, p.elapsed)
			}
			for i, mode := range order {
				prof := ""
				if rs.name == ScenarioReplicatedMPUB && mode == replLeader && profile == "" && o.Replicated.CPUProfile != "" {
					prof, profile = o.Replicated.CPUProfile, o.Replicated.CPUProfile
				}
				label := fmt.Sprintf("%s %d/%d %s", rs.name, i+1, len(order), mode)
				p, err := o.replicatedPass(ctx, l, rs, c, single, mode, fmt.Sprintf("%d_%s", i+1, mode), label, rs.msgs, prof)
				passes = append(passes, p)
				if err != nil {
					return fmt.Errorf("pass %d/%d (%s): %w", i+1, len(order), mode, err)
				}
			}
			return nil
		})
	})
	out := o.replicatedResults(rs, l.Name(), order, passes, strings.Join(notes, "; "), err)
	load1 := loadAverage()
	for i := range out {
		if len(warmup) > 0 {
			out[i].extra("warmup_msgs_per_sec", warmup)
		}
		out[i].extra("loadavg_start", load0)
		out[i].extra("loadavg_end", load1)
		out[i].extra("scenario_seconds", roundTo(time.Since(start).Seconds(), 1))
		if profile != "" && out[i].Scenario == ScenarioReplicatedMPUB {
			out[i].extra("leader_cpu_profile", profile)
		}
	}
	return out
}

// withCluster starts an in-process nsqlookupd and replicatedNodes nodes of
// l registered with it (--durable, each in its own data directory under
// one temporary directory), waits until all are registered, runs fn and
// stops everything.
func (o Options) withCluster(ctx context.Context, l Launcher, fn func(c *replCluster) error) (err error) {
	dir, err := os.MkdirTemp(o.TempDir, "sluice-bench-cluster-")
	if err != nil {
		return fmt.Errorf("cluster dir: %w", err)
	}
	defer os.RemoveAll(dir)
	lo := lookupd.NewOptions()
	lo.TCPAddress, lo.HTTPAddress, lo.BroadcastAddress = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1"
	lk, err := lookupd.New(lo)
	if err != nil {
		return fmt.Errorf("nsqlookupd: %w", err)
	}
	if err := lk.Start(); err != nil {
		return fmt.Errorf("nsqlookupd: %w", err)
	}
	defer lk.Exit()
	c := &replCluster{lookupdHTTP: lk.HTTPAddr().String()}
	defer func() {
		// Every node is stopped (in parallel: a node that waits for its
		// peers while shutting down should not wait for them to be gone).
		errs := make(chan error, len(c.nodes))
		for _, n := range c.nodes {
			go func() { errs <- n.Stop() }()
		}
		for range c.nodes {
			if serr := <-errs; serr != nil && err == nil {
				err = fmt.Errorf("stop cluster node: %w", serr)
			}
		}
	}()
	for i := range replicatedNodes {
		nd := filepath.Join(dir, fmt.Sprintf("node-%d", i))
		if err := os.Mkdir(nd, 0o755); err != nil {
			return err
		}
		n, err := l.Launch(ctx, NodeConfig{Durable: true, DataPath: nd, LookupdTCPAddresses: []string{lk.TCPAddr().String()}})
		if err != nil {
			return fmt.Errorf("launch cluster node %d: %w", i, err)
		}
		if n.DataPath == "" {
			n.DataPath = nd
		}
		c.nodes = append(c.nodes, n)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.waitRegistered(wctx); err != nil {
		return err
	}
	return fn(c)
}

// waitRegistered polls nsqlookupd's /nodes until every node of c is listed.
func (c *replCluster) waitRegistered(ctx context.Context) error {
	var got []string
	for {
		got = got[:0]
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.lookupdHTTP+"/nodes", nil)
		req.Header.Set("Accept", "application/vnd.nsq; version=1.0")
		if resp, err := httpClient.Do(req); err == nil {
			var doc struct {
				Producers []struct {
					BroadcastAddress string `json:"broadcast_address"`
					TCPPort          int    `json:"tcp_port"`
				} `json:"producers"`
			}
			if json.NewDecoder(resp.Body).Decode(&doc) == nil {
				for _, p := range doc.Producers {
					got = append(got, p.BroadcastAddress+":"+strconv.Itoa(p.TCPPort))
				}
			}
			resp.Body.Close()
		}
		if !slices.ContainsFunc(c.nodes, func(n *Node) bool { return !slices.Contains(got, n.TCPAddr) }) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nodes on nsqlookupd: %v, want all of the cluster's: %w", got, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// slowHTTPClient is for the calls that wait on the cluster (a topic's
// creation and deletion go through the meta group).
var slowHTTPClient = &http.Client{Timeout: 60 * time.Second}

func slowPost(ctx context.Context, httpAddr, path string, q url.Values) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+httpAddr+path+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := slowHTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s?%s on %s: %s %s", path, q.Encode(), httpAddr, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// createReplicated creates topic with replicas=3 on node 0, waits until
// every node's /stats shows one leader, creates channel (through the
// leader: on every replica) and waits until every node lists it. It
// returns the leader's index.
func (c *replCluster) createReplicated(ctx context.Context, topic, channel string) (int, error) {
	q := url.Values{"topic": {topic}, "replicas": {strconv.Itoa(replicatedNodes)}}
	if err := slowPost(ctx, c.nodes[0].HTTPAddr, "/topic/create", q); err != nil {
		return -1, err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	lead, err := c.waitLeader(wctx, topic)
	if err != nil {
		return -1, err
	}
	if err := slowPost(ctx, c.nodes[lead].HTTPAddr, "/channel/create", url.Values{"topic": {topic}, "channel": {channel}}); err != nil {
		return -1, err
	}
	for _, n := range c.nodes {
		if err := waitChannelListed(wctx, n.HTTPAddr, topic, channel); err != nil {
			return -1, err
		}
	}
	return lead, nil
}

// waitLeader polls /stats on every node until all show the same non-empty
// leader of topic, one of the nodes.
func (c *replCluster) waitLeader(ctx context.Context, topic string) (int, error) {
	var seen []string
	for {
		seen = seen[:0]
		for _, n := range c.nodes {
			ts, err := GetTopicStats(ctx, n.HTTPAddr, topic)
			switch {
			case err != nil:
				seen = append(seen, "("+err.Error()+")")
			case ts.Leader == nil:
				seen = append(seen, "(no leader key)")
			default:
				seen = append(seen, *ts.Leader)
			}
		}
		if seen[0] != "" && !strings.HasPrefix(seen[0], "(") && !slices.ContainsFunc(seen, func(s string) bool { return s != seen[0] }) {
			if i := slices.IndexFunc(c.nodes, func(n *Node) bool { return n.TCPAddr == seen[0] }); i >= 0 {
				return i, nil
			}
			return -1, fmt.Errorf("topic %s: leader %s is none of the cluster's nodes", topic, seen[0])
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("topic %s: leaders seen by the nodes %q, want one: %w", topic, seen, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func waitChannelListed(ctx context.Context, httpAddr, topic, channel string) error {
	for {
		ts, err := GetTopicStats(ctx, httpAddr, topic)
		if err == nil && ts.findChannel(channel) != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("channel %s/%s not on %s: %w", topic, channel, httpAddr, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitApplied polls /stats on every node until each counts at least msgs
// messages in topic.
func (c *replCluster) waitApplied(ctx context.Context, topic string, msgs int64) error {
	for _, n := range c.nodes {
		var last int64 = -1
		for {
			ts, err := GetTopicStats(ctx, n.HTTPAddr, topic)
			if err == nil {
				last = ts.MessageCount
				if last >= msgs {
					break
				}
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("topic %s on %s: %d messages applied, want %d: %w", topic, n.TCPAddr, last, msgs, ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// cpuTicks reads utime+stime of each node (0 where it cannot be read).
func cpuTicks(nodes []*Node) []int64 {
	out := make([]int64, len(nodes))
	for i, n := range nodes {
		if n.PID > 0 {
			out[i], _ = ProcessCPUTicks(n.PID)
		}
	}
	return out
}

// replicatedPass runs one pass of rs in setting mode on a fresh topic
// (named after tag) of the cluster or of the single node, deleted after
// it. With profile set, the leader's CPU profile is taken during the
// timed part and written there.
func (o Options) replicatedPass(ctx context.Context, l Launcher, rs replScenario, c *replCluster, single *Node, mode, tag, label string, msgs int64, profile string) (replPass, error) {
	p := replPass{mode: mode, leaderNode: -1}
	topic := fmt.Sprintf("bench_%s_%s", strings.ReplaceAll(rs.name, "-", "_"), tag)
	const channel = "ch"
	var (
		lead, target *Node
		nodes        []*Node // those whose CPU counts: leader first
	)
	if mode == replSingle {
		lead, target, nodes = single, single, []*Node{single}
		if err := createDurableTopic(ctx, single.HTTPAddr, topic, 0); err != nil {
			return p, err
		}
		if err := httpPost(ctx, single.HTTPAddr, "/channel/create", url.Values{"topic": {topic}, "channel": {channel}}); err != nil {
			return p, err
		}
	} else {
		i, err := c.createReplicated(ctx, topic, channel)
		if err != nil {
			return p, err
		}
		p.leaderNode = i
		lead, target = c.nodes[i], c.nodes[i]
		nodes = append([]*Node{lead}, slices.Delete(slices.Clone(c.nodes), i, i+1)...)
		if mode == replFollower {
			target = nodes[1]
		}
	}
	// Deleted whatever happens, so that the next pass starts on an empty
	// node and the disk is given back.
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
		defer cancel()
		_ = slowPost(cctx, lead.HTTPAddr, "/topic/delete", url.Values{"topic": {topic}})
	}()

	if rs.consume {
		var sent atomic.Int64
		stop := o.progressFor(label+" fill@"+l.Name(), msgs, counterFunc(&sent))
		_, err := Publish(ctx, PublishSpec{Addr: target.TCPAddr, Topic: topic, Conns: o.Conns, Batch: o.Batch,
			BodySize: o.BodySize, Messages: msgs, Sent: &sent})
		stop()
		if err != nil {
			return p, fmt.Errorf("fill backlog: %w", err)
		}
		if err := WaitChannelDepth(ctx, lead.HTTPAddr, topic, channel, msgs); err != nil {
			return p, err
		}
		if c != nil && mode != replSingle {
			// Every replica holds the backlog before the drain is timed.
			if err := c.waitApplied(ctx, topic, msgs); err != nil {
				return p, err
			}
		}
		r := Result{Scenario: label}
		t0 := cpuTicks(nodes)
		err = o.drainChannel(ctx, l, lead, &r, topic, channel, msgs, false)
		p.leaderCPU, p.followersCPU = cpuSeconds(t0, cpuTicks(nodes))
		p.msgs, p.elapsed = r.Messages, time.Duration(r.Seconds*float64(time.Second))
		p.redelivered, _ = r.Extra["redelivered"].(int64)
		p.timeouts, _ = r.Extra["timeouts"].(int64)
		return p, err
	}

	var profErr chan error
	if profile != "" {
		profErr = make(chan error, 1)
		go func() { profErr <- fetchCPUProfile(ctx, lead.HTTPAddr, o.Replicated.CPUProfileDuration, profile) }()
	}
	var sent atomic.Int64
	stop := o.progressFor(label+"@"+l.Name(), msgs, counterFunc(&sent))
	t0 := cpuTicks(nodes)
	res, err := Publish(ctx, PublishSpec{Addr: target.TCPAddr, Topic: topic, Conns: rs.conns, Batch: o.Batch,
		BodySize: o.BodySize, Messages: msgs, PUB: rs.pub, RoundTrips: rs.pub, Sent: &sent})
	acked := time.Now()
	p.leaderCPU, p.followersCPU = cpuSeconds(t0, cpuTicks(nodes))
	stop()
	p.msgs, p.elapsed, p.rtts = res.Messages, res.Elapsed, res.RoundTrips
	if profErr != nil {
		if perr := <-profErr; perr != nil && err == nil {
			err = fmt.Errorf("leader CPU profile: %w", perr)
		}
	}
	if err != nil {
		return p, err
	}
	// Every acknowledged message must be in the channel of the node that
	// delivers, and (replicated) applied on every replica.
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := WaitChannelDepth(wctx, lead.HTTPAddr, topic, channel, msgs); err != nil {
		return p, err
	}
	if mode != replSingle {
		if err := c.waitApplied(wctx, topic, msgs); err != nil {
			return p, err
		}
		p.appliedAfter = time.Since(acked)
	}
	if ts, err := GetTopicStats(ctx, lead.HTTPAddr, topic); err == nil {
		if ch := ts.findChannel(channel); ch != nil && ch.Depth > msgs {
			p.extra = ch.Depth - msgs
		}
	}
	return p, nil
}

// cpuSeconds turns two cpuTicks readings into the CPU seconds of the first
// node and of the others together.
func cpuSeconds(before, after []int64) (first, others float64) {
	for i := range before {
		s := float64(after[i]-before[i]) / clockTicksPerSecond
		if i == 0 {
			first = s
		} else {
			others += s
		}
	}
	return first, others
}

// fetchCPUProfile writes the CPU profile of the nsqd at httpAddr over d
// (GET /debug/pprof/profile) to path.
func fetchCPUProfile(ctx context.Context, httpAddr string, d time.Duration, path string) error {
	secs := max(int(d.Round(time.Second)/time.Second), 1)
	cl := &http.Client{Timeout: time.Duration(secs)*time.Second + 30*time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		"http://"+httpAddr+"/debug/pprof/profile?seconds="+strconv.Itoa(secs), nil)
	if err != nil {
		return err
	}
	resp, err := cl.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /debug/pprof/profile: %s", resp.Status)
	}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return os.WriteFile(path, data, 0o644)
}

// loadAverage returns the machine's 1-minute load average (0 if unknown).
func loadAverage() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// replicatedResults makes a result per setting of rs from its passes.
func (o Options) replicatedResults(rs replScenario, target string, order []string, passes []replPass, note string, runErr error) []Result {
	type agg struct {
		msgs, redelivered, timeouts, extra int64
		el                                 time.Duration
		rates                              []float64
		rtts                               []int64
		leaderCPU, followersCPU            float64
		applied                            []float64
		leaders                            []int
	}
	aggs := map[string]*agg{}
	passRates := make([]int64, 0, len(passes))
	for _, p := range passes {
		a := aggs[p.mode]
		if a == nil {
			a = &agg{}
			aggs[p.mode] = a
		}
		passRates = append(passRates, rate(p.msgs, p.elapsed))
		a.msgs += p.msgs
		a.el += p.elapsed
		a.redelivered += p.redelivered
		a.timeouts += p.timeouts
		a.extra += p.extra
		a.rtts = append(a.rtts, p.rtts...)
		a.leaderCPU += p.leaderCPU
		a.followersCPU += p.followersCPU
		if p.elapsed > 0 {
			a.rates = append(a.rates, float64(p.msgs)/p.elapsed.Seconds())
		}
		if p.appliedAfter > 0 {
			a.applied = append(a.applied, roundTo(p.appliedAfter.Seconds(), 3))
		}
		if p.leaderNode >= 0 {
			a.leaders = append(a.leaders, p.leaderNode)
		}
	}
	single := aggs[replSingle]
	out := make([]Result, 0, len(rs.modes))
	for _, m := range rs.modes {
		r := Result{Scenario: rs.resultName(m), Target: target}
		where := map[string]string{
			replLeader:   fmt.Sprintf("replicated topic (replicas=%d, %d local nodes), through its leader", replicatedNodes, replicatedNodes),
			replFollower: fmt.Sprintf("replicated topic (replicas=%d, %d local nodes), through a follower (forwarded to the leader)", replicatedNodes, replicatedNodes),
			replSingle:   "single-node durable topic (durable=true), same binary, same run",
		}[m]
		r.Config = fmt.Sprintf("%d msgs per pass; %s; %s; passes %s, each on a fresh topic deleted after it; %s",
			rs.msgs, rs.loadDesc(o), where, strings.Join(order, ","), note)
		if a := aggs[m]; a != nil && a.msgs > 0 {
			r.setRate(a.msgs, a.el, o.BodySize)
			r.extra("median_msgs_per_sec", int64(round(medianOf(a.rates))))
			if m != replSingle && single != nil && single.msgs > 0 && single.el > 0 {
				r.extra("single_msgs_per_sec", rate(single.msgs, single.el))
				r.extra("ratio_vs_single", roundTo(r.MsgsPerSec/(float64(single.msgs)/single.el.Seconds()), 3))
				if mm, ms := medianOf(a.rates), medianOf(single.rates); mm > 0 && ms > 0 {
					r.extra("single_median_msgs_per_sec", int64(round(ms)))
					r.extra("median_ratio_vs_single", roundTo(mm/ms, 3))
				}
			}
			if len(a.rtts) > 0 {
				r.Latency = Percentiles(a.rtts)
			}
			r.extra("cpu_us_per_msg", roundTo((a.leaderCPU+a.followersCPU)*1e6/float64(a.msgs), 2))
			if m != replSingle {
				r.extra("leader_cpu_us_per_msg", roundTo(a.leaderCPU*1e6/float64(a.msgs), 2))
				r.extra("followers_cpu_us_per_msg", roundTo(a.followersCPU*1e6/float64(a.msgs), 2))
				r.extra("leader_node", a.leaders)
			}
			if len(a.applied) > 0 {
				r.extra("all_replicas_applied_after_s", a.applied)
			}
			if rs.consume {
				r.extra("redelivered", a.redelivered)
				r.extra("timeouts", a.timeouts)
			} else {
				r.extra("channel_extra_msgs", a.extra)
			}
		}
		if len(passes) > 0 {
			r.extra("pass_order", strings.Join(order[:len(passes)], ","))
			r.extra("pass_msgs_per_sec", passRates)
		}
		if runErr != nil {
			r.Error = runErr.Error()
		}
		out = append(out, r)
	}
	return out
}

// ReplicatedChecks evaluates the benchmark goal for replicated
// topics on results of one run: replicated-mpub's median pass rate ÷ the
// single-node durable median (>= 0.3), followed (no goal) by the same
// over all passes and the other replicated results' ratios and PUB round
// trip percentiles. Failed and skipped results are left out.
func ReplicatedChecks(results []Result) []Check {
	var out []Check
	for _, r := range results {
		if !strings.HasPrefix(r.Scenario, ScenarioReplicated+"-") || r.Error != "" || r.Skipped != "" || r.Messages == 0 {
			continue
		}
		if r.Scenario == ScenarioReplicatedMPUB {
			if m, ok := r.Extra["median_ratio_vs_single"].(float64); ok {
				met := m >= goalReplicatedMPUB
				out = append(out, Check{Name: r.Scenario + " / single-node durable, medians", Target: r.Target, Value: m,
					Goal: ">= " + strconv.FormatFloat(goalReplicatedMPUB, 'f', -1, 64), Met: &met})
			}
		} else if m, ok := r.Extra["median_ratio_vs_single"].(float64); ok {
			out = append(out, Check{Name: r.Scenario + " / single-node durable, medians", Target: r.Target, Value: m})
		}
		if v, ok := r.Extra["ratio_vs_single"].(float64); ok {
			out = append(out, Check{Name: r.Scenario + " / single-node durable, all passes", Target: r.Target, Value: v})
		}
		if r.Latency != nil {
			out = append(out, Check{Name: r.Scenario + " PUB round trip p50 ms", Target: r.Target, Value: r.Latency.P50},
				Check{Name: r.Scenario + " PUB round trip p99 ms", Target: r.Target, Value: r.Latency.P99})
		}
	}
	return out
}
