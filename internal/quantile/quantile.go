// Package quantile estimates end-to-end processing latency quantiles over a
// sliding time window (protocol.md §5.13).
//
// A Quantile keeps two half-window buckets, each a targeted
// github.com/beorn7/perks/quantile stream. Samples go into the current
// bucket; when half a window has passed the current bucket becomes the
// previous one and the old previous one is dropped, so a result covers
// between half and a whole window of samples. Time is always passed in:
// there is no clock and no goroutine inside, so tests are deterministic.
//
//	q := quantile.New(10*time.Minute, []float64{0.99, 0.5})
//	q.Insert(float64(finTime.Sub(msgTime)), now)
//	stats.E2ELatency = q.Result(now)
//
// A nil *Quantile (no quantiles configured) is valid: Insert does nothing and
// Result reports {"count":0,"percentiles":null}.
package quantile

import (
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/beorn7/perks/quantile"
	"github.com/sluicemq/sluice/protocol"
)

// Quantile is a thread-safe sliding-window quantile estimator.
type Quantile struct {
	quantiles []float64 // configured order, as reported
	targets   map[float64]float64
	half      time.Duration // bucket length: window/2

	mu   sync.Mutex // guards cur and prev
	cur  bucket
	prev bucket
}

// bucket holds the samples of one half window: its own stream plus samples
// merged in from other estimators (kept aside because perks' stream merge is
// documented as inaccurate).
type bucket struct {
	start  time.Time // zero until the first sample or merge
	stream *quantile.Stream
	merged quantile.Samples
}

// New returns an estimator over window for the given quantiles (each in
// (0, 1], reported in the given order). It returns nil when quantiles is
// empty, which is a valid no-op estimator. A window under 2ns is raised to 2ns.
func New(window time.Duration, quantiles []float64) *Quantile {
	if len(quantiles) == 0 {
		return nil
	}
	q := &Quantile{
		quantiles: slices.Clone(quantiles),
		targets:   make(map[float64]float64, len(quantiles)),
		half:      max(window/2, 1),
	}
	for _, v := range quantiles {
		q.targets[v] = epsilon(v)
	}
	return q
}

// epsilon is the absolute rank error allowed for quantile v: tighter for the
// tail quantiles that latency alerts look at, bounded so memory stays small.
func epsilon(v float64) float64 {
	return min(max((1-v)/10, 0.0001), 0.01)
}

// Insert records one latency sample (nanoseconds) observed at now.
func (q *Quantile) Insert(v float64, now time.Time) {
	if q == nil {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.rotate(now)
	b := &q.cur
	if b.stream == nil {
		b.stream = quantile.NewTargeted(q.targets)
	}
	b.stream.Insert(v)
}

// Result returns the number of samples in the window ending at now and the
// estimate of each configured quantile (0 when there are no samples).
func (q *Quantile) Result(now time.Time) protocol.E2ELatency {
	if q == nil {
		return protocol.E2ELatency{}
	}
	q.mu.Lock()
	q.rotate(now)
	samples := append(q.cur.snapshot(), q.prev.snapshot()...)
	q.mu.Unlock()

	sort.Sort(samples)
	total := totalWidth(samples)
	// Widths are whole sample counts: the sum is exact below 2^53.
	res := protocol.E2ELatency{Count: int(total), Percentiles: make([]protocol.Percentile, len(q.quantiles))}
	for i, v := range q.quantiles {
		res.Percentiles[i] = protocol.Percentile{Quantile: v, Value: weightedQuantile(samples, total, v)}
	}
	return res
}

// Merge adds other's current samples to q so that q.Result reports quantiles
// over the union; a topic uses it to report the merge of its channels:
//
//	agg := quantile.New(window, quantiles)
//	for _, ch := range channels { agg.Merge(ch.e2e) }
//	topicStats.E2ELatency = agg.Result(now)
//
// q's clock first moves forward to other's if other's is newer (a fresh q
// adopts it); then each of other's two buckets lands in q's bucket covering
// about the same period, and a bucket older than q's window is dropped.
// q keeps its own rotation from then on. Merging q into itself does nothing.
func (q *Quantile) Merge(other *Quantile) {
	if q == nil || other == nil || q == other {
		return
	}
	other.mu.Lock()
	buckets := [2]struct {
		start   time.Time
		samples quantile.Samples
	}{{other.cur.start, other.cur.snapshot()}, {other.prev.start, other.prev.snapshot()}}
	other.mu.Unlock()

	q.mu.Lock()
	defer q.mu.Unlock()
	if !buckets[0].start.IsZero() {
		// Bring q's clock up to other's when other's is newer (a fresh q
		// adopts it); rotate ignores an older one.
		q.rotate(buckets[0].start)
	}
	for _, b := range buckets {
		if len(b.samples) == 0 {
			continue
		}
		switch age := q.cur.start.Sub(b.start); {
		case age < q.half/2:
			q.cur.merged = append(q.cur.merged, b.samples...)
		case age < q.half+q.half/2:
			q.prev.merged = append(q.prev.merged, b.samples...)
		}
	}
}

// totalWidth is the number of samples a set of weighted samples stands for.
func totalWidth(s quantile.Samples) float64 {
	var n float64
	for _, x := range s {
		n += x.Width
	}
	return n
}

// rotate moves the buckets forward to now. Time going backwards is ignored.
func (q *Quantile) rotate(now time.Time) {
	if q.cur.start.IsZero() {
		q.cur.start = now
		return
	}
	elapsed := now.Sub(q.cur.start)
	if elapsed < q.half {
		return
	}
	steps := elapsed / q.half
	newStart := q.cur.start.Add(steps * q.half)
	if steps == 1 {
		q.prev, q.cur = q.cur, bucket{}
	} else {
		q.prev, q.cur = bucket{}, bucket{}
	}
	q.cur.start = newStart
}

// snapshot returns a copy of the bucket's weighted samples.
func (b *bucket) snapshot() quantile.Samples {
	var s quantile.Samples
	if b.stream != nil {
		s = append(s, b.stream.Samples()...)
	}
	return append(s, b.merged...)
}

// weightedQuantile returns the value at rank ceil(v*total) of samples sorted
// by value, each sample counting for its width (exact for uncompressed
// samples; within the streams' error bounds otherwise).
func weightedQuantile(sorted quantile.Samples, total, v float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := v * total
	var cum float64
	for _, s := range sorted {
		cum += s.Width
		if cum >= rank {
			return s.Value
		}
	}
	return sorted[len(sorted)-1].Value
}
