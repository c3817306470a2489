// Command sluice-bench runs Sluice's benchmark scenarios and prints a table
// line per result (stderr) and one JSON report for the run (stdout or --out).
//
// By default it measures an in-process Sluice nsqd. --nsqd-bin adds a target
// that runs a given nsqd binary (e.g. NSQ 1.3.0's) per scenario, so both are
// measured in one run; --nsqd-tcp/--nsqd-http add an nsqd that is already
// running. See bench/README.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sluicemq/sluice/bench"
)

func main() {
	// A sink child (sink-pub, sink-consume) is this executable re-run.
	bench.RunSinkChildIfRequested()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sluice-bench:", err)
		os.Exit(1)
	}
}

// isFullFlag reports whether arg is --full (or -full, --full=true): the
// defaults of every size flag depend on it, so it is found before parsing.
func isFullFlag(arg string) bool {
	arg = strings.TrimLeft(arg, "-")
	return arg == "full" || arg == "full=true" || arg == "full=1"
}

func run() error {
	fs := flag.NewFlagSet("sluice-bench", flag.ExitOnError)
	o := bench.DefaultOptions()
	if slices.ContainsFunc(os.Args[1:], isFullFlag) {
		o = bench.FullOptions()
	}
	fs.Bool("full", false, "use the issue's sizes (2.5M backlog, 18,000 idle connections, ...) as defaults")
	scenarios := fs.String("scenarios", strings.Join(bench.AllScenarios, ","),
		"comma-separated scenarios to run (also "+strings.Join(slices.Concat(bench.DurableScenarios, bench.PolicyScenarios, bench.ReplicatedScenarios, bench.ExtraScenarios), ", ")+
			"; issue12 = every scenario of issue 12's tables: "+strings.Join(bench.Issue12Scenarios, ",")+")")
	noInproc := fs.Bool("no-inproc", false, "do not measure the in-process Sluice nsqd")
	sluiceProcess := fs.Bool("sluice-process", false, "measure Sluice's nsqd as a child process in every scenario (like --nsqd-bin targets) instead of in process")
	sluiceBin := fs.String("sluice-bin", "", "Sluice nsqd binary for idle-conns and replicated-* (default: build ./apps/nsqd if it exists)")
	nsqdBin := fs.String("nsqd-bin", "", "also measure this nsqd binary (e.g. NSQ 1.3.0's), started per scenario")
	sluiceLookupdBin := fs.String("sluice-lookupd-bin", "", "Sluice nsqlookupd binary for lookupd-lookup (default: build ./apps/nsqlookupd)")
	nsqlookupdBin := fs.String("nsqlookupd-bin", "", "nsqlookupd binary of the --nsqd-bin daemon (e.g. NSQ 1.3.0's), for lookupd-lookup")
	nsqdBinName := fs.String("nsqd-bin-name", "", "target name for --nsqd-bin (default: from its --version)")
	nsqdBinArgs := fs.String("nsqd-bin-args", "", "extra flags for every --nsqd-bin nsqd, space-separated (after the bench's own)")
	sluiceArgs := fs.String("sluice-args", "", "extra flags for Sluice's nsqd when it runs as a child process (--sluice-process, idle-conns)")
	nsqdTCP := fs.String("nsqd-tcp", "", "also measure an already running nsqd at this TCP address (needs --nsqd-http)")
	nsqdHTTP := fs.String("nsqd-http", "", "HTTP address of the --nsqd-tcp nsqd")
	nsqdPID := fs.Int("nsqd-pid", 0, "pid of the --nsqd-tcp nsqd (for idle-conns RSS)")
	out := fs.String("out", "", "write the JSON report to this file instead of stdout")
	quiet := fs.Bool("quiet", false, "no progress lines")

	fs.IntVar(&o.Conns, "conns", o.Conns, "publishing connections and consuming connections")
	fs.IntVar(&o.Batch, "batch", o.Batch, "messages per MPUB")
	fs.IntVar(&o.BodySize, "body-size", o.BodySize, "message body bytes (>= 8)")
	fs.IntVar(&o.RDY, "rdy", o.RDY, "RDY count of each consumer")
	fs.Int64Var(&o.LargeMemQueue, "mem-queue-size", o.LargeMemQueue, "nsqd --mem-queue-size for the in-memory scenarios")
	fs.Int64Var(&o.SinkMessages, "sink-msgs", o.SinkMessages, "messages for the raw sink baseline")
	fs.Int64Var(&o.MPUBMessages, "mpub-msgs", o.MPUBMessages, "messages for the MPUB publish scenario")
	fs.Int64Var(&o.PUBMessages, "pub-msgs", o.PUBMessages, "messages for the PUB publish scenario")
	fs.Int64Var(&o.ConsumeMessages, "consume-msgs", o.ConsumeMessages, "backlog drained by the consume scenario")
	fs.Float64Var(&o.LatencyRate, "latency-rate", o.LatencyRate, "offered msgs/s of pubsub-rate")
	fs.DurationVar(&o.LatencyDuration, "latency-duration", o.LatencyDuration, "duration of pubsub-rate")
	fs.Int64Var(&o.LatencyMessages, "latency-msgs", o.LatencyMessages, "messages of pubsub-max (unthrottled)")
	fs.IntVar(&o.ConsumerOutputBufferTimeout, "consumer-output-buffer-timeout", o.ConsumerOutputBufferTimeout,
		"IDENTIFY output_buffer_timeout (ms) of consumers; 0 = nsqd's default 250ms, like go-nsq")
	fs.Int64Var(&o.DiskMessages, "disk-msgs", o.DiskMessages, "messages of the disk scenario (--mem-queue-size=0)")
	fs.Int64Var(&o.Sync1Messages, "sync1-msgs", o.Sync1Messages, "messages of disk-sync1 (--mem-queue-size=0 --sync-every=1)")
	fs.Int64Var(&o.DurableMPUBMessages, "durable-mpub-msgs", o.DurableMPUBMessages, "messages of durable-mpub")
	fs.Int64Var(&o.DurablePUBMessages, "durable-pub-msgs", o.DurablePUBMessages, "messages of durable-pub64 (64 connections, one PUB per round trip)")
	fs.Int64Var(&o.DurablePUB1Messages, "durable-pub1-msgs", o.DurablePUB1Messages, "round trips of durable-pub1 (and fsyncs of its probe)")
	fs.Int64Var(&o.ReplayMessages, "replay-msgs", o.ReplayMessages, "retained messages replayed by durable-replay")
	fs.Int64Var(&o.FanoutMessages, "fanout-msgs", o.FanoutMessages, "messages published in the fanout scenario")
	fs.IntVar(&o.FanoutChannels, "fanout-channels", o.FanoutChannels, "channels in the fanout scenario")
	fs.Int64Var(&o.Policy.MPUBMessages, "policy-mpub-msgs", o.Policy.MPUBMessages, "messages per pass of policy-mpub")
	fs.Int64Var(&o.Policy.ConsumeMessages, "policy-consume-msgs", o.Policy.ConsumeMessages, "backlog per pass of policy-consume")
	fs.Int64Var(&o.Policy.DurableMPUBMessages, "policy-durable-mpub-msgs", o.Policy.DurableMPUBMessages, "messages per pass of policy-durable-mpub")
	fs.Int64Var(&o.Policy.DurableConsumeMessages, "policy-durable-consume-msgs", o.Policy.DurableConsumeMessages, "backlog per pass of policy-durable-consume")
	fs.IntVar(&o.Policy.Rounds, "policy-rounds", o.Policy.Rounds, "rounds of policy passes (none, each policy, reversed, none)")
	fs.IntVar(&o.Policy.MPUBRounds, "policy-mpub-rounds", o.Policy.MPUBRounds, "rounds of policy passes of policy-mpub (its passes are short and vary most)")
	fs.Int64Var(&o.Replicated.MPUBMessages, "replicated-mpub-msgs", o.Replicated.MPUBMessages, "messages per pass of replicated-mpub (and of its single-node durable passes)")
	fs.Int64Var(&o.Replicated.PUBMessages, "replicated-pub-msgs", o.Replicated.PUBMessages, "messages per pass of replicated-pub64 (64 connections, one PUB per round trip)")
	fs.Int64Var(&o.Replicated.ConsumeMessages, "replicated-consume-msgs", o.Replicated.ConsumeMessages, "backlog per pass of replicated-consume")
	fs.IntVar(&o.Replicated.Rounds, "replicated-rounds", o.Replicated.Rounds, "rounds of replicated passes (each setting, then in reverse: every setting measured twice per round)")
	fs.StringVar(&o.Replicated.CPUProfile, "replicated-cpu-profile", o.Replicated.CPUProfile, "write the leader's CPU profile during the first measured replicated-mpub pass to this file")
	fs.DurationVar(&o.Replicated.CPUProfileDuration, "replicated-cpu-profile-duration", o.Replicated.CPUProfileDuration, "length of --replicated-cpu-profile (from the start of the pass)")
	fs.IntVar(&o.IdleConns, "idle-conns", o.IdleConns, "connections held by idle-conns")
	fs.DurationVar(&o.IdleHeartbeat, "idle-heartbeat", o.IdleHeartbeat, "heartbeat interval negotiated by idle connections (>= 1s)")
	fs.DurationVar(&o.IdleConnsSettle, "idle-conns-settle", o.IdleConnsSettle, "idle-conns: wait after every connection answered a heartbeat, before measuring")
	fs.DurationVar(&o.IdleConnsWindow, "idle-conns-window", o.IdleConnsWindow, "idle-conns: window over which nsqd's CPU time is measured (RSS is read at its end)")
	fs.IntVar(&o.IdleConnsPerSource, "idle-conns-per-source", o.IdleConnsPerSource,
		"idle-conns: connections per source address before the next (127.0.0.2, ...); 0 = the ephemeral port range less 1,000")
	fs.IntVar(&o.IdleChannels.Topics, "idle-topics", o.IdleChannels.Topics, "topics in the nsqd.dat of idle-channels")
	fs.IntVar(&o.IdleChannels.ChannelsPerTopic, "idle-channels", o.IdleChannels.ChannelsPerTopic, "channels per topic in the nsqd.dat of idle-channels")
	fs.DurationVar(&o.IdleChannels.Settle, "idle-settle", o.IdleChannels.Settle, "idle-channels: wait after nsqd answers /ping before measuring CPU")
	fs.DurationVar(&o.IdleChannels.Window, "idle-window", o.IdleChannels.Window, "idle-channels: window over which nsqd's CPU time is measured")
	fs.StringVar(&o.SinkMode, "sink-mode", bench.SinkModeAuto, "where sink-pub and sink-consume run: auto (a child process when every target is one), process, inproc")
	fs.Int64Var(&o.SustainedMessages, "sustained-msgs", o.SustainedMessages, "messages of pubsub-sustained (disk-pubsub-* use --disk-msgs)")
	fs.Int64Var(&o.SustainedBacklog, "sustained-backlog", o.SustainedBacklog, "pubsub-sustained, disk-pubsub-sustained: publishers wait while published - delivered exceeds this")
	fs.Int64Var(&o.Lookup.Requests, "lookup-requests", o.Lookup.Requests, "GET /lookup requests of lookupd-lookup")
	fs.IntVar(&o.Lookup.Clients, "lookup-clients", o.Lookup.Clients, "keep-alive HTTP clients of lookupd-lookup")
	fs.IntVar(&o.Lookup.Producers, "lookup-producers", o.Lookup.Producers, "producers registered with nsqlookupd in lookupd-lookup")
	fs.IntVar(&o.Lookup.Topics, "lookup-topics", o.Lookup.Topics, "topics each lookupd-lookup producer registers (asked for in turn)")
	fs.IntVar(&o.Create.Topics, "create-topics", o.Create.Topics, "topics of create-channels")
	fs.IntVar(&o.Create.ChannelsPerTopic, "create-channels", o.Create.ChannelsPerTopic, "channels per topic of create-channels")
	fs.BoolVar(&o.Create.Lookupd, "create-lookupd", o.Create.Lookupd, "create-channels: register a child nsqd with an nsqlookupd in the bench process and check that it lists every topic and channel")
	fs.IntVar(&o.Rounds, "rounds", o.Rounds, "run every scenario this many times, the targets in turn one way then the other (A B, B A, ...); the issue-12 tables take medians")
	fs.DurationVar(&o.ScenarioTimeout, "scenario-timeout", o.ScenarioTimeout, "time limit of each scenario on each target")
	fs.DurationVar(&o.ProgressEvery, "progress-every", o.ProgressEvery, "interval of progress lines")
	fs.StringVar(&o.TempDir, "tmp-dir", o.TempDir, "directory for the nodes' data directories")
	fs.Parse(os.Args[1:])

	if o.SinkMode != bench.SinkModeAuto && o.SinkMode != bench.SinkModeProcess && o.SinkMode != bench.SinkModeInproc {
		return fmt.Errorf("--sink-mode %q: want auto, process or inproc", o.SinkMode)
	}
	names := strings.Split(*scenarios, ",")
	for _, n := range names {
		if !bench.ValidScenario(n) {
			return fmt.Errorf("unknown scenario %q (have %s; %s; %s; %s; %s)", n, strings.Join(bench.AllScenarios, ","),
				strings.Join(bench.DurableScenarios, ","), strings.Join(bench.PolicyScenarios, ","),
				strings.Join(bench.ReplicatedScenarios, ","), strings.Join(bench.ExtraScenarios, ","))
		}
	}
	if !*quiet {
		o.Progress = os.Stderr
	}
	expanded := bench.ExpandScenarios(names)
	// Before any child process starts, so that it inherits the raised limit.
	if lim, err := bench.RaiseNoFileLimit(); err != nil {
		fmt.Fprintln(os.Stderr, "warning:", err)
	} else {
		fmt.Fprintf(os.Stderr, "RLIMIT_NOFILE %d\n", lim)
	}

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()

	var targets []bench.Target
	if *sluiceProcess && !*noInproc {
		bin := *sluiceBin
		if bin == "" {
			var err error
			if bin, err = buildSluiceNSQD(ctx, o.TempDir); err != nil {
				return fmt.Errorf("--sluice-process: %w", err)
			}
			defer os.RemoveAll(filepath.Dir(bin))
		}
		l := &bench.BinaryLauncher{Label: "sluice", Path: bin, Args: strings.Fields(*sluiceArgs)}
		targets = append(targets, bench.Target{Launcher: l, Process: l})
	} else if !*noInproc {
		l := inprocLauncher(slog.New(slog.DiscardHandler))
		if l == nil {
			return fmt.Errorf("built without the in-process Sluice nsqd (-tags nosluice); use --no-inproc")
		}
		t := bench.Target{Launcher: l}
		bin := *sluiceBin
		if bin == "" && (slices.Contains(expanded, bench.ScenarioIdle) || slices.ContainsFunc(expanded, bench.IsReplicatedScenario) ||
			slices.ContainsFunc(expanded, func(sc string) bool { return strings.HasPrefix(sc, "gonsq-") })) {
			var err error
			if bin, err = buildSluiceNSQD(ctx, o.TempDir); err != nil {
				t.ProcessMissing = err.Error()
			} else {
				defer os.RemoveAll(filepath.Dir(bin))
			}
		}
		if bin != "" {
			t.Process = &bench.BinaryLauncher{Label: "sluice-process", Path: bin, Args: strings.Fields(*sluiceArgs)}
		}
		targets = append(targets, t)
	}
	if len(targets) > 0 && slices.Contains(expanded, bench.ScenarioLookup) {
		bin := *sluiceLookupdBin
		if bin == "" {
			var err error
			if bin, err = buildSluiceApp(ctx, o.TempDir, "nsqlookupd"); err != nil {
				targets[0].LookupdMissing = err.Error()
			} else {
				defer os.RemoveAll(filepath.Dir(bin))
			}
		}
		if bin != "" {
			targets[0].Lookupd = &bench.LookupdLauncher{Path: bin}
		}
	}
	if *nsqdBin != "" {
		name := *nsqdBinName
		if name == "" {
			name = binaryName(ctx, *nsqdBin)
		}
		l := &bench.BinaryLauncher{Label: name, Path: *nsqdBin, Args: strings.Fields(*nsqdBinArgs)}
		t := bench.Target{Launcher: l, Process: l, LookupdMissing: "no --nsqlookupd-bin"}
		if *nsqlookupdBin != "" {
			t.Lookupd = &bench.LookupdLauncher{Path: *nsqlookupdBin}
		}
		targets = append(targets, t)
	}
	if *nsqdTCP != "" {
		if *nsqdHTTP == "" {
			return fmt.Errorf("--nsqd-tcp needs --nsqd-http")
		}
		l := &bench.AddrLauncher{Label: "external", TCPAddr: *nsqdTCP, HTTPAddr: *nsqdHTTP, PID: *nsqdPID}
		t := bench.Target{Launcher: l}
		if *nsqdPID > 0 {
			t.Process = l
		} else {
			t.ProcessMissing = "--nsqd-pid not given"
		}
		targets = append(targets, t)
	}
	if len(targets) == 0 && !(len(names) == 1 && names[0] == bench.ScenarioSink) {
		return fmt.Errorf("no target: drop --no-inproc or give --nsqd-bin / --nsqd-tcp")
	}

	rep := bench.Run(ctx, o, targets, names, os.Stderr)
	enc, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	enc = append(enc, '\n')
	if *out != "" {
		if err := os.WriteFile(*out, enc, 0o644); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
		fmt.Fprintln(os.Stderr, "report written to", *out)
	} else {
		os.Stdout.Write(enc)
	}
	return ctx.Err()
}

// binaryName names a target after the binary's --version line
// ("nsqd v1.3.0 (built w/go1.21)" -> "nsqd-v1.3.0"), or its file name.
func binaryName(ctx context.Context, path string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	outp, err := exec.CommandContext(ctx, path, "--version").Output()
	if f := strings.Fields(string(outp)); err == nil && len(f) >= 2 {
		return f[0] + "-" + f[1]
	}
	return filepath.Base(path)
}

// buildSluiceNSQD builds ./apps/nsqd of the module containing the working
// directory into a temporary directory and returns the binary's path.
func buildSluiceNSQD(ctx context.Context, tmp string) (string, error) {
	return buildSluiceApp(ctx, tmp, "nsqd")
}

// buildSluiceApp builds ./apps/<app> of the module containing the working
// directory into a temporary directory and returns the binary's path.
func buildSluiceApp(ctx context.Context, tmp, app string) (string, error) {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil || len(strings.TrimSpace(string(gomod))) == 0 || strings.TrimSpace(string(gomod)) == os.DevNull {
		return "", fmt.Errorf("no Sluice nsqd binary: not inside the module (give --sluice-bin)")
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	if _, err := os.Stat(filepath.Join(root, "apps", app, "main.go")); err != nil {
		return "", fmt.Errorf("no Sluice %s binary: apps/%s does not exist", app, app)
	}
	dir, err := os.MkdirTemp(tmp, "sluice-bench-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, app)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./apps/"+app)
	cmd.Dir = root
	if outp, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("build apps/%s: %v: %s", app, err, strings.TrimSpace(string(outp)))
	}
	return bin, nil
}
