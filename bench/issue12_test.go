//go:build !nosluice

package bench_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicemq/sluice/bench"
	"github.com/sluicemq/sluice/bench/inproc"
	"github.com/sluicemq/sluice/internal/testutil"
)

// tinyIssue12 sizes the issue-12 scenarios for a few seconds in all.
func tinyIssue12(t testing.TB) bench.Options {
	o := tinyOptions(t)
	o.SustainedMessages = 20_000
	o.SustainedBacklog = 1_000 // below what 4 publishers of 200 and the consumers' RDY could hold
	o.Lookup = bench.LookupOptions{Requests: 2_000, Clients: 8, Producers: 3, Topics: 4}
	o.Create = bench.CreateOptions{Topics: 12, ChannelsPerTopic: 3, Lookupd: true}
	return o
}

// The issue-12 scenarios run against the in-process Sluice nsqd with exact
// counts, the raw sinks (as child processes: this test binary re-run)
// deliver or accept exactly as many messages, and pub and consume are
// given their ratio to the sinks.
func TestIssue12ScenariosAgainstSluice(t *testing.T) {
	o := tinyIssue12(t)
	o.SinkMode = bench.SinkModeProcess
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	scenarios := []string{bench.ScenarioSinkPUB, bench.ScenarioPUB, bench.ScenarioSinkConsume, bench.ScenarioConsume,
		bench.ScenarioSustained, bench.ScenarioDiskSustained, bench.ScenarioDiskMax, bench.ScenarioGoNSQPubSub, bench.ScenarioCreateChannels}
	rep := bench.Run(ctx, o, []bench.Target{{Launcher: &inproc.Launcher{}}}, scenarios, nil)
	want := map[string]int64{
		"sink-pub": o.PUBMessages, "pub": o.PUBMessages, "sink-consume": o.ConsumeMessages, "consume": o.ConsumeMessages,
		"pubsub-sustained": o.SustainedMessages, "disk-pubsub-sustained": o.DiskMessages, "disk-pubsub-max": o.DiskMessages,
		"gonsq-pubsub": o.LatencyMessages, "create-channels": 36,
	}
	if len(rep.Results) != len(want) {
		t.Fatalf("got %d results, want %d: %+v", len(rep.Results), len(want), rep.Results)
	}
	for _, r := range rep.Results {
		t.Log(r.TableLine())
		if r.Error != "" || r.Skipped != "" {
			t.Errorf("%s: error %q, skipped %q", r.Scenario, r.Error, r.Skipped)
			continue
		}
		if r.Messages != want[r.Scenario] || r.MsgsPerSec <= 0 {
			t.Errorf("%s: %d messages at %v/s, want %d", r.Scenario, r.Messages, r.MsgsPerSec, want[r.Scenario])
		}
		if v, ok := r.Extra["redelivered"]; ok && v != int64(0) {
			t.Errorf("%s: %v deliveries with attempts > 1, want 0", r.Scenario, v)
		}
		if strings.HasPrefix(r.Scenario, "sink-") && !strings.Contains(r.Config, "child process") {
			t.Errorf("%s: not a child process: %s", r.Scenario, r.Config)
		}
		if strings.Contains(r.Scenario, "pubsub") && r.Scenario != bench.ScenarioGoNSQPubSub &&
			(r.Latency == nil || r.Latency.Samples != int(r.Messages)) {
			t.Errorf("%s: latency %+v, want %d samples", r.Scenario, r.Latency, r.Messages)
		}
	}
	byName := map[string]bench.Result{}
	for _, r := range rep.Results {
		byName[r.Scenario] = r
	}
	if v, _ := byName["sink-consume"].Extra["sink_finished"].(int64); v != o.ConsumeMessages {
		t.Errorf("sink-consume: the sink read %d FINs, want %d", v, o.ConsumeMessages)
	}
	if _, ok := byName["pub"].Extra["ratio_vs_sink_pub"].(float64); !ok {
		t.Errorf("pub has no ratio_vs_sink_pub: %v", byName["pub"].Extra)
	}
	if _, ok := byName["consume"].Extra["ratio_vs_sink_consume"].(float64); !ok {
		t.Errorf("consume has no ratio_vs_sink_consume: %v", byName["consume"].Extra)
	}
	for _, sc := range []string{"pubsub-sustained", "disk-pubsub-sustained"} {
		if _, ok := byName[sc].Extra["publisher_waits"]; !ok {
			t.Errorf("%s: no publisher_waits: %v", sc, byName[sc].Extra)
		}
	}
	if v, _ := byName["create-channels"].Extra["requests"].(int64); v != 12+36 {
		t.Errorf("create-channels made %d requests, want 48", v)
	}
	// Sluice against the sinks only: the rows compared with a sink.
	t1, _ := bench.Issue12Checks(rep.Results)
	if len(t1) != 2 {
		t.Errorf("issue-12 rows %+v, want the two sink comparisons", t1)
	}
}

// lookupd-lookup against Sluice's nsqlookupd as a child process, and the
// daemon CPU figures of scenarios against Sluice's nsqd as a child process
// (with the sinks run as child processes because every target is one).
func TestIssue12ScenariosAgainstSluiceProcesses(t *testing.T) {
	nsqdBin := sluiceNSQD(t)
	lookupdBin := testutil.BuildApp(t, "github.com/sluicemq/sluice/apps/nsqlookupd")
	o := tinyIssue12(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	target := bench.Target{Launcher: &bench.BinaryLauncher{Label: "sluice", Path: nsqdBin},
		Lookupd: &bench.LookupdLauncher{Path: lookupdBin}}
	noLookupd := bench.Target{Launcher: &bench.BinaryLauncher{Label: "other", Path: nsqdBin}, LookupdMissing: "no --nsqlookupd-bin"}
	rep := bench.Run(ctx, o, []bench.Target{target, noLookupd},
		[]string{bench.ScenarioSinkPUB, bench.ScenarioPUB, bench.ScenarioGoNSQPubSub, bench.ScenarioLookup, bench.ScenarioCreateChannels}, nil)
	if len(rep.Results) != 9 {
		t.Fatalf("got %d results, want 9: %+v", len(rep.Results), rep.Results)
	}
	for _, r := range rep.Results {
		t.Log(r.TableLine())
		if r.Scenario == bench.ScenarioLookup && r.Target == "other" {
			if r.Skipped == "" || r.Error != "" {
				t.Errorf("lookupd-lookup without a binary: %+v, want skipped", r)
			}
			continue
		}
		if r.Error != "" || r.Skipped != "" {
			t.Errorf("%s@%s: error %q, skipped %q", r.Scenario, r.Target, r.Error, r.Skipped)
			continue
		}
		switch r.Scenario {
		case bench.ScenarioSinkPUB:
			if !strings.Contains(r.Config, "child process") || r.Messages != o.PUBMessages {
				t.Errorf("sink-pub: %+v, want %d messages to a child process", r, o.PUBMessages)
			}
		case bench.ScenarioPUB, bench.ScenarioGoNSQPubSub:
			if _, ok := r.Extra["cpu_us_per_msg"].(float64); !ok {
				t.Errorf("%s@%s: no daemon cpu_us_per_msg: %v", r.Scenario, r.Target, r.Extra)
			}
		case bench.ScenarioCreateChannels:
			// Registered with an nsqlookupd that listed all 12 topics
			// and 36 channels (else an error).
			if _, ok := r.Extra["lookupd_complete_after_seconds"].(float64); !ok || r.Messages != 36 {
				t.Errorf("create-channels: %+v, want 36 channels registered with nsqlookupd", r)
			}
		case bench.ScenarioLookup:
			if r.Messages != o.Lookup.Requests {
				t.Errorf("lookupd-lookup: %d requests, want %d", r.Messages, o.Lookup.Requests)
			}
			if _, ok := r.Extra["cpu_us_per_req"].(float64); !ok {
				t.Errorf("lookupd-lookup: no cpu_us_per_req: %v", r.Extra)
			}
		}
	}
	// "other" is no Sluice target: it is the reference of the ratios.
	t1, _ := bench.Issue12Checks(rep.Results)
	var names []string
	for _, c := range t1 {
		names = append(names, c.Name+"/"+c.Reference)
	}
	for _, want := range []string{"one PUB per round trip, 4 connections/other",
		"go-nsq client, publish + consume: daemon CPU per delivered message/other"} {
		if !slices.Contains(names, want) {
			t.Errorf("no row %q in %v", want, names)
		}
	}
}

// readFrameWithin reads one frame from c, or reports none within d.
func readFrameWithin(c *bench.Conn, d time.Duration) (int32, []byte, bool, error) {
	c.SetDeadline(time.Now().Add(d))
	defer c.SetDeadline(time.Time{})
	typ, data, err := c.ReadFrame()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return 0, nil, false, nil
	}
	return typ, data, err == nil, err
}

// The consume sink never has more messages unfinished on a connection
// than its RDY count: with RDY 1 the next message comes only after the FIN
// of the previous one, with RDY 3 three at most, and RDY 0 stops the flow.
func TestConsumeSinkHonoursRDY(t *testing.T) {
	const msgs = 12
	s, err := bench.NewConsumeSink("127.0.0.1:0", msgs, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(time.Second)
	ctx := context.Background()
	c, err := bench.Dial(ctx, s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Identify([]byte(`{"feature_negotiation":false}`)); err != nil {
		t.Fatal(err)
	}
	if err := c.Subscribe("t", "c"); err != nil {
		t.Fatal(err)
	}
	quiet := 100 * time.Millisecond // long enough for a wrong extra message to arrive
	unfinished := [][]byte{}
	got := 0
	receive := func(want int) {
		t.Helper()
		for i := 0; i < want; i++ {
			typ, data, ok, err := readFrameWithin(c, 5*time.Second)
			if err != nil || !ok || typ != bench.FrameMessage || len(data) != 26+100 {
				t.Fatalf("message %d: type %d, %d bytes, ok %v, err %v", got, typ, len(data), ok, err)
			}
			if data[9] != 1 {
				t.Fatalf("attempts %d, want 1", data[9])
			}
			unfinished = append(unfinished, append([]byte(nil), data[10:26]...))
			got++
		}
		if _, _, ok, err := readFrameWithin(c, quiet); ok || err != nil {
			t.Fatalf("after %d messages with %d unfinished: another frame arrived (err %v)", got, len(unfinished), err)
		}
	}
	finish := func(n int) {
		t.Helper()
		for _, id := range unfinished[:n] {
			c.Finish(id)
		}
		unfinished = unfinished[n:]
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	c.Ready(1)
	c.Flush()
	for i := 0; i < 3; i++ {
		receive(1) // exactly one, then nothing until its FIN
		finish(1)
	}
	c.Ready(3)
	c.Flush()
	receive(3)
	finish(1)
	receive(1) // one FIN frees one slot
	c.Ready(0)
	finish(3)
	receive(0) // RDY 0: nothing more although 4 messages remain
	c.Ready(5)
	c.Flush()
	receive(msgs - got) // only what is left
	finish(len(unfinished))
	c.Close()
	if err := s.Close(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if s.Sent() != msgs || s.Finished() != msgs {
		t.Fatalf("sink sent %d and read %d FINs, want %d each", s.Sent(), s.Finished(), msgs)
	}
}

// The issue-12 tables on made-up results: Sluice ÷ the reference with the
// issue's ratio today and the target, the sink rows against the sinks, the
// absolute rows judged only at the issue's sizes.
func TestIssue12Checks(t *testing.T) {
	res := func(sc, target string, msgs int64, rate float64, extra map[string]any) bench.Result {
		return bench.Result{Scenario: sc, Target: target, Messages: msgs, MsgsPerSec: rate, Extra: extra}
	}
	const ref = "nsqd-v1.3.0"
	results := []bench.Result{
		res("mpub", "sluice", 1, 3_100_000, nil), res("mpub", ref, 1, 1_000_000, nil),
		res("sink-pub", "raw-sink", 1, 50_000, nil),
		res("pub", "sluice", 1, 44_000, nil), res("pub", ref, 1, 40_000, nil),
		res("sink-consume", "raw-sink", 1, 4_000_000, nil),
		res("consume", "sluice", 1, 1_200_000, nil), res("consume", ref, 1, 500_000, nil),
		res("pubsub-sustained", "sluice", 1, 1_000_000, nil), res("pubsub-sustained", ref, 1, 400_000, nil),
		{Scenario: "disk-pubsub-sustained", Target: "sluice", Error: "boom"}, res("disk-pubsub-sustained", ref, 1, 100_000, nil),
		res("disk-pubsub-max", "sluice", 1, 300_000, nil), res("disk-pubsub-max", ref, 1, 100_000, nil),
		res("disk-consume", "sluice", 1, 900_000, nil), res("disk-consume", ref, 1, 300_000, nil),
		res("fanout-10", "sluice", 1, 3_000_000, nil), res("fanout-10", ref, 1, 1_000_000, nil),
		res("gonsq-pubsub", "sluice", 1, 100_000, map[string]any{"cpu_us_per_msg": 3.0}),
		res("gonsq-pubsub", ref, 1, 100_000, map[string]any{"cpu_us_per_msg": 5.0}),
		res("lookupd-lookup", "sluice", 1, 20_000, map[string]any{"cpu_us_per_req": 20.0}),
		res("lookupd-lookup", ref, 1, 20_000, map[string]any{"cpu_us_per_req": 30.0}),
		res("idle-conns", "sluice", 18_000, 0, map[string]any{"rss_per_conn_bytes": int64(3_000)}),
		res("idle-conns", ref, 18_000, 0, map[string]any{"rss_per_conn_bytes": int64(30_000)}),
		res("idle-channels", "sluice", 100_000, 0, map[string]any{"idle_cpu_percent": 0.5, "rss_per_channel_bytes": int64(2_500),
			"start_seconds": 0.8, "stats_seconds_cold": 0.6, "stats_seconds_warm": 0.4}),
		res("idle-channels", ref, 100_000, 0, map[string]any{"idle_cpu_percent": 24.0, "rss_per_channel_bytes": int64(70_000),
			"start_seconds": 21.0, "stats_seconds_cold": 1.0, "stats_seconds_warm": 0.8}),
		res("create-channels", "sluice", 2_000, 1_000, map[string]any{"projected_100k_seconds": 100.0}),
		res("create-channels", ref, 2_000, 100, map[string]any{"projected_100k_seconds": 1000.0}),
	}
	type verdict struct {
		value, ratio float64
		goal         string
		met          bool
	}
	want1 := map[string]verdict{
		"MPUB, 4 connections, batches of 200":                                {3.1, 3.1, ">= 3", true},
		"one PUB per round trip, 4 connections":                              {1.1, 1.1, ">= 1.3", false},
		"one PUB per round trip ÷ raw-TCP server answering the same PUBs":    {0.88, 0.88, ">= 0.9", false},
		"drain a 2.5M backlog, 4 consumers, RDY 2500, FIN each":              {2.4, 2.4, ">= 3", false},
		"drain ÷ raw-TCP server pushing frames honouring RDY":                {0.3, 0.3, "", false},
		"sustained publish + consume, backlog bounded":                       {2.5, 2.5, ">= 2.5", true},
		"--mem-queue-size=0, unthrottled":                                    {3, 3, ">= 2", true},
		"drain 1M from disk":                                                 {3, 3, ">= 3", true},
		"10 channels fan-out, delivered":                                     {3, 3, ">= 3", true},
		"go-nsq client, publish + consume: daemon CPU per delivered message": {0.6, 0.6, "<= 0.6", true},
		"nsqlookupd /lookup, 8 keep-alive clients: daemon CPU per request":   {0.667, 0.667, "<= 0.5", false},
		"memory per idle consumer connection, 18,000 connections":            {3000, 0.1, "<= 4096", true},
	}
	want2 := map[string]verdict{
		"idle daemon CPU":                          {0.5, 0.021, "<= 5", true},
		"RSS per idle channel":                     {2500, 0.036, "<= 2048", false},
		"start until /ping answers":                {0.8, 0.038, "<= 2", true},
		"/stats?format=json, first":                {0.6, 0.6, "<= 0.5", false},
		"/stats?format=json, median of the next 3": {0.4, 0.5, "<= 0.5", true},
		"creating topics x channels over HTTP, one client: seconds per 100,000 channels": {100, 0.1, "", false}, // 2,000 < 10,000: not judged
	}
	t1, t2 := bench.Issue12Checks(results)
	for _, tc := range []struct {
		got  []bench.Check
		want map[string]verdict
	}{{t1, want1}, {t2, want2}} {
		if len(tc.got) != len(tc.want) {
			t.Errorf("got %d rows, want %d: %+v", len(tc.got), len(tc.want), tc.got)
		}
		for _, c := range tc.got {
			w, ok := tc.want[c.Name]
			if !ok || c.Target != "sluice" || c.Value != w.value || c.Ratio != w.ratio || c.Goal != w.goal ||
				(c.Met != nil) != (w.goal != "") || (c.Met != nil && *c.Met != w.met) {
				t.Errorf("row %+v (met %v), want %+v", c, c.Met != nil && *c.Met, w)
			}
		}
	}
	for _, c := range t1 {
		if c.Name == "drain a 2.5M backlog, 4 consumers, RDY 2500, FIN each" && (c.Today != 1.8 || c.Reference != ref) {
			t.Errorf("consume row: today %v vs %q, want 1.8 vs %s", c.Today, c.Reference, ref)
		}
	}
	// Below 18,000 connections the idle-connection row is not judged.
	small := []bench.Result{res("idle-conns", "sluice", 2_000, 0, map[string]any{"rss_per_conn_bytes": int64(9_000)})}
	if t1, _ := bench.Issue12Checks(small); len(t1) != 1 || t1[0].Met != nil || t1[0].Value != 9_000 {
		t.Errorf("idle-conns at 2,000 without a reference: %+v, want the figure, not judged", t1)
	}
}

// issue12 names exactly the scenarios of both tables, each valid, and a
// scenario named again beside the group runs once.
func TestIssue12GroupExpands(t *testing.T) {
	if !bench.ValidScenario(bench.ScenarioIssue12) {
		t.Fatal("issue12 is not a valid scenario name")
	}
	got := bench.ExpandScenarios([]string{bench.ScenarioPUB, bench.ScenarioIssue12})
	want := append([]string{bench.ScenarioPUB}, slices.DeleteFunc(slices.Clone(bench.Issue12Scenarios), func(s string) bool { return s == bench.ScenarioPUB })...)
	if !slices.Equal(got, want) {
		t.Errorf("expanded to %v, want %v", got, want)
	}
	for _, sc := range bench.Issue12Scenarios {
		if !bench.ValidScenario(sc) {
			t.Errorf("%s is not valid", sc)
		}
	}
}

// With --rounds every scenario runs that many times, the targets in turn
// one way then the other (A B, B A, A B), and the issue-12 rows take the
// median of the rounds.
func TestRoundsAlternateTargetsAndTablesTakeMedians(t *testing.T) {
	o := tinyIssue12(t)
	o.Rounds = 3
	o.PUBMessages = 200
	o.SinkMode = bench.SinkModeInproc
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, b := &inproc.Launcher{Label: "sluice"}, &inproc.Launcher{Label: "ref"}
	rep := bench.Run(ctx, o, []bench.Target{{Launcher: a}, {Launcher: b}}, []string{bench.ScenarioSinkPUB, bench.ScenarioPUB}, nil)
	var got []string
	for _, r := range rep.Results {
		if r.Error != "" || r.Messages != o.PUBMessages {
			t.Errorf("%s@%s: %d messages, error %q", r.Scenario, r.Target, r.Messages, r.Error)
		}
		got = append(got, r.Scenario+"@"+r.Target+"#"+strconv.Itoa(r.Extra["round"].(int)))
	}
	want := []string{"sink-pub@raw-sink#1", "sink-pub@raw-sink#2", "sink-pub@raw-sink#3",
		"pub@sluice#1", "pub@ref#1", "pub@ref#2", "pub@sluice#2", "pub@sluice#3", "pub@ref#3"}
	if !slices.Equal(got, want) {
		t.Errorf("run order %v, want %v", got, want)
	}

	res := func(target string, rate float64) bench.Result {
		return bench.Result{Scenario: "pub", Target: target, Messages: 1, MsgsPerSec: rate}
	}
	// Medians 40,000 and 20,000 whatever the outliers.
	t1, _ := bench.Issue12Checks([]bench.Result{res("sluice", 40_000), res("sluice", 1_000), res("sluice", 90_000),
		res("ref", 20_000), res("ref", 19_000), res("ref", 80_000)})
	if len(t1) != 1 || t1[0].Ratio != 2 || !strings.Contains(t1[0].Detail, "medians of 3 rounds") {
		t.Errorf("rows %+v, want one PUB row of ratio 2 from the medians of 3 rounds", t1)
	}
}
