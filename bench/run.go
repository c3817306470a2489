package bench

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Target is one nsqd implementation under test.
type Target struct {
	// Launcher starts the node for every scenario but idle-conns.
	Launcher Launcher
	// Process starts the same implementation as a separate process, for
	// idle-conns (RSS per connection); nil skips that scenario with
	// ProcessMissing as the reason.
	Process        Launcher
	ProcessMissing string
	// Lookupd starts the same implementation's nsqlookupd as a child
	// process, for lookupd-lookup; nil skips it with LookupdMissing.
	Lookupd        *LookupdLauncher
	LookupdMissing string
}

// Report is the JSON document of a run.
type Report struct {
	Started   time.Time `json:"started"`
	Seconds   float64   `json:"seconds"`
	GoVersion string    `json:"go_version"`
	NumCPU    int       `json:"num_cpu"`
	Targets   []string  `json:"targets"`
	Scenarios []string  `json:"scenarios"`
	// Notes explain how to read the figures.
	Notes   []string `json:"notes"`
	Results []Result `json:"results"`
	// Checks are the durable-topic, message-policy, replicated-topic,
	// idle-channel and idle-connection goals evaluated on Results (see
	// DurableChecks, PolicyChecks, ReplicatedChecks, IdleChannelsChecks,
	// IdleConnsChecks); absent when none of those scenarios ran.
	Checks []Check `json:"checks,omitempty"`
}

// Run runs the selected scenarios (names from AllScenarios) on every target,
// scenario by scenario so that the targets are measured under similar
// conditions, and writes a table line per result to table (may be nil).
func Run(ctx context.Context, o Options, targets []Target, scenarios []string, table io.Writer) Report {
	rep := Report{Started: time.Now().UTC(), GoVersion: runtime.Version(), NumCPU: runtime.NumCPU(), Scenarios: scenarios,
		Notes: []string{
			"Compare figures only within one run: the machine is shared and noisy.",
			"ratio_vs_sink = msgs_per_sec / raw sink msgs_per_sec measured in the same run with the same publisher.",
			fmt.Sprintf("In-memory scenarios run nsqd with --mem-queue-size=%d (as NSQ's bench does); disk-* with --mem-queue-size=0.", o.LargeMemQueue),
			"Latency is end-to-end: consumer receive time minus the send time stamped in the body; throttled runs stamp the scheduled send time.",
		}}
	if slices.ContainsFunc(expandScenarios(scenarios), isPolicyScenario) {
		rep.Notes = append(rep.Notes, policyNote)
	}
	if slices.ContainsFunc(scenarios, IsReplicatedScenario) {
		rep.Notes = append(rep.Notes, replicatedNote)
	}
	for _, t := range targets {
		rep.Targets = append(rep.Targets, t.Launcher.Name())
	}
	emit := func(r Result) {
		rep.Results = append(rep.Results, r)
		if table != nil {
			fmt.Fprintln(table, r.TableLine())
		}
	}
	if table != nil {
		for _, n := range rep.Notes {
			fmt.Fprintln(table, "# "+n)
		}
		fmt.Fprintln(table, TableHeader)
	}
	var sinkRate, sinkPUBRate, sinkConsumeRate float64
	childSink := sinkAsChild(o, targets)
	rounds := max(o.Rounds, 1)
	for _, sc := range expandScenarios(scenarios) {
		for round := 0; round < rounds && ctx.Err() == nil; round++ {
			tag := func(r *Result) {
				if rounds > 1 {
					r.extra("round", round+1)
				}
			}
			switch sc {
			case ScenarioSink, ScenarioSinkPUB, ScenarioSinkConsume:
				sctx, cancel := context.WithTimeout(ctx, o.ScenarioTimeout)
				var r Result
				switch sc {
				case ScenarioSink:
					r = RunSink(sctx, o)
				case ScenarioSinkPUB:
					r = RunSinkPUB(sctx, o, childSink)
				default:
					r = RunSinkConsume(sctx, o, childSink)
				}
				cancel()
				if r.Error == "" {
					switch sc {
					case ScenarioSink:
						sinkRate = r.MsgsPerSec
					case ScenarioSinkPUB:
						sinkPUBRate = r.MsgsPerSec
					default:
						sinkConsumeRate = r.MsgsPerSec
					}
				}
				tag(&r)
				emit(r)
				continue
			}
			// Every other round the other way round: A B, B A, A B, ...
			order := targets
			if round%2 == 1 {
				order = slices.Clone(targets)
				slices.Reverse(order)
			}
			for _, t := range order {
				sctx, cancel := context.WithTimeout(ctx, o.ScenarioTimeout)
				for _, r := range runOne(sctx, sc, t, o) {
					if sinkRate > 0 && r.Error == "" && (r.Scenario == ScenarioMPUB || r.Scenario == ScenarioDisk+"-mpub" || r.Scenario == ScenarioDurableMPUB || r.Scenario == ScenarioGoNSQMPUB) {
						r.RatioVsSink = float64(int64(r.MsgsPerSec/sinkRate*1000+0.5)) / 1000
					}
					if r.Error == "" && r.MsgsPerSec > 0 {
						if r.Scenario == ScenarioPUB && sinkPUBRate > 0 {
							r.extra("ratio_vs_sink_pub", roundTo(r.MsgsPerSec/sinkPUBRate, 3))
						}
						if r.Scenario == ScenarioConsume && sinkConsumeRate > 0 {
							r.extra("ratio_vs_sink_consume", roundTo(r.MsgsPerSec/sinkConsumeRate, 3))
						}
					}
					tag(&r)
					emit(r)
				}
				cancel()
			}
		}
	}
	durable, policy, idle := DurableChecks(rep.Results), PolicyChecks(rep.Results), IdleChannelsChecks(rep.Results)
	conns, repl := IdleConnsChecks(rep.Results), ReplicatedChecks(rep.Results)
	issue1, issue2 := Issue12Checks(rep.Results)
	if !comparesDaemons(issue1, issue2) {
		// The issue's tables compare Sluice with NSQ: without a second
		// daemon the other summaries already give Sluice's figures.
		issue1, issue2 = nil, nil
	}
	rep.Checks = slices.Concat(durable, policy, repl, idle, conns, issue1, issue2)
	printChecks(table, "durable-topic goals and comparisons (same run):", durable)
	printChecks(table, "message-policy goals: every policy / no policy, same node, same run:", policy)
	printChecks(table, "replicated-topic goals and comparisons: 3-node replicated / single-node durable, same binary, same run:", repl)
	printChecks(table, fmt.Sprintf("idle-channel goals (Sluice at %d channels or more; figures only otherwise):", idleChannelsGoalCount), idle)
	printChecks(table, "idle-connection goals (Sluice at "+idleConnsGoalCountText+" connections or more; figures only otherwise):", conns)
	if table != nil && (len(issue1) > 0 || len(issue2) > 0) {
		printIssue12Tables(table, issue1, issue2)
	}
	rep.Seconds = time.Since(rep.Started).Seconds()
	return rep
}

// comparesDaemons reports whether an issue-12 row compares Sluice with
// another daemon (not only with a raw sink).
func comparesDaemons(tables ...[]Check) bool {
	for _, t := range tables {
		for _, c := range t {
			if c.Reference != "" && !strings.HasPrefix(c.Reference, "raw-sink") {
				return true
			}
		}
	}
	return false
}

// printChecks writes checks under a title as comment lines of the table.
func printChecks(table io.Writer, title string, checks []Check) {
	if table == nil || len(checks) == 0 {
		return
	}
	fmt.Fprintln(table, "# "+title)
	for _, c := range checks {
		fmt.Fprintln(table, "# "+c.String())
	}
}

// expandScenarios replaces ScenarioDurable by DurableScenarios,
// ScenarioPolicy by PolicyScenarios and ScenarioReplicated by
// ReplicatedScenarios, so that each of them runs on every
// target before the next one and has its own --scenario-timeout.
func expandScenarios(scenarios []string) []string {
	var out []string
	for _, sc := range expandScenariosDup(scenarios) {
		if !slices.Contains(out, sc) { // a scenario named twice (alone and in a group) runs once
			out = append(out, sc)
		}
	}
	return out
}

// ExpandScenarios is the list of scenarios Run runs for scenarios (groups
// such as durable, policy, replicated and issue12 replaced by theirs).
func ExpandScenarios(scenarios []string) []string { return expandScenarios(scenarios) }

func expandScenariosDup(scenarios []string) []string {
	var out []string
	for _, sc := range scenarios {
		switch sc {
		case ScenarioDurable:
			out = append(out, DurableScenarios...)
		case ScenarioPolicy:
			out = append(out, PolicyScenarios...)
		case ScenarioReplicated:
			out = append(out, ReplicatedScenarios...)
		case ScenarioIssue12:
			out = append(out, Issue12Scenarios...)
		default:
			out = append(out, sc)
		}
	}
	return out
}

func runOne(ctx context.Context, sc string, t Target, o Options) []Result {
	l := t.Launcher
	switch sc {
	case ScenarioMPUB:
		return []Result{RunMPUB(ctx, l, o)}
	case ScenarioPUB:
		return []Result{RunPUB(ctx, l, o)}
	case ScenarioConsume:
		return []Result{RunConsume(ctx, l, o)}
	case ScenarioLatencyRate:
		return []Result{RunLatency(ctx, l, o, true)}
	case ScenarioLatencyMax:
		return []Result{RunLatency(ctx, l, o, false)}
	case ScenarioDisk:
		return RunDisk(ctx, l, o)
	case ScenarioFanout:
		return []Result{RunFanout(ctx, l, o)}
	case ScenarioDiskSync1:
		return []Result{RunDiskSync1(ctx, l, o)}
	case ScenarioDurable:
		return RunDurable(ctx, l, o)
	case ScenarioDurableMPUB, ScenarioDurablePUB64, ScenarioDurablePUB1, ScenarioDurableConsume, ScenarioDurableReplay:
		return []Result{RunDurableScenario(ctx, l, o, sc)}
	case ScenarioPolicy:
		var out []Result
		for _, name := range PolicyScenarios {
			out = append(out, RunPolicyScenario(ctx, l, o, name)...)
		}
		return out
	case ScenarioPolicyMPUB, ScenarioPolicyConsume, ScenarioPolicyDurableMPUB, ScenarioPolicyDurableConsume:
		return RunPolicyScenario(ctx, l, o, sc)
	case ScenarioGoNSQMPUB, ScenarioGoNSQConsume, ScenarioGoNSQPubSub:
		// The daemon's CPU per message is the figure: an in-process
		// target runs them on its process launcher when it has one.
		p := l
		switch l.(type) {
		case *BinaryLauncher, *AddrLauncher:
		default:
			if t.Process != nil {
				p = t.Process
			}
		}
		var r Result
		switch sc {
		case ScenarioGoNSQMPUB:
			r = RunGoNSQMPUB(ctx, p, o)
		case ScenarioGoNSQConsume:
			r = RunGoNSQConsume(ctx, p, o)
		default:
			r = RunGoNSQPubSub(ctx, p, o)
		}
		r.Target = l.Name()
		return []Result{r}
	case ScenarioSustained, ScenarioDiskSustained, ScenarioDiskMax:
		return []Result{RunPubSub(ctx, l, o, sc)}
	case ScenarioCreateChannels:
		return []Result{RunCreateChannels(ctx, l, o)}
	case ScenarioLookup:
		if t.Lookupd == nil {
			why := t.LookupdMissing
			if why == "" {
				why = "no nsqlookupd binary for this target (--sluice-lookupd-bin, --nsqlookupd-bin)"
			}
			return []Result{{Scenario: sc, Target: l.Name(), Skipped: why}}
		}
		return []Result{RunLookup(ctx, l.Name(), t.Lookupd, o)}
	case ScenarioReplicatedMPUB, ScenarioReplicatedPUB64, ScenarioReplicatedConsume:
		// Child processes of Sluice's binary: the target's own launcher
		// when it is one, else its process launcher (like idle-conns).
		p := l
		if _, ok := l.(ReplicationCapable); !ok {
			if t.Process == nil {
				why := "replicated topics need nsqd as child processes (--sluice-process or --sluice-bin)"
				if t.ProcessMissing != "" {
					why += ": " + t.ProcessMissing
				}
				return []Result{{Scenario: sc, Target: l.Name(), Skipped: why}}
			}
			p = t.Process
		}
		out := RunReplicatedScenario(ctx, p, o, sc)
		for i := range out {
			out[i].Target = l.Name()
		}
		return out
	case ScenarioIdle:
		if t.Process == nil {
			return []Result{{Scenario: sc, Target: l.Name(), Skipped: t.ProcessMissing}}
		}
		r := RunIdle(ctx, t.Process, o)
		r.Target = l.Name()
		return []Result{r}
	case ScenarioIdleChannels:
		// Only a target that is itself a child process: unlike idle-conns,
		// the in-process target is not replaced by its process launcher,
		// so that the figures always come from the target as configured.
		return []Result{RunIdleChannels(ctx, l, o)}
	}
	return []Result{{Scenario: sc, Target: l.Name(), Error: fmt.Sprintf("unknown scenario (have %v)", AllScenarios)}}
}

// ValidScenario reports whether name is a known scenario.
func ValidScenario(name string) bool {
	return slices.Contains(AllScenarios, name) || slices.Contains(ExtraScenarios, name) || name == ScenarioIssue12 || isDurableScenario(name) || isPolicyScenario(name) || IsReplicatedScenario(name)
}
