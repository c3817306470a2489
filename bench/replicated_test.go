//go:build !nosluice

package bench_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicemq/sluice/bench"
	"github.com/sluicemq/sluice/bench/inproc"
)

// Every replicated scenario against a freshly built apps/nsqd: a 3-node
// cluster and a single durable node per scenario, tiny passes. Exact counts,
// every setting's figures, the ratios to the single node, round-trip
// percentiles for PUB, the leader's CPU profile, and the goal check.
func TestReplicatedScenariosAgainstSluiceProcess(t *testing.T) {
	o := tinyOptions(t)
	o.Replicated = bench.ReplicatedOptions{MPUBMessages: 4_000, PUBMessages: 640, ConsumeMessages: 3_000, Rounds: 1,
		CPUProfile: filepath.Join(t.TempDir(), "leader.pprof"), CPUProfileDuration: time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l := &bench.BinaryLauncher{Label: "sluice", Path: sluiceNSQD(t)}
	rep := bench.Run(ctx, o, []bench.Target{{Launcher: l, Process: l}}, []string{bench.ScenarioReplicated}, nil)
	r := o.Replicated
	wants := map[string]struct {
		perPass int64
		order   string
	}{
		"replicated-mpub":           {r.MPUBMessages, "leader,single,single,leader"},
		"replicated-mpub-single":    {r.MPUBMessages, "leader,single,single,leader"},
		"replicated-pub64":          {r.PUBMessages, "leader,follower,single,single,follower,leader"},
		"replicated-pub64-follower": {r.PUBMessages, "leader,follower,single,single,follower,leader"},
		"replicated-pub64-single":   {r.PUBMessages, "leader,follower,single,single,follower,leader"},
		"replicated-consume":        {r.ConsumeMessages, "leader,single,single,leader"},
		"replicated-consume-single": {r.ConsumeMessages, "leader,single,single,leader"},
	}
	if len(rep.Results) != len(wants) {
		t.Fatalf("got %d results, want %d: %+v", len(rep.Results), len(wants), rep.Results)
	}
	for _, res := range rep.Results {
		t.Log(res.TableLine())
		w, ok := wants[res.Scenario]
		if !ok || res.Error != "" || res.Skipped != "" {
			t.Errorf("%s: unexpected, error %q, skipped %q", res.Scenario, res.Error, res.Skipped)
			continue
		}
		if res.Messages != 2*w.perPass || res.MsgsPerSec <= 0 {
			t.Errorf("%s: %d messages at %.0f msgs/s, want %d", res.Scenario, res.Messages, res.MsgsPerSec, 2*w.perPass)
		}
		if got := res.Extra["pass_order"]; got != w.order {
			t.Errorf("%s: pass order %v, want %s", res.Scenario, got, w.order)
		}
		single := strings.HasSuffix(res.Scenario, "-single")
		ratio, _ := res.Extra["median_ratio_vs_single"].(float64)
		if single != (ratio == 0) {
			t.Errorf("%s: median_ratio_vs_single %v", res.Scenario, res.Extra["median_ratio_vs_single"])
		}
		if !single {
			if leaders, _ := res.Extra["leader_node"].([]int); len(leaders) != 2 {
				t.Errorf("%s: leader_node %v, want one per pass", res.Scenario, res.Extra["leader_node"])
			}
		}
		pub := strings.HasPrefix(res.Scenario, bench.ScenarioReplicatedPUB64)
		if pub != (res.Latency != nil) || (pub && res.Latency.Samples != int(res.Messages)) {
			t.Errorf("%s: latency %+v", res.Scenario, res.Latency)
		}
		if strings.HasPrefix(res.Scenario, bench.ScenarioReplicatedConsume) {
			if v := res.Extra["redelivered"]; v != int64(0) {
				t.Errorf("%s: %v redelivered, want 0", res.Scenario, v)
			}
		} else if v := res.Extra["channel_extra_msgs"]; v != int64(0) {
			t.Errorf("%s: %v messages beyond those published, want 0", res.Scenario, v)
		}
	}
	if fi, err := os.Stat(o.Replicated.CPUProfile); err != nil || fi.Size() == 0 {
		t.Errorf("leader CPU profile: %v", err)
	}
	var goals int
	for _, c := range rep.Checks {
		t.Log(c)
		if c.Goal != "" {
			goals++
			if c.Name != "replicated-mpub / single-node durable, medians" || c.Met == nil {
				t.Errorf("unexpected goal %+v", c)
			}
		}
	}
	if goals != 1 {
		t.Errorf("%d goals, want 1 (replicated-mpub)", goals)
	}
}

// The in-process target without a process launcher is skipped, and so is
// a binary without replicated topics (here: a script that prints no such
// flag).
func TestReplicatedSkipped(t *testing.T) {
	o := tinyOptions(t)
	rep := bench.Run(context.Background(), o, []bench.Target{{Launcher: &inproc.Launcher{}}}, []string{bench.ScenarioReplicatedMPUB}, nil)
	if len(rep.Results) != 1 || rep.Results[0].Skipped == "" || rep.Results[0].Error != "" {
		t.Fatalf("results %+v, want one skipped", rep.Results)
	}
	script := filepath.Join(t.TempDir(), "nsqd")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho '  -durable'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	l := &bench.BinaryLauncher{Label: "old", Path: script}
	res := bench.RunReplicatedScenario(context.Background(), l, o, bench.ScenarioReplicatedPUB64)
	if len(res) != 1 || !strings.Contains(res[0].Skipped, "--replica-timeout") {
		t.Fatalf("results %+v, want one skipped for the missing flag", res)
	}
	if !slices.Contains(bench.AllScenarios, bench.ScenarioReplicated) || !bench.ValidScenario(bench.ScenarioReplicatedConsume) {
		t.Error("replicated scenarios not registered")
	}
}

// ReplicatedChecks judges replicated-mpub's median ratio only and lists
// the rest without a verdict.
func TestReplicatedChecks(t *testing.T) {
	results := []bench.Result{
		{Scenario: "replicated-mpub", Target: "sluice", Messages: 10, Extra: map[string]any{"median_ratio_vs_single": 0.35, "ratio_vs_single": 0.29}},
		{Scenario: "replicated-mpub-single", Target: "sluice", Messages: 10, Extra: map[string]any{}},
		{Scenario: "replicated-pub64-follower", Target: "sluice", Messages: 10, Latency: &bench.Latency{P50: 7, P99: 30},
			Extra: map[string]any{"median_ratio_vs_single": 0.3, "ratio_vs_single": 0.31}},
		{Scenario: "replicated-consume", Target: "sluice", Error: "boom", Extra: map[string]any{"median_ratio_vs_single": 0.1}},
		{Scenario: "replicated-mpub", Target: "nsqd-v1.3.0", Skipped: "no"},
	}
	checks := bench.ReplicatedChecks(results)
	if len(checks) != 6 {
		t.Fatalf("got %d checks, want 6: %+v", len(checks), checks)
	}
	if c := checks[0]; c.Goal != ">= 0.3" || c.Met == nil || !*c.Met || c.Value != 0.35 {
		t.Errorf("goal check %+v", c)
	}
	for _, c := range checks[1:] {
		if c.Goal != "" || c.Met != nil {
			t.Errorf("check %+v has a verdict", c)
		}
	}
	results[0].Extra["median_ratio_vs_single"] = 0.29
	if c := bench.ReplicatedChecks(results)[0]; c.Met == nil || *c.Met {
		t.Errorf("0.29 met the goal: %+v", c)
	}
}
