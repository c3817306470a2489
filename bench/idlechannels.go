package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ScenarioIdleChannels starts nsqd on an nsqd.dat with many topics and
// channels and measures what they cost while idle (issue 12).
const ScenarioIdleChannels = "idle-channels"

// IdleChannelsOptions sizes the idle-channels scenario.
type IdleChannelsOptions struct {
	// Topics topics with ChannelsPerTopic channels each are written to
	// nsqd.dat before nsqd starts.
	Topics, ChannelsPerTopic int
	// Settle is the wait after GET /ping first answers before the CPU
	// window starts (start-up work that trails the listener).
	Settle time.Duration
	// Window is how long the process's CPU time is measured.
	Window time.Duration
}

// The goals for idle channels, evaluated on Sluice at
// idleChannelsGoalCount channels or more.
const (
	goalIdleCPUPercent     = 5.0  // % of one core, nothing connected
	goalIdleBytesPerChan   = 2048 // VmRSS / channels
	goalIdleStartSeconds   = 2.0  // process start to GET /ping 200
	goalIdleStatsSeconds   = 0.5  // one GET /stats?format=json
	idleChannelsGoalCount  = 100_000
	idleChannelsStatsWarm  = 3               // GET /stats after the first, median reported
	idleChannelsStatsLimit = 2 * time.Minute // per GET /stats
	// idleChannelsMemQueue is --mem-queue-size: nsqd's default (NSQ's and
	// Sluice's), not the large queue of the throughput scenarios. NSQ makes
	// a buffered Go channel of that many slots for every topic and channel,
	// so at 10,000,000 (80 MB each) it was OOM-killed at 24 GB RSS while
	// loading 10,000 x 10 channels.
	idleChannelsMemQueue = 10_000
	// clockTicksPerSecond is USER_HZ, the unit of utime and stime in
	// /proc/<pid>/stat. Linux fixes it at 100 on every architecture Go
	// supports; sysconf(_SC_CLK_TCK) would need cgo to ask.
	clockTicksPerSecond = 100
)

// IdleChannelsMetadataVersion is the version written to nsqd.dat: NSQ
// 1.3.0's, which both daemons load.
const IdleChannelsMetadataVersion = "1.3.0"

// idleMetadata is the part of the nsqd.dat document the scenario writes:
// topics and channels, none paused, with NSQ's keys only.
type idleMetadata struct {
	Topics  []idleTopic `json:"topics"`
	Version string      `json:"version"`
}

type idleTopic struct {
	Name     string        `json:"name"`
	Paused   bool          `json:"paused"`
	Channels []idleChannel `json:"channels"`
}

type idleChannel struct {
	Name   string `json:"name"`
	Paused bool   `json:"paused"`
}

// IdleTopicName and IdleChannelName name the i-th topic or channel of n
// ("t00042", "c07"), zero-padded to at least 5 and 2 digits and wide enough
// for n, so that names sort in creation order.
func IdleTopicName(i, n int) string   { return padName("t", i, n, 5) }
func IdleChannelName(i, n int) string { return padName("c", i, n, 2) }

func padName(prefix string, i, n, minWidth int) string {
	width := max(minWidth, len(strconv.Itoa(max(n-1, 0))))
	return fmt.Sprintf("%s%0*d", prefix, width, i)
}

// WriteIdleChannelsMetadata writes dir/nsqd.dat listing topics topics with
// channelsPerTopic channels each, named by IdleTopicName and
// IdleChannelName, none paused, and returns the file's size.
func WriteIdleChannelsMetadata(dir string, topics, channelsPerTopic int) (int64, error) {
	if topics < 1 || channelsPerTopic < 0 {
		return 0, fmt.Errorf("nsqd.dat for %d topics x %d channels: need at least one topic", topics, channelsPerTopic)
	}
	md := idleMetadata{Topics: make([]idleTopic, topics), Version: IdleChannelsMetadataVersion}
	// Every topic has the same channel names; share one slice.
	chans := make([]idleChannel, channelsPerTopic)
	for c := range chans {
		chans[c].Name = IdleChannelName(c, channelsPerTopic)
	}
	for t := range md.Topics {
		md.Topics[t] = idleTopic{Name: IdleTopicName(t, topics), Channels: chans}
	}
	data, err := json.Marshal(md)
	if err != nil {
		return 0, fmt.Errorf("encode nsqd.dat: %w", err)
	}
	path := filepath.Join(dir, "nsqd.dat")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return 0, fmt.Errorf("write %s: %w", path, err)
	}
	return int64(len(data)), nil
}

// ProcessCPUTicks returns utime+stime of a process in clock ticks
// (clockTicksPerSecond), from /proc/<pid>/stat.
func ProcessCPUTicks(pid int) (int64, error) {
	st, err := readProcessStat(pid)
	return st.ticks, err
}

// processStat is what the bench reads of /proc/<pid>/stat.
type processStat struct {
	ticks  int64 // utime+stime, in clock ticks
	minflt int64 // minor page faults (a fresh page touched, among others)
}

func readProcessStat(pid int) (processStat, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return processStat{}, fmt.Errorf("read CPU time: %w", err)
	}
	// The command name (field 2) is in parentheses and may hold spaces;
	// fields are counted after its closing parenthesis: state is field 3,
	// minflt field 10, utime field 14, stime field 15.
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return processStat{}, fmt.Errorf("unexpected /proc/%d/stat %q", pid, data)
	}
	fields := bytes.Fields(data[end+1:])
	if len(fields) < 13 {
		return processStat{}, fmt.Errorf("short /proc/%d/stat %q", pid, data)
	}
	var v [3]int64
	for i, f := range [][]byte{fields[7], fields[11], fields[12]} {
		n, err := strconv.ParseInt(string(f), 10, 64)
		if err != nil {
			return processStat{}, fmt.Errorf("parse /proc/%d/stat field %q: %w", pid, f, err)
		}
		v[i] = n
	}
	return processStat{minflt: v[0], ticks: v[1] + v[2]}, nil
}

// RunIdleChannels writes an nsqd.dat of o.IdleChannels.Topics x
// ChannelsPerTopic into a fresh data directory, starts nsqd on it as a child
// process and reports: the time from start until GET /ping answers
// (start_seconds); after Settle, the process's CPU time over Window as a
// percentage of one core (idle_cpu_percent); VmRSS and VmRSS per channel;
// the time of the first GET /stats?format=json and the median of the next
// three. It fails when /stats does not list every topic and channel written.
// l must start nsqd as a child process (a *BinaryLauncher); any other
// target is skipped, since the CPU and RSS of the bench's own process (or of
// an nsqd that cannot be given the data directory) would say nothing.
func RunIdleChannels(ctx context.Context, l Launcher, o Options) Result {
	ic := o.IdleChannels
	channels := ic.Topics * ic.ChannelsPerTopic
	r := Result{Scenario: ScenarioIdleChannels, Target: l.Name()}
	if _, ok := l.(*BinaryLauncher); !ok {
		r.Skipped = "needs nsqd as a child process started on a prepared data directory (--sluice-process, --nsqd-bin): " +
			"the CPU time and RSS of the bench's own process would say nothing"
		return r
	}
	if channels < 1 {
		r.Error = fmt.Sprintf("%d topics x %d channels: nothing to measure", ic.Topics, ic.ChannelsPerTopic)
		return r
	}
	dir, err := os.MkdirTemp(o.TempDir, "sluice-bench-")
	if err != nil {
		r.Error = fmt.Sprintf("data dir: %v", err)
		return r
	}
	defer os.RemoveAll(dir)
	size, err := WriteIdleChannelsMetadata(dir, ic.Topics, ic.ChannelsPerTopic)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	// The start-up is what is measured: it may take as long as the
	// scenario allows (ctx), not the default 15 s.
	cfg := NodeConfig{DataPath: dir, MemQueueSize: idleChannelsMemQueue, ReadyTimeout: o.ScenarioTimeout}
	n, err := l.Launch(ctx, cfg)
	if err != nil {
		r.Error = fmt.Sprintf("launch %s on %d topics x %d channels: %v", l.Name(), ic.Topics, ic.ChannelsPerTopic, err)
		return r
	}
	r.Config = fmt.Sprintf("nsqd.dat with %d topics x %d channels (%d B), nothing connected; settle %s, CPU over %s "+
		"(utime+stime of pid %d); VmRSS; GET /stats?format=json 1 + %d; %s",
		ic.Topics, ic.ChannelsPerTopic, size, ic.Settle, ic.Window, n.PID, idleChannelsStatsWarm, n.Note)
	err = measureIdleChannels(ctx, n, o, &r)
	// How long nsqd takes to stop is a figure, not a failure of the
	// measurement: NSQ 1.3.0 does not exit within Stop's 30 s at 100,000
	// channels and is killed.
	stopStart := time.Now()
	if serr := n.Stop(); serr != nil {
		r.extra("stop_error", serr.Error())
	} else {
		r.extra("stop_seconds", roundTo(time.Since(stopStart).Seconds(), 3))
	}
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// measureIdleChannels fills r with the figures of a node that has just
// answered GET /ping.
func measureIdleChannels(ctx context.Context, n *Node, o Options, r *Result) error {
	ic := o.IdleChannels
	channels := int64(ic.Topics) * int64(ic.ChannelsPerTopic)
	if n.PID == 0 || n.ReadyAfter <= 0 {
		return fmt.Errorf("nsqd is not a child process: no pid or start time")
	}
	r.Messages = channels
	r.extra("topics", ic.Topics)
	r.extra("channels_per_topic", ic.ChannelsPerTopic)
	r.extra("start_seconds", roundTo(n.ReadyAfter.Seconds(), 3))
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(ic.Settle):
	}
	before, err := ProcessCPUTicks(n.PID)
	if err != nil {
		return err
	}
	start := time.Now()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(ic.Window):
	}
	after, err := ProcessCPUTicks(n.PID)
	if err != nil {
		return err
	}
	window := time.Since(start)
	// RSS before any /stats: its answer is allocated on the heap.
	rss, err := ProcessRSS(n.PID)
	if err != nil {
		return err
	}
	r.Seconds = roundTo(window.Seconds(), 3)
	r.extra("cpu_ticks", after-before)
	r.extra("idle_cpu_percent", roundTo(float64(after-before)/clockTicksPerSecond/window.Seconds()*100, 2))
	r.extra("rss_kb", rss/1024)
	r.extra("rss_per_channel_bytes", rss/channels)

	cold, body, err := timeStats(ctx, n.HTTPAddr)
	if err != nil {
		return err
	}
	r.extra("stats_seconds_cold", roundTo(cold.Seconds(), 4))
	r.extra("stats_bytes", len(body))
	warm := make([]float64, idleChannelsStatsWarm)
	for i := range warm {
		d, _, err := timeStats(ctx, n.HTTPAddr)
		if err != nil {
			return err
		}
		warm[i] = roundTo(d.Seconds(), 4)
	}
	r.extra("stats_seconds_warm", medianOf(warm))
	r.extra("stats_seconds_warm_all", warm)
	return checkIdleChannelsLoaded(body, ic.Topics, ic.ChannelsPerTopic)
}

// timeStats times one GET /stats?format=json (every topic and channel, the
// default query), reading the whole answer.
func timeStats(ctx context.Context, httpAddr string) (time.Duration, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, idleChannelsStatsLimit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/stats?format=json", nil)
	if err != nil {
		return 0, nil, err
	}
	start := time.Now()
	// The shared client's 10 s timeout would cut a slow answer short;
	// the context bounds this one.
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("GET /stats: %w", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(start)
	if err != nil {
		return 0, nil, fmt.Errorf("GET /stats: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, nil, fmt.Errorf("GET /stats: %s %s", resp.Status, bytes.TrimSpace(body[:min(len(body), 200)]))
	}
	return d, body, nil
}

// checkIdleChannelsLoaded checks that a /stats answer lists exactly the
// topics and channels WriteIdleChannelsMetadata wrote, so that a daemon
// which did not load nsqd.dat fails the scenario instead of reporting the
// cost of nothing.
func checkIdleChannelsLoaded(statsJSON []byte, topics, channelsPerTopic int) error {
	var doc struct {
		Topics []TopicStats `json:"topics"`
	}
	if err := json.Unmarshal(statsJSON, &doc); err != nil {
		return fmt.Errorf("decode /stats: %w", err)
	}
	var matching, channels int
	for _, t := range doc.Topics {
		channels += len(t.Channels)
		if !strings.HasPrefix(t.Name, "t") || len(t.Channels) != channelsPerTopic {
			continue
		}
		if i, err := strconv.Atoi(t.Name[1:]); err == nil && i < topics && t.Name == IdleTopicName(i, topics) {
			matching++
		}
	}
	if len(doc.Topics) != topics || matching != topics || channels != topics*channelsPerTopic {
		return fmt.Errorf("/stats lists %d topics (%d of them as written) with %d channels, want %d x %d: nsqd did not load nsqd.dat",
			len(doc.Topics), matching, channels, topics, channelsPerTopic)
	}
	return nil
}

// IdleChannelsChecks lists the figures of every idle-channels result (idle
// CPU, RSS per channel, start, /stats cold and warm) and evaluates the
// issue's goals on them for Sluice's targets (named "sluice...") measured
// with idleChannelsGoalCount channels or more (the --full size); smaller
// runs and other daemons get the figures without a verdict. Failed and
// skipped results are left out.
func IdleChannelsChecks(results []Result) []Check {
	var out []Check
	for _, r := range results {
		if r.Scenario != ScenarioIdleChannels || r.Error != "" || r.Skipped != "" || r.Messages == 0 {
			continue
		}
		judged := strings.HasPrefix(r.Target, "sluice") && r.Messages >= idleChannelsGoalCount
		for _, g := range []struct {
			key, name string
			limit     float64
		}{
			{"idle_cpu_percent", "idle-channels CPU % of one core", goalIdleCPUPercent},
			{"rss_per_channel_bytes", "idle-channels RSS bytes per channel", goalIdleBytesPerChan},
			{"start_seconds", "idle-channels start to /ping seconds", goalIdleStartSeconds},
			{"stats_seconds_cold", "idle-channels /stats seconds, first", goalIdleStatsSeconds},
			{"stats_seconds_warm", "idle-channels /stats seconds, median of 3", goalIdleStatsSeconds},
		} {
			v, ok := asFloat(r.Extra[g.key])
			if !ok {
				continue
			}
			c := Check{Name: g.name, Target: r.Target, Value: v}
			if judged {
				met := v <= g.limit
				c.Goal, c.Met = "<= "+strconv.FormatFloat(g.limit, 'f', -1, 64), &met
			}
			out = append(out, c)
		}
	}
	return out
}

// asFloat reads a number of Result.Extra, as set in this process (int,
// int64, float64) or decoded from JSON (float64).
func asFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int64:
		return float64(x), true
	case int:
		return float64(x), true
	}
	return 0, false
}
