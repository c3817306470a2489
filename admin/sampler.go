package admin

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"
)

// sampler reads every node's /stats each interval and feeds the History. It also remembers
// nodes it has seen, so a node that vanished from nsqlookupd (crashed, killed) is still
// probed and reported as unreachable for one history window instead of silently disappearing.
type sampler struct {
	cluster  *cluster
	interval time.Duration
	window   time.Duration
	timeout  time.Duration
	logger   *slog.Logger

	mu         sync.Mutex // guards the fields below
	hist       *History
	remembered map[string]*rememberedNode
	lost       []lostNode
	rounds     int
}

// lostNode is a remembered node that is neither registered nor answering.
type lostNode struct {
	p   *Producer
	err *nodeError
}

type rememberedNode struct {
	p          *Producer
	lastListed time.Time
}

func newSampler(c *cluster, interval, window, timeout time.Duration, maxSeries int, logger *slog.Logger) *sampler {
	h := NewHistory(window, interval)
	h.SetMaxSeries(maxSeries)
	return &sampler{cluster: c, interval: interval, window: window, timeout: timeout, logger: logger,
		hist: h, remembered: map[string]*rememberedNode{}}
}

// run samples immediately, then every interval, until ctx ends.
func (s *sampler) run(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		s.sampleOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *sampler) sampleOnce(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, max(s.interval, s.timeout))
	defer cancel()
	nodes, errs := s.cluster.nodes(ctx)
	if ctx.Err() != nil {
		return
	}
	now := time.Now()
	listed := map[string]bool{}
	s.mu.Lock()
	for _, n := range nodes {
		listed[n.HTTPAddr()] = true
		s.remembered[n.HTTPAddr()] = &rememberedNode{p: n, lastListed: now}
	}
	s.forgetExcess()
	var extra []*Producer
	for addr, r := range s.remembered {
		switch {
		case now.Sub(r.lastListed) > s.window:
			delete(s.remembered, addr)
		case !listed[addr]:
			extra = append(extra, r.p)
		}
	}
	s.mu.Unlock()

	results, statErrs := s.cluster.stats(ctx, append(nodes, extra...), "", "", false)
	var lost []lostNode
	for _, e := range statErrs {
		ne, ok := e.(*nodeError)
		if !ok || listed[ne.Addr] {
			continue
		}
		s.mu.Lock()
		r := s.remembered[ne.Addr]
		s.mu.Unlock()
		if r == nil {
			continue
		}
		lost = append(lost, lostNode{p: r.p, err: &nodeError{Kind: "nsqd", Addr: ne.Addr,
			Err: fmt.Errorf("gone from nsqlookupd %s ago and not answering: %w", now.Sub(r.lastListed).Round(time.Second), ne.Err)}})
	}
	if len(errs)+len(statErrs) > 0 {
		s.logger.Debug("sampler: upstream errors", "errors", warningText(append(errs, statErrs...)))
	}
	s.mu.Lock()
	s.hist.record(now, results)
	s.lost = lost
	s.rounds++
	s.mu.Unlock()
}

// maxRemembered bounds how many nodes the sampler remembers (and keeps probing) at once.
const maxRemembered = 4096

// forgetExcess drops the nodes listed longest ago past maxRemembered. Callers hold mu.
func (s *sampler) forgetExcess() {
	excess := len(s.remembered) - maxRemembered
	if excess <= 0 {
		return
	}
	addrs := make([]string, 0, len(s.remembered))
	for a := range s.remembered {
		addrs = append(addrs, a)
	}
	sort.Slice(addrs, func(i, j int) bool {
		return s.remembered[addrs[i]].lastListed.Before(s.remembered[addrs[j]].lastListed)
	})
	for _, a := range addrs[:excess] {
		delete(s.remembered, a)
	}
}

// lostNodes returns the remembered nodes that are neither registered nor answering.
func (s *sampler) lostNodes() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]error, len(s.lost))
	for i, l := range s.lost {
		out[i] = l.err
	}
	return out
}

// lostProducers returns copies of the lost nodes as last listed, with why they are lost.
func (s *sampler) lostProducers() []lostNode {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]lostNode, len(s.lost))
	for i, l := range s.lost {
		cp := *l.p
		out[i] = lostNode{p: &cp, err: l.err}
	}
	return out
}

// remembers tells whether addr is a node the sampler has seen within the history window.
func (s *sampler) remembers(addr string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.remembered[addr]
	return ok
}

// series returns a copy of the series for k (last n points, all when n <= 0).
func (s *sampler) series(k SeriesKey, n int) Series {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hist.Series(k, n)
}

// latest returns the most recent rates for k.
func (s *sampler) latest(k SeriesKey) (in, out float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hist.Latest(k)
}
