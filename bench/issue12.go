package bench

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"
)

// Scenarios added for issue 12 (performance and density); see
// Issue12Scenarios and Issue12Checks.
const (
	// ScenarioSinkPUB is the raw TCP baseline of one-message round trips:
	// pub's publisher against a server that answers every PUB with OK.
	ScenarioSinkPUB = "sink-pub"
	// ScenarioSinkConsume is the raw TCP baseline of consuming: consume's
	// consumers against a server that pushes prepared message frames
	// honouring RDY.
	ScenarioSinkConsume = "sink-consume"
	// ScenarioSustained is publish + consume at once with the publishers
	// throttled so that the backlog stays bounded.
	ScenarioSustained = "pubsub-sustained"
	// ScenarioDiskSustained is ScenarioSustained with --mem-queue-size=0.
	ScenarioDiskSustained = "disk-pubsub-sustained"
	// ScenarioDiskMax is unthrottled publish + consume with
	// --mem-queue-size=0.
	ScenarioDiskMax = "disk-pubsub-max"
	// ScenarioIssue12 stands for Issue12Scenarios.
	ScenarioIssue12 = "issue12"
)

// Issue12Scenarios are the scenarios of both tables of issue 12, in the
// issue's order (each raw sink right before the scenario compared with it).
var Issue12Scenarios = []string{ScenarioMPUB, ScenarioSinkPUB, ScenarioPUB, ScenarioSinkConsume, ScenarioConsume,
	ScenarioSustained, ScenarioDiskSustained, ScenarioDiskMax, ScenarioDisk, ScenarioFanout,
	ScenarioGoNSQPubSub, ScenarioLookup, ScenarioIdle, ScenarioIdleChannels, ScenarioCreateChannels}

// Sink modes (Options.SinkMode).
const (
	SinkModeAuto    = "auto"
	SinkModeProcess = "process"
	SinkModeInproc  = "inproc"
)

// sinkAsChild reports whether sink-pub and sink-consume run as a child
// process: with SinkModeProcess, or by default when every target is a
// process (a child nsqd or one already running).
func sinkAsChild(o Options, targets []Target) bool {
	switch o.SinkMode {
	case SinkModeProcess:
		return true
	case SinkModeInproc:
		return false
	}
	if len(targets) == 0 {
		return false
	}
	for _, t := range targets {
		switch t.Launcher.(type) {
		case *BinaryLauncher, *AddrLauncher:
		default:
			return false
		}
	}
	return true
}

func sinkWhere(child bool) string {
	if child {
		return "sink in a child process (the bench's own executable)"
	}
	return "sink in the bench process"
}

// RunSinkPUB measures the raw PUB sink with exactly pub's publisher
// (Conns connections, one PUB per round trip, PUBMessages).
func RunSinkPUB(ctx context.Context, o Options, child bool) Result {
	r := Result{Scenario: ScenarioSinkPUB, Target: "raw-sink",
		Config: fmt.Sprintf("%d conns, PUB %d B, one per round trip; %s that answers every PUB with OK", o.Conns, o.BodySize, sinkWhere(child))}
	s, err := startSink(ctx, child, 0, o.BodySize)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	var sent atomic.Int64
	stop := o.progressFor(r.Scenario, o.PUBMessages, counterFunc(&sent))
	cpu := s.cpuMeter()
	res, perr := Publish(ctx, PublishSpec{Addr: s.addr, Topic: "bench_pub", Conns: o.Conns, BodySize: o.BodySize,
		Messages: o.PUBMessages, PUB: true, Sent: &sent})
	stop()
	cpu.report(&r, res.Messages, "msg")
	counts, serr := s.stop()
	r.setRate(res.Messages, res.Elapsed, o.BodySize)
	switch {
	case perr != nil:
		r.Error = perr.Error()
	case serr != nil:
		r.Error = serr.Error()
	case counts.received != o.PUBMessages:
		r.Error = fmt.Sprintf("sink received %d messages, want %d", counts.received, o.PUBMessages)
	}
	return r
}

// RunSinkConsume measures the raw consume sink with exactly consume's
// consumers (Conns connections, RDY each, FIN every message) draining
// ConsumeMessages; timed like consume's drain, from RDY to the last
// delivery. Every message must be delivered once and FINed.
func RunSinkConsume(ctx context.Context, o Options, child bool) Result {
	r := Result{Scenario: ScenarioSinkConsume, Target: "raw-sink",
		Config: fmt.Sprintf("%d x %d B, %d consumers RDY %d, FIN each; %s that pushes prepared message frames, never more unfinished than RDY",
			o.ConsumeMessages, o.BodySize, o.Conns, o.RDY, sinkWhere(child))}
	s, err := startSink(ctx, child, o.ConsumeMessages, o.BodySize)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	g, err := StartConsumers(ctx, ConsumeSpec{Addr: s.addr, Topic: "bench_consume", Channel: "ch", Conns: o.Conns,
		RDY: o.RDY, Expect: o.ConsumeMessages, OutputBufferTimeoutMS: o.ConsumerOutputBufferTimeout})
	if err != nil {
		s.stop()
		r.Error = err.Error()
		return r
	}
	stop := o.progressFor(r.Scenario, o.ConsumeMessages, g.Received)
	cpu := s.cpuMeter()
	cres, cerr := g.Wait()
	stop()
	cpu.report(&r, cres.Messages, "msg")
	counts, serr := s.stop()
	r.setRate(cres.Messages, cres.End.Sub(cres.Start), o.BodySize)
	r.extra("redelivered", cres.Redelivered)
	r.extra("sink_sent", counts.sent)
	r.extra("sink_finished", counts.finished)
	switch {
	case cerr != nil:
		r.Error = cerr.Error()
	case serr != nil:
		r.Error = serr.Error()
	case cres.Messages != o.ConsumeMessages || counts.sent != o.ConsumeMessages || counts.finished != o.ConsumeMessages:
		r.Error = fmt.Sprintf("consumers got %d, sink sent %d and read %d FINs; want %d each",
			cres.Messages, counts.sent, counts.finished, o.ConsumeMessages)
	}
	return r
}

// RunPubSub runs pubsub-sustained, disk-pubsub-sustained or
// disk-pubsub-max.
func RunPubSub(ctx context.Context, l Launcher, o Options, name string) Result {
	switch name {
	case ScenarioSustained:
		return o.pubSub(ctx, l, pubSubLoad{name: name, memQueue: o.LargeMemQueue, msgs: o.SustainedMessages, backlog: o.SustainedBacklog})
	case ScenarioDiskSustained:
		return o.pubSub(ctx, l, pubSubLoad{name: name, memQueue: 0, msgs: o.DiskMessages, backlog: o.SustainedBacklog})
	case ScenarioDiskMax:
		return o.pubSub(ctx, l, pubSubLoad{name: name, memQueue: 0, msgs: o.DiskMessages})
	}
	return Result{Scenario: name, Target: l.Name(), Error: "not a publish + consume scenario"}
}

// cpuMeter measures a child process's CPU time (utime+stime) over a part
// of a scenario.
type cpuMeter struct {
	pid   int
	stat  processStat
	start time.Time
}

// startCPUMeter starts measuring n's CPU time; nil (whose report does
// nothing) when n is not a process of known pid.
func startCPUMeter(n *Node) *cpuMeter {
	if n == nil || n.PID <= 0 {
		return nil
	}
	return startCPUMeterPID(n.PID)
}

// cpuMeter measures a child sink's CPU time (nil in process).
func (s *runningSink) cpuMeter() *cpuMeter {
	if s.pid <= 0 {
		return nil
	}
	return startCPUMeterPID(s.pid)
}

func startCPUMeterPID(pid int) *cpuMeter {
	st, err := readProcessStat(pid)
	if err != nil {
		return nil
	}
	return &cpuMeter{pid: pid, stat: st, start: time.Now()}
}

// report adds cpu_seconds, cpu_cores (CPU seconds per second since the
// start), cpu_us_per_<unit> (per each of units) and minflt_per_<unit>
// (minor page faults: on a daemon that keeps what it receives, mostly the
// first touch of a fresh page, whose cost varies with the machine) to r.
func (m *cpuMeter) report(r *Result, units int64, unit string) {
	if m == nil || units <= 0 {
		return
	}
	st, err := readProcessStat(m.pid)
	if err != nil {
		return
	}
	r.extra("minflt_per_"+unit, roundTo(float64(st.minflt-m.stat.minflt)/float64(units), 4))
	sec := float64(st.ticks-m.stat.ticks) / clockTicksPerSecond
	r.extra("cpu_seconds", roundTo(sec, 2))
	if d := time.Since(m.start).Seconds(); d > 0 {
		r.extra("cpu_cores", roundTo(sec/d, 3))
	}
	r.extra("cpu_us_per_"+unit, roundTo(sec*1e6/float64(units), 3))
}

func isIssue12Scenario(name string) bool { return slices.Contains(Issue12Scenarios, name) }
