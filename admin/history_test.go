package admin

import (
	"fmt"
	"math"
	"testing"
	"time"
)

func res(node string, at time.Time, topics ...*rawTopic) *nodeResult {
	return &nodeResult{Node: node, At: at, Stats: &nodeStats{Topics: topics}}
}

func topicWith(name string, msgs, depth int64, chans ...*rawChannel) *rawTopic {
	return &rawTopic{TopicName: name, MessageCount: msgs, Depth: depth, Channels: chans}
}

func chanWith(name string, msgs, depth, inFlight, deferred int64) *rawChannel {
	return &rawChannel{ChannelName: name, MessageCount: msgs, Depth: depth, InFlightCount: inFlight, DeferredCount: deferred}
}

func approx(t *testing.T, what string, got *float64, want float64) {
	t.Helper()
	if got == nil || math.Abs(*got-want) > 1e-9 {
		t.Fatalf("%s = %v, want %v", what, deref(got), want)
	}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestHistoryRates(t *testing.T) {
	h := NewHistory(10*time.Second, 2*time.Second)
	t0 := time.Unix(1_000_000, 0)
	tk, ck := SeriesKey{Topic: "t"}, SeriesKey{Topic: "t", Channel: "c"}

	h.record(t0, []*nodeResult{res("a", t0, topicWith("t", 100, 5, chanWith("c", 100, 50, 10, 0)))})
	s := h.Series(tk, 0)
	if len(s.T) != 1 || s.In[0] != nil || s.Out[0] != nil || s.Depth[0] != 55 {
		t.Fatalf("first point %+v: rates must be unknown, depth 55", s)
	}

	// Two seconds later a has published 200 more and processed 190; b appears.
	t1 := t0.Add(2 * time.Second)
	h.record(t1, []*nodeResult{
		res("a", t1, topicWith("t", 300, 5, chanWith("c", 300, 60, 10, 0))),
		res("b", t1.Add(-time.Second), topicWith("t", 40, 0, chanWith("c", 40, 0, 0, 0))),
	})
	s = h.Series(tk, 0)
	approx(t, "topic in", s.In[1], 100)  // b has no previous answer: contributes nothing yet
	approx(t, "topic out", s.Out[1], 95) // (300-60-10) - (100-50-10) = 190 over 2 s
	if s.Depth[1] != 65 {
		t.Fatalf("topic depth %d, want 65", s.Depth[1])
	}
	c := h.Series(ck, 0)
	approx(t, "channel in", c.In[1], 100)
	approx(t, "channel out", c.Out[1], 95)

	// b's answer came 1 s earlier last time: its rate uses its own interval (3 s).
	// a restarted: its counters went down and contribute 0.
	t2 := t1.Add(2 * time.Second)
	h.record(t2, []*nodeResult{
		res("a", t2, topicWith("t", 7, 0, chanWith("c", 7, 7, 0, 0))),
		res("b", t2, topicWith("t", 70, 0, chanWith("c", 70, 0, 0, 0))),
	})
	s = h.Series(tk, 0)
	approx(t, "topic in after restart", s.In[2], 10) // (70-40)/3
	cl := h.Series(SeriesKey{}, 0)
	approx(t, "cluster in", cl.In[2], 10)
	approx(t, "cluster out", cl.Out[2], 10)
	if cl.Depth[2] != 7 {
		t.Fatalf("cluster depth %d, want 7", cl.Depth[2])
	}
	if in, out := h.Latest(tk); in != 10 || out != 10 {
		t.Fatalf("latest = %v %v", in, out)
	}

	// Requeues move messages back into depth without counting as out; a new channel's
	// first interval counts everything it holds.
	t3 := t2.Add(2 * time.Second)
	h.record(t3, []*nodeResult{
		res("b", t3, topicWith("t", 70, 0, chanWith("c", 70, 5, 0, 0), chanWith("d", 4, 0, 0, 0))),
	})
	approx(t, "out with requeues", h.Series(ck, 0).Out[3], 0)
	approx(t, "new channel in", h.Series(SeriesKey{Topic: "t", Channel: "d"}, 0).In[0], 2)
}

func TestHistoryBounded(t *testing.T) {
	h := NewHistory(10*time.Second, 2*time.Second)
	t0 := time.Unix(2_000_000, 0)
	for i := range 20 {
		at := t0.Add(time.Duration(i) * 2 * time.Second)
		topics := []*rawTopic{topicWith("keep", int64(i), 0)}
		if i < 3 {
			topics = append(topics, topicWith("gone", int64(i), 0))
		}
		h.record(at, []*nodeResult{res("a", at, topics...)})
	}
	s := h.Series(SeriesKey{Topic: "keep"}, 0)
	if len(s.T) != 6 {
		t.Fatalf("kept %d points, want 6 (10 s window at 2 s)", len(s.T))
	}
	if last := h.Series(SeriesKey{Topic: "keep"}, 2); len(last.T) != 2 || last.T[1] != s.T[5] {
		t.Fatalf("last 2 points = %+v", last)
	}
	if g := h.Series(SeriesKey{Topic: "gone"}, 0); len(g.T) != 0 {
		t.Fatalf("series of a topic gone for longer than the window still kept: %+v", g)
	}
	approx(t, "steady rate", s.In[5], 0.5)
}

// TestHistoryBoundedUnderChurn feeds a history thousands of topics, channels and nodes that
// each live a few rounds: the series and node counts stay bounded by the window (and by
// SetMaxSeries), while the cluster's series and a long-lived topic keep their whole history.
func TestHistoryBoundedUnderChurn(t *testing.T) {
	const window, interval = 60 * time.Second, time.Second
	capacity := int(window/interval) + 1
	for _, maxSeries := range []int{0, 50} {
		h := NewHistory(window, interval)
		h.SetMaxSeries(maxSeries)
		t0 := time.Unix(3_000_000, 0)
		maxS, maxN := 0, 0
		const rounds = 2000
		for i := range rounds {
			at := t0.Add(time.Duration(i) * interval)
			var results []*nodeResult
			// Three short-lived nodes per round (each lives 3 rounds), each with a short-lived
			// topic carrying two ephemeral channels, plus the steady topic.
			for j := range 3 {
				id := i/3*3 + j
				name := fmt.Sprintf("t%d", id)
				results = append(results, res(fmt.Sprintf("node-%d:4151", id), at,
					topicWith("steady", int64(i), 0),
					topicWith(name, int64(i), 1, chanWith("a#ephemeral", int64(i), 1, 0, 0), chanWith("b#ephemeral", int64(i), 0, 0, 0))))
			}
			h.record(at, results)
			s, n := h.Len()
			maxS, maxN = max(maxS, s), max(maxN, n)
		}
		// Each round introduces at most 9 series (3 topics, 6 channels) and 3 nodes; what is
		// not seen for a window is dropped, so at most window/interval+1 rounds' worth stays.
		limit := 2 + 9*(capacity+3)
		if maxSeries > 0 {
			limit = maxSeries
		}
		if maxS > limit {
			t.Fatalf("max series %d: held up to %d series, want <= %d", maxSeries, maxS, limit)
		}
		if maxN > 3*(capacity+3) {
			t.Fatalf("max series %d: held up to %d nodes' counters", maxSeries, maxN)
		}
		for _, k := range []SeriesKey{{}, {Topic: "steady"}} {
			if got := len(h.Series(k, 0).T); got != capacity {
				t.Fatalf("max series %d: series %+v kept %d points, want %d", maxSeries, k, got, capacity)
			}
		}
		if got := len(h.Series(SeriesKey{Topic: "t0"}, 0).T); got != 0 {
			t.Fatalf("series of a topic gone long ago still holds %d points", got)
		}
		in, _ := h.Latest(SeriesKey{Topic: "steady"})
		if in != 3 {
			t.Fatalf("steady topic rate %v, want 3 msg/s (1 msg/s on each of 3 nodes)", in)
		}
	}
}

// TestSamplerForgetsExcessNodes checks the sampler remembers at most maxRemembered nodes,
// forgetting those listed longest ago.
func TestSamplerForgetsExcessNodes(t *testing.T) {
	s := newSampler(&cluster{}, time.Second, time.Hour, time.Second, 0, testLogger())
	t0 := time.Unix(3_000_000, 0)
	for i := range maxRemembered + 500 {
		addr := fmt.Sprintf("10.0.%d.%d:4151", i/250, i%250)
		s.remembered[addr] = &rememberedNode{p: &Producer{addr: addr}, lastListed: t0.Add(time.Duration(i) * time.Millisecond)}
	}
	s.forgetExcess()
	if len(s.remembered) != maxRemembered {
		t.Fatalf("remembers %d nodes, want %d", len(s.remembered), maxRemembered)
	}
	if s.remembers("10.0.0.0:4151") || !s.remembers(fmt.Sprintf("10.0.%d.%d:4151", (maxRemembered+499)/250, (maxRemembered+499)%250)) {
		t.Fatal("forgot the wrong nodes")
	}
}
