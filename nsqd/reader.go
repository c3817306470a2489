package nsqd

import (
	"errors"
	"io"
	"net"
	"os"
	"time"
)

// The reader goroutine's life: how a connection's commands are read
// between idle spells, and how an idle connection gives its goroutine up.

// serve runs the connection's commands on the calling goroutine, which it
// ends: when the connection ends it cleans up (end); when the connection
// is idle it parks it (shed) and returns. A connection is idle when its
// goroutine has waited idleShedAfter between commands (a read deadline,
// armed only on a goroutine that has run more than NOPs), or at once when
// a goroutine the idle poller started has answered what there was to read
// with NOPs only.
//
// Why (issue 12, 4 KiB per idle connection): a goroutine costs at least a
// 2 KiB stack and a g of about 0.5 KiB, and its stack grows with the
// deepest call it has made (publishing, SUB, a TLS handshake) and at these
// sizes is never shrunk again; profiled before this, an idle consumer's
// reader held a 4 KiB stack, over half of its 7.6 KB. Parked in the idle
// poller (Linux) an idle connection has no goroutine at all. Where there
// is no poller it goes on waiting on a fresh goroutine, which stays at
// the smallest stack because serve, ioLoop, readLine and fill keep their
// frames small and everything else (executing a command, cleaning up,
// logging) happens in functions they call. The cost is a goroutine start
// and a re-grown stack per idle spell of a busy connection, and the
// poller's wake-up before the first command after one.
func (c *client) serve() {
	if err := c.ioLoop(); err == errShed || err == errPark {
		c.shed()
	} else {
		c.end(err)
	}
}

// shed parks the idle connection in the idle poller, which starts a new
// reader goroutine when there is something to read other than NOPs, or
// where there is no poller hands it to a fresh goroutine at once. Either
// way the calling goroutine then ends.
//
//go:noinline
func (c *client) shed() {
	c.rd.release()
	c.dirty = false
	if c.nsqd.idle.park(c) {
		return // c belongs to the poller now
	}
	if c.parkable() {
		// closed (the next read fails and ends the connection), or the
		// kernel refused: try again after the next idle spell
		c.dirty = true
	}
	go c.serve() // connWG still counts the connection
}

// parkable reports whether the reader may park the connection in the idle
// poller when it is between commands: a socket of its own, with no TLS or
// compression layer holding state above it.
func (c *client) parkable() bool {
	return c.fd >= 0 && c.rd.src == io.Reader(c.conn) && !c.closed.Load()
}

// end cleans up after the connection.
//
//go:noinline
func (c *client) end(err error) {
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		c.nsqd.logger.Debug("client closed", "client", c.remoteAddr(), "err", err)
	}
	// a durable publish appended before the end is committed, and its
	// reply written if the peer is still there, before the connection
	// counts as gone (Exit closes the logs once every connection is)
	c.awaitReplies()
	c.closeConn()
	c.nsqd.connTimers.stop(c)
	if ch := c.subscribedChannel(); ch != nil {
		ch.removeClient(c)
	}
	c.nsqd.removeClient(c)
	c.rd.buf = nil
	c.nsqd.connWG.Done()
}

// errShed and errPark end ioLoop so that serve can park the idle
// connection or move it to a fresh goroutine: errShed when it has been
// idle for idleShedAfter, errPark when a goroutine the poller started has
// answered what there was to read with nothing but NOPs.
var (
	errShed = errors.New("idle: shed the reader goroutine")
	errPark = errors.New("idle: park between heartbeats")
)

// idleShedAfter is how long a connection waits between commands before its
// reader goroutine, if it has run more than NOPs, is shed (see serve). Long
// enough that a connection busy with round trips never pays for it; short
// enough that a burst of new connections (each runs IDENTIFY, SUB and RDY
// on a goroutine whose stack grows to several KiB) does not pile up
// goroutines: 5,000 connections a second hold about 2,500.
const idleShedAfter = 500 * time.Millisecond

// beforeRead implements readHook: a kick owed to the channel is given
// before blocking, and the wait is timed for connTimers and, between
// commands, for shedding the goroutine. A goroutine the idle poller
// started that has run only NOPs parks the connection again rather than
// wait in Read: an idle consumer's heartbeat replies wake it once per
// heartbeat interval, and it holds no goroutine in between.
func (c *client) beforeRead(atLineStart bool) error {
	if c.pendingKick && c.channel != nil {
		c.pendingKick = false
		c.channel.kick(c)
	}
	now := time.Now().UnixNano()
	if atLineStart && c.woken {
		c.woken = false // the first read after a wake-up has data waiting
	} else if atLineStart && !c.dirty && c.parkable() {
		if !c.keepSince {
			c.readSince.Store(now)
		}
		c.keepSince = true // connTimers times the wait while parked
		return errPark
	}
	if atLineStart && c.dirty && c.rd.src == io.Reader(c.conn) {
		// A read deadline, re-armed only when half of it has gone by: a
		// busy connection pays for it about once per second, not per read.
		// A TLS or compressed connection is not shed (its reader keeps
		// state in the stream layers); it may cost more while idle.
		if c.shedAt == 0 || c.shedAt-now < int64(idleShedAfter/2) {
			c.shedAt = now + int64(idleShedAfter)
			c.conn.SetReadDeadline(time.Unix(0, c.shedAt))
		}
	}
	if c.keepSince {
		c.keepSince = false // the wait goes on from the previous goroutine
		return nil
	}
	c.readSince.Store(now)
	return nil
}

// clearShedDeadline removes the read deadline armed to shed the reader
// goroutine; reader goroutine only.
func (c *client) clearShedDeadline() {
	if c.shedAt != 0 {
		c.shedAt = 0
		c.conn.SetReadDeadline(time.Time{})
	}
}

// afterRead implements readHook.
func (c *client) afterRead(atLineStart bool, n int, err error) error {
	if n > 0 || c.shedAt == 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		c.readSince.Store(0)
		return err
	}
	// the shed deadline passed
	c.clearShedDeadline()
	if !atLineStart {
		c.readSince.Store(0)
		return nil // a slow sender in the middle of a command: read on
	}
	c.keepSince = true // connTimers keeps timing this wait
	return errShed
}
