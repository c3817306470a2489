// Package statsd pushes nsqd's statistics to a statsd server over UDP
// (protocol.md §14).
//
// The pure part turns two /stats snapshots into metric lines (Lines), packs
// them into datagrams (Pack) and builds the metric prefix (Prefix). The thin
// part (Run) owns the timing and the socket: every interval it takes a
// snapshot, opens a UDP socket, spreads the datagrams over the interval minus
// one second, and closes the socket.
package statsd

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/sluicemq/sluice/protocol"
)

// Options select which metrics Lines emits.
type Options struct {
	// ExcludeEphemeral skips #ephemeral topics and channels
	// (--statsd-exclude-ephemeral).
	ExcludeEphemeral bool
	// MemStats adds the mem.* process metrics (--statsd-mem-stats) when the
	// snapshot carries Memory.
	MemStats bool
}

// Prefix expands a --statsd-prefix template: every "%s" becomes
// "<broadcastAddr>_<httpPort>" with '.' and ':' replaced by '_', and a '.' is
// appended when the result does not end with one. An empty template means no
// prefix.
func Prefix(tmpl, broadcastAddr string, httpPort int) string {
	if tmpl == "" {
		return ""
	}
	node := strings.NewReplacer(".", "_", ":", "_").Replace(broadcastAddr + "_" + strconv.Itoa(httpPort))
	p := strings.ReplaceAll(tmpl, "%s", node)
	if !strings.HasSuffix(p, ".") {
		p += "."
	}
	return p
}

// Lines returns the metric lines (without newlines) for snapshot cur:
// counters are deltas against prev (nil prev, or a topic or channel absent
// from prev, counts from zero; a counter that went backwards, as after a
// delete and re-create, reports its current value), gauges are cur's values,
// latency gauges are one per configured percentile named
// e2e_processing_latency_<round(q*100)>. Topics and channels are emitted in
// cur's order.
func Lines(prefix string, prev, cur *protocol.StatsResponse, opts Options) []string {
	if cur == nil {
		return nil
	}
	prevTopics := make(map[string]*protocol.TopicStats)
	if prev != nil {
		for i := range prev.Topics {
			prevTopics[prev.Topics[i].TopicName] = &prev.Topics[i]
		}
	}
	b := lineBuilder{prefix: prefix}
	for i := range cur.Topics {
		t := &cur.Topics[i]
		if opts.ExcludeEphemeral && protocol.IsEphemeral(t.TopicName) {
			continue
		}
		pt := prevTopics[t.TopicName]
		if pt == nil {
			pt = &protocol.TopicStats{}
		}
		base := "topic." + t.TopicName + "."
		b.counter(base+"message_count", t.MessageCount, pt.MessageCount)
		b.counter(base+"message_bytes", t.MessageBytes, pt.MessageBytes)
		b.gauge(base+"depth", t.Depth)
		b.gauge(base+"backend_depth", t.BackendDepth)
		b.latency(base, t.E2ELatency)

		prevChannels := make(map[string]*protocol.ChannelStats, len(pt.Channels))
		for j := range pt.Channels {
			prevChannels[pt.Channels[j].ChannelName] = &pt.Channels[j]
		}
		for j := range t.Channels {
			c := &t.Channels[j]
			if opts.ExcludeEphemeral && protocol.IsEphemeral(c.ChannelName) {
				continue
			}
			pc := prevChannels[c.ChannelName]
			if pc == nil {
				pc = &protocol.ChannelStats{}
			}
			cbase := base + "channel." + c.ChannelName + "."
			b.counter(cbase+"message_count", c.MessageCount, pc.MessageCount)
			b.gauge(cbase+"depth", c.Depth)
			b.gauge(cbase+"backend_depth", c.BackendDepth)
			b.gauge(cbase+"in_flight_count", c.InFlightCount)
			b.gauge(cbase+"deferred_count", c.DeferredCount)
			b.counter(cbase+"requeue_count", c.RequeueCount, pc.RequeueCount)
			b.counter(cbase+"timeout_count", c.TimeoutCount, pc.TimeoutCount)
			b.gauge(cbase+"clients", int64(c.ClientCount))
			b.latency(cbase, c.E2ELatency)
		}
	}
	if m := cur.Memory; opts.MemStats && m != nil {
		var prevRuns uint64
		if prev != nil && prev.Memory != nil {
			prevRuns = prev.Memory.GCTotalRuns
		}
		b.gaugeU("mem.heap_objects", m.HeapObjects)
		b.gaugeU("mem.heap_idle_bytes", m.HeapIdleBytes)
		b.gaugeU("mem.heap_in_use_bytes", m.HeapInUseBytes)
		b.gaugeU("mem.heap_released_bytes", m.HeapReleasedBytes)
		b.gaugeU("mem.gc_pause_usec_100", m.GCPauseUsec100)
		b.gaugeU("mem.gc_pause_usec_99", m.GCPauseUsec99)
		b.gaugeU("mem.gc_pause_usec_95", m.GCPauseUsec95)
		b.gaugeU("mem.next_gc_bytes", m.NextGCBytes)
		runs := m.GCTotalRuns
		if runs >= prevRuns {
			runs -= prevRuns
		}
		b.lines = append(b.lines, b.prefix+"mem.gc_runs:"+strconv.FormatUint(runs, 10)+"|c")
	}
	return b.lines
}

type lineBuilder struct {
	prefix string
	lines  []string
}

func (b *lineBuilder) add(name string, v int64, typ string) {
	b.lines = append(b.lines, b.prefix+name+":"+strconv.FormatInt(v, 10)+"|"+typ)
}

func (b *lineBuilder) counter(name string, cur, prev int64) {
	d := cur - prev
	if d < 0 {
		d = cur // the counter restarted (object deleted and re-created)
	}
	b.add(name, d, "c")
}

func (b *lineBuilder) gauge(name string, v int64) { b.add(name, v, "g") }

func (b *lineBuilder) gaugeU(name string, v uint64) {
	b.lines = append(b.lines, b.prefix+name+":"+strconv.FormatUint(v, 10)+"|g")
}

func (b *lineBuilder) latency(base string, e protocol.E2ELatency) {
	for _, p := range e.Percentiles {
		b.gauge(base+"e2e_processing_latency_"+strconv.Itoa(int(math.Round(p.Quantile*100))), int64(p.Value))
	}
}

// Pack appends each line and a '\n' to a datagram while the datagram stays
// within packetSize bytes, then starts the next one. A line is never split: a
// line longer than packetSize travels alone in an oversized datagram.
func Pack(lines []string, packetSize int) [][]byte {
	var packets [][]byte
	var cur []byte
	for _, l := range lines {
		if len(cur) > 0 && len(cur)+len(l)+1 > packetSize {
			packets = append(packets, cur)
			cur = nil
		}
		if cur == nil {
			cur = make([]byte, 0, max(packetSize, len(l)+1))
		}
		cur = append(cur, l...)
		cur = append(cur, '\n')
	}
	if len(cur) > 0 {
		packets = append(packets, cur)
	}
	return packets
}

// sendGap is the pause between datagrams so that n of them are spread evenly
// over interval minus one second (no pause for intervals of a second or less).
func sendGap(interval time.Duration, n int) time.Duration {
	spread := interval - time.Second
	if n <= 1 || spread <= 0 {
		return 0
	}
	return spread / time.Duration(n)
}

// Run pushes statistics to the statsd server at addr (UDP host:port) every
// interval until ctx is done, then returns nil. Each push takes a snapshot,
// computes Lines against the previous snapshot (the first push sends totals
// since start), opens a UDP socket, sends Pack(lines, packetSize) spread over
// interval-1s, and closes the socket. Failures are logged and retried at the
// next interval. snapshot is called from Run's goroutine; it must return a
// snapshot Run may keep (it is not modified). A nil logger discards logs.
func Run(ctx context.Context, addr string, interval time.Duration, packetSize int,
	snapshot func() *protocol.StatsResponse, prefix string, opts Options, logger *slog.Logger) error {
	if interval <= 0 {
		return fmt.Errorf("statsd interval %v: must be positive", interval)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	var prev *protocol.StatsResponse
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
		cur := snapshot()
		lines := Lines(prefix, prev, cur, opts)
		prev = cur
		packets := Pack(lines, packetSize)
		if err := push(ctx, addr, packets, sendGap(interval, len(packets))); err != nil {
			logger.Error("statsd push failed", "statsd_address", addr, "err", err)
		}
	}
}

// push sends packets to addr over a fresh UDP socket, pausing gap between
// sends; it stops early when ctx is done.
func push(ctx context.Context, addr string, packets [][]byte, gap time.Duration) error {
	if len(packets) == 0 {
		return nil
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return fmt.Errorf("dial statsd %s: %w", addr, err)
	}
	defer conn.Close()
	var timer *time.Timer
	for i, p := range packets {
		if i > 0 && gap > 0 {
			if timer == nil {
				timer = time.NewTimer(gap)
				defer timer.Stop()
			} else {
				timer.Reset(gap)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-timer.C:
			}
		}
		if _, err := conn.Write(p); err != nil {
			return fmt.Errorf("send statsd datagram %d/%d to %s: %w", i+1, len(packets), addr, err)
		}
	}
	return nil
}
