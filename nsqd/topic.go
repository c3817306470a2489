package nsqd

import (
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicemq/sluice/store"

	"github.com/sluicemq/sluice/protocol"
)

// Topic is a named stream publishers write to. While it has channels and is
// not paused, publishes are copied straight into every channel by the
// publisher's goroutine; otherwise they queue in the topic (memory, then
// disk) and the topic's pump hands them on once distribution is possible.
type Topic struct {
	name      string
	ephemeral bool
	nsqd      *NSQD
	logger    *slog.Logger
	backend   *diskBackend  // nil for ephemeral and durable topics
	dur       *durableTopic // nil unless durable
	repl      *replTopic    // nil unless replicated (then dur is set too)
	// fwd marks a stand-in for a topic replicated on other nodes only:
	// it is in no topic list, and its publishes go to the replicas.
	fwd    bool
	memCap int

	mu       sync.RWMutex // guards the fields below
	channels map[string]*Channel
	chanList []*Channel // channels sorted by name; replaced, never mutated
	mem      msgQueue
	paused   bool
	held     bool // set while loading metadata: no distribution until every channel exists
	exiting  bool
	pumping  bool // the pump goroutine runs (it exits when it has nothing to hand on)

	messageCount atomic.Uint64
	messageBytes atomic.Uint64

	// message policies (policy.go); nil when the topic sets none
	policy           atomic.Pointer[topicPolicy]
	expiredCount     atomic.Uint64
	droppedCount     atomic.Uint64
	rejectedCount    atomic.Uint64
	deadLetterTarget atomic.Bool   // dead letters were published here
	dropPending      int64         // overflow=drop_oldest: disk messages still to drop; guarded by mu
	diskDefer        diskDeferrals // deadlines of deferred messages in the disk queue; guarded by mu

	wake   chan struct{}
	exitCh chan struct{}
	wg     sync.WaitGroup
}

func newTopic(name string, n *NSQD, cfg topicConfig) (*Topic, error) {
	t := &Topic{
		name:      name,
		ephemeral: protocol.IsEphemeral(name),
		nsqd:      n,
		logger:    n.logger.With("topic", name),
		memCap:    int(n.opts.MemQueueSize),
		channels:  make(map[string]*Channel),
		wake:      make(chan struct{}, 1),
		exitCh:    make(chan struct{}),
	}
	if n.deadLetters != nil && n.deadLetters.isTarget(name) {
		t.deadLetterTarget.Store(true)
	}
	if cfg.durable && !t.ephemeral {
		dt, err := n.openDurableTopic(name, cfg)
		if err != nil {
			return nil, err
		}
		t.dur = dt
		if dt.replicas > 0 {
			r, err := newReplTopic(t, dt.replicas)
			if err != nil {
				dt.close(n, false)
				return nil, err
			}
			t.repl = r
			r.start()
		}
		return t, nil // channels read the log themselves: no pump
	}
	if !t.ephemeral {
		t.backend = newDiskBackend(name, n, t.logger, t, n.hasDiskQueue(name))
		t.diskDefer = n.takeDeferrals(name)
	}
	return t, nil // the pump starts when there is something to hand on
}

// isDurable reports whether the topic keeps its messages in a durable log.
func (t *Topic) isDurable() bool { return t.dur != nil }

// signal tells the pump that there may be work: it wakes it, or starts it
// when it is not running. Called without t.mu held.
func (t *Topic) signal() {
	if t.dur != nil {
		return // channels of durable topics read the log themselves
	}
	t.mu.Lock()
	start := !t.pumping && !t.exiting
	if start {
		t.pumping = true
		t.wg.Add(1)
	}
	t.mu.Unlock()
	if start {
		go t.pump()
		return
	}
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// putMessages publishes single messages (PUB, DPUB, HTTP).
func (t *Topic) putMessages(msgs []*Message) error {
	ents := make([]qentry, len(msgs))
	var bytes uint64
	for i, m := range msgs {
		ents[i] = qentry{m: m}
		bytes += uint64(len(m.Body))
	}
	return t.put(ents, bytes)
}

// putBatch publishes the messages of one MPUB.
func (t *Topic) putBatch(b *msgBatch, bodyBytes uint64) error {
	return t.put([]qentry{batchEntry(b)}, bodyBytes)
}

// put publishes entries. They go to every channel at once when possible,
// otherwise into the topic's own queue.
func (t *Topic) put(ents []qentry, bodyBytes uint64) error {
	if t.fwd {
		return t.nsqd.forwardPublish(t.name, ents)
	}
	count := 0
	for i := range ents {
		count += ents[i].len()
	}
	if p := t.policy.Load(); p != nil && p.maxDepth > 0 && p.overflowMode() == overflowReject {
		if err := t.checkDepth(p, count); err != nil {
			return err
		}
	}
	t.mu.RLock()
	if t.exiting {
		t.mu.RUnlock()
		return errExiting
	}
	if t.dur != nil {
		t.mu.RUnlock()
		if err := t.putDurable(ents); err != nil {
			return err
		}
		if t.repl == nil { // a replicated topic counts what it applies
			t.messageCount.Add(uint64(count))
			t.messageBytes.Add(bodyBytes)
		}
		t.afterPut()
		return nil
	}
	direct := len(t.chanList) > 0 && !t.paused && !t.held && t.mem.len() == 0 && (t.backend == nil || t.backend.depth() == 0)
	chans := t.chanList
	t.mu.RUnlock()
	t.messageCount.Add(uint64(count))
	t.messageBytes.Add(bodyBytes)
	if direct {
		err := t.distribute(ents, chans)
		t.afterPut()
		return err
	}
	var overflow [][]*Message
	t.mu.Lock()
	for _, e := range ents {
		room := t.memCap - t.mem.len()
		if room >= e.len() {
			t.mem.pushEntry(e)
			continue
		}
		head, tail := splitEntry(e, room)
		t.mem.pushEntry(head)
		if t.backend != nil {
			msgs := tail.materialize()
			t.noteDeferredLocked(msgs)
			overflow = append(overflow, msgs)
		}
	}
	t.mu.Unlock()
	for _, msgs := range overflow {
		if err := t.backend.put(msgs); err != nil {
			t.signal()
			return err
		}
	}
	if t.pumpMayAct() {
		t.signal() // after the disk writes: the pump looks at the disk depth
	}
	t.afterPut()
	return nil
}

// diskOpened is the backend's call when a put opened the disk queue.
func (t *Topic) diskOpened() { t.signal() }

// diskPut is the backend's call after a put: the topic's put signals its
// pump itself once all its writes are done.
func (t *Topic) diskPut() {}

// pumpMayAct reports whether the pump could hand anything on or has a
// policy to apply to the queue. A topic without channels and policies
// queues publishes without waking (or starting) the pump for each:
// profiled, one PUB round trip on such a topic started and ended a pump
// goroutine every time.
func (t *Topic) pumpMayAct() bool {
	if t.policy.Load() != nil {
		return true
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.chanList) > 0 && !t.paused && !t.held
}

// afterPut enforces overflow=drop_oldest once a publish has landed.
func (t *Topic) afterPut() {
	if p := t.policy.Load(); p != nil && p.maxDepth > 0 && p.overflowMode() == overflowDropOldest {
		t.trimToDepth(p)
	}
}

// distribute hands entries to every channel. Batches are shared (each
// channel reads them through its own cursor); single messages are copied
// for every channel after the first.
func (t *Topic) distribute(ents []qentry, chans []*Channel) error {
	// Copies are made before the first channel gets the originals: once a
	// channel holds a message it may be delivered and modified at once.
	perChannel := make([][]qentry, len(chans))
	perChannel[0] = ents
	for i := 1; i < len(chans); i++ {
		batch := make([]qentry, len(ents))
		for j, e := range ents {
			if e.m != nil {
				m := e.m
				e = qentry{m: &Message{ID: m.ID, Body: m.Body, Timestamp: m.Timestamp, Attempts: m.Attempts, deferBy: m.deferBy, heapIndex: -1}}
			}
			batch[j] = e
		}
		perChannel[i] = batch
	}
	var firstErr error
	for i, ch := range chans {
		if err := ch.put(perChannel[i]); err != nil && err != errExiting {
			t.logger.Error("failed to put messages into channel", "channel", ch.name, "err", err)
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	return firstErr
}

// pump hands the topic's queued messages to its channels whenever it has
// channels and is not paused. It runs only while it has work: when nothing
// it could hand on is queued, it exits, and signal starts it again (an idle
// topic holds no goroutine).
func (t *Topic) pump() {
	defer t.wg.Done()
	var batch []qentry
	var recs [][]byte
	for {
		t.mu.Lock()
		canDistribute := len(t.chanList) > 0 && !t.paused && !t.held && !t.exiting
		if canDistribute && t.mem.len() > 0 {
			if batch == nil {
				batch = make([]qentry, 0, 64)
			}
			batch = batch[:0]
			for len(batch) < cap(batch) {
				e, ok := t.mem.popEntry()
				if !ok {
					break
				}
				batch = append(batch, e)
			}
			chans := t.chanList
			t.mu.Unlock()
			t.distribute(batch, chans)
			clear(batch)
			continue
		}
		t.mu.Unlock()
		if t.backend != nil && (canDistribute || t.readsWithoutChannels()) && t.backend.depth() > 0 {
			limit := topicDiskBatch
			if !canDistribute {
				limit = 1 // for drop_oldest or the TTL window: one at a time
			}
			if recs = t.backend.read(recs[:0], limit); len(recs) > 0 {
				t.handOnFromDisk(recs)
				clear(recs)
				continue
			}
		}
		if t.pumpIdle() {
			return
		}
		select {
		case <-t.wake:
		case <-t.exitCh:
			return
		}
	}
}

// topicDiskBatch is the most records the topic's pump reads from its disk
// queue at once.
const topicDiskBatch = 128

// handOnFromDisk hands records read from the topic's disk queue to its
// channels, or keeps them (or drops them) when it has none.
func (t *Topic) handOnFromDisk(recs [][]byte) {
	t.mu.RLock()
	chans := t.chanList
	t.mu.RUnlock()
	ents := make([]qentry, 0, len(recs))
	for _, b := range recs {
		m, err := decodeRecord(b)
		if err != nil {
			t.logger.Error("dropping corrupt message read from disk", "err", err)
			continue
		}
		if t.deadLetterTarget.Load() && t.nsqd.deadLetters.isWithdrawn(t.name, m.ID, true) {
			continue // redriven: no channel has it yet
		}
		if t.nsqd.opts.KeepDeferred {
			t.mu.Lock()
			if at, ok := t.diskDefer.deadlineOf(m.ID); ok {
				m.deferBy = time.Duration(at - m.Timestamp)
			}
			t.mu.Unlock()
		}
		if len(chans) == 0 {
			// read for expiry or drop_oldest, or the last channel went
			// away after the read: keep the message unless it goes
			t.mu.Lock()
			if t.dropPending > 0 {
				t.dropPending--
				t.mu.Unlock()
				t.droppedCount.Add(1)
				continue
			}
			if p := t.policy.Load(); p != nil && p.ttl > 0 && time.Now().UnixNano()-m.Timestamp > int64(p.ttl) {
				t.mu.Unlock()
				t.expiredCount.Add(1)
				continue
			}
			t.mem.push(m)
			t.mu.Unlock()
			continue
		}
		ents = append(ents, qentry{m: m})
	}
	if len(ents) > 0 {
		t.distribute(ents, chans)
	}
}

// pumpIdle ends the pump's run when it has nothing to hand on: nothing it
// may distribute in memory (checked again under the lock, which every
// change to that takes before it signals). Disk messages were checked by
// the caller: a put to disk signals after writing.
func (t *Topic) pumpIdle() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	canDistribute := len(t.chanList) > 0 && !t.paused && !t.held && !t.exiting
	if canDistribute && t.mem.len() > 0 {
		return false
	}
	select {
	case <-t.wake:
		return false // a signal came meanwhile: look again
	default:
	}
	t.pumping = false
	return true
}

// readsWithoutChannels reports whether the pump should read the topic's
// disk queue although it has no channel: to drop what drop_oldest left
// there, or, with a TTL, to keep a window of messages in memory where the
// sweep finds the expired ones.
func (t *Topic) readsWithoutChannels() bool {
	p := t.policy.Load()
	if p == nil {
		return false
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	if len(t.chanList) > 0 || t.exiting {
		return false
	}
	return t.dropPending > 0 || (p.ttl > 0 && t.mem.len() < expiryWindow)
}

// getChannel returns the named channel, creating it if needed. created
// reports whether it is new.
func (t *Topic) getChannel(name string) (ch *Channel, created bool, err error) {
	return t.getChannelFrom(name, channelStart{})
}

// getChannelFrom is getChannel where a new channel of a durable topic starts
// at start.
func (t *Topic) getChannelFrom(name string, start channelStart) (ch *Channel, created bool, err error) {
	t.mu.RLock()
	ch, ok := t.channels[name]
	exiting := t.exiting
	t.mu.RUnlock()
	if exiting {
		return nil, false, errExiting
	}
	if ok {
		if ch.isExiting() {
			return nil, false, errExiting // being deleted; the caller may retry
		}
		return ch, false, nil
	}
	t.mu.Lock()
	if ch, ok = t.channels[name]; ok {
		t.mu.Unlock()
		return ch, false, nil
	}
	if t.exiting {
		t.mu.Unlock()
		return nil, false, errExiting
	}
	cp := defaultChannelPolicy()
	if start.policy != nil {
		cp = *start.policy
	}
	eff, err := resolvePolicy(t.name, cp, t.topicPolicyOf(), t.nsqd.opts.MaxAttempts)
	if err != nil {
		t.mu.Unlock()
		return nil, false, &policyRefusal{err}
	}
	ch = newChannel(t.name, name, t.nsqd, t.dur != nil)
	ch.topic = t
	if t.repl != nil {
		ch.standby = !t.repl.delivering()
		start.uncopied, start.copying = t.repl.uncopied()
	}
	if cp != defaultChannelPolicy() {
		ch.policy.Store(&cp)
	}
	ch.eff.Store(eff)
	if eff != nil && eff.ttl > 0 {
		ch.watched = true
		t.nsqd.watch(ch)
	}
	if t.dur != nil {
		if err := ch.attachDurable(t.dur, start, len(t.channels) > 0); err != nil {
			t.mu.Unlock()
			return nil, false, err
		}
	}
	t.channels[name] = ch
	t.rebuildListLocked()
	t.mu.Unlock()
	t.logger.Info("new channel", "channel", name)
	if t.repl != nil {
		t.repl.gateForFloors()
	}
	t.signal()
	return ch, true, nil
}

func (t *Topic) existingChannel(name string) (*Channel, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	ch, ok := t.channels[name]
	return ch, ok
}

func (t *Topic) rebuildListLocked() {
	list := make([]*Channel, 0, len(t.channels))
	for _, ch := range t.channels {
		list = append(list, ch)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].name < list[j].name })
	t.chanList = list
}

// channelList returns the channels sorted by name.
func (t *Topic) channelList() []*Channel {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.chanList
}

// removeChannel detaches ch from the topic; it reports whether the topic
// has no channels left.
func (t *Topic) removeChannel(ch *Channel) (found, nowEmpty bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur, ok := t.channels[ch.name]; !ok || cur != ch {
		return false, len(t.channels) == 0
	}
	delete(t.channels, ch.name)
	t.rebuildListLocked()
	if t.dur != nil && len(t.channels) == 0 && !t.exiting {
		// from now on the topic queues for a future first channel
		t.dur.topicCursor.Reset(t.dur.log.End())
		if err := t.dur.journal.SetState(store.TopicCursor, t.dur.topicCursor.Clone(), true); err != nil {
			t.logger.Error("failed to record topic position", "err", err)
		}
	}
	return true, len(t.channels) == 0
}

func (t *Topic) setPaused(paused bool) {
	t.mu.Lock()
	t.paused = paused
	chans := t.chanList
	t.mu.Unlock()
	t.signal()
	if t.dur != nil {
		t.dur.paused.Store(paused)
		if !paused {
			for _, ch := range chans {
				ch.mu.Lock()
				ch.signalRefillLocked()
				ch.mu.Unlock()
			}
		}
	}
}

// release ends the hold set while loading metadata.
func (t *Topic) release() {
	t.mu.Lock()
	t.held = false
	t.mu.Unlock()
	t.signal()
}

func (t *Topic) isPaused() bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.paused
}

// empty discards the topic's own queued messages; channels keep theirs.
func (t *Topic) empty() error {
	if t.dur != nil {
		t.mu.Lock()
		defer t.mu.Unlock()
		if len(t.channels) > 0 {
			return nil // channels keep theirs; the topic holds nothing of its own
		}
		t.dur.topicCursor.Reset(t.dur.log.End())
		return t.dur.journal.SetState(store.TopicCursor, t.dur.topicCursor.Clone(), true)
	}
	t.mu.Lock()
	t.mem = msgQueue{}
	t.diskDefer = nil
	t.mu.Unlock()
	if t.backend != nil {
		return t.backend.empty()
	}
	return nil
}

// noteDeferredLocked records the deadlines of deferred messages about to be
// written to the topic's disk queue.
func (t *Topic) noteDeferredLocked(msgs []*Message) {
	if !t.nsqd.opts.KeepDeferred {
		return
	}
	for _, m := range msgs {
		if m.deferBy > 0 {
			t.diskDefer.noteDeferred(m, m.Timestamp+int64(m.deferBy))
		}
	}
}

func (t *Topic) depth() (total, backend int64) {
	if t.dur != nil {
		t.mu.RLock()
		defer t.mu.RUnlock()
		if len(t.channels) > 0 {
			return 0, 0
		}
		if end, floor := t.dur.log.End(), t.dur.topicCursor.Floor; end > floor {
			return int64(end - floor), int64(end - floor)
		}
		return 0, 0
	}
	t.mu.RLock()
	mem := int64(t.mem.len())
	t.mu.RUnlock()
	if t.backend != nil {
		backend = t.backend.depth()
	}
	return mem + backend, backend
}

// close stops the topic and its channels: flushing everything to disk, or,
// when deleted, discarding it and removing the files.
func (t *Topic) close(deleted bool) error {
	if !t.markExiting(false) {
		return errExiting
	}
	return t.shutdown(deleted)
}

// markExiting starts closing the topic: from now on publishes fail with
// errExiting and it hands out no channels. With onlyIfNoChannels it does so
// only when the topic has no channel (ephemeral cleanup racing a new SUB).
// It reports whether this call marked it.
func (t *Topic) markExiting(onlyIfNoChannels bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.exiting || (onlyIfNoChannels && len(t.channels) > 0) {
		return false
	}
	t.exiting = true
	return true
}

func (t *Topic) isExiting() bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.exiting
}

// shutdown finishes closing a topic marked exiting.
func (t *Topic) shutdown(deleted bool) error {
	t.mu.RLock()
	chans := t.chanList
	t.mu.RUnlock()
	close(t.exitCh)
	t.wg.Wait()
	if t.repl != nil {
		t.repl.close()
	}
	var firstErr error
	for _, ch := range chans {
		if err := ch.close(deleted); err != nil && err != errExiting && firstErr == nil {
			firstErr = err
		}
	}
	if t.dur != nil {
		if err := t.dur.close(t.nsqd, deleted); err != nil && firstErr == nil {
			firstErr = err
		}
		return firstErr
	}
	if t.backend == nil {
		return firstErr
	}
	if deleted {
		t.mu.Lock()
		t.mem = msgQueue{}
		t.mu.Unlock()
		if err := t.backend.delete(); err != nil && firstErr == nil {
			firstErr = err
		}
		return firstErr
	}
	t.mu.Lock()
	pending := t.mem.drain()
	t.noteDeferredLocked(pending)
	deferrals := t.diskDefer
	t.mu.Unlock()
	if err := t.backend.put(pending); err != nil && firstErr == nil {
		firstErr = err
	}
	t.nsqd.keepDeferrals(t.name, deferrals)
	if err := t.backend.close(); err != nil && firstErr == nil {
		firstErr = err
	}
	return firstErr
}
