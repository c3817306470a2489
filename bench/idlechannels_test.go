//go:build !nosluice

package bench_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicemq/sluice/bench"
	"github.com/sluicemq/sluice/bench/inproc"
	"github.com/sluicemq/sluice/internal/testutil"
)

func TestMain(m *testing.M) {
	// sink-pub and sink-consume re-run this test binary as their sink.
	bench.RunSinkChildIfRequested()
	code := m.Run()
	testutil.RemoveBuilds()
	os.Exit(code)
}

// sluiceNSQD builds Sluice's apps/nsqd once for the test binary.
func sluiceNSQD(t testing.TB) string {
	return testutil.BuildApp(t, "github.com/sluicemq/sluice/apps/nsqd")
}

// tinyIdleChannels sizes idle-channels so that it runs in about two seconds.
func tinyIdleChannels(t testing.TB) bench.Options {
	o := tinyOptions(t)
	o.IdleChannels = bench.IdleChannelsOptions{Topics: 20, ChannelsPerTopic: 3, Settle: 200 * time.Millisecond, Window: time.Second}
	return o
}

// The nsqd.dat written for idle-channels decodes to exactly the topics and
// channels asked for, with NSQ's keys and distinct names in order.
func TestWriteIdleChannelsMetadata(t *testing.T) {
	dir := t.TempDir()
	size, err := bench.WriteIdleChannelsMetadata(dir, 12, 3)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "nsqd.dat"))
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(data)) != size {
		t.Errorf("reported %d bytes, file has %d", size, len(data))
	}
	// Pointers: a key that is missing decodes to nil, not to false.
	var md struct {
		Version *string `json:"version"`
		Topics  []struct {
			Name     *string `json:"name"`
			Paused   *bool   `json:"paused"`
			Channels []struct {
				Name   *string `json:"name"`
				Paused *bool   `json:"paused"`
			} `json:"channels"`
		} `json:"topics"`
	}
	if err := json.Unmarshal(data, &md); err != nil {
		t.Fatalf("decode nsqd.dat: %v\n%s", err, data)
	}
	if md.Version == nil || *md.Version != "1.3.0" {
		t.Errorf("version %v, want 1.3.0", md.Version)
	}
	if len(md.Topics) != 12 {
		t.Fatalf("%d topics, want 12", len(md.Topics))
	}
	seen := map[string]bool{}
	for i, tp := range md.Topics {
		if tp.Name == nil || tp.Paused == nil || *tp.Paused || seen[*tp.Name] {
			t.Fatalf("topic %d: %s", i, data)
		}
		seen[*tp.Name] = true
		if want := bench.IdleTopicName(i, 12); *tp.Name != want {
			t.Errorf("topic %d named %q, want %q", i, *tp.Name, want)
		}
		if len(tp.Channels) != 3 {
			t.Fatalf("topic %s: %d channels, want 3", *tp.Name, len(tp.Channels))
		}
		for j, ch := range tp.Channels {
			if ch.Name == nil || ch.Paused == nil || *ch.Paused || *ch.Name != bench.IdleChannelName(j, 3) {
				t.Errorf("topic %s channel %d: %s", *tp.Name, j, data)
			}
		}
	}
	if got := md.Topics[11].Channels[2].Name; *got != "c02" || *md.Topics[11].Name != "t00011" {
		t.Errorf("last names %q/%q, want t00011/c02", *md.Topics[11].Name, *got)
	}
	if _, err := bench.WriteIdleChannelsMetadata(dir, 0, 3); err == nil {
		t.Error("no error for zero topics")
	}
}

// Names are zero-padded wide enough to sort in order at any count.
func TestIdleNames(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{bench.IdleTopicName(0, 10_000), "t00000"},
		{bench.IdleTopicName(99_999, 100_000), "t99999"},
		{bench.IdleTopicName(7, 100_001), "t000007"},
		{bench.IdleChannelName(9, 10), "c09"},
		{bench.IdleChannelName(5, 120), "c005"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

// idle-channels against Sluice's nsqd as a child process: every figure is
// there and the daemon listed the topics and channels written.
func TestIdleChannelsAgainstSluiceProcess(t *testing.T) {
	o := tinyIdleChannels(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rep := bench.Run(ctx, o, []bench.Target{{Launcher: &bench.BinaryLauncher{Label: "sluice", Path: sluiceNSQD(t)}}},
		[]string{bench.ScenarioIdleChannels}, nil)
	if len(rep.Results) != 1 {
		t.Fatalf("got %d results, want 1", len(rep.Results))
	}
	r := rep.Results[0]
	t.Log(r.TableLine())
	if r.Error != "" || r.Skipped != "" {
		t.Fatalf("error %q, skipped %q", r.Error, r.Skipped)
	}
	if r.Messages != 60 {
		t.Errorf("%d channels, want 60", r.Messages)
	}
	for _, k := range []string{"start_seconds", "rss_per_channel_bytes", "rss_kb", "stats_seconds_cold", "stats_seconds_warm"} {
		if v, ok := r.Extra[k]; !ok || v == 0 || v == 0.0 || v == int64(0) {
			t.Errorf("%s = %v, want > 0", k, v)
		}
	}
	if cpu, ok := r.Extra["idle_cpu_percent"].(float64); !ok || cpu < 0 || cpu > 200 {
		t.Errorf("idle_cpu_percent = %v", r.Extra["idle_cpu_percent"])
	}
	if warm, _ := r.Extra["stats_seconds_warm_all"].([]float64); len(warm) != 3 {
		t.Errorf("stats_seconds_warm_all = %v, want 3 times", r.Extra["stats_seconds_warm_all"])
	}
	if _, ok := r.Extra["stop_seconds"]; !ok {
		t.Errorf("nsqd did not stop cleanly: %v", r.Extra["stop_error"])
	}
	if r.Seconds < 0.9 {
		t.Errorf("CPU window %.3f s, want about 1 s", r.Seconds)
	}
	// Figures without a verdict at this size.
	if len(rep.Checks) != 5 {
		t.Errorf("got %d checks, want 5: %+v", len(rep.Checks), rep.Checks)
	}
	for _, c := range rep.Checks {
		t.Log(c)
		if c.Goal != "" || c.Met != nil {
			t.Errorf("check %+v has a verdict at 60 channels", c)
		}
	}
}

// A daemon that did not load nsqd.dat (here: told a second --data-path,
// which wins) fails the scenario instead of reporting the cost of nothing.
func TestIdleChannelsFailsWhenNotLoaded(t *testing.T) {
	o := tinyIdleChannels(t)
	o.IdleChannels.Settle, o.IdleChannels.Window = 0, 100*time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	l := &bench.BinaryLauncher{Label: "sluice", Path: sluiceNSQD(t), Args: []string{"--data-path=" + t.TempDir()}}
	r := bench.RunIdleChannels(ctx, l, o)
	if !strings.Contains(r.Error, "did not load nsqd.dat") {
		t.Fatalf("error %q, want the topics reported missing", r.Error)
	}
	if checks := bench.IdleChannelsChecks([]bench.Result{r}); len(checks) != 0 {
		t.Errorf("checks from a failed result: %+v", checks)
	}
}

// The in-process target is skipped: its CPU and RSS would be the bench's.
func TestIdleChannelsSkippedInProcess(t *testing.T) {
	o := tinyIdleChannels(t)
	rep := bench.Run(context.Background(), o, []bench.Target{{Launcher: &inproc.Launcher{}}}, []string{bench.ScenarioIdleChannels}, nil)
	if len(rep.Results) != 1 || rep.Results[0].Skipped == "" || rep.Results[0].Error != "" {
		t.Fatalf("results %+v, want one skipped", rep.Results)
	}
}

// IdleChannelsChecks judges Sluice at 100,000 channels or more and lists
// the figures of smaller runs and other daemons without a verdict.
func TestIdleChannelsChecks(t *testing.T) {
	figures := func(target string, channels int64, cpu float64, perChan int64, start, cold, warm float64) bench.Result {
		return bench.Result{Scenario: bench.ScenarioIdleChannels, Target: target, Messages: channels, Extra: map[string]any{
			"idle_cpu_percent": cpu, "rss_per_channel_bytes": perChan, "start_seconds": start,
			"stats_seconds_cold": cold, "stats_seconds_warm": warm}}
	}
	results := []bench.Result{
		figures("sluice", 100_000, 0.5, 1916, 0.79, 0.52, 0.2),
		figures("nsqd-v1.3.0", 100_000, 22.7, 84_500, 24, 0.89, 0.8),
		figures("sluice", 10_000, 9, 5000, 3, 1, 1),
		{Scenario: bench.ScenarioIdleChannels, Target: "sluice", Error: "boom"},
		{Scenario: bench.ScenarioIdleChannels, Target: "sluice-inproc", Skipped: "in process"},
	}
	checks := bench.IdleChannelsChecks(results)
	if len(checks) != 15 {
		t.Fatalf("got %d checks, want 15: %+v", len(checks), checks)
	}
	wantMet := []bool{true, true, true, false, true} // cpu, B/chan, start, cold, warm
	for i, c := range checks {
		t.Log(c)
		if i >= 5 {
			if c.Goal != "" || c.Met != nil {
				t.Errorf("check %d %+v has a verdict", i, c)
			}
			continue
		}
		if c.Target != "sluice" || c.Goal == "" || c.Met == nil || *c.Met != wantMet[i] {
			t.Errorf("check %d %+v (met %v), want met=%v", i, c, c.Met != nil && *c.Met, wantMet[i])
		}
	}
	if checks[1].Goal != "<= 2048" || checks[1].Value != 1916 {
		t.Errorf("RSS check %+v", checks[1])
	}
}
