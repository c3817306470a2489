package admin

import (
	"github.com/sluicemq/sluice/protocol"
)

// Message policies (Sluice) as the admin shows them: a topic's TTL and bounded depth, a
// channel's max attempts, dead-letter topic and TTL, and the counters of what they did.
// nsqd reports them per node (protocol.TopicPolicyStats, protocol.ChannelPolicyStats) only
// where a policy is set; the admin's topic and channel JSON carries the same keys under the
// same rule, so a cluster that sets none (or a cluster of NSQ nodes) sees NSQ's shape.
//
// In an aggregate (Node "*") the counters add up over the nodes, and each setting is the
// nodes' common value, or null when they differ. A node that sets no policy counts as
// setting none (ttl "", max_depth 0, max_attempts 0): unlike a node without durable
// retention, it really does not enforce what the others do, and the operator must see
// that; the per-node entries in Nodes tell which node is which.

// TopicPolicy is a topic's message policy and its counters. Per node every setting is
// non-nil; in an aggregate a nil setting (JSON null) means the nodes differ on it.
type TopicPolicy struct {
	TTL           *string `json:"ttl"`       // Go duration; "" when none
	MaxDepth      *int64  `json:"max_depth"` // 0: unbounded
	Overflow      *string `json:"overflow"`  // "reject" or "drop_oldest"; "" on a node without a policy
	ExpiredCount  int64   `json:"expired_count"`
	DroppedCount  int64   `json:"dropped_count"`
	RejectedCount int64   `json:"rejected_count"`
}

// ChannelPolicy is what a channel enforces (nsqd reports effective values: the node's
// --max-attempts and the topic's TTL applied) and its counters. Nil settings as in
// TopicPolicy.
type ChannelPolicy struct {
	MaxAttempts       *int    `json:"max_attempts"`      // 0: unlimited
	DeadLetterTopic   *string `json:"dead_letter_topic"` // "": none (expired messages are dropped)
	TTL               *string `json:"ttl"`               // Go duration; "" when none
	DeadLetteredCount int64   `json:"dead_lettered_count"`
	ExpiredCount      int64   `json:"expired_count"`
}

// topicPolicyOf converts one node's keys; nil when the node reports none.
func topicPolicyOf(p *protocol.TopicPolicyStats) *TopicPolicy {
	if p == nil {
		return nil
	}
	return &TopicPolicy{TTL: ptr(p.TTL), MaxDepth: ptr(p.MaxDepth), Overflow: ptr(p.Overflow),
		ExpiredCount: p.ExpiredCount, DroppedCount: p.DroppedCount, RejectedCount: p.RejectedCount}
}

// channelPolicyOf converts one node's keys; nil when the node reports none.
func channelPolicyOf(p *protocol.ChannelPolicyStats) *ChannelPolicy {
	if p == nil {
		return nil
	}
	return &ChannelPolicy{MaxAttempts: ptr(p.MaxAttempts), DeadLetterTopic: ptr(p.DeadLetterTopic), TTL: ptr(p.TTL),
		DeadLetteredCount: p.DeadLetteredCount, ExpiredCount: p.ExpiredCount}
}

// mergeTopicPolicies aggregates the per-node policies of one topic; nil when no node sets
// one.
func mergeTopicPolicies(nodes []*TopicStats) *TopicPolicy {
	var agg *TopicPolicy
	var ttl, overflow setting[string]
	var maxDepth setting[int64]
	for _, n := range nodes {
		p := n.TopicPolicy
		if p == nil {
			p = &TopicPolicy{TTL: ptr(""), MaxDepth: ptr(int64(0)), Overflow: ptr("")}
		} else if agg == nil {
			agg = &TopicPolicy{}
		}
		ttl.add(p.TTL)
		maxDepth.add(p.MaxDepth)
		overflow.add(p.Overflow)
		if agg != nil {
			agg.ExpiredCount += p.ExpiredCount
			agg.DroppedCount += p.DroppedCount
			agg.RejectedCount += p.RejectedCount
		}
	}
	if agg != nil {
		agg.TTL, agg.MaxDepth, agg.Overflow = ttl.value(), maxDepth.value(), overflow.value()
	}
	return agg
}

// mergeChannelPolicies aggregates the per-node policies of one channel; nil when no node
// enforces one.
func mergeChannelPolicies(nodes []*ChannelStats) *ChannelPolicy {
	var agg *ChannelPolicy
	var dlq, ttl setting[string]
	var maxAttempts setting[int]
	for _, n := range nodes {
		p := n.ChannelPolicy
		if p == nil {
			p = &ChannelPolicy{MaxAttempts: ptr(0), DeadLetterTopic: ptr(""), TTL: ptr("")}
		} else if agg == nil {
			agg = &ChannelPolicy{}
		}
		maxAttempts.add(p.MaxAttempts)
		dlq.add(p.DeadLetterTopic)
		ttl.add(p.TTL)
		if agg != nil {
			agg.DeadLetteredCount += p.DeadLetteredCount
			agg.ExpiredCount += p.ExpiredCount
		}
	}
	if agg != nil {
		agg.MaxAttempts, agg.DeadLetterTopic, agg.TTL = maxAttempts.value(), dlq.value(), ttl.value()
	}
	return agg
}

// setting gathers one setting over the nodes: its value while they all agree.
type setting[T comparable] struct {
	v       *T
	seen    bool
	differs bool
}

func (s *setting[T]) add(v *T) {
	switch {
	case !s.seen:
		s.v, s.seen = v, true
	case (s.v == nil) != (v == nil) || (v != nil && *s.v != *v):
		s.differs = true
	}
}

// value is the common value, nil when the nodes differ.
func (s *setting[T]) value() *T {
	if s.differs || s.v == nil {
		return nil
	}
	return ptr(*s.v)
}

func ptr[T any](v T) *T { return &v }
