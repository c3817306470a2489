package nsqd

import (
	"context"
	"crypto/tls"
	"fmt"
	"runtime"
	"sort"
	"time"

	"github.com/sluicemq/sluice/internal/quantile"
	"github.com/sluicemq/sluice/internal/statsd"
	"github.com/sluicemq/sluice/protocol"
)

// StatsFilter narrows a stats snapshot (§9.5).
type StatsFilter struct {
	Topic          string // only this topic ("" = all)
	Channel        string // only this channel in each topic ("" = all)
	IncludeClients bool
	IncludeMem     bool
}

// Stats returns a snapshot shaped like /stats?format=json.
func (n *NSQD) Stats(f StatsFilter) *protocol.StatsResponse {
	return n.statsAt(f, time.Now())
}

// statsAt is Stats with the clock read by the caller (the e2e latency
// windows end at now).
func (n *NSQD) statsAt(f StatsFilter, now time.Time) *protocol.StatsResponse {
	resp := &protocol.StatsResponse{
		Version:   Version,
		Health:    n.Health(),
		StartTime: n.startTime.Unix(),
	}
	var topics []*Topic
	if f.Topic != "" {
		if t, ok := n.ExistingTopic(f.Topic); ok {
			topics = []*Topic{t}
		}
	} else {
		topics = n.topicList()
	}
	if f.Topic == "" || len(topics) > 0 {
		resp.Topics = make([]protocol.TopicStats, 0, len(topics))
	}
	for _, t := range topics {
		ts, ok := t.stats(f, now)
		if ok {
			resp.Topics = append(resp.Topics, ts)
		}
	}
	if f.IncludeMem {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		resp.Memory = protocol.NewMemStats(&ms)
	}
	if f.IncludeClients {
		resp.Producers = n.producerStats(f.Topic)
	}
	return resp
}

func (t *Topic) stats(f StatsFilter, now time.Time) (protocol.TopicStats, bool) {
	ts := t.statsHead()
	ts.Channels = []protocol.ChannelStats{}
	var merged *quantile.Quantile
	for _, ch := range t.channelList() {
		if f.Channel != "" && ch.name != f.Channel {
			continue
		}
		ts.Channels = append(ts.Channels, ch.stats(f.IncludeClients, now))
		if ch.e2e != nil {
			if merged == nil {
				merged = quantile.New(t.nsqd.opts.E2EProcessingLatencyWindowTime, t.nsqd.opts.E2EProcessingLatencyPercentiles)
			}
			merged.Merge(ch.e2e)
		}
	}
	if f.Channel != "" && len(ts.Channels) == 0 {
		return ts, false
	}
	if merged != nil {
		ts.E2ELatency = merged.Result(now)
	}
	return ts, true
}

// statsHead is a topic's stats without its channels and their merged e2e
// latency.
func (t *Topic) statsHead() protocol.TopicStats {
	depth, backend := t.depth()
	ts := protocol.TopicStats{
		TopicName:    t.name,
		Depth:        depth,
		BackendDepth: backend,
		MessageCount: int64(t.messageCount.Load()),
		MessageBytes: int64(t.messageBytes.Load()),
		Paused:       t.isPaused(),
	}
	if t.dur != nil {
		rt, rb := t.dur.retention.Time.String(), t.dur.retention.Bytes
		ts.Durable, ts.RetentionTime, ts.RetentionBytes = true, &rt, &rb
		ts.TopicReplicaStats = t.nsqd.replicaStats(t)
	}
	if p := t.policy.Load(); p != nil && p.isSet() {
		ps := &protocol.TopicPolicyStats{MaxDepth: p.maxDepth, Overflow: p.overflowMode(),
			ExpiredCount: int64(t.expiredCount.Load()), DroppedCount: int64(t.droppedCount.Load()), RejectedCount: int64(t.rejectedCount.Load())}
		if p.ttl > 0 {
			ps.TTL = p.ttl.String()
		}
		ts.TopicPolicyStats = ps
	}
	return ts
}

func (c *Channel) stats(includeClients bool, now time.Time) protocol.ChannelStats {
	var backend int64
	if c.backend != nil {
		backend = c.backend.depth()
	}
	if c.dlog != nil {
		backend = c.durableBacklog()
	}
	c.mu.Lock() // memory depth, in flight and deferred from one instant
	cs := protocol.ChannelStats{
		ChannelName:   c.name,
		Depth:         int64(c.mem.len()) + backend,
		BackendDepth:  backend,
		InFlightCount: int64(c.inFlight.len()),
		DeferredCount: int64(len(c.deferred)),
		ClientCount:   len(c.clients),
		Paused:        c.paused,
	}
	var clients []*client
	if includeClients {
		clients = make([]*client, 0, len(c.clients))
		for _, cl := range c.clients {
			clients = append(clients, cl)
		}
	}
	c.mu.Unlock()
	cs.MessageCount = int64(c.messageCount.Load())
	cs.RequeueCount = int64(c.requeueCount.Load())
	cs.TimeoutCount = int64(c.timeoutCount.Load())
	if includeClients {
		sort.Slice(clients, func(i, j int) bool { return clients[i].id < clients[j].id })
		cs.Clients = make([]protocol.ClientStats, 0, len(clients))
		for _, cl := range clients {
			cs.Clients = append(cs.Clients, cl.stats(""))
		}
	}
	if c.e2e != nil {
		cs.E2ELatency = c.e2e.Result(now)
	}
	if e := c.eff.Load(); e != nil {
		ps := &protocol.ChannelPolicyStats{MaxAttempts: int(e.maxAttempts), DeadLetterTopic: e.deadLetter,
			DeadLetteredCount: int64(c.deadLetteredCount.Load()), ExpiredCount: int64(c.expiredCount.Load())}
		if e.ttl > 0 {
			ps.TTL = time.Duration(e.ttl).String()
		}
		cs.ChannelPolicyStats = ps
	}
	return cs
}

// stats describes the connection; topic limits pub_counts to one topic.
func (c *client) stats(topic string) protocol.ClientStats {
	id := c.ident()
	s := protocol.ClientStats{
		ClientID:        id.clientID.Value(),
		Hostname:        id.hostname.Value(),
		Version:         "V2",
		RemoteAddress:   c.remoteAddr(),
		State:           int(c.state.Load()),
		ReadyCount:      c.readyCount.Load(),
		InFlightCount:   c.inFlightCount.Load(),
		MessageCount:    int64(c.messageCount.Load()),
		FinishCount:     int64(c.finishCount.Load()),
		RequeueCount:    int64(c.requeueCount.Load()),
		ConnectTS:       c.connectTS,
		SampleRate:      int(c.sampleRate),
		Deflate:         id.deflate,
		Snappy:          id.snappy,
		UserAgent:       id.userAgent.Value(),
		Authed:          id.authed,
		AuthIdentity:    id.authIdentity,
		AuthIdentityURL: id.authURL,
	}
	if id.tls != nil {
		s.TLS = true
		s.TLSCipherSuite = tls.CipherSuiteName(id.tls.CipherSuite)
		s.TLSVersion = tlsVersionName(id.tls.Version)
		s.TLSNegotiatedProtocol = id.tls.NegotiatedProtocol
		s.TLSNegotiatedProtocolIsMutual = true
	}
	c.pubCounts(func(t string, n uint64) {
		if topic == "" || t == topic {
			s.PubCounts = append(s.PubCounts, protocol.PubCount{Topic: t, Count: int64(n)})
		}
	})
	sort.Slice(s.PubCounts, func(i, j int) bool { return s.PubCounts[i].Topic < s.PubCounts[j].Topic })
	return s
}

func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLS1.0"
	case tls.VersionTLS11:
		return "TLS1.1"
	case tls.VersionTLS12:
		return "TLS1.2"
	case tls.VersionTLS13:
		return "TLS1.3"
	}
	return fmt.Sprintf("Unknown %d", v)
}

// producerStats lists connections that have published.
func (n *NSQD) producerStats(topic string) []protocol.ClientStats {
	n.clientsMu.Lock()
	var pubs []*client
	for _, c := range n.clients {
		has := false
		c.pubCounts(func(string, uint64) { has = true })
		if has {
			pubs = append(pubs, c)
		}
	}
	n.clientsMu.Unlock()
	if len(pubs) == 0 {
		return nil
	}
	sort.Slice(pubs, func(i, j int) bool { return pubs[i].id < pubs[j].id })
	out := make([]protocol.ClientStats, 0, len(pubs))
	for _, c := range pubs {
		out = append(out, c.stats(topic))
	}
	return out
}

// startStatsd pushes metrics to --statsd-address every --statsd-interval.
func (n *NSQD) startStatsd() {
	o := n.opts
	if o.StatsdAddress == "" {
		return
	}
	prefix := statsd.Prefix(o.StatsdPrefix, o.BroadcastAddress, n.broadcastHTTPPort())
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		err := statsd.Run(n.ctx, o.StatsdAddress, o.StatsdInterval, o.StatsdUDPPacketSize,
			func() *protocol.StatsResponse {
				return n.Stats(StatsFilter{IncludeMem: o.StatsdMemStats})
			}, prefix, statsd.Options{ExcludeEphemeral: o.StatsdExcludeEphemeral, MemStats: o.StatsdMemStats},
			n.logger.With("component", "statsd"))
		if err != nil && err != context.Canceled {
			n.logger.Error("statsd stopped", "err", err)
		}
	}()
}
