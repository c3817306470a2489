package nsqd

import (
	"context"
	"sync"
	"time"
)

// Resolution and span of the connection timer wheel.
const (
	// connTimerTick is how late a heartbeat or a read timeout may be.
	connTimerTick = 10 * time.Millisecond
	// connTimerSlots spans 82 s at connTimerTick: the default heartbeat
	// (30 s) and read timeout (60 s) fit in one turn; longer ones lap.
	connTimerSlots = 8192
)

// connTimers sends every connection's heartbeats and closes the connections
// whose read has waited two heartbeat intervals (NSQ's client timeout),
// from one goroutine and one timer wheel. A connection costs a few words in
// its client and no runtime timer or goroutine of its own; a busy reader
// pays two atomic stores per read (readSince) where it used to re-arm a
// read deadline.
//
// Each connection is visited at its next heartbeat or, if earlier, when its
// current read would time out; a visit sends the heartbeat that is due and
// schedules the next visit. The heartbeat is written right there when that
// cannot block (client.tryHeartbeat), else on a goroutine of its own: a
// peer that does not read blocks that write for up to a heartbeat interval
// (the write deadline) and must not hold up the wheel.
type connTimers struct {
	mu    sync.Mutex // guards everything below and the timer fields of every client
	wheel *timerWheel[client]
	armed int64         // when run next looks at the wheel (unix ns)
	wake  chan struct{} // run's wake-up when something is due before armed
	due   []*client     // run's scratch
}

func newConnTimers(now time.Time) *connTimers {
	return &connTimers{
		wheel: newTimerWheel(int64(connTimerTick), connTimerSlots, now.UnixNano(),
			func(c *client) *wheelLink[client] { return &c.timerLink }),
		armed: now.UnixNano(),
		wake:  make(chan struct{}, 1),
	}
}

// start (re)starts c's heartbeats at its current interval, the first one
// interval from now; a connection without heartbeats has no timers (and no
// read timeout, as in NSQ).
func (t *connTimers) start(c *client) {
	hb := c.heartbeatNs.Load()
	now := time.Now().UnixNano()
	t.mu.Lock()
	if hb <= 0 || c.closed.Load() {
		t.wheel.remove(c)
		t.mu.Unlock()
		return
	}
	c.nextBeat = now + hb
	t.wheel.schedule(c, c.nextBeat)
	early := c.nextBeat < t.armed
	t.mu.Unlock()
	if early {
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
}

// stop removes c's timers.
func (t *connTimers) stop(c *client) {
	t.mu.Lock()
	t.wheel.remove(c)
	t.mu.Unlock()
}

// run drives the wheel until ctx ends.
func (t *connTimers) run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var beats, expired []*client
	for {
		now := time.Now().UnixNano()
		t.mu.Lock()
		t.due = t.wheel.advance(now, t.due[:0])
		for _, c := range t.due {
			switch c.visitTimersLocked(now, t.wheel) {
			case timerBeat:
				beats = append(beats, c)
			case timerExpired:
				expired = append(expired, c)
			}
		}
		clear(t.due)
		next, ok := t.wheel.nextTick()
		if !ok {
			next = now + int64(time.Hour)
		}
		t.armed = next
		t.mu.Unlock()

		for _, c := range beats {
			if !c.tryHeartbeat() {
				go c.sendHeartbeat()
			}
		}
		for _, c := range expired {
			// Close waits for the reader to let go of the socket: not here.
			go c.closeConn()
		}
		clear(beats)
		clear(expired)
		beats, expired = beats[:0], expired[:0]

		timer.Reset(time.Duration(next - time.Now().UnixNano()))
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-t.wake:
		}
	}
}

// What a visit of the wheel asks for.
const (
	timerNothing = iota
	timerBeat
	timerExpired
)

// visitTimersLocked is the wheel's visit of c at now: it reports whether a
// heartbeat is due or the current read has timed out, and schedules the
// next visit unless the connection is done; connTimers.mu held.
func (c *client) visitTimersLocked(now int64, w *timerWheel[client]) int {
	hb := c.heartbeatNs.Load()
	if hb <= 0 || c.closed.Load() {
		return timerNothing
	}
	since := c.readSince.Load()
	if since != 0 && now-since >= 2*hb {
		return timerExpired
	}
	action := timerNothing
	if now >= c.nextBeat {
		c.nextBeat += hb
		if c.nextBeat <= now {
			c.nextBeat = now + hb // the wheel fell behind: no burst of beats
		}
		if c.beating.CompareAndSwap(false, true) { // else the last one is still being written
			action = timerBeat
		}
	}
	next := c.nextBeat
	if since != 0 {
		next = min(next, since+2*hb)
	}
	w.schedule(c, next)
	return action
}
