package diskq

import (
	"sync"
	"time"
)

// Syncer syncs every queue that changed within Timeout of its first
// change since its last sync: go-diskqueue's --sync-timeout, without a
// ticker per queue. It also writes out, within FlushDelay, the records a
// queue with Options.WriteBuffer holds in memory once puts stop. Each of
// the two holds its queues in arrival order (one delay for all, so the
// first in line is always due first) and runs a timer only while its line
// is not empty: with nothing to sync or flush it costs no goroutine and
// no timer.
type Syncer struct {
	sync  line // --sync-timeout: sync (fsync, metadata)
	flush line // FlushDelay: write buffered records
}

// FlushDelay is the longest a record put into a queue with a write buffer
// waits in memory before it is written to its data file (unless the
// --sync-timeout is shorter: then that).
const FlushDelay = 10 * time.Millisecond

// line is a queue of queues due one fixed delay after they were added.
type line struct {
	delay time.Duration
	do    func(*Queue) // called without the line's lock

	mu    sync.Mutex
	items []lineItem
	armed bool
	timer *time.Timer
}

type lineItem struct {
	q   *Queue
	due time.Time
}

// NewSyncer returns a Syncer for --sync-timeout timeout.
func NewSyncer(timeout time.Duration) *Syncer {
	if timeout <= 0 {
		timeout = time.Millisecond
	}
	s := &Syncer{}
	s.sync = line{delay: timeout, do: (*Queue).timedSync}
	s.flush = line{delay: min(timeout, FlushDelay), do: (*Queue).timedFlush}
	return s
}

// add queues q to be synced; the caller holds q.mu and has set
// q.syncQueued.
func (s *Syncer) add(q *Queue) { s.sync.add(q) }

// addFlush queues q to have its buffered records written; the caller
// holds q.mu and has set q.flushQueued.
func (s *Syncer) addFlush(q *Queue) { s.flush.add(q) }

func (l *line) add(q *Queue) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.items = append(l.items, lineItem{q: q, due: time.Now().Add(l.delay)})
	if !l.armed {
		l.armed = true
		if l.timer == nil {
			l.timer = time.AfterFunc(l.delay, l.fire)
		} else {
			l.timer.Reset(l.delay)
		}
	}
}

// fire serves the queues that are due and sets the timer for the next.
func (l *line) fire() {
	now := time.Now()
	l.mu.Lock()
	i := 0
	for i < len(l.items) && !l.items[i].due.After(now) {
		i++
	}
	due := make([]*Queue, i)
	for k := range i {
		due[k] = l.items[k].q
	}
	l.items = append(l.items[:0], l.items[i:]...)
	if len(l.items) == 0 {
		l.armed = false
		if cap(l.items) > 1024 {
			l.items = nil
		}
	} else {
		l.timer.Reset(l.items[0].due.Sub(now))
	}
	l.mu.Unlock()
	for _, q := range due {
		l.do(q)
	}
}
