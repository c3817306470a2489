package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"sync/atomic"
	"time"
)

// Options sizes every scenario. DefaultOptions is a quick run; FullOptions
// has the sizes of the issue.
type Options struct {
	// Conns is the number of publishing and of consuming connections.
	Conns int
	// Batch is the number of messages per MPUB; BodySize the body bytes.
	Batch, BodySize int
	// RDY is each consumer's ready count.
	RDY int
	// LargeMemQueue is --mem-queue-size for the in-memory scenarios (like
	// NSQ's bench, so that no message goes to disk).
	LargeMemQueue int64

	SinkMessages    int64 // raw sink baseline (MPUB framing)
	MPUBMessages    int64 // publish MPUB, one channel, no consumer
	PUBMessages     int64 // publish PUB, one per round trip
	ConsumeMessages int64 // backlog drained by the consumers

	// LatencyRate is the offered rate (msgs/s) of the throttled
	// publish+consume scenario, run for LatencyDuration.
	LatencyRate     float64
	LatencyDuration time.Duration
	// LatencyMessages is the size of the unthrottled publish+consume run.
	LatencyMessages int64
	// ConsumerOutputBufferTimeout, when > 0, is sent in the consumers'
	// IDENTIFY (ms); 0 keeps nsqd's default (250 ms), as go-nsq does.
	ConsumerOutputBufferTimeout int

	DiskMessages  int64 // --mem-queue-size=0: publish, then drain
	Sync1Messages int64 // --mem-queue-size=0 --sync-every=1 MPUB

	// Durable topics (Sluice): MPUB and PUB (64 conns) publishes, single
	// PUB round trips, and the replay of a retained backlog.
	DurableMPUBMessages int64
	DurablePUBMessages  int64
	DurablePUB1Messages int64
	ReplayMessages      int64
	FanoutMessages      int64 // published once, delivered to each channel
	FanoutChannels      int

	// Policy sizes the message-policy scenarios (per pass).
	Policy PolicyOptions

	// Replicated sizes the replicated-topic scenarios (per pass).
	Replicated ReplicatedOptions

	// IdleConns connections are held; IdleHeartbeat is their negotiated
	// heartbeat interval. After every connection has answered a heartbeat
	// the daemon settles for IdleConnsSettle, then its CPU time is measured
	// over IdleConnsWindow, then its RSS. IdleConnsPerSource connections
	// come from each source address (0: the ephemeral port range less a
	// margin, about 27,000).
	IdleConns          int
	IdleHeartbeat      time.Duration
	IdleConnsSettle    time.Duration
	IdleConnsWindow    time.Duration
	IdleConnsPerSource int

	// IdleChannels sizes idle-channels (topics and channels loaded from
	// nsqd.dat, nothing connected).
	IdleChannels IdleChannelsOptions

	// SinkMode says where sink-pub and sink-consume run: "process" (a
	// child process, like the daemons it is compared with), "inproc", or
	// "auto"/"" (a child process when every target is one).
	SinkMode string
	// SustainedMessages are delivered by pubsub-sustained (the disk
	// variants use DiskMessages); SustainedBacklog bounds published −
	// delivered in pubsub-sustained and disk-pubsub-sustained.
	SustainedMessages int64
	SustainedBacklog  int64
	// Lookup sizes lookupd-lookup; Create sizes create-channels.
	Lookup LookupOptions
	Create CreateOptions

	// Rounds runs every scenario this many times in a row, the targets in
	// turn one way, then the other (A B, B A, A B, ...); the issue-12
	// tables take the median of the rounds.
	Rounds int

	// ScenarioTimeout bounds each scenario on each target.
	ScenarioTimeout time.Duration
	// TempDir holds the nodes' data directories ("" = os.TempDir()).
	TempDir string
	// Progress receives progress lines every ProgressEvery (nil = quiet).
	Progress      io.Writer
	ProgressEvery time.Duration
}

// DefaultOptions returns small sizes for a quick run (under a minute per
// target on two cores).
func DefaultOptions() Options {
	return Options{
		Conns: 4, Batch: 200, BodySize: 100, RDY: 2500, LargeMemQueue: 10_000_000,
		SinkMessages: 10_000_000, MPUBMessages: 2_000_000, PUBMessages: 50_000, ConsumeMessages: 1_000_000,
		LatencyRate: 10_000, LatencyDuration: 5 * time.Second, LatencyMessages: 500_000,
		DiskMessages: 300_000, Sync1Messages: 20_000,
		DurableMPUBMessages: 2_000_000, DurablePUBMessages: 100_000, DurablePUB1Messages: 2_000, ReplayMessages: 1_000_000,
		FanoutMessages: 200_000, FanoutChannels: 10,
		Policy: PolicyOptions{MPUBMessages: 2_000_000, ConsumeMessages: 1_500_000,
			DurableMPUBMessages: 1_000_000, DurableConsumeMessages: 1_000_000, Rounds: 3, MPUBRounds: 6},
		Replicated: ReplicatedOptions{MPUBMessages: 500_000, PUBMessages: 20_000, ConsumeMessages: 300_000, Rounds: 1,
			CPUProfileDuration: 10 * time.Second},
		IdleConns: 2_000, IdleHeartbeat: 5 * time.Second, IdleConnsSettle: 10 * time.Second, IdleConnsWindow: 10 * time.Second,
		IdleChannels:      IdleChannelsOptions{Topics: 1_000, ChannelsPerTopic: 10, Settle: 5 * time.Second, Window: 10 * time.Second},
		SustainedMessages: 1_000_000, SustainedBacklog: 20_000,
		Lookup:          LookupOptions{Requests: 100_000, Clients: 8, Producers: 4, Topics: 10},
		Create:          CreateOptions{Topics: 200, ChannelsPerTopic: 10, Lookupd: true},
		ScenarioTimeout: 3 * time.Minute, ProgressEvery: 5 * time.Second, Rounds: 1,
	}
}

// FullOptions returns the sizes.
func FullOptions() Options {
	o := DefaultOptions()
	o.SinkMessages = 50_000_000
	o.MPUBMessages = 5_000_000
	o.PUBMessages = 200_000
	o.ConsumeMessages = 2_500_000
	o.LatencyRate = 20_000
	o.LatencyDuration = 30 * time.Second
	o.LatencyMessages = 2_000_000
	o.DiskMessages = 1_000_000 // the "drain 1M from disk"
	o.Sync1Messages = 40_000
	o.DurableMPUBMessages = 5_000_000
	o.DurablePUBMessages = 200_000
	o.DurablePUB1Messages = 5_000
	o.ReplayMessages = 10_000_000
	o.FanoutMessages = 500_000
	o.Policy = PolicyOptions{MPUBMessages: 5_000_000, ConsumeMessages: 2_500_000,
		DurableMPUBMessages: 2_500_000, DurableConsumeMessages: 2_500_000, Rounds: 3, MPUBRounds: 6}
	o.Replicated.MPUBMessages = 5_000_000 // durable-mpub's, for the ratio
	o.Replicated.PUBMessages = 200_000    // durable-pub64's
	o.Replicated.ConsumeMessages = 2_500_000
	o.IdleConns = 18_000 // the count: this machine allows 20,000 open files per process
	o.IdleConnsWindow = 20 * time.Second
	o.IdleChannels = IdleChannelsOptions{Topics: 10_000, ChannelsPerTopic: 10, Settle: 5 * time.Second, Window: 20 * time.Second}
	o.SustainedMessages = 5_000_000
	o.Lookup.Requests = 500_000
	o.Create.Topics = 1_000
	o.ScenarioTimeout = 15 * time.Minute
	return o
}

// Scenario names, in run order.
const (
	ScenarioSink        = "sink-mpub"
	ScenarioMPUB        = "mpub"
	ScenarioPUB         = "pub"
	ScenarioConsume     = "consume"
	ScenarioLatencyRate = "pubsub-rate"
	ScenarioLatencyMax  = "pubsub-max"
	ScenarioDisk        = "disk"
	ScenarioFanout      = "fanout"
	ScenarioIdle        = "idle-conns"
)

// AllScenarios lists every scenario in run order.
var AllScenarios = []string{ScenarioSink, ScenarioMPUB, ScenarioSinkPUB, ScenarioPUB, ScenarioSinkConsume, ScenarioConsume,
	ScenarioLatencyRate, ScenarioLatencyMax, ScenarioSustained, ScenarioDisk, ScenarioDiskSustained, ScenarioDiskMax, ScenarioDiskSync1, ScenarioDurable, ScenarioPolicy, ScenarioReplicated, ScenarioFanout, ScenarioIdle, ScenarioIdleChannels}

func (o Options) loadDesc() string {
	return fmt.Sprintf("%d conns, MPUB %d x %d B", o.Conns, o.Batch, o.BodySize)
}

// withNode launches a node with a fresh data directory and the given
// --mem-queue-size, runs fn, stops the node and removes the directory.
func (o Options) withNode(ctx context.Context, l Launcher, memQueue int64, fn func(n *Node) error) error {
	return o.withNodeConfig(ctx, l, NodeConfig{MemQueueSize: memQueue}, fn)
}

// withNodeConfig launches a node configured by cfg in a fresh data
// directory, runs fn, stops the node (or, for a shared node, deletes its
// bench topics) and removes the directory.
func (o Options) withNodeConfig(ctx context.Context, l Launcher, cfg NodeConfig, fn func(n *Node) error) error {
	dir, err := os.MkdirTemp(o.TempDir, "sluice-bench-")
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	defer os.RemoveAll(dir)
	cfg.DataPath = dir
	n, err := l.Launch(ctx, cfg)
	if err != nil {
		return fmt.Errorf("launch %s: %w", l.Name(), err)
	}
	if n.DataPath == "" && !n.Shared {
		n.DataPath = dir
	}
	runErr := fn(n)
	if n.Shared {
		// Bounded even when ctx has ended, so the node is left clean.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := DeleteBenchTopics(cctx, n.HTTPAddr); err != nil && runErr == nil {
			runErr = fmt.Errorf("clean up %s: %w", l.Name(), err)
		}
	}
	if err := n.Stop(); err != nil && runErr == nil {
		runErr = fmt.Errorf("stop %s: %w", l.Name(), err)
	}
	return runErr
}

func (o Options) progressFor(label string, total int64, c func() int64) func() {
	return progress(o.Progress, o.ProgressEvery, label, total, c)
}

// RunSink measures the raw TCP sink with the MPUB scenario's publisher.
func RunSink(ctx context.Context, o Options) Result {
	r := Result{Scenario: ScenarioSink, Target: "raw-sink", Config: o.loadDesc() + "; in-process sink that discards bodies"}
	s, err := NewSink("127.0.0.1:0")
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer s.Close()
	var sent atomic.Int64
	stop := o.progressFor("sink-mpub", o.SinkMessages, counterFunc(&sent))
	res, err := Publish(ctx, PublishSpec{Addr: s.Addr(), Topic: "bench", Conns: o.Conns, Batch: o.Batch,
		BodySize: o.BodySize, Messages: o.SinkMessages, Sent: &sent})
	stop()
	r.setRate(res.Messages, res.Elapsed, o.BodySize)
	if err != nil {
		r.Error = err.Error()
	} else if got := s.Messages(); got != o.SinkMessages {
		r.Error = fmt.Sprintf("sink received %d messages, want %d", got, o.SinkMessages)
	}
	return r
}

// RunMPUB publishes with MPUB into a topic with one channel and no consumer.
func RunMPUB(ctx context.Context, l Launcher, o Options) Result {
	return o.runPublish(ctx, l, ScenarioMPUB, o.MPUBMessages, false)
}

// RunPUB publishes with one PUB per round trip.
func RunPUB(ctx context.Context, l Launcher, o Options) Result {
	return o.runPublish(ctx, l, ScenarioPUB, o.PUBMessages, true)
}

func (o Options) runPublish(ctx context.Context, l Launcher, name string, msgs int64, pub bool) Result {
	return o.publishScenario(ctx, l, name, NodeConfig{MemQueueSize: o.LargeMemQueue}, o.Conns, msgs, pub)
}

// publishScenario publishes msgs on conns connections (MPUB batches, or one
// PUB per round trip) into a topic with one channel and no consumer, on a
// node configured by cfg (a durable topic when cfg.Durable, with fsyncs and
// bytes per message reported), and checks the channel holds them all.
func (o Options) publishScenario(ctx context.Context, l Launcher, name string, cfg NodeConfig, conns int, msgs int64, pub bool) Result {
	r := Result{Scenario: name, Target: l.Name()}
	err := o.withNodeConfig(ctx, l, cfg, func(n *Node) error {
		desc := fmt.Sprintf("%d conns, MPUB %d x %d B", conns, o.Batch, o.BodySize)
		if pub {
			desc = fmt.Sprintf("%d conns, PUB %d B, one per round trip", conns, o.BodySize)
		}
		setup := fmt.Sprintf("--mem-queue-size=%d%s", cfg.MemQueueSize, cfg.flagNote())
		if cfg.Durable {
			setup = "durable topic (OK after fdatasync)"
		}
		r.Config = fmt.Sprintf("%s; one channel, no consumer; %s; %s", desc, setup, n.Note)
		topic, channel := "bench_"+strings.ReplaceAll(name, "-", "_"), "ch"
		if cfg.Durable {
			if err := createDurableTopic(ctx, n.HTTPAddr, topic, 0); err != nil {
				return err
			}
		}
		if err := CreateChannel(ctx, n.HTTPAddr, topic, channel); err != nil {
			return err
		}
		var meter *syncMeter
		if cfg.Durable {
			meter = startSyncMeter(ctx, n.HTTPAddr)
		}
		var sent atomic.Int64
		stop := o.progressFor(name+"@"+l.Name(), msgs, counterFunc(&sent))
		cpu := startCPUMeter(n)
		res, err := Publish(ctx, PublishSpec{Addr: n.TCPAddr, Topic: topic, Conns: conns, Batch: o.Batch,
			BodySize: o.BodySize, Messages: msgs, PUB: pub, Sent: &sent})
		stop()
		cpu.report(&r, res.Messages, "msg")
		r.setRate(res.Messages, res.Elapsed, o.BodySize)
		if meter != nil {
			meter.report(&r, res.Messages)
		}
		if err != nil {
			return err
		}
		// Every acknowledged message must be in the channel (exact count).
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := WaitChannelDepth(wctx, n.HTTPAddr, topic, channel, msgs); err != nil {
			return err
		}
		r.extra("channel_depth", msgs)
		return deleteBacklog(ctx, n, topic)
	})
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// deleteBacklog deletes a topic whose messages were counted and are not
// needed any more, so that stopping the node does not write them to disk
// first: with millions of messages in memory both NSQ 1.3.0 and Sluice
// took 20-30 s to exit on this machine, past Stop's 30 s.
func deleteBacklog(ctx context.Context, n *Node, topic string) error {
	if err := DeleteTopic(ctx, n.HTTPAddr, topic); err != nil {
		return fmt.Errorf("delete the published backlog before stopping: %w", err)
	}
	return nil
}

// RunConsume fills a channel with a backlog, then drains it with Conns
// consumers (RDY each, FIN for every message). Only the drain is timed.
func RunConsume(ctx context.Context, l Launcher, o Options) Result {
	r := Result{Scenario: ScenarioConsume, Target: l.Name()}
	err := o.withNode(ctx, l, o.LargeMemQueue, func(n *Node) error {
		r.Config = fmt.Sprintf("backlog %d x %d B, %d consumers RDY %d, FIN each; --mem-queue-size=%d; %s",
			o.ConsumeMessages, o.BodySize, o.Conns, o.RDY, o.LargeMemQueue, n.Note)
		return o.drainBacklog(ctx, l, n, &r, "bench_consume", "ch", o.ConsumeMessages, false)
	})
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// drainBacklog publishes msgs into topic/channel, waits until the channel
// holds all of them, then times Conns consumers draining it. With
// meterDrain, the durable counters of /metrics are read around the drain
// (fsyncs and bytes of the cursor journals while consuming).
func (o Options) drainBacklog(ctx context.Context, l Launcher, n *Node, r *Result, topic, channel string, msgs int64, meterDrain bool) error {
	if err := CreateChannel(ctx, n.HTTPAddr, topic, channel); err != nil {
		return err
	}
	var sent atomic.Int64
	stop := o.progressFor(r.Scenario+" fill@"+l.Name(), msgs, counterFunc(&sent))
	pres, err := Publish(ctx, PublishSpec{Addr: n.TCPAddr, Topic: topic, Conns: o.Conns, Batch: o.Batch,
		BodySize: o.BodySize, Messages: msgs, Sent: &sent})
	stop()
	if err != nil {
		return fmt.Errorf("fill backlog: %w", err)
	}
	r.extra("fill_msgs_per_sec", rate(pres.Messages, pres.Elapsed))
	if r.Scenario == ScenarioDisk+"-consume" {
		r.extra("fill_seconds", pres.Elapsed.Seconds())
		delete(r.Extra, "fill_msgs_per_sec")
	}
	if err := WaitChannelDepth(ctx, n.HTTPAddr, topic, channel, msgs); err != nil {
		return err
	}
	return o.drainChannel(ctx, l, n, r, topic, channel, msgs, meterDrain)
}

// drainChannel times Conns consumers draining msgs from topic/channel and
// checks that the channel ends empty.
func (o Options) drainChannel(ctx context.Context, l Launcher, n *Node, r *Result, topic, channel string, msgs int64, meterDrain bool) error {
	var meter *syncMeter
	if meterDrain {
		meter = startSyncMeter(ctx, n.HTTPAddr)
	}
	g, err := StartConsumers(ctx, ConsumeSpec{Addr: n.TCPAddr, Topic: topic, Channel: channel, Conns: o.Conns,
		RDY: o.RDY, Expect: msgs, OutputBufferTimeoutMS: o.ConsumerOutputBufferTimeout})
	if err != nil {
		return err
	}
	stop := o.progressFor(r.Scenario+" drain@"+l.Name(), msgs, g.Received)
	cpu := startCPUMeter(n)
	cres, err := g.Wait()
	stop()
	cpu.report(r, cres.Messages, "msg")
	r.setRate(cres.Messages, cres.End.Sub(cres.Start), o.BodySize)
	r.extra("redelivered", cres.Redelivered)
	if meter != nil {
		meter.report(r, cres.Messages)
	}
	if err != nil {
		return err
	}
	return o.checkDrained(ctx, n, r, topic, channel)
}

// checkDrained polls /stats until the channel has no queued and no
// in-flight messages (all FINs processed).
func (o Options) checkDrained(ctx context.Context, n *Node, r *Result, topic, channel string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		ts, err := GetTopicStats(ctx, n.HTTPAddr, topic)
		if err == nil {
			for _, c := range ts.Channels {
				if c.Name == channel && c.Depth == 0 && c.InFlight == 0 {
					r.extra("timeouts", c.TimeoutCount)
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("channel %s/%s not drained: %v", topic, channel, ts)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// RunLatency publishes while Conns consumers consume and reports end-to-end
// latency. With throttled=true the offered rate is o.LatencyRate for
// o.LatencyDuration; otherwise o.LatencyMessages are sent unthrottled.
func RunLatency(ctx context.Context, l Launcher, o Options, throttled bool) Result {
	if throttled {
		return o.pubSub(ctx, l, pubSubLoad{name: ScenarioLatencyRate, memQueue: o.LargeMemQueue,
			msgs: int64(o.LatencyRate * o.LatencyDuration.Seconds()), rate: o.LatencyRate})
	}
	return o.pubSub(ctx, l, pubSubLoad{name: ScenarioLatencyMax, memQueue: o.LargeMemQueue, msgs: o.LatencyMessages})
}

// pubSubLoad is a publish + consume run: msgs published by Conns MPUB
// publishers (at the offered rate, or with a bounded backlog, or
// unthrottled) while Conns consumers consume them.
type pubSubLoad struct {
	name     string
	memQueue int64
	msgs     int64
	rate     float64 // offered msgs/s; 0 = as fast as the gate allows
	backlog  int64   // > 0: published − delivered stays under it
}

// pubSub runs load on a fresh node and reports delivered msgs/s (publish
// start to last delivery), end-to-end latency and, for a child process,
// the daemon's CPU per delivered message.
func (o Options) pubSub(ctx context.Context, l Launcher, load pubSubLoad) Result {
	name, msgs, offer := load.name, load.msgs, load.rate
	batch := o.Batch
	r := Result{Scenario: name, Target: l.Name()}
	err := o.withNode(ctx, l, load.memQueue, func(n *Node) error {
		obt := "nsqd default output_buffer_timeout"
		if o.ConsumerOutputBufferTimeout > 0 {
			obt = fmt.Sprintf("output_buffer_timeout=%dms", o.ConsumerOutputBufferTimeout)
		}
		offered := "unthrottled"
		switch {
		case offer > 0:
			offered = fmt.Sprintf("offered %.0f msgs/s for %s (latency from scheduled send time)", offer, o.LatencyDuration)
		case load.backlog > 0:
			offered = fmt.Sprintf("%d msgs, throttled so that published - delivered <= %d", msgs, load.backlog)
		default:
			offered = fmt.Sprintf("%d msgs, unthrottled", msgs)
		}
		r.Config = fmt.Sprintf("%s, MPUB up to %d x %d B, %s; %d consumers RDY %d, %s; --mem-queue-size=%d; %s",
			fmt.Sprintf("%d publishers", o.Conns), batch, o.BodySize, offered, o.Conns, o.RDY, obt, load.memQueue, n.Note)
		topic, channel := "bench_"+strings.ReplaceAll(name, "-", "_"), "ch"
		if err := CreateChannel(ctx, n.HTTPAddr, topic, channel); err != nil {
			return err
		}
		var gate *BacklogGate
		if load.backlog > 0 {
			gate = NewBacklogGate(load.backlog)
		}
		g, err := StartConsumers(ctx, ConsumeSpec{Addr: n.TCPAddr, Topic: topic, Channel: channel, Conns: o.Conns,
			RDY: o.RDY, Expect: msgs, Latency: true, OutputBufferTimeoutMS: o.ConsumerOutputBufferTimeout, Gate: gate})
		if err != nil {
			return err
		}
		stop := o.progressFor(name+"@"+l.Name(), msgs, g.Received)
		cpu := startCPUMeter(n)
		pubStart := time.Now()
		pres, perr := Publish(ctx, PublishSpec{Addr: n.TCPAddr, Topic: topic, Conns: o.Conns, Batch: batch,
			BodySize: o.BodySize, Messages: msgs, Rate: offer, Gate: gate})
		if perr != nil {
			g.finish()
		}
		cres, cerr := g.Wait()
		stop()
		cpu.report(&r, cres.Messages, "msg")
		r.setRate(cres.Messages, cres.End.Sub(pubStart), o.BodySize)
		r.Latency = Percentiles(cres.Latencies)
		r.extra("publish_msgs_per_sec", rate(pres.Messages, pres.Elapsed))
		r.extra("redelivered", cres.Redelivered)
		if gate != nil {
			r.extra("publisher_waits", gate.Waits.Load())
		}
		if perr != nil {
			return perr
		}
		if cerr != nil {
			return cerr
		}
		return o.checkDrained(ctx, n, &r, topic, channel)
	})
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// RunDisk runs the publish and drain scenarios with --mem-queue-size=0, so
// every message goes through the disk queue. It returns two results.
func RunDisk(ctx context.Context, l Launcher, o Options) []Result {
	pub := Result{Scenario: ScenarioDisk + "-mpub", Target: l.Name()}
	drain := Result{Scenario: ScenarioDisk + "-consume", Target: l.Name()}
	err := o.withNode(ctx, l, 0, func(n *Node) error {
		pub.Config = fmt.Sprintf("%s; one channel, no consumer; --mem-queue-size=0; %s", o.loadDesc(), n.Note)
		drain.Config = fmt.Sprintf("backlog %d x %d B on disk, %d consumers RDY %d, FIN each; --mem-queue-size=0; %s",
			o.DiskMessages, o.BodySize, o.Conns, o.RDY, n.Note)
		err := o.drainBacklog(ctx, l, n, &drain, "bench_disk", "ch", o.DiskMessages, false)
		if d, ok := drain.Extra["fill_seconds"].(float64); ok {
			pub.setRate(o.DiskMessages, time.Duration(d*float64(time.Second)), o.BodySize)
			pub.extra("channel_depth", o.DiskMessages)
			delete(drain.Extra, "fill_seconds")
		}
		return err
	})
	if err != nil {
		drain.Error = err.Error()
		if pub.Messages == 0 {
			pub.Error = err.Error()
		}
	}
	return []Result{pub, drain}
}

// RunFanout publishes FanoutMessages to a topic with FanoutChannels channels,
// each drained by one consumer, and reports total deliveries per second.
func RunFanout(ctx context.Context, l Launcher, o Options) Result {
	r := Result{Scenario: fmt.Sprintf("%s-%d", ScenarioFanout, o.FanoutChannels), Target: l.Name()}
	err := o.withNode(ctx, l, o.LargeMemQueue, func(n *Node) error {
		r.Config = fmt.Sprintf("%s published once; %d channels x 1 consumer RDY %d; msgs = deliveries; --mem-queue-size=%d; %s",
			o.loadDesc(), o.FanoutChannels, o.RDY, o.LargeMemQueue, n.Note)
		topic := "bench_fanout"
		groups := make([]*ConsumerGroup, 0, o.FanoutChannels)
		defer func() {
			for _, g := range groups {
				g.finish()
				g.Wait()
			}
		}()
		for i := 0; i < o.FanoutChannels; i++ {
			ch := fmt.Sprintf("ch%02d", i)
			if err := CreateChannel(ctx, n.HTTPAddr, topic, ch); err != nil {
				return err
			}
			g, err := StartConsumers(ctx, ConsumeSpec{Addr: n.TCPAddr, Topic: topic, Channel: ch, Conns: 1,
				RDY: o.RDY, Expect: o.FanoutMessages, OutputBufferTimeoutMS: o.ConsumerOutputBufferTimeout})
			if err != nil {
				return err
			}
			groups = append(groups, g)
		}
		total := o.FanoutMessages * int64(o.FanoutChannels)
		delivered := func() int64 {
			var s int64
			for _, g := range groups {
				s += g.Received()
			}
			return s
		}
		stop := o.progressFor(r.Scenario+"@"+l.Name(), total, delivered)
		defer stop()
		cpu := startCPUMeter(n)
		start := time.Now()
		pres, err := Publish(ctx, PublishSpec{Addr: n.TCPAddr, Topic: topic, Conns: o.Conns, Batch: o.Batch,
			BodySize: o.BodySize, Messages: o.FanoutMessages})
		if err != nil {
			return err
		}
		r.extra("publish_msgs_per_sec", rate(pres.Messages, pres.Elapsed))
		var end time.Time
		var got, redeliv int64
		for _, g := range groups {
			res, err := g.Wait()
			got += res.Messages
			redeliv += res.Redelivered
			if res.End.After(end) {
				end = res.End
			}
			if err != nil {
				return err
			}
		}
		groups = nil
		cpu.report(&r, got, "msg")
		r.setRate(got, end.Sub(start), o.BodySize)
		r.extra("redelivered", redeliv)
		if got != total {
			return fmt.Errorf("fanout delivered %d, want %d", got, total)
		}
		return nil
	})
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

func round(v float64) float64 { return float64(int64(v + 0.5)) }

// rate returns msgs per second as a whole number.
func rate(msgs int64, d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64(float64(msgs)/d.Seconds() + 0.5)
}
