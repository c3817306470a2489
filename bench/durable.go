package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Durable-topic scenarios (Sluice only) and the disk-mode comparison that
// NSQ can run too.
const (
	// ScenarioDurable gives durable-mpub, durable-pub64, durable-pub1,
	// durable-consume and durable-replay.
	ScenarioDurable = "durable"
	// ScenarioDiskSync1 is MPUB with --mem-queue-size=0 --sync-every=1:
	// NSQ's disk mode made to sync every message.
	ScenarioDiskSync1 = "disk-sync1"
)

// DurableCapable is implemented by launchers that know whether their nsqd
// has durable topics.
type DurableCapable interface {
	SupportsDurable() bool
}

// SupportsDurable implements DurableCapable: the binary's --help is read
// once for the --durable flag.
func (b *BinaryLauncher) SupportsDurable() bool {
	b.helpOnce.Do(func() {
		out, _ := execHelp(b.Path)
		b.hasDurable = strings.Contains(out, "-durable")
	})
	return b.hasDurable
}

func supportsDurable(l Launcher) bool {
	d, ok := l.(DurableCapable)
	return ok && d.SupportsDurable()
}

// metricsCounters reads nsqd_durable_syncs_total and
// nsqd_durable_bytes_written_total from /metrics.
func metricsCounters(ctx context.Context, httpAddr string) (syncs, bytes float64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/metrics", nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "nsqd_durable_syncs_total":
			syncs = v
		case "nsqd_durable_bytes_written_total":
			bytes = v
		}
	}
	return syncs, bytes, sc.Err()
}

// syncMeter records the durable counters around a measured phase.
type syncMeter struct {
	ctx      context.Context
	addr     string
	s0, b0   float64
	start    time.Time
	disabled bool
}

func startSyncMeter(ctx context.Context, addr string) *syncMeter {
	m := &syncMeter{ctx: ctx, addr: addr, start: time.Now()}
	var err error
	if m.s0, m.b0, err = metricsCounters(ctx, addr); err != nil {
		m.disabled = true
	}
	return m
}

// report adds fsyncs_per_sec and bytes_per_msg for msgs messages.
func (m *syncMeter) report(r *Result, msgs int64) {
	if m.disabled {
		return
	}
	s1, b1, err := metricsCounters(m.ctx, m.addr)
	if err != nil {
		return
	}
	el := time.Since(m.start).Seconds()
	r.extra("fsyncs_per_sec", round((s1-m.s0)/el))
	if msgs > 0 {
		r.extra("bytes_per_msg", round((b1-m.b0)/float64(msgs)))
		r.extra("msgs_per_fsync", round(float64(msgs)/max(s1-m.s0, 1)))
	}
}

func createDurableTopic(ctx context.Context, httpAddr, topic string, retention time.Duration) error {
	q := url.Values{"topic": {topic}, "durable": {"true"}}
	if retention > 0 {
		q.Set("retention_time", retention.String())
	}
	return httpPost(ctx, httpAddr, "/topic/create", q)
}

// RunDurable runs the durable scenarios on one Sluice node started with
// --durable. Targets without durable topics are skipped with a note.
func RunDurable(ctx context.Context, l Launcher, o Options) []Result {
	names := []string{"durable-mpub", "durable-pub64", "durable-pub1", "durable-consume", "durable-replay"}
	if !supportsDurable(l) {
		out := make([]Result, len(names))
		for i, n := range names {
			out[i] = Result{Scenario: n, Target: l.Name(), Error: "skipped: this nsqd has no durable topics"}
		}
		return out
	}
	return []Result{
		o.publishScenario(ctx, l, "durable-mpub", NodeConfig{Durable: true}, o.Conns, o.DurableMPUBMessages, false),
		o.publishScenario(ctx, l, "durable-pub64", NodeConfig{Durable: true}, 64, o.DurablePUBMessages, true),
		o.durablePUB1(ctx, l),
		o.durableConsume(ctx, l),
		o.durableReplay(ctx, l),
	}
}

// durablePUB1 times single PUB round trips on one connection and, in the
// same data directory, single fdatasyncs of a 100-byte append.
func (o Options) durablePUB1(ctx context.Context, l Launcher) Result {
	r := Result{Scenario: "durable-pub1", Target: l.Name()}
	err := o.withNodeConfig(ctx, l, NodeConfig{Durable: true}, func(n *Node) error {
		r.Config = fmt.Sprintf("1 conn, PUB %d B, one per round trip, %d round trips; fsync = write %d B + fdatasync to a file in the same data directory; %s",
			o.BodySize, o.DurablePUB1Messages, o.BodySize, n.Note)
		topic := "bench_durable_pub1"
		if err := createDurableTopic(ctx, n.HTTPAddr, topic, 0); err != nil {
			return err
		}
		probeDir := n.DataPath
		if probeDir == "" {
			probeDir = os.TempDir() // an external node: its disk is unknown
		}
		fsyncs, err := measureFsync(probeDir, o.BodySize, int(o.DurablePUB1Messages))
		if err != nil {
			return err
		}
		meter := startSyncMeter(ctx, n.HTTPAddr)
		start := time.Now()
		rtts, err := pubRoundTrips(ctx, n.TCPAddr, topic, o.BodySize, int(o.DurablePUB1Messages))
		el := time.Since(start)
		r.setRate(int64(len(rtts)), el, o.BodySize)
		meter.report(&r, int64(len(rtts)))
		if err != nil {
			return err
		}
		ns := make([]int64, len(rtts))
		for i, v := range rtts {
			ns[i] = int64(v)
		}
		r.Latency = Percentiles(ns)
		p50, f50 := median(rtts), median(fsyncs)
		r.extra("pub_p50_us", round(p50.Seconds()*1e6))
		r.extra("fsync_p50_us", round(f50.Seconds()*1e6))
		r.extra("pub_p50_over_fsync_p50", round(p50.Seconds()/f50.Seconds()*100)/100)
		return nil
	})
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// measureFsync appends size bytes and fdatasyncs, n times, in dir.
func measureFsync(dir string, size, n int) ([]time.Duration, error) {
	path := filepath.Join(dir, "bench-fsync.tmp")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("fsync probe: %w", err)
	}
	defer os.Remove(path)
	defer f.Close()
	buf := make([]byte, size)
	out := make([]time.Duration, 0, n)
	for range n {
		t := time.Now()
		if _, err := f.Write(buf); err != nil {
			return nil, err
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return nil, err
		}
		out = append(out, time.Since(t))
	}
	return out, nil
}

// pubRoundTrips sends n PUBs one at a time and returns each round trip.
func pubRoundTrips(ctx context.Context, addr, topic string, size, n int) ([]time.Duration, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	go func() {
		<-ctx.Done()
		c.Close()
	}()
	cmd := []byte("  V2PUB " + topic + "\n")
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(size))
	cmd = append(cmd, make([]byte, size)...)
	first := cmd
	cmd = cmd[4:]
	rd := bufio.NewReader(c)
	hdr := make([]byte, 8)
	out := make([]time.Duration, 0, n)
	for i := range n {
		t := time.Now()
		w := cmd
		if i == 0 {
			w = first
		}
		if _, err := c.Write(w); err != nil {
			return out, err
		}
		for {
			if _, err := io.ReadFull(rd, hdr); err != nil {
				return out, err
			}
			body := make([]byte, binary.BigEndian.Uint32(hdr)-4)
			if _, err := io.ReadFull(rd, body); err != nil {
				return out, err
			}
			if string(body) == "_heartbeat_" {
				continue
			}
			if binary.BigEndian.Uint32(hdr[4:]) != 0 || string(body) != "OK" {
				return out, fmt.Errorf("PUB answered %q", body)
			}
			break
		}
		out = append(out, time.Since(t))
	}
	return out, nil
}

func (o Options) durableConsume(ctx context.Context, l Launcher) Result {
	r := Result{Scenario: "durable-consume", Target: l.Name()}
	err := o.withNodeConfig(ctx, l, NodeConfig{Durable: true}, func(n *Node) error {
		r.Config = fmt.Sprintf("durable backlog %d x %d B, %d consumers RDY %d, FIN each; %s",
			o.ConsumeMessages, o.BodySize, o.Conns, o.RDY, n.Note)
		topic := "bench_durable_consume"
		if err := createDurableTopic(ctx, n.HTTPAddr, topic, 0); err != nil {
			return err
		}
		meter := startSyncMeter(ctx, n.HTTPAddr)
		err := o.drainBacklog(ctx, l, n, &r, topic, o.ConsumeMessages)
		meter.report(&r, o.ConsumeMessages)
		return err
	})
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// durableReplay publishes a retained backlog, then times a new channel
// created with start=earliest draining all of it from the log files.
func (o Options) durableReplay(ctx context.Context, l Launcher) Result {
	r := Result{Scenario: "durable-replay", Target: l.Name()}
	msgs := o.ReplayMessages
	err := o.withNodeConfig(ctx, l, NodeConfig{Durable: true}, func(n *Node) error {
		r.Config = fmt.Sprintf("%d x %d B retained (retention_time=1h), new channel start=earliest, %d consumers RDY %d, FIN each; %s",
			msgs, o.BodySize, o.Conns, o.RDY, n.Note)
		topic := "bench_durable_replay"
		if err := createDurableTopic(ctx, n.HTTPAddr, topic, time.Hour); err != nil {
			return err
		}
		if err := CreateChannel(ctx, n.HTTPAddr, topic, "first"); err != nil {
			return err
		}
		var sent atomic.Int64
		stop := o.progressFor("durable-replay fill@"+l.Name(), msgs, counterFunc(&sent))
		pres, err := Publish(ctx, PublishSpec{Addr: n.TCPAddr, Topic: topic, Conns: o.Conns, Batch: o.Batch,
			BodySize: o.BodySize, Messages: msgs, Sent: &sent})
		stop()
		if err != nil {
			return fmt.Errorf("fill: %w", err)
		}
		r.extra("fill_msgs_per_sec", rate(pres.Messages, pres.Elapsed))
		if err := httpPost(ctx, n.HTTPAddr, "/channel/create", url.Values{"topic": {topic}, "channel": {"replay"}, "start": {"earliest"}}); err != nil {
			return err
		}
		g, err := StartConsumers(ctx, ConsumeSpec{Addr: n.TCPAddr, Topic: topic, Channel: "replay", Conns: o.Conns,
			RDY: o.RDY, Expect: msgs, OutputBufferTimeoutMS: o.ConsumerOutputBufferTimeout})
		if err != nil {
			return err
		}
		stop = o.progressFor("durable-replay drain@"+l.Name(), msgs, g.Received)
		cres, err := g.Wait()
		stop()
		r.setRate(cres.Messages, cres.End.Sub(cres.Start), o.BodySize)
		r.extra("redelivered", cres.Redelivered)
		if err != nil {
			return err
		}
		return o.checkDrained(ctx, n, &r, topic, "replay")
	})
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// RunDiskSync1 publishes with MPUB into a topic with --mem-queue-size=0
// --sync-every=1 (NSQ's safest disk setting; slow, so it has its own size).
func RunDiskSync1(ctx context.Context, l Launcher, o Options) Result {
	r := Result{Scenario: ScenarioDiskSync1 + "-mpub", Target: l.Name()}
	err := o.withNodeConfig(ctx, l, NodeConfig{MemQueueSize: 0, SyncEvery: 1}, func(n *Node) error {
		r.Config = fmt.Sprintf("%s; one channel, no consumer; --mem-queue-size=0 --sync-every=1; %s", o.loadDesc(), n.Note)
		topic := "bench_disk_sync1"
		if err := CreateChannel(ctx, n.HTTPAddr, topic, "ch"); err != nil {
			return err
		}
		res, err := Publish(ctx, PublishSpec{Addr: n.TCPAddr, Topic: topic, Conns: o.Conns, Batch: o.Batch,
			BodySize: o.BodySize, Messages: o.Sync1Messages})
		r.setRate(res.Messages, res.Elapsed, o.BodySize)
		return err
	})
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// execHelp returns what `bin --help` prints.
func execHelp(bin string) (string, error) {
	out, err := exec.Command(bin, "--help").CombinedOutput()
	return string(out), err
}
