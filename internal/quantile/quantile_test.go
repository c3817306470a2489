package quantile

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/sluicemq/sluice/protocol"
)

var t0 = time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)

func values(r protocol.E2ELatency) []float64 {
	out := make([]float64, len(r.Percentiles))
	for i, p := range r.Percentiles {
		out[i] = p.Value
	}
	return out
}

func TestNotConfigured(t *testing.T) {
	q := New(time.Minute, nil)
	if q != nil {
		t.Fatal("New with no quantiles must return nil")
	}
	q.Insert(5, t0)
	q.Merge(New(time.Minute, []float64{0.5}))
	b, _ := json.Marshal(q.Result(t0))
	if string(b) != `{"count":0,"percentiles":null}` {
		t.Fatalf("got %s", b)
	}
}

func TestEmptyConfiguredReportsZeros(t *testing.T) {
	q := New(10*time.Minute, []float64{1.0, 0.99, 0.5})
	b, _ := json.Marshal(q.Result(t0))
	want := `{"count":0,"percentiles":[{"quantile":1,"value":0},{"quantile":0.99,"value":0},{"quantile":0.5,"value":0}]}`
	if string(b) != want {
		t.Fatalf("got %s\nwant %s", b, want)
	}
}

func TestExactOnSmallSets(t *testing.T) {
	q := New(10*time.Minute, []float64{0.99, 0.5, 1, 0.25})
	for i := 100; i >= 1; i-- { // reverse order: no reliance on insertion order
		q.Insert(float64(i), t0.Add(time.Duration(i)*time.Millisecond))
	}
	r := q.Result(t0.Add(time.Second))
	if r.Count != 100 {
		t.Fatalf("count = %d", r.Count)
	}
	want := []float64{99, 50, 100, 25}
	for i, v := range values(r) {
		if v != want[i] || r.Percentiles[i].Quantile != []float64{0.99, 0.5, 1, 0.25}[i] {
			t.Fatalf("percentiles = %+v, want values %v in configured order", r.Percentiles, want)
		}
	}
}

// TestAccuracyLargeStream checks the rank error stays within the targeted
// epsilon after perks has compressed many samples.
func TestAccuracyLargeStream(t *testing.T) {
	qs := []float64{0.5, 0.95, 0.99, 0.999, 1}
	q := New(10*time.Minute, qs)
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 200000
	truth := make([]float64, n)
	for i := range truth {
		v := rng.ExpFloat64() * 1e6 // latency-like: long tail, ns
		truth[i] = v
		q.Insert(v, t0.Add(time.Duration(i)*time.Microsecond))
	}
	sort.Float64s(truth)
	r := q.Result(t0.Add(time.Second))
	if r.Count != n {
		t.Fatalf("count = %d", r.Count)
	}
	for i, p := range r.Percentiles {
		rank := float64(sort.SearchFloat64s(truth, p.Value)) / n
		tol := 2*epsilon(qs[i]) + 1.0/n
		if math.Abs(rank-qs[i]) > tol {
			t.Errorf("q=%v: value %v has rank %v (tolerance %v)", qs[i], p.Value, rank, tol)
		}
	}
	if r.Percentiles[4].Value != truth[n-1] {
		t.Errorf("max = %v, want %v", r.Percentiles[4].Value, truth[n-1])
	}
}

func TestSlidingWindow(t *testing.T) {
	q := New(10*time.Minute, []float64{1})
	q.Insert(100, t0)                   // bucket [0m,5m)
	q.Insert(50, t0.Add(4*time.Minute)) // same bucket
	q.Insert(70, t0.Add(6*time.Minute)) // rotates: [0,5) becomes previous
	check := func(at time.Duration, count int, max float64) {
		t.Helper()
		r := q.Result(t0.Add(at))
		if r.Count != count || r.Percentiles[0].Value != max {
			t.Fatalf("at %v: count=%d max=%v, want %d %v", at, r.Count, r.Percentiles[0].Value, count, max)
		}
	}
	check(6*time.Minute, 3, 100)
	check(9*time.Minute+59*time.Second, 3, 100)
	check(10*time.Minute, 1, 70) // [0,5) dropped, [5,10) is previous
	check(14*time.Minute, 1, 70)
	check(15*time.Minute, 0, 0)
	// A long idle gap drops everything at once.
	q.Insert(5, t0.Add(16*time.Minute))
	check(16*time.Minute, 1, 5)
	check(time.Hour, 0, 0)
	// Time going backwards neither rotates nor loses samples.
	q.Insert(9, t0.Add(time.Hour))
	check(59*time.Minute, 1, 9)
}

func TestMerge(t *testing.T) {
	qs := []float64{1, 0.5}
	a := New(10*time.Minute, qs)
	b := New(10*time.Minute, qs)
	for i := 1; i <= 50; i++ {
		a.Insert(float64(i), t0)
		b.Insert(float64(50+i), t0.Add(time.Second))
	}
	agg := New(10*time.Minute, qs)
	agg.Merge(a)
	agg.Merge(b)
	agg.Merge(agg) // no-op
	r := agg.Result(t0.Add(2 * time.Second))
	if r.Count != 100 || r.Percentiles[0].Value != 100 || r.Percentiles[1].Value != 50 {
		t.Fatalf("merged = %+v", r)
	}
	// The sources are unchanged.
	if ra := a.Result(t0.Add(2 * time.Second)); ra.Count != 50 || ra.Percentiles[0].Value != 50 {
		t.Fatalf("a changed: %+v", ra)
	}
	// The aggregate rotates like its sources: samples from the first half
	// window survive one rotation and vanish after the second.
	if r := agg.Result(t0.Add(7 * time.Minute)); r.Count != 100 {
		t.Fatalf("after one rotation count = %d", r.Count)
	}
	if r := agg.Result(t0.Add(10 * time.Minute)); r.Count != 0 {
		t.Fatalf("after the window count = %d", r.Count)
	}
}

func TestMergeAlignsBuckets(t *testing.T) {
	qs := []float64{1}
	fresh := New(10*time.Minute, qs)
	fresh.Insert(1, t0.Add(20*time.Minute))
	stale := New(10*time.Minute, qs) // idle since t0: never rotated
	stale.Insert(1000, t0)
	older := New(10*time.Minute, qs) // previous bucket holds 500, current 2
	older.Insert(500, t0.Add(14*time.Minute))
	older.Insert(2, t0.Add(19*time.Minute))

	agg := New(10*time.Minute, qs)
	agg.Merge(fresh)
	agg.Merge(stale)
	agg.Merge(older)
	r := agg.Result(t0.Add(20 * time.Minute))
	if r.Count != 3 || r.Percentiles[0].Value != 500 {
		t.Fatalf("merged = %+v, want 3 samples (stale one dropped), max 500", r)
	}
	if r := agg.Result(t0.Add(25 * time.Minute)); r.Count != 2 || r.Percentiles[0].Value != 2 {
		t.Fatalf("after rotation = %+v, want the two current samples", r)
	}

	// Merging a stale source first must not make the aggregate drop the
	// fresh sources merged after it.
	agg2 := New(10*time.Minute, qs)
	agg2.Merge(stale)
	agg2.Merge(older)
	agg2.Merge(fresh)
	if r := agg2.Result(t0.Add(20 * time.Minute)); r.Count != 3 || r.Percentiles[0].Value != 500 {
		t.Fatalf("stale first: merged = %+v, want 3 samples, max 500", r)
	}
}

func TestConcurrentUse(t *testing.T) {
	qs := []float64{0.99, 0.5}
	q := New(time.Minute, qs)
	var wg sync.WaitGroup
	const writers, per = 4, 5000
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				q.Insert(float64(i), t0.Add(time.Duration(i)*time.Millisecond))
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 200; i++ {
			agg := New(time.Minute, qs)
			agg.Merge(q)
			_ = agg.Result(t0.Add(time.Duration(i) * 10 * time.Millisecond))
		}
	}()
	wg.Wait()
	if r := q.Result(t0.Add(5 * time.Second)); r.Count != writers*per {
		t.Fatalf("count = %d, want %d", r.Count, writers*per)
	}
}

func BenchmarkInsert(b *testing.B) {
	q := New(10*time.Minute, []float64{0.99, 0.95, 0.5})
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; b.Loop(); i++ {
		q.Insert(rng.ExpFloat64()*1e6, t0.Add(time.Duration(i)))
	}
}

// BenchmarkResultMerged measures a topic's stats: merge 10 busy channels and
// query the aggregate.
func BenchmarkResultMerged(b *testing.B) {
	qs := []float64{0.99, 0.95, 0.5}
	rng := rand.New(rand.NewPCG(1, 2))
	channels := make([]*Quantile, 10)
	for i := range channels {
		channels[i] = New(10*time.Minute, qs)
		for j := 0; j < 100000; j++ {
			channels[i].Insert(rng.ExpFloat64()*1e6, t0)
		}
	}
	for b.Loop() {
		agg := New(10*time.Minute, qs)
		for _, c := range channels {
			agg.Merge(c)
		}
		_ = agg.Result(t0)
	}
}
