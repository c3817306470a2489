package nsqd

import (
	"container/heap"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sluicemq/sluice/protocol"
	"github.com/sluicemq/sluice/store"
)

// Redrive moves a channel's dead letters back into it: those whose records
// are still in the registry (not yet finished on the dead-letter topic)
// and not in flight to a consumer of the dead-letter topic. Each goes back
// as a new message of the channel only (not of its topic's other
// channels) with 0 attempts and a fresh timestamp, so its TTL starts
// again; then it is withdrawn from the dead-letter topic and its record
// goes.
//
// Withdrawing from a dead-letter topic: a durable one finishes the message
// in every cursor; otherwise it is taken out of the memory queues, and a
// message that lies on disk is remembered (the registry keeps a withdrawn
// mark, across restarts) and dropped when it is read.
//
// Order: the message is put back first and withdrawn after, so a crash
// in between leaves a duplicate (in the channel and still on the
// dead-letter topic), never a loss.

// redrive moves up to max (all when < 0) of ch's dead letters back.
func (n *NSQD) redrive(ch *Channel, max int) (int, error) {
	// which records can move, per dead-letter topic; then the oldest max
	// of those (a dead letter in flight does not use up max)
	var movable []*deadLetter
	recs := n.deadLetters.list(ch.topicName, ch.name)
	byTopic := map[string][]*deadLetter{}
	for _, r := range recs {
		byTopic[r.DeadLetter] = append(byTopic[r.DeadLetter], r)
	}
	topics := map[string]*Topic{}
	for name, recs := range byTopic {
		dlq, ok := n.ExistingTopic(name)
		if !ok {
			// the dead-letter topic is gone, and its messages with it
			n.deadLetters.forgetTarget(name)
			continue
		}
		topics[name] = dlq
		movable = append(movable, dlq.redrivable(recs)...)
	}
	slices.SortFunc(movable, func(a, b *deadLetter) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	if max >= 0 && len(movable) > max {
		movable = movable[:max]
	}
	movable = n.withBodies(movable, topics)
	if len(movable) == 0 {
		return 0, nil
	}
	if err := ch.putRedriven(movable); err != nil {
		return 0, fmt.Errorf("put back into %s:%s: %w", ch.topicName, ch.name, err)
	}
	byTopic = map[string][]*deadLetter{}
	keys := make([]dlKey, len(movable))
	for i, r := range movable {
		byTopic[r.DeadLetter] = append(byTopic[r.DeadLetter], r)
		keys[i] = dlKey{r.DeadLetter, r.ID}
	}
	for name, recs := range byTopic {
		topics[name].withdraw(recs)
	}
	n.deadLetters.remove(keys)
	return len(movable), nil
}

// withBodies returns recs with their bodies, read from the log of a
// durable dead-letter topic where the record does not keep one; a record
// whose message the log no longer holds is left out (and logged).
func (n *NSQD) withBodies(recs []*deadLetter, topics map[string]*Topic) []*deadLetter {
	out := recs[:0]
	for _, r := range recs {
		if r.Body != nil || r.Size == 0 {
			out = append(out, r)
			continue
		}
		body, err := topics[r.DeadLetter].bodyAt(r.ID)
		if err != nil {
			n.logger.Error("cannot read dead letter for redrive", "dead_letter_topic", r.DeadLetter, "id", r.ID, "err", err)
			continue
		}
		c := *r
		c.Body = body
		out = append(out, &c)
	}
	return out
}

// bodyAt reads the body of message id from a durable topic's log.
func (t *Topic) bodyAt(id string) ([]byte, error) {
	mid, ok := messageIDFrom(id)
	if !ok || t.dur == nil {
		return nil, fmt.Errorf("no log holds message %q", id)
	}
	seq, ok := seqOf(mid)
	if !ok {
		return nil, fmt.Errorf("message ID %q is not a log position", id)
	}
	recs, err := t.dur.log.NewReader(seq).Read(nil, 1)
	if err != nil {
		return nil, fmt.Errorf("read log at %d: %w", seq, err)
	}
	if len(recs) == 0 || recs[0].Seq != seq {
		return nil, fmt.Errorf("log no longer holds %d", seq)
	}
	return recs[0].Body, nil
}

// redrivable returns the records whose messages are queued on t: not in
// flight to one of its consumers and, for a durable topic, not finished
// everywhere.
func (t *Topic) redrivable(recs []*deadLetter) []*deadLetter {
	chans := t.channelList()
	var out []*deadLetter
	for _, r := range recs {
		id, ok := messageIDFrom(r.ID)
		if !ok {
			continue
		}
		queued := t.dur == nil // a non-durable topic's message is on disk if not in memory
		busy := false
		for _, ch := range chans {
			ch.mu.Lock()
			if ch.inFlight.has(id) {
				busy = true
			}
			if ch.dlog != nil {
				if seq, ok := seqOf(id); ok && !ch.dlog.cursor.IsDone(seq) {
					queued = true
				}
			}
			ch.mu.Unlock()
		}
		if t.dur != nil && len(chans) == 0 {
			t.mu.RLock()
			if seq, ok := seqOf(id); ok && !t.dur.topicCursor.IsDone(seq) && seq < t.dur.log.End() {
				queued = true
			}
			t.mu.RUnlock()
		}
		if queued && !busy {
			out = append(out, r)
		}
	}
	return out
}

// withdraw takes the messages of recs off t (see above).
func (t *Topic) withdraw(recs []*deadLetter) {
	ids := make(map[protocol.MessageID]bool, len(recs))
	for _, r := range recs {
		if id, ok := messageIDFrom(r.ID); ok {
			ids[id] = true
		}
	}
	chans := t.channelList()
	if t.dur != nil {
		for _, ch := range chans {
			var seqs []uint64
			ch.mu.Lock()
			ch.mem.removeIDs(ids)
			ch.deferred.removeIDs(ids)
			for id := range ids {
				if seq, ok := seqOf(id); ok && ch.dlog.cursor.Finish(seq) {
					seqs = append(seqs, seq)
				}
			}
			persist := ch.dlog.persist
			ch.mu.Unlock()
			for _, seq := range seqs {
				if persist {
					t.dur.journal.Finish(ch.name, seq)
				}
			}
		}
		if len(chans) == 0 {
			t.mu.Lock()
			for id := range ids {
				if seq, ok := seqOf(id); ok {
					t.dur.topicCursor.Finish(seq)
				}
			}
			if err := t.dur.journal.SetState(store.TopicCursor, t.dur.topicCursor.Clone(), true); err != nil {
				t.logger.Error("failed to record topic position", "err", err)
			}
			t.mu.Unlock()
		}
		return
	}
	onDisk := make(map[protocol.MessageID]bool, len(ids))
	for id := range ids {
		onDisk[id] = true
	}
	t.mu.Lock()
	for _, id := range t.mem.removeIDs(ids) {
		delete(onDisk, id)
	}
	t.mu.Unlock()
	for _, ch := range chans {
		ch.mu.Lock()
		for _, id := range ch.mem.removeIDs(ids) {
			delete(onDisk, id)
		}
		for _, id := range ch.deferred.removeIDs(ids) {
			delete(onDisk, id)
		}
		ch.mu.Unlock()
	}
	if len(onDisk) > 0 {
		keys := make([]dlKey, 0, len(onDisk))
		for id := range onDisk {
			keys = append(keys, dlKey{t.name, string(id[:])})
		}
		t.nsqd.deadLetters.markWithdrawn(keys)
	}
}

// putRedriven queues the bodies of recs in ch alone, as new messages.
func (ch *Channel) putRedriven(recs []*deadLetter) error {
	now := time.Now().UnixNano()
	if ch.dlog == nil {
		first := ch.nsqd.ids.reserve(len(recs))
		ents := make([]qentry, len(recs))
		for i, r := range recs {
			ents[i] = qentry{m: &Message{ID: protocol.NewMessageID(first + uint64(i)), Body: r.Body, Timestamp: now, heapIndex: -1}}
		}
		return ch.put(ents)
	}
	// A durable channel reads its topic's log: append the messages there
	// and finish them in every other channel before any of them can load
	// them (their loaders are held), and before a channel created meanwhile
	// could start below them (the topic lock is held).
	t := ch.topic
	t.mu.RLock()
	defer t.mu.RUnlock()
	others := slices.DeleteFunc(slices.Clone(t.chanList), func(o *Channel) bool { return o == ch })
	for _, o := range others {
		o.dlog.readMu.Lock()
	}
	defer func() {
		for _, o := range others {
			o.dlog.readMu.Unlock()
		}
	}()
	bodies := make([][]byte, len(recs))
	for i, r := range recs {
		bodies[i] = r.Body
	}
	seqs, err := t.dur.appendBodies(t.nsqd.committer, bodies, now)
	if err != nil {
		return err
	}
	for _, o := range others {
		var done []uint64
		o.mu.Lock()
		for _, seq := range seqs {
			if o.dlog.cursor.Finish(seq) {
				done = append(done, seq)
			}
		}
		persist := o.dlog.persist
		o.mu.Unlock()
		if persist {
			for _, seq := range done {
				t.dur.journal.Finish(o.name, seq)
			}
		}
	}
	return nil
}

// messageIDFrom parses the 16 characters of a message ID.
func messageIDFrom(s string) (protocol.MessageID, bool) {
	var id protocol.MessageID
	if len(s) != len(id) {
		return id, false
	}
	copy(id[:], s)
	return id, true
}

// removeIDs takes the single messages with the given IDs out of the queue
// (batch entries hold published messages only, never dead letters) and
// returns the IDs it found.
func (q *msgQueue) removeIDs(ids map[protocol.MessageID]bool) []protocol.MessageID {
	var found []protocol.MessageID
	if q.n == 0 {
		return nil
	}
	var kept msgQueue
	for q.ents > 0 {
		e, _ := q.popEntry()
		if e.m != nil && ids[e.m.ID] {
			found = append(found, e.m.ID)
			continue
		}
		kept.pushEntry(e)
	}
	*q = kept
	return found
}

// removeIDs takes the messages with the given IDs out of the deferred heap
// and returns the IDs it found.
func (q *deferredQueue) removeIDs(ids map[protocol.MessageID]bool) []protocol.MessageID {
	var found []protocol.MessageID
	kept := (*q)[:0]
	for _, m := range *q {
		if ids[m.ID] {
			m.heapIndex = -1
			found = append(found, m.ID)
			continue
		}
		kept = append(kept, m)
	}
	if len(found) == 0 {
		return nil
	}
	clear((*q)[len(kept):])
	*q = kept
	for i, m := range kept {
		m.heapIndex = i
	}
	heap.Init(q)
	return found
}
