package store

import (
	"sync"
	"sync/atomic"
	"time"
)

// DefaultJournalInterval is how often cursor journals are written and synced.
const DefaultJournalInterval = 100 * time.Millisecond

// Committer makes appends durable in groups: while one round of writes and
// syncs runs, the next round collects every append of every log, and then
// covers them all with one write and one fdatasync per log. It also writes
// and syncs the cursor journals every journal interval. One per node.
type Committer struct {
	mu       sync.Mutex // guards open, dirty, journals, stopped and every Log's pending
	open     *Round
	want     int // while gathering: the appends the open round waits for
	dirty    []*Log
	journals map[*Journal]struct{} // journals with changes not yet written
	stopped  bool

	interval time.Duration
	wake     chan struct{}
	stop     chan struct{}
	done     chan struct{}

	// rounds with notices go from the committer to the notifier, which
	// tells their Notifiers while the committer starts the next round;
	// their notice slices come back through spareNotices
	notify       chan *Round
	notifyDone   chan struct{}
	spareNotices chan []notice

	syncs        atomic.Uint64
	bytesWritten atomic.Uint64
	wakeups      atomic.Uint64 // times an Append woke the committer (tests)
	rounds       atomic.Uint64 // rounds committed (tests)
}

// Round is one group commit. Wait for it with Wait.
type Round struct {
	appends int // Append calls in the round, guarded by Committer.mu
	done    chan struct{}
	errs    map[*Log]error // written before done is closed
	notices []notice       // AppendNotify calls in order; guarded by Committer.mu while open
}

// Notifier is told the outcome of an append made with AppendNotify.
type Notifier interface {
	// Committed is called once per AppendNotify, with nil once the
	// entries are on stable storage or with the error that kept them
	// from it. Every call is made on the committer's notifier goroutine,
	// in the order of the appends (a round's after the previous round's),
	// while the committer goes on with the next round; it must not block.
	Committed(err error)
}

// notice is one AppendNotify waiting for its round.
type notice struct {
	to Notifier
	l  *Log
}

func newRound() *Round { return &Round{done: make(chan struct{})} }

// Wait blocks until the round is committed and returns l's result.
func (r *Round) Wait(l *Log) error {
	<-r.done
	return r.errs[l]
}

// NewCommitter starts a committer. journalInterval bounds how long a cursor
// change (FIN, requeue) stays only in memory; 0 means DefaultJournalInterval.
func NewCommitter(journalInterval time.Duration) *Committer {
	if journalInterval <= 0 {
		journalInterval = DefaultJournalInterval
	}
	c := &Committer{
		open:     newRound(),
		journals: make(map[*Journal]struct{}),
		interval: journalInterval,
		wake:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),

		notify:       make(chan *Round, 2),
		notifyDone:   make(chan struct{}),
		spareNotices: make(chan []notice, 2),
	}
	go c.run()
	go c.notifier()
	return c
}

// notifier tells each round's Notifiers its outcome, round after round,
// until the committer closes notify.
func (c *Committer) notifier() {
	defer close(c.notifyDone)
	for r := range c.notify {
		for _, n := range r.notices {
			n.to.Committed(r.errs[n.l])
		}
		ns := r.notices
		clear(ns)
		r.notices = nil
		if cap(ns) <= 4096 {
			select {
			case c.spareNotices <- ns[:0]:
			default:
			}
		}
	}
}

// Append queues ents for l in the open round and returns the round. It
// refuses, queuing none of ents, an entry whose message is larger than the
// log's MaxRecordBytes (with the record overhead) or whose Packed does not
// hold Count messages.
func (c *Committer) Append(l *Log, ents []Entry) (*Round, error) {
	return c.append(l, ents, nil)
}

// AppendNotify is Append for a caller that does not wait: instead, once
// the round is committed, n.Committed is called with l's result (see
// Notifier). An error returned here means that nothing was queued and n
// will not be called.
func (c *Committer) AppendNotify(l *Log, ents []Entry, n Notifier) error {
	_, err := c.append(l, ents, n)
	return err
}

func (c *Committer) append(l *Log, ents []Entry, n Notifier) (*Round, error) {
	// entries were not checked. A message over MaxRecordBytes was
	// written and acknowledged, then refused by every read and cut off at
	// the next start as implausible; a malformed pack panicked in the
	// committer's goroutine, taking the process down.
	for i := range ents {
		if err := l.checkEntry(&ents[i]); err != nil {
			return nil, err
		}
	}
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	l.pending = append(l.pending, ents...)
	if !l.queued {
		l.queued = true
		c.dirty = append(c.dirty, l)
	}
	r := c.open
	r.appends++
	if n != nil {
		r.notices = append(r.notices, notice{to: n, l: l})
	}
	// The committer needs waking by the first append of a round, and while
	// it gathers (see gather) by the append that fills the round: not by
	// every append, which with 64 producers woke it ~60 times per round
	// for nothing.
	signal := r.appends == 1 || (c.want > 0 && r.appends >= c.want)
	c.mu.Unlock()
	if signal {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	return r, nil
}

// AddJournal has the committer write and sync j's changes within a journal
// interval of each change, until RemoveJournal. A journal without changes
// costs the committer nothing: no timer runs while no journal has any.
func (c *Committer) AddJournal(j *Journal) {
	j.mu.Lock()
	j.onDirty = c.journalDirty
	pending := len(j.buf) > 0 || len(j.fins) > 0 || len(j.delivs) > 0
	j.mu.Unlock()
	if pending {
		c.journalDirty(j)
	}
}

// RemoveJournal stops flushing j (before closing it).
func (c *Committer) RemoveJournal(j *Journal) {
	j.mu.Lock()
	j.onDirty = nil
	j.mu.Unlock()
	c.mu.Lock()
	delete(c.journals, j)
	c.mu.Unlock()
}

// journalDirty is called by a journal (under its lock) at its first change
// since its last flush.
func (c *Committer) journalDirty(j *Journal) {
	c.mu.Lock()
	first := len(c.journals) == 0
	c.journals[j] = struct{}{}
	c.mu.Unlock()
	if first {
		select {
		case c.wake <- struct{}{}: // arms the journal timer
		default:
		}
	}
}

// Syncs returns the fdatasync calls made for log rounds and journals.
func (c *Committer) Syncs() uint64 { return c.syncs.Load() }

// BytesWritten returns the bytes written to logs and journals.
func (c *Committer) BytesWritten() uint64 { return c.bytesWritten.Load() }

// Close commits what is queued, flushes the journals and stops. Appends
// after Close fail with ErrClosed.
func (c *Committer) Close() {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		<-c.done
		return
	}
	c.stopped = true
	c.mu.Unlock()
	close(c.stop)
	<-c.done
}

func (c *Committer) run() {
	defer close(c.done)
	defer func() {
		// every round has been handed over: let the notifier finish them
		close(c.notify)
		<-c.notifyDone
	}()
	journalTimer := time.NewTimer(time.Hour)
	journalTimer.Stop()
	var journalC <-chan time.Time // set while the timer runs
	var batches [][]Entry
	var peakAppends float64            // decaying peak of appends per round: how many producers wait on each sync
	var lastSync time.Duration         // how long the previous round took
	gather := time.NewTimer(time.Hour) // bounds the wait for a round to fill
	gather.Stop()
	for {
		stopping, flushNow := false, false
		select {
		case <-c.wake:
			c.wakeups.Add(1)
		case <-journalC:
			journalC, flushNow = nil, true
		case <-c.stop:
			stopping = true
		}
		if !stopping && peakAppends > 1 {
			stopping = c.gather(gather, int(peakAppends), min(lastSync, maxGather))
		}
		started := time.Now()
		// the open round, its logs and their appends are taken in one go:
		// an append made after this belongs to the next round entirely
		c.mu.Lock()
		r, logs := c.open, c.dirty
		c.open, c.dirty = newRound(), nil
		select {
		case ns := <-c.spareNotices:
			c.open.notices = ns
		default:
		}
		batches = batches[:0]
		for _, l := range logs {
			batches = append(batches, l.pending)
			l.pending = l.spare[:0]
			l.spare = nil
			l.queued = false
		}
		c.mu.Unlock()
		if len(logs) > 0 {
			r.errs = make(map[*Log]error, len(logs))
		}
		for i, l := range logs {
			n, err := l.commit(batches[i])
			clear(batches[i])
			if err != nil {
				r.errs[l] = err
			} else {
				c.syncs.Add(1)
				c.bytesWritten.Add(uint64(n))
			}
		}
		c.mu.Lock()
		for i, l := range logs {
			if l.spare == nil && cap(batches[i]) <= 4096 {
				l.spare = batches[i][:0]
			}
		}
		clear(batches)
		c.mu.Unlock()
		close(r.done)
		if len(r.notices) > 0 {
			c.notify <- r
		}
		if len(logs) > 0 {
			lastSync = time.Since(started)
			c.rounds.Add(1)
			// The producers to wait for next: this round's, about to come
			// back, and those that appended while it was written. Counting
			// only a round's own appends, 64 producers settled into two
			// cohorts of ~32 taking turns (measured: 33 msgs per fsync on
			// durable-pub64): each round filled up to the previous one's
			// count with the cohort that had queued during its sync and
			// never waited for the other.
			c.mu.Lock()
			waiting := r.appends + c.open.appends
			c.mu.Unlock()
			peakAppends = max(float64(waiting), peakAppends*0.9)
		}
		if stopping || flushNow {
			c.flushJournals()
		}
		if !stopping && journalC == nil && c.hasDirtyJournals() {
			// a journal's changes are written one interval after the first
			// of them
			journalTimer.Reset(c.interval)
			journalC = journalTimer.C
		}

		if stopping {
			return
		}
	}
}

// maxGather bounds how long a round waits for more appends.
const maxGather = time.Millisecond

// gather lets a round fill before it is written: when the previous round
// covered several appends (many producers waiting on each sync), the next
// one waits, at most wait (half a sync), until as many appends arrived.
// The producers released by the previous round are then covered by one
// sync instead of trickling into many. A lone producer (previous round of
// one append) never waits, so its latency stays one sync. It reports
// whether the committer is stopping.
func (c *Committer) gather(t *time.Timer, want int, wait time.Duration) bool {
	if wait <= 0 {
		return false
	}
	t.Reset(wait)
	defer func() {
		t.Stop()
		c.mu.Lock()
		c.want = 0
		c.mu.Unlock()
	}()
	for {
		c.mu.Lock()
		c.want = want
		n := c.open.appends
		c.mu.Unlock()
		if n >= want {
			return false
		}
		select {
		case <-c.wake:
			c.wakeups.Add(1)
		case <-t.C:
			return false
		case <-c.stop:
			return true
		}
	}
}

func (c *Committer) hasDirtyJournals() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.journals) > 0
}

func (c *Committer) flushJournals() {
	c.mu.Lock()
	js := make([]*Journal, 0, len(c.journals))
	for j := range c.journals {
		js = append(js, j)
	}
	clear(c.journals)
	c.mu.Unlock()
	for _, j := range js {
		n, synced, _ := j.Flush()
		if synced {
			c.syncs.Add(1)
			c.bytesWritten.Add(uint64(n))
		}
	}
}
