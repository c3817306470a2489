package admin

import (
	"context"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// paced publishes to topic at rate messages per second until ctx ends, catching up after
// any stall so that the number published always tracks rate × elapsed time.
func paced(ctx context.Context, t *testing.T, tcpAddr, topic string, rate float64) (wait func() int) {
	p := newProducer(t, tcpAddr)
	var (
		wg   sync.WaitGroup
		sent int
		err  error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		start := time.Now()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		body := []byte("rate test message")
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for target := int(time.Since(start).Seconds() * rate); sent < target; sent++ {
				if err = p.Publish(topic, body); err != nil {
					return
				}
			}
		}
	}()
	return func() int {
		wg.Wait()
		if err != nil {
			t.Errorf("publish: %v", err)
		}
		return sent
	}
}

// TestRateSeries publishes at a steady known rate for 30 s (with a consumer finishing every
// message) and checks that the series the UI plots, and the figure the topic page shows,
// are within 10 % of that rate. It samples at the default interval (5 s): a publisher stalled
// for a moment by a busy machine then moves the rate of one interval by a few percent, where
// at 1 s it could move it by more than 10 %.
func TestRateSeries(t *testing.T) {
	const (
		rate     = 200.0
		duration = 30 * time.Second
		topic    = "steady"
	)
	c := startCluster(t, 1)
	a := startAdmin(t, c, func(o *Options) { o.SampleInterval = NewOptions().SampleInterval })
	b := newBrowser(t) // started first: a browser starting up would stall the publisher
	consumed := &countingHandler{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The consumer's first SUB creates the topic and channel, so nothing is published before it.
	newConsumer(t, topic, "worker", []string{c.NSQDs[0].TCP}, consumed)
	start := time.Now()
	wait := paced(ctx, t, c.NSQDs[0].TCP, topic, rate)

	waitFor(t, duration+10*time.Second, "30 s of publishing", func() bool { return time.Since(start) >= duration })

	h := apiGet[struct {
		Series
		IntervalMS int64 `json:"interval_ms"`
	}](t, a, "/api/history?topic="+topic)
	// Steady state: intervals that start 5 s or more after publishing began (the first
	// seconds include connection set-up and the browser settling) and end by now.
	warm := float64(start.Add(5*time.Second).UnixMilli()) / 1000
	var ins, outs []float64
	for i := 1; i < len(h.T); i++ {
		if h.T[i-1] < warm {
			continue
		}
		if h.In[i] == nil || h.Out[i] == nil {
			t.Fatalf("point %d at %.3f has no rate", i, h.T[i])
		}
		ins = append(ins, *h.In[i])
		outs = append(outs, *h.Out[i])
	}
	if want := int((duration-5*time.Second)/(time.Duration(h.IntervalMS)*time.Millisecond)) - 1; len(ins) < want {
		t.Fatalf("only %d steady points in 30 s at a %d ms interval, want %d: %+v", len(ins), h.IntervalMS, want, h.Series)
	}
	for i, v := range ins {
		if math.Abs(v-rate)/rate > 0.10 {
			t.Errorf("in-rate point %d = %.1f msg/s, not within 10%% of %.0f (series %v)", i, v, rate, ins)
		}
	}
	// Out follows in one sample later at most (in flight); check its mean.
	if m := mean(outs); math.Abs(m-rate)/rate > 0.10 {
		t.Errorf("mean out-rate %.1f msg/s, not within 10%% of %.0f (series %v)", m, rate, outs)
	}
	t.Logf("in-rate points: n=%d mean=%.2f min=%.2f max=%.2f; out mean=%.2f", len(ins), mean(ins), slicesMin(ins), slicesMax(ins), mean(outs))

	// The topic page shows the latest plotted rate, still while publishing.
	b.open(a.url("/topics/" + topic))
	shown := b.text(`#figures [data-k="rate_in"]`)
	v, err := strconv.ParseFloat(strings.ReplaceAll(shown, ",", ""), 64)
	if err != nil || math.Abs(v-rate)/rate > 0.10 {
		t.Fatalf("topic page shows in-rate %q, not within 10%% of %.0f", shown, rate)
	}
	if n := b.count("#chart-main canvas"); n != 1 {
		t.Fatalf("topic page has %d charts", n)
	}
	b.expectCleanConsole("rate topic page")
	b.screenshots(a.url("/topics/"+topic), "topic-steady-rate")

	cancel()
	sent := wait()
	waitFor(t, 10*time.Second, "every message consumed", func() bool { return consumed.count() == sent })
}

func mean(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

func slicesMin(v []float64) float64 {
	m := math.Inf(1)
	for _, x := range v {
		m = math.Min(m, x)
	}
	return m
}

func slicesMax(v []float64) float64 {
	m := math.Inf(-1)
	for _, x := range v {
		m = math.Max(m, x)
	}
	return m
}
