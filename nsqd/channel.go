package nsqd

import (
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicemq/sluice/internal/quantile"
	"github.com/sluicemq/sluice/protocol"
	"github.com/sluicemq/sluice/store"
)

// errExiting is returned for operations on a topic or channel that is being
// closed or deleted.
var errExiting = errors.New("exiting")

// Channel is a named subscription of a topic. Every message of the topic is
// copied to every channel; within a channel each message goes to one of its
// consumers.
//
// Delivery is pull-driven without a goroutine per idle consumer: a consumer
// that is ready (RDY allows more) but finds the queue empty waits in
// `waiters`; a put hands work to waiters by starting their pump goroutine,
// which runs only while it has messages to send.
//
// Lock order: Topic.mu before Channel.mu; Channel.mu before client.writeMu is
// never taken (pumps write after releasing Channel.mu).
type Channel struct {
	topicName string
	name      string
	ephemeral bool
	nsqd      *NSQD

	backend     *diskBackend // nil for ephemeral channels and channels of durable topics
	dlog        *channelLog  // set for channels of durable topics
	memCap      int          // --mem-queue-size
	refillLimit int          // how many disk messages the refiller keeps in memory

	mu            sync.Mutex // guards everything below up to the counters
	mem           msgQueue
	pool          msgPool // finished messages' structs, reused by take (not for durable channels)
	inFlight      inFlight
	deferred      deferredQueue
	clients       map[uint64]*client
	waiters       []*client
	paused        bool
	standby       bool // a replicated topic's follower: delivers nothing
	exiting       bool
	everHadClient bool
	active        int           // consumers pumping or waiting: demand for disk messages
	dropPending   int64         // overflow=drop_oldest: messages still to drop as they are read
	diskDefer     diskDeferrals // deadlines of deferred messages in the disk queue
	refilling     bool          // the refiller goroutine runs
	watched       bool          // in the node's scan set (NSQD.watched)
	nWaiting      int           // consumers whose waiting flag is set

	// emptyGen is bumped before and after empty() clears the disk queue; a
	// message the refiller received under an older value was read before
	// the empty and is dropped.
	emptyGen atomic.Int64

	starved atomic.Bool // the refiller found the disk queue empty: diskPut wakes it

	messageCount atomic.Uint64
	requeueCount atomic.Uint64
	timeoutCount atomic.Uint64
	e2e          *quantile.Quantile // nil when no percentiles are configured

	// message policies (policy.go); nil when the channel enforces none
	topic             *Topic
	policy            atomic.Pointer[channelPolicy]
	eff               atomic.Pointer[effectivePolicy]
	deadLetteredCount atomic.Uint64
	expiredCount      atomic.Uint64

	roomCh chan struct{} // wakes the refiller when memory has room; made when it starts
	exitCh chan struct{}
	wg     sync.WaitGroup
}

func newChannel(topicName, name string, n *NSQD, durable bool) *Channel {
	o := n.opts
	c := &Channel{
		topicName: topicName,
		name:      name,
		ephemeral: protocol.IsEphemeral(name),
		nsqd:      n,
		memCap:    int(o.MemQueueSize),
		inFlight:  newInFlight(),
		exitCh:    make(chan struct{}),
	}
	c.refillLimit = c.memCap
	if c.refillLimit < 64 {
		c.refillLimit = 64
	}
	if len(o.E2EProcessingLatencyPercentiles) > 0 {
		c.e2e = quantile.New(o.E2EProcessingLatencyWindowTime, o.E2EProcessingLatencyPercentiles)
	}
	if !c.ephemeral && !durable {
		queue := topicName + ":" + name
		c.backend = newDiskBackend(queue, n, n.logger, c, n.hasDiskQueue(queue))
		c.diskDefer = n.takeDeferrals(queue)
		if c.backend.isOpen() {
			c.startRefiller()
		}
	}
	return c
}

// log returns the channel's logger, made on use (an idle channel holds
// none: with 100,000 channels each logger was ~100 bytes).
func (c *Channel) log() *slog.Logger {
	return c.nsqd.logger.With("topic", c.topicName, "channel", c.name)
}

// startRefiller starts the goroutine that moves messages from the disk
// queue into memory, once the channel has one (see diskBackend).
func (c *Channel) startRefiller() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.exiting || c.refilling {
		return
	}
	c.refilling = true
	c.roomCh = make(chan struct{}, 1)
	c.wg.Add(1)
	go c.refill()
}

// deferLocked defers m until at (ns since the epoch).
func (c *Channel) deferLocked(m *Message, at int64) {
	c.deferred.add(m, at)
	c.watchLocked()
}

// watchLocked puts the channel in the node's scan set: called whenever it
// gets a message in flight or deferred, or a TTL.
func (c *Channel) watchLocked() {
	if !c.watched {
		c.watched = true
		c.nsqd.watch(c)
	}
}

// unwatchIfIdle takes the channel out of the scan set when nothing in it
// has a deadline (scanLoop, after processing it).
func (c *Channel) unwatchIfIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.watched {
		return
	}
	if !c.exiting && (c.inFlight.len() > 0 || len(c.deferred) > 0) {
		return
	}
	if e := c.eff.Load(); e != nil && e.ttl > 0 && !c.exiting {
		return
	}
	c.watched = false
	c.nsqd.unwatch(c)
	// nothing in flight: give back what delivering needed
	c.inFlight.release()
	c.pool = msgPool{}
}

// refillMax is the most records the refiller reads from disk at once.
const refillMax = 256

// refill moves messages from the disk queue into memory while some
// consumer wants one (it is waiting or pumping) and memory has room, so that
// consumers only ever take from memory. Without demand, messages stay on
// disk and depth/backend_depth read as they would in NSQ. Each round reads
// as many records as memory has room for (up to refillMax) with one call
// to the disk queue, which reads them ahead in large blocks.
func (c *Channel) refill() {
	defer c.wg.Done()
	var recs [][]byte
	for {
		c.mu.Lock()
		want := c.wantRefillLocked()
		limit := c.refillRoomLocked()
		c.mu.Unlock()
		if want {
			gen := c.emptyGen.Load()
			recs = c.backend.read(recs[:0], limit)
			if len(recs) == 0 {
				// nothing on disk: a put wakes us from now on (and what
				// a put wrote before that is found by reading again)
				c.starved.Store(true)
				if recs = c.backend.read(recs[:0], limit); len(recs) > 0 {
					c.starved.Store(false)
				}
			}
			if len(recs) > 0 {
				c.refillBatch(recs, gen)
				clear(recs)
				continue
			}
		}
		select {
		case <-c.roomCh:
		case <-c.exitCh:
			return
		}
	}
}

// diskOpened is the backend's call when a put opened the disk queue.
func (c *Channel) diskOpened() { c.startRefiller() }

// diskPut is the backend's call after a put: it wakes the refiller when it
// waits for records to be written.
func (c *Channel) diskPut() {
	if c.starved.Load() && c.starved.CompareAndSwap(true, false) {
		// roomCh was made before the refiller, which set starved, started
		select {
		case c.roomCh <- struct{}{}:
		default:
		}
	}
}

// refillBatch moves records just read from disk (under emptyGen gen) into
// memory. Message structs come from the channel's pool, else from one slab
// allocated for the batch (as msgQueue.popN does), so that a drain from
// disk allocates per batch, not per message; bodies stay in the disk
// queue's read block.
func (c *Channel) refillBatch(recs [][]byte, gen int64) {
	var spareArr [refillMax]*Message
	spare := spareArr[:len(recs)]
	c.mu.Lock()
	for i := range spare {
		if spare[i] = c.pool.get(); spare[i] == nil {
			break
		}
	}
	c.mu.Unlock()
	var msgArr [refillMax]*Message
	msgs := msgArr[:0]
	used := 0
	var slab []Message
	for i, b := range recs {
		m := spare[used]
		if m == nil {
			if len(slab) == 0 {
				slab = make([]Message, len(recs)-i)
			}
			m = &slab[0]
			slab = slab[1:]
		}
		if err := decodeRecordInto(b, m); err != nil {
			c.log().Error("dropping corrupt message read from disk", "err", err)
			continue
		}
		spare[used] = nil
		used++
		msgs = append(msgs, m)
	}
	eff := c.eff.Load()
	var dead []deadItem
	var drops []*Message
	now := time.Now().UnixNano()
	// a dead-letter topic drops what was redriven from it (the topic's
	// lock is taken before the channel's, never inside it)
	withdrawable := c.topic != nil && c.topic.deadLetterTarget.Load()
	soleChannel := withdrawable && len(c.topic.channelList()) <= 1
	c.mu.Lock()
	for _, m := range spare[used:] {
		if m == nil {
			break
		}
		c.pool.put(m)
	}
	if gen != c.emptyGen.Load() {
		msgs = msgs[:0] // read before an empty: discarded with the rest
	}
	pushed := 0
	for _, m := range msgs {
		if c.takeDropLocked() {
			drops = append(drops, m)
			continue
		}
		if withdrawable && c.nsqd.deadLetters.isWithdrawn(c.topicName, m.ID, soleChannel) {
			continue // redriven
		}
		if at, ok := c.diskDefer.deadlineOf(m.ID); ok && at > now {
			c.deferLocked(m, at) // deferred before it went to disk
			continue
		}
		if eff != nil && eff.expired(m, now) {
			dead = append(dead, deadItem{m, reasonTTL})
			continue
		}
		c.mem.push(m)
		pushed++
	}
	c.wakeWaitersLocked(pushed)
	c.mu.Unlock()
	c.dropped(drops)
	c.disposeDead(dead, eff)
}

// wantRefillLocked reports whether a consumer could use a message from disk.
func (c *Channel) wantRefillLocked() bool {
	if c.dropPending > 0 {
		return true
	}
	if c.paused || c.standby {
		return false
	}
	if c.active > 0 {
		return c.mem.len() < c.refillLimit
	}
	// a channel with a TTL loads a window without consumers, so that what
	// expires on disk is found and removed (at load time) without them
	if e := c.eff.Load(); e != nil && e.ttl > 0 {
		return c.mem.len() < min(c.refillLimit, expiryWindow)
	}
	return false
}

// refillRoomLocked is how many records the refiller reads next: what
// memory has room for under the rule of wantRefillLocked, or what
// drop_oldest still drops, at least 1 and at most refillMax.
func (c *Channel) refillRoomLocked() int {
	room := 0
	if !c.paused && !c.standby {
		if c.active > 0 {
			room = c.refillLimit - c.mem.len()
		} else if e := c.eff.Load(); e != nil && e.ttl > 0 {
			room = min(c.refillLimit, expiryWindow) - c.mem.len()
		}
	}
	if c.dropPending > 0 {
		room = max(room, int(min(c.dropPending, refillMax)))
	}
	return min(max(room, 1), refillMax)
}

// signalRefillLocked wakes the refiller if it may have work.
func (c *Channel) signalRefillLocked() {
	if (c.backend != nil || c.dlog != nil) && c.wantRefillLocked() {
		select {
		case c.roomCh <- struct{}{}:
		default:
		}
	}
}

// put adds entries received from the topic: deferred messages (DPUB) to the
// deferred set, the rest to memory, overflowing to disk.
func (c *Channel) put(ents []qentry) error {
	now := time.Now().UnixNano()
	var overflow []qentry
	c.mu.Lock()
	if c.exiting {
		c.mu.Unlock()
		return errExiting
	}
	added, total := 0, 0
	for _, e := range ents {
		n := e.len()
		total += n
		if e.m != nil && e.m.deferBy > 0 {
			// NSQ defers from when the channel gets the message; with
			// --keep-deferred, from its publish time
			at := now + int64(e.m.deferBy)
			if c.nsqd.opts.KeepDeferred {
				at = e.m.Timestamp + int64(e.m.deferBy)
			}
			e.m.deferBy = 0
			if at > now {
				c.deferLocked(e.m, at)
				continue
			}
		}
		room := c.memRoomLocked()
		if room >= n {
			c.mem.pushEntry(e)
			added += n
			continue
		}
		head, tail := splitEntry(e, room)
		c.mem.pushEntry(head)
		added += head.len()
		if c.backend != nil {
			overflow = append(overflow, tail)
		}
	}
	c.wakeWaitersLocked(added)
	c.mu.Unlock()
	c.messageCount.Add(uint64(total))
	if len(overflow) > 0 {
		return c.backend.putEntries(overflow)
	}
	return nil
}

// memRoomLocked is how many more messages memory takes. With
// --mem-queue-size=0 a durable channel goes straight to disk and an
// ephemeral one only hands a message to a consumer waiting at that instant.
func (c *Channel) memRoomLocked() int {
	limit := c.memCap
	if c.memCap == 0 && c.ephemeral {
		limit = c.nWaiting
	}
	if room := limit - c.mem.len(); room > 0 {
		return room
	}
	return 0
}

// requeueLocked puts a message back at the tail of the queue; it returns the
// message if it must go to disk instead (written by the caller after
// unlocking).
func (c *Channel) requeueLocked(m *Message) *Message {
	if c.mem.len() < c.memCap || c.backend == nil {
		c.mem.push(m) // ephemeral channels keep requeued messages rather than drop them
		c.wakeWaitersLocked(1)
		return nil
	}
	return m
}

// addClient subscribes a consumer. It fails when the channel is exiting or
// the consumer limit is reached.
func (c *Channel) addClient(cl *client, maxConsumers int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.exiting {
		return errExiting
	}
	if _, ok := c.clients[cl.id]; ok {
		return nil
	}
	if maxConsumers > 0 && len(c.clients) >= maxConsumers {
		return errTooManyConsumers
	}
	if c.clients == nil {
		c.clients = make(map[uint64]*client)
	}
	c.clients[cl.id] = cl
	c.everHadClient = true
	return nil
}

var errTooManyConsumers = errors.New("too many consumers")

// removeClient unsubscribes a consumer that disconnected. Its in-flight
// messages go back to the queue at once rather than waiting for their
// timeout. An ephemeral channel left without consumers deletes itself.
func (c *Channel) removeClient(cl *client) {
	var overflow []*Message
	c.mu.Lock()
	if _, ok := c.clients[cl.id]; !ok {
		c.mu.Unlock()
		return
	}
	delete(c.clients, cl.id)
	if cl.waiting {
		c.setWaitingLocked(cl, false)
		c.active--
	}
	var notes []requeueNote
	eff := c.eff.Load()
	var dead []deadItem
	now := time.Now().UnixNano()
	for _, m := range c.inFlight.ownedBy(cl.id) {
		c.inFlight.unlink(m)
		if c.exiting {
			continue // the channel is being deleted with its messages
		}
		if eff != nil {
			if reason := eff.refuse(m, now); reason != "" {
				dead = append(dead, deadItem{m, reason})
				continue
			}
		}
		if c.dlog != nil {
			if note, ok := c.dlog.requeuedLocked(m, 0); ok {
				notes = append(notes, note)
			}
		}
		if o := c.requeueLocked(m); o != nil {
			overflow = append(overflow, o)
		}
	}
	cl.inFlightCount.Store(0)
	empty := len(c.clients) == 0
	exiting := c.exiting
	c.mu.Unlock()
	if len(notes) > 0 {
		c.journalRequeues(notes)
	}
	c.disposeDead(dead, eff)
	if len(overflow) > 0 {
		if err := c.backend.put(overflow); err != nil {
			c.log().Error("requeue to disk failed", "err", err)
		}
	}
	if empty && c.ephemeral && !exiting {
		c.nsqd.deleteEphemeralChannel(c)
	}
}

// readyLocked reports whether cl may be sent another message.
func (c *Channel) readyLocked(cl *client) bool {
	if c.paused || c.standby || c.exiting || cl.state.Load() != stateSubscribed || c.clients[cl.id] != cl {
		return false
	}
	rdy := cl.readyCount.Load()
	return rdy > 0 && cl.inFlightCount.Load() < rdy
}

// Consumer delivery states, all guarded by c.mu:
//   - pumping: cl.pumpRunning; its pump goroutine is taking messages;
//   - waiting: cl.waiting; ready but memory was empty, queued in c.waiters
//     (which may also hold stale entries whose waiting flag was cleared);
//   - idle: neither (not ready).
// c.active counts pumping plus waiting consumers: the demand for messages
// that the refiller serves from disk.

// kick makes sure a consumer that may receive messages is either pumping
// or waiting for the next put.
func (c *Channel) kick(cl *client) {
	c.mu.Lock()
	c.kickLocked(cl)
	c.mu.Unlock()
}

func (c *Channel) kickLocked(cl *client) {
	if cl.pumpRunning {
		return
	}
	if !c.readyLocked(cl) {
		if cl.waiting {
			c.setWaitingLocked(cl, false)
			c.active--
		}
		return
	}
	if c.mem.len() > 0 {
		if cl.waiting {
			c.setWaitingLocked(cl, false)
		} else {
			c.active++
		}
		c.startPumpLocked(cl)
		return
	}
	if !cl.waiting {
		c.setWaitingLocked(cl, true)
		c.active++
	}
	c.signalRefillLocked()
}

// setWaitingLocked flips cl's waiting flag, keeping the counters and the
// waiters list (whose stale entries are compacted away once they dominate).
func (c *Channel) setWaitingLocked(cl *client, waiting bool) {
	if cl.waiting == waiting {
		return
	}
	cl.waiting = waiting
	if waiting {
		c.nWaiting++
		c.waiters = append(c.waiters, cl)
		return
	}
	c.nWaiting--
	if len(c.waiters) > 2*c.nWaiting+1 { // amortized O(1): stale entries are over half
		c.compactWaitersLocked()
	}
}

// compactWaitersLocked drops stale entries (clients no longer waiting, or
// listed twice) from the waiters list.
func (c *Channel) compactWaitersLocked() {
	kept := c.waiters[:0]
	for _, cl := range c.waiters {
		if !cl.waiting || cl.listed {
			continue
		}
		cl.listed = true
		kept = append(kept, cl)
	}
	clear(c.waiters[len(kept):])
	for _, cl := range kept {
		cl.listed = false
	}
	c.waiters = kept
	if len(kept) == 0 {
		c.waiters = nil
	}
}

func (c *Channel) startPumpLocked(cl *client) {
	cl.pumpRunning = true
	c.wg.Add(1)
	go cl.pump(c)
}

// wakeWaitersLocked starts the pumps of up to n waiting consumers.
func (c *Channel) wakeWaitersLocked(n int) {
	for n > 0 && len(c.waiters) > 0 {
		cl := c.waiters[0]
		c.waiters[0] = nil
		c.waiters = c.waiters[1:]
		if !cl.waiting {
			continue // stale entry
		}
		cl.waiting = false
		c.nWaiting--
		if !c.readyLocked(cl) {
			c.active--
			continue
		}
		c.startPumpLocked(cl)
		n--
	}
	if len(c.waiters) == 0 {
		c.waiters = nil
	}
}

// kickAllLocked re-evaluates every consumer (after unpause or empty).
func (c *Channel) kickAllLocked() {
	for _, cl := range c.clients {
		c.kickLocked(cl)
	}
}

// take moves up to max messages from memory to in flight for cl, passing
// each to emit under the channel's lock; emit returns false when it wants
// no more after this one. It returns how many it passed. When it passes
// none, cl's pump must stop: cl is then either idle (not ready) or waiting
// for the next put.
//
// emit must not keep the message: once finished, its struct is reused
// (msgPool).
func (c *Channel) take(cl *client, max int, emit func(m *Message) bool) int {
	c.mu.Lock()
	// read the clock under the lock: deliveries then enter the in-flight
	// lists in deadline order and insertSorted appends in O(1)
	now := time.Now().UnixNano()
	if !c.readyLocked(cl) {
		c.pumpDoneLocked(cl)
		c.mu.Unlock()
		return 0
	}

	avail := int(cl.readyCount.Load() - cl.inFlightCount.Load())
	if avail > max {
		avail = max
	}
	var pool *msgPool
	if c.dlog == nil {
		pool = &c.pool
	}
	var scratch [32]*Message // popped a chunk at a time: what emit leaves goes back
	sampled := cl.sampleRate
	var sampledOut []uint64
	var delivered []store.Delivery // durable channels: journaled after unlocking
	eff := c.eff.Load()
	var dead []deadItem
	n := 0
	more := true
	for more && n < avail && c.mem.len() > 0 {
		got := c.mem.popN(scratch[:0], min(avail-n, len(scratch)), pool)
		for i, m := range got {
			if !more {
				// emit asked to stop: the rest goes back to the front, in order
				for j := len(got) - 1; j >= i; j-- {
					c.mem.pushFront(qentry{m: got[j]})
					got[j] = nil
				}
				break
			}
			got[i] = nil
			if eff != nil {
				if reason := eff.refuse(m, now); reason != "" {
					dead = append(dead, deadItem{m, reason})
					continue
				}
			}
			if sampled > 0 && rand.IntN(100) > int(sampled) {
				if c.dlog != nil {
					if seq, ok := c.dlog.finishedLocked(m); ok {
						sampledOut = append(sampledOut, seq)
					}
				}
				continue // sampling consumes the message (§5.6)
			}
			m.Attempts++
			if !c.inFlight.add(m, cl.id, now, cl.msgTimeout) {
				c.log().Warn("dropping duplicate message already in flight", "id", string(m.ID[:]))
				continue
			}
			if c.dlog != nil && c.dlog.persist {
				if seq, ok := seqOf(m.ID); ok {
					delivered = append(delivered, store.Delivery{Seq: seq, Attempts: m.Attempts})
				}
			}
			n++
			more = emit(m)
		}
	}
	if n > 0 {
		cl.inFlightCount.Add(int64(n))
		c.pool.noteInFlight(c.inFlight.len())
		c.watchLocked()
	} else {
		// still ready, nothing to send: wait for the next put
		cl.pumpRunning = false
		c.setWaitingLocked(cl, true)
	}
	c.signalRefillLocked()
	c.mu.Unlock()
	for _, seq := range sampledOut {
		c.dlog.dt.journal.Finish(c.name, seq)
	}
	if len(delivered) > 0 {
		c.dlog.dt.journal.Deliver(c.name, delivered)
	}
	c.disposeDead(dead, eff)
	return n
}

// pumpDoneLocked marks cl's pump as stopped. Messages it was woken for and
// can no longer take go to the next waiting consumer.
func (c *Channel) pumpDoneLocked(cl *client) {
	if cl.pumpRunning {
		cl.pumpRunning = false
		c.active--
	}
	if c.mem.len() > 0 {
		c.wakeWaitersLocked(c.mem.len())
	}
}

// pumpFailed is called by a pump that could not write (the connection is
// gone).
func (c *Channel) pumpFailed(cl *client) {
	c.mu.Lock()
	c.pumpDoneLocked(cl)
	c.mu.Unlock()
}

// finish completes message id for cl (FIN).
func (c *Channel) finish(cl *client, id protocol.MessageID) error {
	c.mu.Lock()
	m, err := c.inFlight.remove(id, cl.id)
	var seq uint64
	var ts int64
	journal := false
	if err == nil {
		cl.inFlightCount.Add(-1)
		ts = m.Timestamp
		if c.dlog != nil {
			seq, journal = c.dlog.finishedLocked(m)
		}
		// A finished message's struct is not reused: a message being
		// dead-lettered (disposeDead, without the channel's lock) may
		// still be read after a late FIN of it (race detector, 2026-12-04).
	}
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if journal {
		c.dlog.dt.journal.Finish(c.name, seq)
	}
	if c.topic != nil && c.topic.deadLetterTarget.Load() {
		c.nsqd.deadLetters.consumed(c.topicName, id)
	}
	if c.e2e != nil {
		now := time.Now()
		c.e2e.Insert(float64(now.UnixNano()-ts), now)
	}
	return nil
}

// requeue puts message id back (REQ): at once, or deferred by delay.
func (c *Channel) requeue(cl *client, id protocol.MessageID, delay time.Duration) error {
	var overflow *Message
	c.mu.Lock()
	m, err := c.inFlight.lookup(id, cl.id)
	if err == nil && delay == 0 && c.exiting {
		err = errExiting
	}
	if err != nil {
		c.mu.Unlock()
		return err
	}
	c.inFlight.unlink(m)
	cl.inFlightCount.Add(-1)
	c.requeueCount.Add(1)
	if eff := c.eff.Load(); eff != nil {
		if reason := eff.refuse(m, time.Now().UnixNano()); reason != "" {
			c.mu.Unlock()
			c.disposeDead([]deadItem{{m, reason}}, eff)
			return nil
		}
	}
	var until int64
	if delay > 0 {
		until = time.Now().UnixNano() + int64(delay)
		c.deferLocked(m, until)
	} else {
		overflow = c.requeueLocked(m)
	}
	var note requeueNote
	journal := false
	if c.dlog != nil {
		note, journal = c.dlog.requeuedLocked(m, until)
	}
	c.mu.Unlock()
	if journal {
		c.journalRequeues([]requeueNote{note})
	}
	if overflow != nil {
		return c.backend.put([]*Message{overflow})
	}
	return nil
}

// touch resets the timeout of message id (TOUCH).
func (c *Channel) touch(cl *client, id protocol.MessageID) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inFlight.touch(id, cl.id, time.Now().UnixNano(), cl.msgTimeout, c.nsqd.opts.MaxMsgTimeout)
}

// processDeadlines requeues timed-out in-flight messages and releases due
// deferred ones. It reports whether anything happened.
func (c *Channel) processDeadlines(now int64) bool {
	var expired, due, overflow []*Message
	c.mu.Lock()
	if c.exiting {
		c.mu.Unlock()
		return false
	}
	expired = c.inFlight.popExpired(now, expired)
	due = c.deferred.popDue(now, due)
	var notes []requeueNote
	eff := c.eff.Load()
	var dead []deadItem
	for _, m := range expired {
		if cl, ok := c.clients[m.clientID]; ok {
			cl.inFlightCount.Add(-1)
			c.kickLocked(cl)
		}
		if eff != nil {
			if reason := eff.refuse(m, now); reason != "" {
				dead = append(dead, deadItem{m, reason})
				continue
			}
		}
		if c.dlog != nil {
			if note, ok := c.dlog.requeuedLocked(m, 0); ok {
				notes = append(notes, note)
			}
		}
		if o := c.requeueLocked(m); o != nil {
			overflow = append(overflow, o)
		}
	}
	for _, m := range due {
		if eff != nil {
			if reason := eff.refuse(m, now); reason != "" {
				dead = append(dead, deadItem{m, reason})
				continue
			}
		}
		if o := c.requeueLocked(m); o != nil {
			overflow = append(overflow, o)
		}
	}
	c.mu.Unlock()
	if len(notes) > 0 {
		c.journalRequeues(notes)
	}
	c.disposeDead(dead, eff)
	c.timeoutCount.Add(uint64(len(expired)))
	if len(overflow) > 0 {
		if err := c.backend.put(overflow); err != nil {
			c.log().Error("requeue to disk failed", "err", err)
		}
	}
	return len(expired)+len(due) > 0
}

// setPaused pauses or resumes delivery.
func (c *Channel) setPaused(paused bool) {
	c.mu.Lock()
	c.paused = paused
	if !paused {
		c.kickAllLocked()
	}
	c.mu.Unlock()
}

// setStandby stops (on) or resumes delivery for a replicated topic whose
// group this node stops or starts leading.
func (c *Channel) setStandby(on bool) {
	c.mu.Lock()
	c.standby = on
	if !on {
		c.kickAllLocked()
		c.signalRefillLocked()
	}
	c.mu.Unlock()
}

func (c *Channel) isPaused() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.paused
}

// empty discards every queued, in-flight and deferred message (§5.9).
func (c *Channel) empty() error {
	if c.dlog != nil {
		return c.emptyDurable()
	}
	c.mu.Lock()
	c.emptyGen.Add(1)
	c.mem = msgQueue{}
	c.inFlight = newInFlight()
	c.deferred = nil
	c.diskDefer = nil
	for _, cl := range c.clients {
		cl.inFlightCount.Store(0)
	}
	c.kickAllLocked()
	c.mu.Unlock()
	if c.backend != nil {
		err := c.backend.empty()
		c.emptyGen.Add(1)
		if err != nil {
			return err
		}
	}
	return nil
}

// close stops the channel. With deleted false it flushes memory, in-flight and
// deferred messages to disk first (§6.4); with deleted true it discards
// everything and removes the disk files. Consumers are disconnected either
// way.
func (c *Channel) close(deleted bool) error {
	if !c.markExiting(false) {
		return errExiting
	}
	return c.shutdown(deleted)
}

// markExiting starts closing the channel: from now on puts fail and
// subscriptions are refused. With onlyIfUnused it does so only when no
// consumer is subscribed (ephemeral cleanup racing a new SUB). It reports
// whether this call marked it.
func (c *Channel) markExiting(onlyIfUnused bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.exiting || (onlyIfUnused && len(c.clients) > 0) {
		return false
	}
	c.exiting = true
	return true
}

func (c *Channel) isExiting() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.exiting
}

// shutdown finishes closing a channel marked exiting.
func (c *Channel) shutdown(deleted bool) error {
	c.mu.Lock()
	clients := make([]*client, 0, len(c.clients))
	for _, cl := range c.clients {
		clients = append(clients, cl)
	}
	c.mu.Unlock()
	for _, cl := range clients {
		cl.closeConn()
	}
	close(c.exitCh)
	c.wg.Wait() // refiller and pumps are done
	if c.dlog != nil {
		return c.closeDurable(deleted)
	}
	if c.backend == nil {
		return nil
	}
	if deleted {
		c.mu.Lock()
		c.mem, c.inFlight, c.deferred = msgQueue{}, newInFlight(), nil
		c.mu.Unlock()
		return c.backend.delete()
	}
	c.mu.Lock()
	if c.nsqd.opts.KeepDeferred {
		for _, m := range c.deferred {
			c.diskDefer.noteDeferred(m, m.deadline) // delivered at its deadline after a restart
		}
	}
	pending := c.mem.drain()
	pending = append(pending, c.inFlight.drain()...)
	pending = append(pending, c.deferred.drain()...)
	deferrals := c.diskDefer
	c.mu.Unlock()
	c.nsqd.keepDeferrals(c.topicName+":"+c.name, deferrals)
	err := c.backend.put(pending)
	if cerr := c.backend.close(); err == nil {
		err = cerr
	}
	return err
}
