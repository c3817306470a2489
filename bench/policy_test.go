//go:build !nosluice

package bench_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicemq/sluice/bench"
	"github.com/sluicemq/sluice/bench/inproc"
)

func tinyPolicyOptions(t testing.TB) bench.Options {
	o := tinyOptions(t)
	o.Policy = bench.PolicyOptions{MPUBMessages: 6_000, ConsumeMessages: 4_000, DurableMPUBMessages: 5_000, DurableConsumeMessages: 3_000, Rounds: 1, MPUBRounds: 1}
	return o
}

// Every policy scenario runs against the in-process Sluice nsqd in both
// storage modes: exact counts, both figures and their ratio, the policy
// as /stats showed it during the run, and a goal per result.
func TestPolicyScenariosAgainstSluice(t *testing.T) {
	o := tinyPolicyOptions(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep := bench.Run(ctx, o, []bench.Target{{Launcher: &inproc.Launcher{}}}, []string{bench.ScenarioPolicy}, nil)
	p := o.Policy
	type want struct {
		perPass  int64
		order    string
		firstTag string // the topic of the result's first pass
		overflow string
	}
	const mpubOrder, drainOrder = "none,reject,drop_oldest,drop_oldest,reject,none", "none,reject,reject,none"
	wants := map[string]want{
		"policy-mpub":                     {p.MPUBMessages, mpubOrder, "bench_policy_mpub_2_reject", "reject"},
		"policy-mpub-drop-oldest":         {p.MPUBMessages, mpubOrder, "bench_policy_mpub_3_drop_oldest", "drop_oldest"},
		"policy-consume":                  {p.ConsumeMessages, drainOrder, "bench_policy_consume_2_reject", "reject"},
		"policy-durable-mpub":             {p.DurableMPUBMessages, mpubOrder, "bench_policy_durable_mpub_2_reject", "reject"},
		"policy-durable-mpub-drop-oldest": {p.DurableMPUBMessages, mpubOrder, "bench_policy_durable_mpub_3_drop_oldest", "drop_oldest"},
		"policy-durable-consume":          {p.DurableConsumeMessages, drainOrder, "bench_policy_durable_consume_2_reject", "reject"},
	}
	if len(rep.Results) != len(wants) {
		t.Fatalf("got %d results, want %d: %+v", len(rep.Results), len(wants), rep.Results)
	}
	for _, r := range rep.Results {
		t.Log(r.TableLine())
		w, ok := wants[r.Scenario]
		if !ok || r.Error != "" || r.Skipped != "" {
			t.Errorf("%s: unexpected, error %q, skipped %q", r.Scenario, r.Error, r.Skipped)
			continue
		}
		// two passes per round with the policy
		if r.Messages != 2*w.perPass || r.MsgsPerSec <= 0 {
			t.Errorf("%s: %d messages at %.0f msgs/s, want %d", r.Scenario, r.Messages, r.MsgsPerSec, 2*w.perPass)
		}
		none, _ := r.Extra["none_msgs_per_sec"].(int64)
		ratio, _ := r.Extra["ratio_vs_none"].(float64)
		median, _ := r.Extra["median_ratio_vs_none"].(float64)
		if none <= 0 || ratio <= 0 || median <= 0 || r.Extra["median_msgs_per_sec"] == nil || r.Extra["none_median_msgs_per_sec"] == nil {
			t.Errorf("%s: figures missing from %v", r.Scenario, r.Extra)
		}
		if got := r.Extra["pass_order"]; got != w.order {
			t.Errorf("%s: pass order %v, want %s", r.Scenario, got, w.order)
		}
		if rates, _ := r.Extra["pass_msgs_per_sec"].([]int64); len(rates) != strings.Count(w.order, ",")+1 {
			t.Errorf("%s: pass rates %v for order %s", r.Scenario, r.Extra["pass_msgs_per_sec"], w.order)
		}
		if w, _ := r.Extra["warmup_msgs_per_sec"].([]int64); len(w) != 2 {
			t.Errorf("%s: warm-up passes %v, want 2", r.Scenario, r.Extra["warmup_msgs_per_sec"])
		}
		// What /stats showed before the first pass with the policy: a
		// node that ignored the policy parameters would fail the pass.
		wantShown := fmt.Sprintf("topic ttl=1h0m0s max_depth=%d overflow=%s; channel max_attempts=5 dead_letter_topic=%s.dlq ttl=1h0m0s",
			2*w.perPass, w.overflow, w.firstTag)
		if got := r.Extra["policy_stats"]; got != wantShown {
			t.Errorf("%s: /stats showed %q, want %q", r.Scenario, got, wantShown)
		}
		if v, ok := r.Extra["redelivered"]; ok && v != int64(0) {
			t.Errorf("%s: %v deliveries with attempts > 1, want 0", r.Scenario, v)
		}
	}
	goals := map[string]bool{}
	for _, c := range rep.Checks {
		t.Log(c)
		if c.Goal == ">= 0.9" && c.Met != nil {
			goals[c.Name] = true
		}
	}
	for name := range wants {
		if !goals[name+" / no policy, pass medians"] {
			t.Errorf("no goal check for %s in %+v", name, rep.Checks)
		}
	}
	if !slices.ContainsFunc(rep.Notes, func(n string) bool { return strings.HasPrefix(n, "policy-*") }) {
		t.Errorf("the report does not explain the policy passes: %q", rep.Notes)
	}
}

// proxyLauncher starts an in-process nsqd behind an HTTP proxy that may
// rewrite or answer requests itself, to play an nsqd that misbehaves.
type proxyLauncher struct {
	inproc.Launcher
	handle func(w http.ResponseWriter, r *http.Request, next http.Handler)
}

func (l *proxyLauncher) Launch(ctx context.Context, cfg bench.NodeConfig) (*bench.Node, error) {
	n, err := l.Launcher.Launch(ctx, cfg)
	if err != nil {
		return nil, err
	}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: n.HTTPAddr})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { l.handle(w, r, rp) }))
	return bench.NewNode(n.TCPAddr, srv.Listener.Addr().String(), 0, n.Note, func() error {
		srv.Close()
		return n.Stop()
	}), nil
}

// A node that answers the policy endpoints but creates topics and
// channels without the policies asked for fails the scenario: no
// figures are reported as a policy's cost and no goal is evaluated.
func TestPolicyScenarioFailsWhenPoliciesAreNotApplied(t *testing.T) {
	l := &proxyLauncher{handle: func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if r.URL.Path == "/topic/create" || r.URL.Path == "/channel/create" {
			q := r.URL.Query()
			for _, k := range []string{"ttl", "max_depth", "overflow", "max_attempts", "dead_letter_topic"} {
				q.Del(k)
			}
			r.URL.RawQuery = q.Encode()
		}
		next.ServeHTTP(w, r)
	}}
	o := tinyPolicyOptions(t)
	rep := bench.Run(context.Background(), o, []bench.Target{{Launcher: l}}, []string{bench.ScenarioPolicyMPUB}, nil)
	if len(rep.Results) != 2 {
		t.Fatalf("got %d results, want 2: %+v", len(rep.Results), rep.Results)
	}
	for _, r := range rep.Results {
		if !strings.Contains(r.Error, "/stats does not show the policy") || r.Skipped != "" {
			t.Errorf("%s: error %q, skipped %q; want the missing policy reported", r.Scenario, r.Error, r.Skipped)
		}
		if _, ok := r.Extra["median_ratio_vs_none"]; ok {
			t.Errorf("%s: a ratio from passes without the policy: %+v", r.Scenario, r.Extra)
		}
	}
	if len(rep.Checks) != 0 {
		t.Errorf("checks from failed results: %+v", rep.Checks)
	}
}

// An nsqd without message policies (NSQ 1.3.0 answers 404 to
// /topic/config) and one without durable topics get the policy scenarios
// as skipped, with a reason and no error.
func TestPolicySkippedWithoutPolicies(t *testing.T) {
	noPolicies := &proxyLauncher{Launcher: inproc.Launcher{Label: "no-policies"},
		handle: func(w http.ResponseWriter, r *http.Request, next http.Handler) {
			if r.URL.Path == "/topic/config" || r.URL.Path == "/channel/config" {
				w.WriteHeader(http.StatusNotFound)
				fmt.Fprint(w, `{"message":"NOT_FOUND"}`)
				return
			}
			next.ServeHTTP(w, r)
		}}
	// never started: the durable scenarios are skipped on its --help
	bin := filepath.Join(t.TempDir(), "nsqd")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho 'Usage of nsqd:'\necho '  -sync-every int'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	noDurable := &bench.BinaryLauncher{Label: "nsqd-v1.3.0", Path: bin}
	o := tinyPolicyOptions(t)
	results := bench.Run(context.Background(), o, []bench.Target{{Launcher: noPolicies}}, []string{bench.ScenarioPolicy}, nil).Results
	results = append(results, bench.Run(context.Background(), o, []bench.Target{{Launcher: noDurable}},
		[]string{bench.ScenarioPolicyDurableMPUB, bench.ScenarioPolicyDurableConsume}, nil).Results...)
	want := []struct{ scenario, target, reason string }{
		{"policy-mpub", "no-policies", "POST /topic/config answered 404"},
		{"policy-consume", "no-policies", "POST /topic/config answered 404"},
		{"policy-durable-mpub", "no-policies", "POST /topic/config answered 404"},
		{"policy-durable-consume", "no-policies", "POST /topic/config answered 404"},
		{"policy-durable-mpub", "nsqd-v1.3.0", "no durable topics"},
		{"policy-durable-consume", "nsqd-v1.3.0", "no durable topics"},
	}
	if len(results) != len(want) {
		t.Fatalf("got %d results, want %d: %+v", len(results), len(want), results)
	}
	for i, r := range results {
		w := want[i]
		if r.Scenario != w.scenario || r.Target != w.target || r.Error != "" || !strings.Contains(r.Skipped, w.reason) || r.Messages != 0 {
			t.Errorf("result %d: %+v, want %s@%s skipped (%s) without error", i, r, w.scenario, w.target, w.reason)
		}
	}
	if checks := bench.PolicyChecks(results); len(checks) != 0 {
		t.Errorf("checks from skipped results: %+v", checks)
	}
}

// PolicyChecks gives each policy result's ratio of pass medians the goal
// >= 0.9, followed by the ratio over all passes, and leaves out failed and
// skipped results and other scenarios.
func TestPolicyChecks(t *testing.T) {
	res := func(sc string, ratio, median float64) bench.Result {
		return bench.Result{Scenario: sc, Target: "sluice", Messages: 1, MsgsPerSec: 1,
			Extra: map[string]any{"ratio_vs_none": ratio, "median_ratio_vs_none": median}}
	}
	results := []bench.Result{
		res("policy-mpub", 0.95, 0.97), res("policy-mpub-drop-oldest", 0.92, 0.85),
		res("mpub", 0.5, 0.5),
		{Scenario: "policy-consume", Target: "sluice", Error: "timeout", Extra: map[string]any{"ratio_vs_none": 1.0, "median_ratio_vs_none": 1.0}},
		{Scenario: "policy-consume", Target: "nsqd-v1.3.0", Skipped: "no message policies"},
	}
	type verdict struct {
		name  string
		value float64
		goal  string
		met   string // "met", "MISSED" or "" without a goal
	}
	want := []verdict{
		{"policy-mpub / no policy, pass medians", 0.97, ">= 0.9", "met"},
		{"policy-mpub / no policy, all passes", 0.95, "", ""},
		{"policy-mpub-drop-oldest / no policy, pass medians", 0.85, ">= 0.9", "MISSED"},
		{"policy-mpub-drop-oldest / no policy, all passes", 0.92, "", ""},
	}
	var got []verdict
	for _, c := range bench.PolicyChecks(results) {
		v := verdict{c.Name, c.Value, c.Goal, ""}
		if c.Met != nil {
			v.met = map[bool]string{true: "met", false: "MISSED"}[*c.Met]
		}
		if c.Target != "sluice" || !strings.HasSuffix(c.String(), v.met) {
			t.Errorf("check %+v renders as %q", c, c.String())
		}
		got = append(got, v)
	}
	if !slices.Equal(got, want) {
		t.Errorf("checks %+v, want %+v", got, want)
	}
}
