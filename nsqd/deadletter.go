package nsqd

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/sluicemq/sluice/protocol"
	"github.com/sluicemq/sluice/store"
)

// Dead letters. A channel with max_attempts (or a dead_letter_topic, or a
// TTL and a dead-letter topic) moves a message it must not deliver again
// to its dead-letter topic: the body is published there unchanged, as a
// new message of that topic, and where it came from is kept beside it in
// the node's dead-letter registry, keyed by its ID on the dead-letter
// topic. The registry lists dead letters (GET /channel/dead_letters) and
// gives redrive what it moves back: the body is read from a durable
// dead-letter topic's log, and kept with the record for a non-durable one
// (whose disk queue cannot be read by ID). A record goes when its message is
// finished on any channel of the dead-letter topic, when it is redriven,
// and when the dead-letter topic is emptied or deleted.
//
// The registry is <data-path>/dead_letters.dat, JSON lines of "add" and
// "del" operations, appended as dead letters come and go and rewritten
// compactly at start. A line is synced before the dead letter's source
// message is finished when that source is durable, so a dead letter of a
// durable topic keeps its record across kill -9.

// deadLetter is one record.
type deadLetter struct {
	ID         string    `json:"id"` // message ID on the dead-letter topic
	DeadLetter string    `json:"dead_letter_topic"`
	Topic      string    `json:"topic"`
	Channel    string    `json:"channel"`
	Attempts   uint16    `json:"attempts"`
	Reason     string    `json:"reason"` // "max_attempts" or "ttl"
	Time       time.Time `json:"time"`   // when it was dead-lettered
	Timestamp  int64     `json:"timestamp"`
	OriginalID string    `json:"original_id"`
	Size       int       `json:"size,omitempty"` // body bytes
	// Body is kept for a non-durable dead-letter topic, whose disk queue
	// cannot be read by ID; a durable one's log holds it.
	Body []byte `json:"body,omitempty"`
}

// bodySize is the dead letter's body size (records written before Size
// existed have only Body).
func (d *deadLetter) bodySize() int {
	if d.Size > 0 {
		return d.Size
	}
	return len(d.Body)
}

type deadLetterOp struct {
	Add       *deadLetter    `json:"add,omitempty"`
	Del       *deadLetterRef `json:"del,omitempty"`
	Withdrawn *deadLetterRef `json:"withdrawn,omitempty"`
	Released  *deadLetterRef `json:"released,omitempty"`
}

// deadLetterRef names a message on a dead-letter topic.
type deadLetterRef struct {
	DeadLetter string `json:"dead_letter_topic"`
	ID         string `json:"id"`
}

type dlKey struct{ dlq, id string }

// deadLetters is the node's registry.
type deadLetters struct {
	path   string
	logger *slog.Logger

	mu      sync.Mutex
	records map[dlKey]*deadLetter
	bySrc   map[[2]string]map[dlKey]struct{} // (topic, channel) -> records
	targets map[string]int                   // dead-letter topic -> records
	// withdrawn are redriven messages still on a non-durable dead-letter
	// topic's disk queues: dropped when read
	withdrawn map[dlKey]struct{}
	f         *os.File
	ops       int // lines in the file
}

func (n *NSQD) deadLettersPath() string { return filepath.Join(dataPathOf(n.opts), "dead_letters.dat") }

// openDeadLetters reads the registry and rewrites it compactly. A missing
// file is an empty registry; a torn last line (a crash while appending)
// is dropped.
func openDeadLetters(path string, logger *slog.Logger) (*deadLetters, error) {
	d := &deadLetters{path: path, logger: logger, records: map[dlKey]*deadLetter{}, bySrc: map[[2]string]map[dlKey]struct{}{},
		targets: map[string]int{}, withdrawn: map[dlKey]struct{}{}}
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read dead-letter registry: %w", err)
	}
	if len(data) == 0 {
		return d, nil // created on the first dead letter
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 64<<20)
	for sc.Scan() {
		var op deadLetterOp
		if err := json.Unmarshal(sc.Bytes(), &op); err != nil {
			continue // a torn line
		}
		switch {
		case op.Add != nil:
			d.addLocked(op.Add)
		case op.Del != nil:
			d.delLocked(dlKey{op.Del.DeadLetter, op.Del.ID})
		case op.Withdrawn != nil:
			d.withdrawn[dlKey{op.Withdrawn.DeadLetter, op.Withdrawn.ID}] = struct{}{}
		case op.Released != nil:
			delete(d.withdrawn, dlKey{op.Released.DeadLetter, op.Released.ID})
		}
	}
	if err := d.rewrite(); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *deadLetters) addLocked(r *deadLetter) {
	k := dlKey{r.DeadLetter, r.ID}
	if _, ok := d.records[k]; ok {
		return
	}
	d.records[k] = r
	src := [2]string{r.Topic, r.Channel}
	if d.bySrc[src] == nil {
		d.bySrc[src] = map[dlKey]struct{}{}
	}
	d.bySrc[src][k] = struct{}{}
	d.targets[r.DeadLetter]++
}

func (d *deadLetters) delLocked(k dlKey) bool {
	r, ok := d.records[k]
	if !ok {
		return false
	}
	delete(d.records, k)
	src := [2]string{r.Topic, r.Channel}
	delete(d.bySrc[src], k)
	if len(d.bySrc[src]) == 0 {
		delete(d.bySrc, src)
	}
	if d.targets[r.DeadLetter]--; d.targets[r.DeadLetter] == 0 {
		delete(d.targets, r.DeadLetter)
	}
	return true
}

// rewrite replaces the file with one "add" line per record.
func (d *deadLetters) rewrite() error {
	if d.f != nil {
		d.f.Close()
		d.f = nil
	}
	var buf bytes.Buffer
	keys := make([]dlKey, 0, len(d.records))
	for k := range d.records {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := d.records[keys[i]], d.records[keys[j]]
		return a.Time.Before(b.Time) || (a.Time.Equal(b.Time) && a.ID < b.ID)
	})
	for _, k := range keys {
		line, err := json.Marshal(deadLetterOp{Add: d.records[k]})
		if err != nil {
			return fmt.Errorf("encode dead letter: %w", err)
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	for k := range d.withdrawn {
		line, err := json.Marshal(deadLetterOp{Withdrawn: &deadLetterRef{k.dlq, k.id}})
		if err != nil {
			return fmt.Errorf("encode dead letter: %w", err)
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	if err := store.WriteFileAtomic(store.OSFS{}, d.path, buf.Bytes()); err != nil {
		return fmt.Errorf("write dead-letter registry: %w", err)
	}
	d.ops = len(keys) + len(d.withdrawn)
	return nil
}

// appendLocked writes ops to the file, syncing it when sync is set.
func (d *deadLetters) appendLocked(ops []deadLetterOp, sync bool) error {
	if d.f == nil {
		f, err := os.OpenFile(d.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("open dead-letter registry: %w", err)
		}
		d.f = f
	}
	var buf bytes.Buffer
	for _, op := range ops {
		line, err := json.Marshal(op)
		if err != nil {
			return fmt.Errorf("encode dead letter: %w", err)
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	if _, err := d.f.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("append to dead-letter registry: %w", err)
	}
	d.ops += len(ops)
	if sync {
		if err := d.f.Sync(); err != nil {
			return fmt.Errorf("sync dead-letter registry: %w", err)
		}
	}
	// deletions dominate: start afresh
	if d.ops > 4096 && d.ops > 4*(len(d.records)+len(d.withdrawn)) {
		return d.rewrite()
	}
	return nil
}

// add records dead letters.
func (d *deadLetters) add(recs []*deadLetter, sync bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	ops := make([]deadLetterOp, 0, len(recs))
	for _, r := range recs {
		d.addLocked(r)
		ops = append(ops, deadLetterOp{Add: r})
	}
	return d.appendLocked(ops, sync)
}

// remove drops records; it returns those that were there.
func (d *deadLetters) remove(keys []dlKey) []*deadLetter {
	d.mu.Lock()
	defer d.mu.Unlock()
	var gone []*deadLetter
	var ops []deadLetterOp
	for _, k := range keys {
		r, ok := d.records[k]
		if !ok || !d.delLocked(k) {
			continue
		}
		gone = append(gone, r)
		ops = append(ops, deadLetterOp{Del: &deadLetterRef{k.dlq, k.id}})
	}
	if len(ops) > 0 {
		if err := d.appendLocked(ops, false); err != nil {
			// the records are gone from memory; at the next start they come
			// back, and a listing then shows letters already handled
			return gone
		}
	}
	return gone
}

// isTarget reports whether dead letters are recorded for topic, or
// redriven ones are still to be dropped from it.
func (d *deadLetters) isTarget(topic string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.targets[topic] > 0 {
		return true
	}
	for k := range d.withdrawn {
		if k.dlq == topic {
			return true
		}
	}
	return false
}

// consumed drops the record of a message finished on topic.
func (d *deadLetters) consumed(topic string, id protocol.MessageID) {
	d.remove([]dlKey{{topic, string(id[:])}})
}

// markWithdrawn remembers redriven messages still on a dead-letter topic's
// disk queues.
func (d *deadLetters) markWithdrawn(keys []dlKey) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ops := make([]deadLetterOp, len(keys))
	for i, k := range keys {
		d.withdrawn[k] = struct{}{}
		ops[i] = deadLetterOp{Withdrawn: &deadLetterRef{k.dlq, k.id}}
	}
	if err := d.appendLocked(ops, true); err != nil {
		d.logger.Error("failed to record withdrawn dead letters", "err", err)
	}
}

// isWithdrawn reports whether the message id read from topic's disk queue
// was redriven (and is to be dropped); with release, the mark goes.
func (d *deadLetters) isWithdrawn(topic string, id protocol.MessageID, release bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := dlKey{topic, string(id[:])}
	if _, ok := d.withdrawn[k]; !ok {
		return false
	}
	if release {
		delete(d.withdrawn, k)
		d.appendLocked([]deadLetterOp{{Released: &deadLetterRef{k.dlq, k.id}}}, false)
	}
	return true
}

// forgetTarget drops every record of messages on topic (emptied or deleted).
func (d *deadLetters) forgetTarget(topic string) {
	d.mu.Lock()
	var keys []dlKey
	if d.targets[topic] > 0 {
		for k := range d.records {
			if k.dlq == topic {
				keys = append(keys, k)
			}
		}
	}
	var released []deadLetterOp
	for k := range d.withdrawn {
		if k.dlq == topic {
			delete(d.withdrawn, k)
			released = append(released, deadLetterOp{Released: &deadLetterRef{k.dlq, k.id}})
		}
	}
	if len(released) > 0 {
		d.appendLocked(released, false)
	}
	d.mu.Unlock()
	if len(keys) > 0 {
		d.remove(keys)
	}
}

// list returns the records of channel channel of topic, oldest first.
func (d *deadLetters) list(topic, channel string) []*deadLetter {
	d.mu.Lock()
	defer d.mu.Unlock()
	set := d.bySrc[[2]string{topic, channel}]
	out := make([]*deadLetter, 0, len(set))
	for k := range set {
		out = append(out, d.records[k])
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Time.Before(out[j].Time) || (out[i].Time.Equal(out[j].Time) && out[i].ID < out[j].ID)
	})
	return out
}

func (d *deadLetters) close() {
	if d == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f != nil {
		d.f.Sync()
		d.f.Close()
		d.f = nil
	}
}

// deadItem is a message leaving a channel without being delivered again.
type deadItem struct {
	m      *Message
	reason string
}

// disposeDead handles messages the channel took out of its queues because
// its policy forbids delivering them: they go to the dead-letter topic, or,
// for expired messages without one, are dropped. A durable channel
// finishes them in its cursor only once they are safe elsewhere. A message
// that cannot be dead-lettered (the topic cannot take it) goes back into
// the channel: a policy never loses a message. Called without c.mu.
func (c *Channel) disposeDead(items []deadItem, eff *effectivePolicy) {
	if len(items) == 0 {
		return
	}
	expired := 0
	for _, it := range items {
		if it.reason == reasonTTL {
			expired++
		}
	}
	if eff.deadLetter != "" {
		if err := c.publishDeadLetters(items, eff.deadLetter); err != nil {
			c.log().Error("dead-letter topic refused messages; they stay in the channel", "dead_letter_topic", eff.deadLetter, "messages", len(items), "err", err)
			c.restoreDisposed(items)
			return
		}
		c.deadLetteredCount.Add(uint64(len(items)))
	}
	c.expiredCount.Add(uint64(expired))
	c.finishDisposed(items)
}

// publishDeadLetters publishes the bodies of items to topic dlq and records
// where they came from.
func (c *Channel) publishDeadLetters(items []deadItem, dlq string) error {
	n := c.nsqd
	t, err := n.GetTopic(dlq)
	if err != nil {
		return fmt.Errorf("dead-letter topic %s: %w", dlq, err)
	}
	now := time.Now()
	msgs := make([]*Message, len(items))
	for i, it := range items {
		msgs[i] = &Message{Body: it.m.Body, Timestamp: now.UnixNano(), heapIndex: -1}
	}
	if err := t.publishOwned(msgs); err != nil {
		return err
	}
	recs := make([]*deadLetter, len(items))
	for i, it := range items {
		recs[i] = &deadLetter{
			ID: string(msgs[i].ID[:]), DeadLetter: dlq, Topic: c.topicName, Channel: c.name,
			Attempts: it.m.Attempts, Reason: it.reason, Time: now, Timestamp: it.m.Timestamp,
			OriginalID: string(it.m.ID[:]), Size: len(it.m.Body),
		}
		if t.dur == nil {
			recs[i].Body = it.m.Body
		}
	}
	t.deadLetterTarget.Store(true)
	if err := n.deadLetters.add(recs, c.dlog != nil); err != nil {
		// the messages are on the dead-letter topic; only where they came
		// from is not kept
		c.log().Error("failed to record dead letters", "err", err)
	}
	return nil
}

// publishOwned publishes messages that have no ID yet, giving each the ID
// it gets on this topic (a durable topic's log sequence). A durable topic
// answers once they are synced.
func (t *Topic) publishOwned(msgs []*Message) error {
	if t.dur == nil {
		first := t.nsqd.ids.reserve(len(msgs))
		for i, m := range msgs {
			m.ID = protocol.NewMessageID(first + uint64(i))
		}
		return t.putMessages(msgs)
	}
	if p := t.policy.Load(); p != nil && p.maxDepth > 0 && p.overflowMode() == overflowReject {
		if err := t.checkDepth(p, len(msgs)); err != nil {
			return err
		}
	}
	t.mu.RLock()
	exiting := t.exiting
	t.mu.RUnlock()
	if exiting {
		return errExiting
	}
	bodies := make([][]byte, len(msgs))
	var bytes uint64
	for i, m := range msgs {
		bodies[i] = m.Body
		bytes += uint64(len(m.Body))
	}
	seqs, err := t.dur.appendBodies(t.nsqd.committer, bodies, msgs[0].Timestamp)
	if err != nil {
		return err
	}
	for i, m := range msgs {
		m.ID = protocol.NewMessageID(seqs[i])
	}
	t.messageCount.Add(uint64(len(msgs)))
	t.messageBytes.Add(bytes)
	t.afterPut()
	return nil
}

// appendBodies appends one message per body, all stamped ts, waits for
// their commit and returns their sequence numbers.
func (dt *durableTopic) appendBodies(cm *store.Committer, bodies [][]byte, ts int64) ([]uint64, error) {
	seqs := make([]uint64, len(bodies))
	ents := make([]store.Entry, len(bodies))
	for i, b := range bodies {
		ents[i] = store.Entry{TS: ts, Body: b, SeqOut: &seqs[i]}
	}
	r, err := cm.Append(dt.log, ents)
	if err != nil {
		return nil, &durableWriteError{err}
	}
	if err := r.Wait(dt.log); err != nil {
		return nil, &durableWriteError{err}
	}
	return seqs, nil
}

// finishDisposed completes messages that left the channel for good.
func (c *Channel) finishDisposed(items []deadItem) {
	if c.dlog == nil {
		return
	}
	seqs := make([]uint64, 0, len(items))
	c.mu.Lock()
	for _, it := range items {
		if seq, ok := c.dlog.finishedLocked(it.m); ok {
			seqs = append(seqs, seq)
		}
	}
	c.mu.Unlock()
	for _, seq := range seqs {
		c.dlog.dt.journal.Finish(c.name, seq)
	}
}

// deadLetterRetry is how long a message the dead-letter topic refused
// waits before it is tried again.
const deadLetterRetry = time.Second

// restoreDisposed puts messages that could not be dead-lettered back into
// the channel, deferred a little so that a dead-letter topic that keeps
// refusing (a full disk) is not retried in a loop.
func (c *Channel) restoreDisposed(items []deadItem) {
	var overflow []*Message
	c.mu.Lock()
	if c.exiting && c.dlog == nil && c.backend != nil {
		// closing: the shutdown flush has run; write them to disk
		for _, it := range items {
			overflow = append(overflow, it.m)
		}
	} else {
		at := time.Now().Add(deadLetterRetry).UnixNano()
		for _, it := range items {
			c.deferLocked(it.m, at)
		}
	}
	c.mu.Unlock()
	if len(overflow) > 0 {
		if err := c.backend.put(overflow); err != nil {
			c.log().Error("requeue to disk failed", "err", err)
		}
	}
}
