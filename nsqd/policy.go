package nsqd

import (
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/sluicemq/sluice/protocol"
	"github.com/sluicemq/sluice/store"
)

// Message policies (Sluice): per-topic TTL and bounded depth, per-channel
// max attempts, dead-letter topic and TTL. A topic or channel that sets
// none holds nil policies and behaves, and reports itself, exactly as in
// NSQ. Policies are immutable values swapped whole, so the delivery path
// reads one pointer.

// Overflow modes of a topic with max_depth.
const (
	overflowReject     = "reject"
	overflowDropOldest = "drop_oldest"
)

// Reasons recorded with a dead letter.
const (
	reasonMaxAttempts = "max_attempts"
	reasonTTL         = "ttl"
)

// maxAttemptsLimit is the largest max_attempts: attempts are 16 bits on
// the wire.
const maxAttemptsLimit = math.MaxUint16

// topicPolicy is what a topic sets; the zero value sets nothing.
type topicPolicy struct {
	ttl      time.Duration
	maxDepth int64
	overflow string // overflowReject or overflowDropOldest; "" reads as reject
}

func (p topicPolicy) isSet() bool { return p.ttl > 0 || p.maxDepth > 0 }

func (p topicPolicy) overflowMode() string {
	if p.overflow == "" {
		return overflowReject
	}
	return p.overflow
}

// channelPolicy is what a channel sets itself; the zero value sets nothing
// and takes the node's --max-attempts.
type channelPolicy struct {
	maxAttempts     int // -1: the node default
	deadLetterTopic string
	ttl             time.Duration
}

func defaultChannelPolicy() channelPolicy { return channelPolicy{maxAttempts: -1} }

// effectivePolicy is what a channel enforces: its own settings, the
// node default and its topic's TTL combined.
type effectivePolicy struct {
	maxAttempts uint16 // 0: unlimited
	deadLetter  string // where dead letters go; "" drops expired messages
	ttl         int64  // ns; 0: none
}

// expiryWindow is how many messages a channel with a TTL keeps loaded from
// disk without consumers, so that expiry finds what lies there.
const expiryWindow = 1024

func (e *effectivePolicy) expired(m *Message, now int64) bool {
	return e.ttl > 0 && now-m.Timestamp > e.ttl
}

// refuse says why m must not be delivered (again): "" when it may be.
// Attempts counts the deliveries so far.
func (e *effectivePolicy) refuse(m *Message, now int64) string {
	if e.expired(m, now) {
		return reasonTTL
	}
	if e.maxAttempts > 0 && m.Attempts >= e.maxAttempts {
		return reasonMaxAttempts
	}
	return ""
}

// resolvePolicy combines a channel's settings with its topic's and the
// node's default. It returns nil when nothing applies.
func resolvePolicy(topic string, cp channelPolicy, tp topicPolicy, nodeMaxAttempts int) (*effectivePolicy, error) {
	e := &effectivePolicy{}
	ma := cp.maxAttempts
	if ma < 0 {
		ma = nodeMaxAttempts
	}
	e.maxAttempts = uint16(ma)
	ttl := cp.ttl
	if tp.ttl > 0 && (ttl == 0 || tp.ttl < ttl) {
		ttl = tp.ttl
	}
	e.ttl = int64(ttl)
	if e.maxAttempts > 0 || cp.deadLetterTopic != "" {
		e.deadLetter = cp.deadLetterTopic
		if e.deadLetter == "" {
			e.deadLetter = topic + ".dlq"
			if !protocol.IsValidTopicName(e.deadLetter) {
				return nil, fmt.Errorf("the default dead-letter topic %q is not a valid topic name; give one with dead_letter_topic", e.deadLetter)
			}
		}
	}
	if e.maxAttempts == 0 && e.deadLetter == "" && e.ttl == 0 {
		return nil, nil
	}
	return e, nil
}

// policyRefusal is why a channel cannot be created with its policy (a
// default dead-letter topic name that is not valid).
type policyRefusal struct{ err error }

func (e *policyRefusal) Error() string { return e.err.Error() }
func (e *policyRefusal) Unwrap() error { return e.err }

// policyError is a 400 naming the parameter, e.g.
// "INVALID_MAX_ATTEMPTS: max_attempts must be 0 or an integer from 1 to 65535".
func policyError(param, format string, args ...any) error {
	code := "INVALID_" + upperSnake(param)
	return errf(http.StatusBadRequest, code+": "+fmt.Sprintf(format, args...))
}

func upperSnake(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// hasTopicPolicyParams reports whether q sets any topic policy.
func hasTopicPolicyParams(q url.Values) bool {
	for _, k := range []string{"ttl", "max_depth", "overflow"} {
		if _, ok := q[k]; ok {
			return true
		}
	}
	return false
}

// hasChannelPolicyParams reports whether q sets any channel policy.
func hasChannelPolicyParams(q url.Values) bool {
	for _, k := range []string{"max_attempts", "dead_letter_topic", "ttl"} {
		if _, ok := q[k]; ok {
			return true
		}
	}
	return false
}

func parseTTL(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, policyError("ttl", "ttl must be a Go duration >= 0 such as 10m (0 removes it), got %q", v)
	}
	return d, nil
}

// parseTopicPolicy applies the topic policy parameters of q to p.
func parseTopicPolicy(q url.Values, p topicPolicy) (topicPolicy, error) {
	if _, ok := q["ttl"]; ok {
		d, err := parseTTL(q.Get("ttl"))
		if err != nil {
			return p, err
		}
		p.ttl = d
	}
	if _, ok := q["max_depth"]; ok {
		v := q.Get("max_depth")
		d, err := strconv.ParseInt(v, 10, 64)
		if err != nil || d < 0 {
			return p, policyError("max_depth", "max_depth must be an integer >= 0 (0 removes the bound), got %q", v)
		}
		p.maxDepth = d
	}
	if _, ok := q["overflow"]; ok {
		switch v := q.Get("overflow"); v {
		case overflowReject, overflowDropOldest:
			p.overflow = v
		default:
			return p, policyError("overflow", "overflow must be reject or drop_oldest, got %q", v)
		}
	}
	return p, nil
}

// parseChannelPolicy applies the channel policy parameters of q to p and
// checks the result for channel channel of topic.
func parseChannelPolicy(q url.Values, p channelPolicy, topic string) (channelPolicy, error) {
	if _, ok := q["max_attempts"]; ok {
		v := q.Get("max_attempts")
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > maxAttemptsLimit {
			return p, policyError("max_attempts", "max_attempts must be 0 (unlimited) or an integer from 1 to %d, got %q", maxAttemptsLimit, v)
		}
		p.maxAttempts = n
	}
	if _, ok := q["dead_letter_topic"]; ok {
		v := q.Get("dead_letter_topic")
		switch {
		case v == "":
			p.deadLetterTopic = "" // back to the default <topic>.dlq
		case !protocol.IsValidTopicName(v):
			return p, policyError("dead_letter_topic", "dead_letter_topic %q is not a valid topic name", v)
		case v == topic:
			return p, policyError("dead_letter_topic", "dead_letter_topic must differ from the channel's own topic %q", topic)
		default:
			p.deadLetterTopic = v
		}
	}
	if _, ok := q["ttl"]; ok {
		d, err := parseTTL(q.Get("ttl"))
		if err != nil {
			return p, err
		}
		p.ttl = d
	}
	return p, nil
}

// topicPolicyOf returns t's policy (the zero value when none is set).
func (t *Topic) topicPolicyOf() topicPolicy {
	if p := t.policy.Load(); p != nil {
		return *p
	}
	return topicPolicy{}
}

// setPolicy replaces t's policy and updates its channels.
func (t *Topic) setPolicy(p topicPolicy) {
	if p.isSet() || p.overflow != "" {
		t.policy.Store(&p)
	} else {
		t.policy.Store(nil)
	}
	for _, ch := range t.channelList() {
		if err := ch.applyPolicy(ch.channelPolicyOf(), p); err != nil {
			// only a node default can make a channel's policy invalid, and
			// that was checked when the channel was created
			t.logger.Error("channel policy", "channel", ch.name, "err", err)
		}
	}
	t.signal()
}

// channelPolicyOf returns what c sets itself.
func (c *Channel) channelPolicyOf() channelPolicy {
	if p := c.policy.Load(); p != nil {
		return *p
	}
	return defaultChannelPolicy()
}

// applyPolicy sets c's own policy and recomputes what it enforces.
func (c *Channel) applyPolicy(cp channelPolicy, tp topicPolicy) error {
	eff, err := resolvePolicy(c.topicName, cp, tp, c.nsqd.opts.MaxAttempts)
	if err != nil {
		return err
	}
	if cp == defaultChannelPolicy() {
		c.policy.Store(nil)
	} else {
		c.policy.Store(&cp)
	}
	c.mu.Lock()
	c.eff.Store(eff)
	if eff != nil && eff.ttl > 0 {
		c.watchLocked()
	}
	c.kickAllLocked()
	c.signalRefillLocked()
	c.mu.Unlock()
	return nil
}

// showsPolicy reports whether c's /stats object carries the policy keys:
// when it enforces anything.
func (c *Channel) showsPolicy() bool { return c.eff.Load() != nil }

// frontTimestamp is the timestamp of the queue's next message.
func (q *msgQueue) frontTimestamp() int64 {
	e := q.front()
	if e.m != nil {
		return e.m.Timestamp
	}
	return e.b.ts
}

// sweepExpired removes expired messages from the head of the channel's
// memory queue (the refiller removes those it reads from disk or the log
// as it loads them; delivery checks every message). Called about once a
// second for channels with a TTL.
func (c *Channel) sweepExpired(now int64) {
	eff := c.eff.Load()
	if eff == nil || eff.ttl == 0 {
		return
	}
	var dead []deadItem
	c.mu.Lock()
	if c.exiting {
		c.mu.Unlock()
		return
	}
	for c.mem.len() > 0 && now-c.mem.frontTimestamp() > eff.ttl {
		e, _ := c.mem.popEntry()
		for _, m := range e.materialize() {
			dead = append(dead, deadItem{m, reasonTTL})
		}
	}
	if len(dead) > 0 {
		c.signalRefillLocked()
	}
	c.mu.Unlock()
	c.disposeDead(dead, eff)
}

// sweepExpired drops expired messages the topic holds itself (while it has
// no channels): from the head of its memory queue, or, for a durable
// topic, by moving its position past them.
func (t *Topic) sweepExpired(now int64) {
	p := t.policy.Load()
	if p == nil || p.ttl == 0 {
		return
	}
	ttl := int64(p.ttl)
	if t.dur != nil {
		t.mu.Lock()
		defer t.mu.Unlock()
		if len(t.channels) > 0 || t.exiting {
			return
		}
		cut, err := t.dur.log.SeqAtTime(now - ttl)
		if err != nil {
			t.logger.Error("find expired messages in log", "err", err)
			return
		}
		if floor := t.dur.topicCursor.Floor; cut > floor {
			t.dur.topicCursor.Reset(cut)
			if err := t.dur.journal.SetState(store.TopicCursor, t.dur.topicCursor.Clone(), true); err != nil {
				t.logger.Error("failed to record topic position", "err", err)
			}
			t.expiredCount.Add(cut - floor)
		}
		return
	}
	t.mu.Lock()
	dropped := 0
	if len(t.channels) == 0 {
		for t.mem.len() > 0 && now-t.mem.frontTimestamp() > ttl {
			e, _ := t.mem.popEntry()
			dropped += e.len()
		}
	}
	t.mu.Unlock()
	if dropped > 0 {
		t.expiredCount.Add(uint64(dropped))
		t.signal() // the pump may read more from disk
	}
}

// depthLimitError refuses a publish to a topic at its max_depth.
type depthLimitError struct {
	topic string
	max   int64
}

func (e *depthLimitError) Error() string {
	return fmt.Sprintf("topic %s is at its max_depth of %d messages (overflow=reject)", e.topic, e.max)
}

// checkDepth refuses count more messages when the topic, or any of its
// channels, would then hold more than max_depth (overflow=reject).
func (t *Topic) checkDepth(p *topicPolicy, count int) error {
	if t.limitDepth()+int64(count) <= p.maxDepth {
		return nil
	}
	t.rejectedCount.Add(uint64(count))
	return &depthLimitError{t.name, p.maxDepth}
}

// limitDepth is the depth max_depth bounds: the deepest channel's, or the
// topic's own while it has no channels.
func (t *Topic) limitDepth() int64 {
	chans := t.channelList()
	if len(chans) == 0 {
		d, _ := t.depth()
		return d
	}
	var deepest int64
	for _, ch := range chans {
		deepest = max(deepest, ch.depth())
	}
	// what the topic still queues for its channels counts for each of them
	if t.dur == nil {
		d, _ := t.depth()
		deepest += d
	}
	return deepest
}

// depth is the channel's /stats depth: memory plus disk (or the durable
// backlog), excluding in-flight and deferred messages.
func (c *Channel) depth() int64 {
	var backend int64
	if c.backend != nil {
		backend = c.backend.depth()
	}
	if c.dlog != nil {
		backend = c.durableBacklog()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return int64(c.mem.len()) + backend
}

// trimToDepth enforces overflow=drop_oldest after a publish: every channel
// (or the topic itself, without channels) deeper than max_depth drops its
// oldest messages down to it.
func (t *Topic) trimToDepth(p *topicPolicy) {
	if t.repl != nil && t.repl.gated.Load() {
		// a replica still copying messages its channels have not
		// finished would drop from a log with holes (newer messages in
		// place of the oldest); the next publish after the copy trims
		return
	}
	chans := t.channelList()
	if len(chans) == 0 {
		t.trimOwn(p.maxDepth)
		return
	}
	for _, ch := range chans {
		if excess := ch.depth() - p.maxDepth; excess > 0 {
			ch.dropOldest(excess)
		}
	}
}

// trimOwn drops the oldest of what the topic holds for a future channel.
func (t *Topic) trimOwn(maxDepth int64) {
	if t.trimOwnLocked(maxDepth) {
		t.signal() // the pump drops the rest as it reads the disk queue
	}
}

// trimOwnLocked is trimOwn's work under the topic lock; it reports whether
// messages remain to drop from the disk queue.
func (t *Topic) trimOwnLocked(maxDepth int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.channels) > 0 || t.exiting {
		return false
	}
	if t.dur != nil {
		end, floor := t.dur.log.End(), t.dur.topicCursor.Floor
		if end > floor && int64(end-floor) > maxDepth {
			cut := end - uint64(maxDepth)
			t.dur.topicCursor.Reset(cut)
			if err := t.dur.journal.SetState(store.TopicCursor, t.dur.topicCursor.Clone(), true); err != nil {
				t.logger.Error("failed to record topic position", "err", err)
			}
			t.droppedCount.Add(cut - floor)
		}
		return false
	}
	var backend int64
	if t.backend != nil {
		backend = t.backend.depth()
	}
	excess := int64(t.mem.len()) + backend - maxDepth
	for excess > 0 && t.mem.len() > 0 {
		e, _ := t.mem.popEntry()
		if k := int64(e.len()); k > excess {
			_, tail := splitEntry(e, int(excess))
			t.mem.pushFront(tail)
			t.droppedCount.Add(uint64(excess))
			excess = 0
		} else {
			t.droppedCount.Add(uint64(k))
			excess -= k
		}
	}
	// the rest is on disk, behind what memory held: the pump drops it as it
	// reads (topics queue to memory first, so memory holds the oldest)
	t.dropPending = max(t.dropPending, excess)
	return t.dropPending > 0
}

// dropOldest removes the channel's n oldest queued messages: from memory
// first, the rest as the refiller reads them from disk or the log.
func (c *Channel) dropOldest(n int64) {
	var dropped []*Message
	c.mu.Lock()
	if c.exiting {
		c.mu.Unlock()
		return
	}
	for n > 0 && c.mem.len() > 0 {
		k := min(int(n), c.mem.len())
		dropped = c.mem.popN(dropped, k, nil)
		n -= int64(k)
	}
	c.dropPending = max(c.dropPending, n)
	if c.dropPending > 0 {
		c.signalRefillLocked()
	}
	c.mu.Unlock()
	c.dropped(dropped)
}

// dropped completes messages removed by drop_oldest.
func (c *Channel) dropped(msgs []*Message) {
	if len(msgs) == 0 {
		return
	}
	if c.topic != nil {
		c.topic.droppedCount.Add(uint64(len(msgs)))
	}
	items := make([]deadItem, len(msgs))
	for i, m := range msgs {
		items[i] = deadItem{m: m}
	}
	c.finishDisposed(items)
}

// takeDropLocked reports whether a message just read from disk or the log
// is to be dropped (overflow=drop_oldest left some to drop there).
func (c *Channel) takeDropLocked() bool {
	if c.dropPending > 0 {
		c.dropPending--
		return true
	}
	return false
}
