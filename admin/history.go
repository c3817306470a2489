package admin

import (
	"math"
	"sort"
	"time"
)

// History is the admin's bounded in-memory record of the cluster over time, fed by the
// sampler with every node's /stats and read by the graphs. It is a pure state machine:
// time is passed in, it does no I/O and it is not safe for concurrent use (the sampler
// guards it).
//
// Three figures are kept per series, for the cluster (Topic and Channel empty), each topic
// and each channel:
//   - in: messages per second entering (topic: published; channel: copied into it),
//   - out: messages per second leaving channels for good (finished, or emptied), derived as
//     the growth of message_count - depth - in_flight - deferred, so requeues do not count;
//     a topic's out is the sum over its channels, and so is the cluster's,
//   - depth: messages waiting (a topic's own queue plus its channels' queues).
//
// Rates are computed per node from two consecutive answers of that node, using the times
// the answers arrived, then summed over nodes; a counter that went down (restart, delete)
// contributes 0 for that interval. A rate is NaN when no node has a previous answer yet.
// A replicated topic counts once: only the replica standing for it (its leader, see
// countedReplica) adds its rates and depth; the others' counters are kept all the same, so
// a follower that becomes leader goes on from its own previous answer.
//
// Memory is bounded whatever the cluster does: each series keeps at most capacity points,
// series and nodes not seen within the window are dropped, and at most maxSeries series
// are kept (see SetMaxSeries for which go first).
type History struct {
	window    time.Duration
	capacity  int
	maxSeries int
	nodes     map[string]*nodeCounters
	series    map[SeriesKey]*series
	seq       int64
}

// DefaultHistoryMaxSeries is how many series (cluster, topics, channels) a History keeps by
// default; at the default window and interval (720 points of 32 bytes) that is at most
// about 230 MB of points, usually far less.
const DefaultHistoryMaxSeries = 10000

// SeriesKey names a series: the cluster ("", ""), a topic (T, "") or a channel (T, C).
type SeriesKey struct {
	Topic, Channel string
}

type leafCounters struct{ in, out int64 }

type nodeCounters struct {
	at     time.Time
	leaves map[SeriesKey]leafCounters
}

type series struct {
	t               []int64 // Unix milliseconds
	in, out         []float64
	depth           []int64
	lastSeen        time.Time
	lastIn, lastOut float64
	lastDepth       int64
	hasLast         bool
	created         int64 // sequence number of creation: older series are kept first
}

// NewHistory keeps points for window, at most window/interval+1 points per series.
func NewHistory(window, interval time.Duration) *History {
	return &History{
		window:    window,
		capacity:  int(window/interval) + 1,
		maxSeries: DefaultHistoryMaxSeries,
		nodes:     map[string]*nodeCounters{},
		series:    map[SeriesKey]*series{},
	}
}

// SetMaxSeries bounds how many series are kept (n < 1 means DefaultHistoryMaxSeries). Past
// the bound, series are dropped in this order: those not seen most recently first, then
// channels before topics, then the newest first, so the cluster's series and long-lived
// topics keep their history while a flood of short-lived names does not grow memory.
func (h *History) SetMaxSeries(n int) {
	if n < 1 {
		n = DefaultHistoryMaxSeries
	}
	h.maxSeries = n
}

// Len returns how many series and how many nodes' counters are held (for tests and metrics).
func (h *History) Len() (series, nodes int) { return len(h.series), len(h.nodes) }

type point struct {
	in, out float64
	inOK    bool
	depth   int64
}

// record adds one sampling round taken at now from the nodes that answered.
func (h *History) record(now time.Time, results []*nodeResult) {
	points := map[SeriesKey]*point{{}: {}}
	get := func(k SeriesKey) *point {
		p, ok := points[k]
		if !ok {
			p = &point{}
			points[k] = p
		}
		return p
	}
	standby := standbyReplicas(results)
	for _, r := range results {
		prev := h.nodes[r.Node]
		cur := &nodeCounters{at: r.At, leaves: map[SeriesKey]leafCounters{}}
		var dt float64
		if prev != nil {
			dt = r.At.Sub(prev.at).Seconds()
		}
		rate := func(k SeriesKey, in, out int64) (float64, float64, bool) {
			cur.leaves[k] = leafCounters{in, out}
			if prev == nil || dt <= 0 {
				return 0, 0, false
			}
			old, ok := prev.leaves[k]
			if !ok {
				// New since the previous answer: everything counted so far happened in this interval.
				old = leafCounters{}
			}
			return float64(max(in-old.in, 0)) / dt, float64(max(out-old.out, 0)) / dt, true
		}
		cluster := get(SeriesKey{})
		for _, t := range r.Stats.Topics {
			tk := SeriesKey{Topic: t.TopicName}
			tp := get(tk)
			tin, _, ok := rate(tk, t.MessageCount, 0)
			if standby[nodeTopic{r.Node, t.TopicName}] {
				for _, c := range t.Channels {
					ck := SeriesKey{Topic: t.TopicName, Channel: c.ChannelName}
					get(ck)
					rate(ck, c.MessageCount, processed(c))
				}
				continue
			}
			tp.in += tin
			tp.inOK = tp.inOK || ok
			cluster.in += tin
			cluster.inOK = cluster.inOK || ok
			tp.depth += t.Depth
			cluster.depth += t.Depth
			for _, c := range t.Channels {
				ck := SeriesKey{Topic: t.TopicName, Channel: c.ChannelName}
				cp := get(ck)
				cin, cout, ok := rate(ck, c.MessageCount, processed(c))
				cp.in += cin
				cp.out += cout
				cp.inOK = cp.inOK || ok
				cp.depth += c.Depth
				tp.out += cout
				tp.depth += c.Depth
				cluster.out += cout
				cluster.depth += c.Depth
			}
		}
		if prev != nil && dt > 0 {
			cluster.inOK = true
		}
		h.nodes[r.Node] = cur
	}
	ms := now.UnixMilli()
	for k, p := range points {
		s, ok := h.series[k]
		if !ok {
			h.seq++
			s = &series{created: h.seq}
			h.series[k] = s
		}
		in, out := math.NaN(), math.NaN()
		if p.inOK {
			in, out = p.in, p.out
		}
		s.t = append(s.t, ms)
		s.in = append(s.in, in)
		s.out = append(s.out, out)
		s.depth = append(s.depth, p.depth)
		s.lastSeen = now
		s.lastIn, s.lastOut, s.lastDepth, s.hasLast = in, out, p.depth, true
	}
	h.prune(now)
}

// processed is how many messages have left channel c for good (see History: out).
func processed(c *rawChannel) int64 {
	return max(c.MessageCount-c.Depth-c.InFlightCount-c.DeferredCount, 0)
}

// prune drops points older than the window or beyond capacity, series not seen within the
// window, and nodes not heard from within the window.
func (h *History) prune(now time.Time) {
	cutoff := now.Add(-h.window)
	for k, s := range h.series {
		if s.lastSeen.Before(cutoff) {
			delete(h.series, k)
			continue
		}
		drop := 0
		for drop < len(s.t) && (time.UnixMilli(s.t[drop]).Before(cutoff) || len(s.t)-drop > h.capacity) {
			drop++
		}
		if drop > 0 {
			s.t = append([]int64(nil), s.t[drop:]...)
			s.in = append([]float64(nil), s.in[drop:]...)
			s.out = append([]float64(nil), s.out[drop:]...)
			s.depth = append([]int64(nil), s.depth[drop:]...)
		}
	}
	for n, c := range h.nodes {
		if c.at.Before(cutoff) {
			delete(h.nodes, n)
		}
	}
	if excess := len(h.nodes) - maxHistoryNodes; excess > 0 {
		names := make([]string, 0, len(h.nodes))
		for n := range h.nodes {
			names = append(names, n)
		}
		sort.Slice(names, func(i, j int) bool { return h.nodes[names[i]].at.Before(h.nodes[names[j]].at) })
		for _, n := range names[:excess] {
			delete(h.nodes, n)
		}
	}
	h.evict()
}

// maxHistoryNodes bounds how many nodes' previous counters are kept (oldest answers go first).
const maxHistoryNodes = 4096

// evict drops series past maxSeries in the order SetMaxSeries describes; the cluster's
// series is never dropped.
func (h *History) evict() {
	excess := len(h.series) - h.maxSeries
	if excess <= 0 {
		return
	}
	keys := make([]SeriesKey, 0, len(h.series))
	for k := range h.series {
		if k != (SeriesKey{}) {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := h.series[keys[i]], h.series[keys[j]]
		if !a.lastSeen.Equal(b.lastSeen) {
			return a.lastSeen.Before(b.lastSeen)
		}
		if ac, bc := keys[i].Channel != "", keys[j].Channel != ""; ac != bc {
			return ac
		}
		return a.created > b.created
	})
	for _, k := range keys[:min(excess, len(keys))] {
		delete(h.series, k)
	}
}

// Series is a copy of one series in the column layout the UI plots: T in Unix seconds,
// In/Out in messages per second (nil where unknown), Depth in messages.
type Series struct {
	T     []float64  `json:"t"`
	In    []*float64 `json:"in"`
	Out   []*float64 `json:"out"`
	Depth []int64    `json:"depth"`
}

// Series returns the last n points (all when n <= 0) of the series for k; empty when unknown.
func (h *History) Series(k SeriesKey, n int) Series {
	out := Series{T: []float64{}, In: []*float64{}, Out: []*float64{}, Depth: []int64{}}
	s, ok := h.series[k]
	if !ok {
		return out
	}
	from := 0
	if n > 0 && len(s.t) > n {
		from = len(s.t) - n
	}
	for i := from; i < len(s.t); i++ {
		out.T = append(out.T, float64(s.t[i])/1000)
		out.In = append(out.In, nanToNil(s.in[i]))
		out.Out = append(out.Out, nanToNil(s.out[i]))
		out.Depth = append(out.Depth, s.depth[i])
	}
	return out
}

// Latest returns the most recent in and out rates of k (NaN when unknown).
func (h *History) Latest(k SeriesKey) (in, out float64) {
	s, ok := h.series[k]
	if !ok || !s.hasLast {
		return math.NaN(), math.NaN()
	}
	return s.lastIn, s.lastOut
}

func nanToNil(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}
