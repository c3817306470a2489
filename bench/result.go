package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// Latency holds end-to-end latency percentiles in milliseconds.
type Latency struct {
	Samples int     `json:"samples"`
	P50     float64 `json:"p50_ms"`
	P99     float64 `json:"p99_ms"`
	P999    float64 `json:"p99_9_ms"`
	Max     float64 `json:"max_ms"`
}

// Percentiles sorts samples (nanoseconds) in place and returns p50, p99,
// p99.9 and the maximum (nearest-rank). It returns nil for no samples.
func Percentiles(samples []int64) *Latency {
	if len(samples) == 0 {
		return nil
	}
	slices.Sort(samples)
	rank := func(p float64) float64 {
		i := int(math.Ceil(float64(len(samples))*p)) - 1
		i = max(0, min(i, len(samples)-1))
		return roundTo(float64(samples[i])/1e6, 3)
	}
	return &Latency{
		Samples: len(samples),
		P50:     rank(0.50),
		P99:     rank(0.99),
		P999:    rank(0.999),
		Max:     roundTo(float64(samples[len(samples)-1])/1e6, 3),
	}
}

// Result is one line of the report.
type Result struct {
	Scenario string `json:"scenario"`
	Target   string `json:"target"`
	// Messages is the exact count the figure is based on.
	Messages   int64   `json:"messages,omitempty"`
	Seconds    float64 `json:"seconds,omitempty"`
	MsgsPerSec float64 `json:"msgs_per_sec,omitempty"`
	// MBPerSec counts message bodies only.
	MBPerSec float64 `json:"mb_per_sec,omitempty"`
	// RatioVsSink is MsgsPerSec divided by the raw sink's rate in the same run.
	RatioVsSink float64  `json:"ratio_vs_sink,omitempty"`
	Latency     *Latency `json:"latency,omitempty"`
	// Extra carries scenario-specific figures (RSS, publish rate, depths).
	Extra map[string]any `json:"extra,omitempty"`
	// Config says how the load and the node were set up.
	Config string `json:"config"`
	Error  string `json:"error,omitempty"`
	// Skipped says why the scenario did not run on this target (a feature
	// it does not have, a binary that is missing); it is not an error.
	Skipped string `json:"skipped,omitempty"`
}

func (r *Result) setRate(msgs int64, d time.Duration, bodySize int) {
	r.Messages = msgs
	r.Seconds = roundTo(d.Seconds(), 4)
	if d > 0 {
		r.MsgsPerSec = roundTo(float64(msgs)/d.Seconds(), 0)
		r.MBPerSec = roundTo(float64(msgs)*float64(bodySize)/1e6/d.Seconds(), 2)
	}
}

func (r *Result) extra(k string, v any) {
	if r.Extra == nil {
		r.Extra = make(map[string]any)
	}
	r.Extra[k] = v
}

// TableHeader is the header of the human-readable table.
const TableHeader = "scenario         target       messages     seconds   msgs/s      MB/s    vs-sink  p50ms    p99ms    p99.9ms  notes"

// TableLine renders r as one human-readable line.
func (r *Result) TableLine() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-16s %-12s %-12d %-9.2f %-11.0f %-7.1f ", r.Scenario, r.Target, r.Messages, r.Seconds, r.MsgsPerSec, r.MBPerSec)
	if r.RatioVsSink > 0 {
		fmt.Fprintf(&b, "%-8.3f ", r.RatioVsSink)
	} else {
		b.WriteString("-        ")
	}
	if r.Latency != nil {
		fmt.Fprintf(&b, "%-8.2f %-8.2f %-8.2f ", r.Latency.P50, r.Latency.P99, r.Latency.P999)
	} else {
		b.WriteString("-        -        -        ")
	}
	if r.Error != "" {
		b.WriteString("ERROR: " + r.Error + "; ")
	}
	if r.Skipped != "" {
		b.WriteString("SKIPPED: " + r.Skipped + "; ")
	}
	for _, k := range sortedKeys(r.Extra) {
		fmt.Fprintf(&b, "%s=%v ", k, r.Extra[k])
	}
	return strings.TrimRight(b.String(), " ")
}

// roundTo rounds v to the given number of decimals.
func roundTo(v float64, decimals int) float64 {
	p := math.Pow(10, float64(decimals))
	return math.Round(v*p) / p
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// progress prints "label n/total rate" every interval until stop is called.
// It is a no-op when w is nil.
func progress(w io.Writer, every time.Duration, label string, total int64, count func() int64) (stop func()) {
	if w == nil || every <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(every)
		defer t.Stop()
		start := time.Now()
		var last int64
		lastT := start
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				n := count()
				rate := float64(n-last) / now.Sub(lastT).Seconds()
				fmt.Fprintf(w, "  .. %s: %d/%d (%.0f%%) %.0f msgs/s, %s elapsed\n",
					label, n, total, 100*float64(n)/float64(max(total, 1)), rate, now.Sub(start).Round(time.Second))
				last, lastT = n, now
			}
		}
	}()
	return func() { close(done); <-finished }
}

// counterFunc adapts an atomic counter for progress.
func counterFunc(c *atomic.Int64) func() int64 { return c.Load }
