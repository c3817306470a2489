package bench

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// Durable-topic scenarios (Sluice only) and the disk-mode comparison that
// NSQ can run too.
const (
	// ScenarioDurable runs every scenario of DurableScenarios.
	ScenarioDurable = "durable"
	// ScenarioDiskSync1 is MPUB with --mem-queue-size=0 --sync-every=1:
	// NSQ's disk mode made to sync every message.
	ScenarioDiskSync1 = "disk-sync1"

	// ScenarioDurableMPUB: MPUB into a durable topic, one channel, no
	// consumer.
	ScenarioDurableMPUB = "durable-mpub"
	// ScenarioDurablePUB64: one PUB per round trip on 64 connections.
	ScenarioDurablePUB64 = "durable-pub64"
	// ScenarioDurablePUB1: one PUB per round trip on one connection (p50),
	// beside an fdatasync probe on the same disk.
	ScenarioDurablePUB1 = "durable-pub1"
	// ScenarioDurableConsume: the drain of a durable backlog.
	ScenarioDurableConsume = "durable-consume"
	// ScenarioDurableReplay: the drain of a new channel created with
	// start=earliest on a topic whose messages a first channel finished and
	// retention_time kept.
	ScenarioDurableReplay = "durable-replay"
)

// DurableScenarios are the scenarios ScenarioDurable stands for, in run
// order; each can also be selected by name.
var DurableScenarios = []string{ScenarioDurableMPUB, ScenarioDurablePUB64, ScenarioDurablePUB1,
	ScenarioDurableConsume, ScenarioDurableReplay}

// durablePUBConns is the connection count of durable-pub64 (the issue's).
const durablePUBConns = 64

// DurableCapable is implemented by launchers that know whether their nsqd
// has durable topics.
type DurableCapable interface {
	SupportsDurable() bool
}

// SupportsDurable implements DurableCapable: the binary's --help is read
// once for the --durable flag.
func (b *BinaryLauncher) SupportsDurable() bool {
	return strings.Contains(b.helpText(), "-durable")
}

// helpText returns what the binary's --help printed (read once).
func (b *BinaryLauncher) helpText() string {
	b.helpOnce.Do(func() { b.help, _ = execHelp(b.Path) })
	return b.help
}

func supportsDurable(l Launcher) bool {
	d, ok := l.(DurableCapable)
	return ok && d.SupportsDurable()
}

func createDurableTopic(ctx context.Context, httpAddr, topic string, retention time.Duration) error {
	q := url.Values{"topic": {topic}, "durable": {"true"}}
	if retention > 0 {
		q.Set("retention_time", retention.String())
	}
	return httpPost(ctx, httpAddr, "/topic/create", q)
}

// RunDurable runs every durable scenario on l, each on a fresh node started
// with --durable.
func RunDurable(ctx context.Context, l Launcher, o Options) []Result {
	out := make([]Result, 0, len(DurableScenarios))
	for _, name := range DurableScenarios {
		out = append(out, RunDurableScenario(ctx, l, o, name))
	}
	return out
}

// RunDurableScenario runs one of DurableScenarios on a fresh node started
// with --durable. A target without durable topics (NSQ) gets a result that
// says it was skipped, not an error.
func RunDurableScenario(ctx context.Context, l Launcher, o Options, name string) Result {
	if !supportsDurable(l) {
		return Result{Scenario: name, Target: l.Name(), Skipped: "this nsqd has no durable topics (no --durable flag)"}
	}
	cfg := NodeConfig{Durable: true}
	switch name {
	case ScenarioDurableMPUB:
		return o.publishScenario(ctx, l, name, cfg, o.Conns, o.DurableMPUBMessages, false)
	case ScenarioDurablePUB64:
		return o.publishScenario(ctx, l, name, cfg, durablePUBConns, o.DurablePUBMessages, true)
	case ScenarioDurablePUB1:
		return o.durablePUB1(ctx, l)
	case ScenarioDurableConsume:
		return o.durableConsume(ctx, l)
	case ScenarioDurableReplay:
		return o.durableReplay(ctx, l)
	}
	return Result{Scenario: name, Target: l.Name(), Error: fmt.Sprintf("unknown durable scenario (have %v)", DurableScenarios)}
}

func isDurableScenario(name string) bool { return slices.Contains(DurableScenarios, name) }

// durablePUB1 times single PUB round trips on one connection and, in the
// same data directory, single fdatasyncs of a 100-byte append.
func (o Options) durablePUB1(ctx context.Context, l Launcher) Result {
	r := Result{Scenario: ScenarioDurablePUB1, Target: l.Name()}
	err := o.withNodeConfig(ctx, l, NodeConfig{Durable: true}, func(n *Node) error {
		r.Config = fmt.Sprintf("1 conn, PUB %d B, one per round trip, %d round trips; fsync = write %d B + fdatasync to a file in the same data directory, as many times, before the PUBs; %s",
			o.BodySize, o.DurablePUB1Messages, o.BodySize, n.Note)
		topic := "bench_durable_pub1"
		if err := createDurableTopic(ctx, n.HTTPAddr, topic, 0); err != nil {
			return err
		}
		probeDir := n.DataPath
		if probeDir == "" {
			probeDir = os.TempDir() // an external node: its disk is unknown
		}
		fsyncs, err := measureFsync(probeDir, o.BodySize, int(o.DurablePUB1Messages))
		if err != nil {
			return err
		}
		meter := startSyncMeter(ctx, n.HTTPAddr)
		start := time.Now()
		rtts, err := pubRoundTrips(ctx, n.TCPAddr, topic, o.BodySize, int(o.DurablePUB1Messages))
		el := time.Since(start)
		r.setRate(int64(len(rtts)), el, o.BodySize)
		meter.report(&r, int64(len(rtts)))
		if err != nil {
			return err
		}
		ns := make([]int64, len(rtts))
		for i, v := range rtts {
			ns[i] = int64(v)
		}
		r.Latency = Percentiles(ns)
		p50, f50 := median(rtts), median(fsyncs)
		r.extra("pub_p50_us", round(p50.Seconds()*1e6))
		r.extra("fsync_p50_us", round(f50.Seconds()*1e6))
		if f50 > 0 {
			r.extra("pub_p50_over_fsync_p50", roundTo(p50.Seconds()/f50.Seconds(), 2))
		}
		return nil
	})
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// durableConsume publishes a durable backlog, then times its drain; the
// durable counters are read around the drain (the cursor journal's cost).
func (o Options) durableConsume(ctx context.Context, l Launcher) Result {
	r := Result{Scenario: ScenarioDurableConsume, Target: l.Name()}
	err := o.withNodeConfig(ctx, l, NodeConfig{Durable: true}, func(n *Node) error {
		r.Config = fmt.Sprintf("durable backlog %d x %d B, %d consumers RDY %d, FIN each; fsyncs and bytes during the drain; %s",
			o.ConsumeMessages, o.BodySize, o.Conns, o.RDY, n.Note)
		topic := "bench_durable_consume"
		if err := createDurableTopic(ctx, n.HTTPAddr, topic, 0); err != nil {
			return err
		}
		return o.drainBacklog(ctx, l, n, &r, topic, "ch", o.ConsumeMessages, true)
	})
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// durableReplay publishes ReplayMessages into a durable topic created with
// retention_time=1h, lets a first channel finish all of them (untimed), so
// that only retention keeps the finished segments, then times a new channel
// created with start=earliest draining all of them from the log files.
func (o Options) durableReplay(ctx context.Context, l Launcher) Result {
	r := Result{Scenario: ScenarioDurableReplay, Target: l.Name()}
	msgs := o.ReplayMessages
	err := o.withNodeConfig(ctx, l, NodeConfig{Durable: true}, func(n *Node) error {
		r.Config = fmt.Sprintf("%d x %d B published and finished by a first channel, kept by retention_time=1h; new channel start=earliest drained by %d consumers RDY %d, FIN each; %s",
			msgs, o.BodySize, o.Conns, o.RDY, n.Note)
		topic := "bench_durable_replay"
		if err := createDurableTopic(ctx, n.HTTPAddr, topic, time.Hour); err != nil {
			return err
		}
		first := Result{Scenario: r.Scenario + " first"}
		if err := o.drainBacklog(ctx, l, n, &first, topic, "first", msgs, false); err != nil {
			return fmt.Errorf("first channel: %w", err)
		}
		r.extra("fill_msgs_per_sec", first.Extra["fill_msgs_per_sec"])
		r.extra("first_drain_msgs_per_sec", int64(first.MsgsPerSec))
		if err := httpPost(ctx, n.HTTPAddr, "/channel/create", url.Values{"topic": {topic}, "channel": {"replay"}, "start": {"earliest"}}); err != nil {
			return err
		}
		return o.drainChannel(ctx, l, n, &r, topic, "replay", msgs, true)
	})
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// RunDiskSync1 publishes with MPUB into a topic with one channel and
// --mem-queue-size=0 --sync-every=1 (NSQ's safest disk setting; slow, so it
// has its own size).
func RunDiskSync1(ctx context.Context, l Launcher, o Options) Result {
	return o.publishScenario(ctx, l, ScenarioDiskSync1+"-mpub", NodeConfig{MemQueueSize: 0, SyncEvery: 1}, o.Conns, o.Sync1Messages, false)
}

// execHelp returns what `bin --help` prints (bounded: a binary that does
// not exit is read as having no durable topics).
func execHelp(bin string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--help").CombinedOutput()
	return string(out), err
}
