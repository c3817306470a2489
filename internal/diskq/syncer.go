package diskq

import (
	"sync"
	"time"
)

// Syncer syncs every queue that changed within Timeout of its first
// change since its last sync: go-diskqueue's --sync-timeout, without a
// ticker per queue. It holds the changed queues in arrival order (one
// timeout for all, so the first in line is always due first) and runs a
// timer only while the line is not empty: with nothing to sync it costs
// no goroutine and no timer.
type Syncer struct {
	timeout time.Duration

	mu    sync.Mutex
	line  []syncItem
	armed bool
	timer *time.Timer
}

type syncItem struct {
	q   *Queue
	due time.Time
}

// NewSyncer returns a Syncer for --sync-timeout timeout.
func NewSyncer(timeout time.Duration) *Syncer {
	if timeout <= 0 {
		timeout = time.Millisecond
	}
	return &Syncer{timeout: timeout}
}

// add queues q to be synced; the caller holds q.mu and has set
// q.syncQueued.
func (s *Syncer) add(q *Queue) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.line = append(s.line, syncItem{q: q, due: time.Now().Add(s.timeout)})
	if !s.armed {
		s.armed = true
		if s.timer == nil {
			s.timer = time.AfterFunc(s.timeout, s.fire)
		} else {
			s.timer.Reset(s.timeout)
		}
	}
}

// fire syncs the queues that are due and sets the timer for the next.
func (s *Syncer) fire() {
	now := time.Now()
	s.mu.Lock()
	i := 0
	for i < len(s.line) && !s.line[i].due.After(now) {
		i++
	}
	due := make([]*Queue, i)
	for k := range i {
		due[k] = s.line[k].q
	}
	s.line = append(s.line[:0], s.line[i:]...)
	if len(s.line) == 0 {
		s.armed = false
		if cap(s.line) > 1024 {
			s.line = nil
		}
	} else {
		s.timer.Reset(s.line[0].due.Sub(now))
	}
	s.mu.Unlock()
	for _, q := range due {
		q.timedSync()
	}
}
