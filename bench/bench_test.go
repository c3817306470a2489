//go:build !nosluice

package bench_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicemq/sluice/bench"
	"github.com/sluicemq/sluice/bench/inproc"
)

// tinyOptions sizes every scenario so that the whole set runs in seconds.
func tinyOptions(t testing.TB) bench.Options {
	o := bench.DefaultOptions()
	o.SinkMessages = 20_000
	o.MPUBMessages = 20_000
	o.PUBMessages = 1_000
	o.ConsumeMessages = 20_000
	o.LatencyRate = 5_000
	o.LatencyDuration = time.Second
	o.LatencyMessages = 20_000
	o.DiskMessages = 5_000
	o.FanoutMessages = 2_000
	o.FanoutChannels = 3
	o.IdleConns = 50
	o.IdleHeartbeat = time.Second
	o.LargeMemQueue = 100_000
	o.ScenarioTimeout = time.Minute
	o.TempDir = t.TempDir()
	o.ConsumerOutputBufferTimeout = 25
	return o
}

// Every scenario but idle-conns runs against the in-process Sluice nsqd and
// reports exact counts with no error.
func TestScenariosAgainstSluice(t *testing.T) {
	o := tinyOptions(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	scenarios := []string{bench.ScenarioSink, bench.ScenarioMPUB, bench.ScenarioPUB, bench.ScenarioConsume,
		bench.ScenarioLatencyRate, bench.ScenarioLatencyMax, bench.ScenarioDisk, bench.ScenarioFanout}
	rep := bench.Run(ctx, o, []bench.Target{{Launcher: &inproc.Launcher{}}}, scenarios, nil)
	want := map[string]int64{
		"sink-mpub": o.SinkMessages, "mpub": o.MPUBMessages, "pub": o.PUBMessages, "consume": o.ConsumeMessages,
		"pubsub-rate": int64(o.LatencyRate * o.LatencyDuration.Seconds()), "pubsub-max": o.LatencyMessages,
		"disk-mpub": o.DiskMessages, "disk-consume": o.DiskMessages, "fanout-3": o.FanoutMessages * 3,
	}
	if len(rep.Results) != len(want) {
		t.Fatalf("got %d results, want %d: %+v", len(rep.Results), len(want), rep.Results)
	}
	for _, r := range rep.Results {
		if r.Error != "" {
			t.Errorf("%s: %s", r.Scenario, r.Error)
			continue
		}
		if r.Messages != want[r.Scenario] {
			t.Errorf("%s: %d messages, want %d", r.Scenario, r.Messages, want[r.Scenario])
		}
		// A first delivery has attempts = 1 and nothing times out at these
		// sizes, so any redelivery is a server bug.
		if v, ok := r.Extra["redelivered"]; ok && v != int64(0) {
			t.Errorf("%s: %v deliveries with attempts > 1, want 0", r.Scenario, v)
		}
		if r.MsgsPerSec <= 0 {
			t.Errorf("%s: no rate: %+v", r.Scenario, r)
		}
		if strings.HasPrefix(r.Scenario, "pubsub") && (r.Latency == nil || r.Latency.Samples != int(r.Messages)) {
			t.Errorf("%s: latency %+v, want %d samples", r.Scenario, r.Latency, r.Messages)
		}
		if r.Scenario == bench.ScenarioMPUB && r.RatioVsSink <= 0 {
			t.Errorf("mpub has no ratio to the sink")
		}
		t.Log(r.TableLine())
	}
}

// idle-conns needs nsqd as a separate process: Sluice's apps/nsqd is built
// for it.
func TestIdleConnsAgainstSluiceProcess(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "apps", "nsqd", "main.go")); err != nil {
		t.Fatalf("apps/nsqd is missing; idle-conns needs the Sluice nsqd binary: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "nsqd")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./apps/nsqd")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build apps/nsqd: %v\n%s", err, out)
	}
	o := tinyOptions(t)
	r := bench.RunIdle(ctx, &bench.BinaryLauncher{Label: "sluice-process", Path: bin}, o)
	if r.Error != "" {
		t.Fatal(r.Error)
	}
	if r.Messages != int64(o.IdleConns) {
		t.Fatalf("held %d connections, want %d", r.Messages, o.IdleConns)
	}
	if hb, _ := r.Extra["heartbeats_answered"].(int64); hb < int64(o.IdleConns) {
		t.Fatalf("%d heartbeats answered, want at least %d", hb, o.IdleConns)
	}
	t.Log(r.TableLine())
}

// Benchmarks: go test -run '^$' -bench . ./bench/  (b.N = messages).

func benchOptions(b *testing.B) bench.Options {
	o := tinyOptions(b)
	o.Progress = nil
	o.LargeMemQueue = 10_000_000
	o.ConsumerOutputBufferTimeout = 0
	return o
}

func report(b *testing.B, r bench.Result) {
	b.Helper()
	if r.Error != "" {
		b.Fatal(r.Error)
	}
	b.ReportMetric(r.MsgsPerSec, "msgs/s")
	if r.MsgsPerSec > 0 {
		// The scenario's own timing (no node start-up or checks), per message.
		b.ReportMetric(1e9/r.MsgsPerSec, "ns/op")
	}
	if r.Latency != nil {
		b.ReportMetric(r.Latency.P99, "p99-ms")
	}
}

func BenchmarkSinkMPUB(b *testing.B) {
	o := benchOptions(b)
	o.SinkMessages = int64(b.N)
	report(b, bench.RunSink(context.Background(), o))
}

func BenchmarkMPUB(b *testing.B) {
	o := benchOptions(b)
	o.MPUBMessages = int64(b.N)
	report(b, bench.RunMPUB(context.Background(), &inproc.Launcher{}, o))
}

func BenchmarkPUB(b *testing.B) {
	o := benchOptions(b)
	o.PUBMessages = int64(b.N)
	report(b, bench.RunPUB(context.Background(), &inproc.Launcher{}, o))
}

func BenchmarkConsume(b *testing.B) {
	o := benchOptions(b)
	o.ConsumeMessages = int64(b.N)
	report(b, bench.RunConsume(context.Background(), &inproc.Launcher{}, o))
}

func BenchmarkPubSubUnthrottled(b *testing.B) {
	o := benchOptions(b)
	o.LatencyMessages = int64(b.N)
	report(b, bench.RunLatency(context.Background(), &inproc.Launcher{}, o, false))
}

func BenchmarkDisk(b *testing.B) {
	o := benchOptions(b)
	o.DiskMessages = int64(b.N)
	rs := bench.RunDisk(context.Background(), &inproc.Launcher{}, o)
	report(b, rs[1])
	b.ReportMetric(rs[0].MsgsPerSec, "pub-msgs/s")
}

func BenchmarkFanout10(b *testing.B) {
	o := benchOptions(b)
	o.FanoutMessages = int64(b.N)
	o.FanoutChannels = 10
	report(b, bench.RunFanout(context.Background(), &inproc.Launcher{}, o))
}

// The durable scenarios run against the in-process Sluice nsqd with exact
// counts, and report fsyncs and bytes per message.
func TestDurableScenariosAgainstSluice(t *testing.T) {
	o := tinyOptions(t)
	o.DurableMPUBMessages, o.DurablePUBMessages, o.DurablePUB1Messages, o.ReplayMessages, o.Sync1Messages = 20_000, 640, 50, 20_000, 400
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rep := bench.Run(ctx, o, []bench.Target{{Launcher: &inproc.Launcher{}}}, []string{bench.ScenarioDiskSync1, bench.ScenarioDurable}, nil)
	want := map[string]int64{"disk-sync1-mpub": 400, "durable-mpub": 20_000, "durable-pub64": 640, "durable-pub1": 50,
		"durable-consume": o.ConsumeMessages, "durable-replay": 20_000}
	if len(rep.Results) != len(want) {
		t.Fatalf("got %d results, want %d: %+v", len(rep.Results), len(want), rep.Results)
	}
	for _, r := range rep.Results {
		if r.Error != "" {
			t.Errorf("%s: %s", r.Scenario, r.Error)
			continue
		}
		if r.Messages != want[r.Scenario] {
			t.Errorf("%s: %d messages, want %d", r.Scenario, r.Messages, want[r.Scenario])
		}
		if strings.HasPrefix(r.Scenario, "durable-") && r.Scenario != "durable-replay" {
			if _, ok := r.Extra["fsyncs_per_sec"]; !ok {
				t.Errorf("%s: no fsyncs_per_sec: %+v", r.Scenario, r.Extra)
			}
		}
		if r.Scenario == "durable-pub1" && (r.Extra["fsync_p50_us"] == nil || r.Latency == nil) {
			t.Errorf("durable-pub1 lacks its fsync probe or latency: %+v", r)
		}
		t.Log(r.TableLine())
	}
}
