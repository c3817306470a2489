package admin

import (
	"net/url"
	"strconv"
	"testing"
	"time"
)

// scenario is the steady cluster state most tests look at: topic "orders" on both nsqds with
// channels "archive" (no consumer: its depth holds every message) and "billing" (a consumer on
// both nodes that has finished every message); 10 messages published to node 0, 7 to node 1.
type scenario struct {
	c         *testCluster
	published []int // per node
	billing   *countingHandler
}

const (
	scTopic   = "orders"
	scArchive = "archive"
	scBilling = "billing"
)

func startScenario(t *testing.T) *scenario {
	t.Helper()
	c := startCluster(t, 2)
	s := &scenario{c: c, published: []int{10, 7}, billing: &countingHandler{}}
	var tcps []string
	for _, n := range c.NSQDs {
		mustPost(t, n.HTTP, "/topic/create", url.Values{"topic": {scTopic}})
		for _, ch := range []string{scArchive, scBilling} {
			mustPost(t, n.HTTP, "/channel/create", url.Values{"topic": {scTopic}, "channel": {ch}})
		}
		tcps = append(tcps, n.TCP)
	}
	newConsumer(t, scTopic, scBilling, tcps, s.billing)
	for i, n := range c.NSQDs {
		p := newProducer(t, n.TCP)
		for j := range s.published[i] {
			if err := p.Publish(scTopic, []byte("message "+strconv.Itoa(j))); err != nil {
				t.Fatalf("publish to %s: %v", n.TCP, err)
			}
		}
	}
	total := s.published[0] + s.published[1]
	waitFor(t, 10*time.Second, "billing consumer finished every message", func() bool {
		if s.billing.count() != total {
			return false
		}
		for _, n := range c.NSQDs {
			ch := nodeStatsOf(t, n.HTTP).channel(scTopic, scBilling)
			if ch == nil || ch.InFlightCount != 0 || ch.Depth != 0 || len(ch.Clients) != 1 || ch.Clients[0].FinishCount != ch.MessageCount {
				return false
			}
		}
		return true
	})
	return s
}
