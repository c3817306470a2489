package lookupclient

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicemq/sluice/protocol"
)

// peer is the registration connection to one lookupd. Its goroutine (run)
// owns the connection; other goroutines only touch the queue and info.
type peer struct {
	addr   string
	cfg    *Config
	logger *slog.Logger
	cancel context.CancelFunc // stops run

	// info is the lookupd's last IDENTIFY reply (nil before the first).
	info atomic.Pointer[protocol.LookupIdentifyReply]

	// qmu guards queue: commands waiting to be sent, in order. wake has
	// capacity 1 and is signalled when queue becomes non-empty.
	qmu   sync.Mutex
	queue [][]byte
	wake  chan struct{}
}

func (p *peer) stop() { p.cancel() }

func (p *peer) enqueue(cmd []byte) {
	p.qmu.Lock()
	p.queue = append(p.queue, cmd)
	p.qmu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *peer) takeQueue() [][]byte {
	p.qmu.Lock()
	q := p.queue
	p.queue = nil
	p.qmu.Unlock()
	return q
}

// run connects, serves and reconnects until ctx is cancelled.
func (p *peer) run(ctx context.Context) {
	failures := 0
	for ctx.Err() == nil {
		conn, err := p.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			delay := p.backoff(failures)
			p.logger.Warn("LOOKUPD: connect failed", "err", err, "retry_in", delay)
			if !sleep(ctx, delay) {
				return
			}
			continue
		}
		p.logger.Info("LOOKUPD: connected and registered")
		connected := time.Now()
		err = p.serve(ctx, conn) // closes conn
		if ctx.Err() != nil {
			return
		}
		// Reconnect at once after a connection that lived for a while (a
		// restarted lookupd is re-registered as soon as it listens). A
		// short-lived one counts as a failure, so a lookupd that accepts,
		// answers IDENTIFY and drops at once is retried with growing
		// backoff, not every MinBackoff forever.
		if time.Since(connected) >= p.cfg.PingInterval {
			failures = 0
			p.logger.Warn("LOOKUPD: connection lost", "err", err)
			continue
		}
		failures++
		delay := p.backoff(failures)
		p.logger.Warn("LOOKUPD: connection lost", "err", err, "retry_in", delay)
		if !sleep(ctx, delay) {
			return
		}
	}
}

// backoff returns the delay after n consecutive failures: MinBackoff
// doubling per failure, capped at PingInterval, with jitter in [d/2, d].
func (p *peer) backoff(n int) time.Duration {
	d, limit := p.cfg.MinBackoff, p.cfg.PingInterval
	for i := 1; i < n && d < limit; i++ {
		if d > limit/2 { // doubling would pass the cap (or overflow)
			d = limit
			break
		}
		d *= 2
	}
	return jitter(min(d, limit))
}

func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// connectedConn closes its net.Conn when the peer's context is cancelled, so
// a blocked round trip ends at once on shutdown.
type connectedConn struct {
	net.Conn
	stopAfter func() bool
}

func (c *connectedConn) Close() error {
	c.stopAfter()
	return c.Conn.Close()
}

// connect runs the connect sequence (§7.3): dial, magic, IDENTIFY (reply
// stored), then the full re-registration from Snapshot. Commands queued
// before the snapshot is taken are dropped: the snapshot already covers them.
func (p *peer) connect(ctx context.Context) (net.Conn, error) {
	p.takeQueue()
	d := net.Dialer{Timeout: p.cfg.Timeout}
	raw, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", p.addr, err)
	}
	conn := &connectedConn{Conn: raw, stopAfter: context.AfterFunc(ctx, func() { raw.Close() })}

	body, err := json.Marshal(&p.cfg.Identify)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("encode IDENTIFY: %w", err)
	}
	msg := append([]byte(protocol.MagicV1), protocol.AppendLookupIdentify(nil, body)...)
	reply, err := p.roundTrip(conn, msg)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("IDENTIFY: %w", err)
	}
	var info protocol.LookupIdentifyReply
	if err := json.Unmarshal(reply, &info); err != nil {
		conn.Close()
		return nil, fmt.Errorf("IDENTIFY: decode reply %q: %w", reply, err)
	}
	p.info.Store(&info)
	p.logger.Info("LOOKUPD: identified", "broadcast_address", info.BroadcastAddress,
		"http_port", info.HTTPPort, "version", info.Version)

	if p.cfg.Snapshot != nil {
		for _, r := range p.cfg.Snapshot() {
			if _, err := p.roundTrip(conn, command(protocol.LookupCmdRegister, r.Topic, r.Channel)); err != nil {
				conn.Close()
				return nil, fmt.Errorf("re-register topic %q channel %q: %w", r.Topic, r.Channel, err)
			}
		}
	}
	return conn, nil
}

// maxPipelined is the most commands serve writes before reading their
// replies (their replies, a few bytes each, fit in the socket buffers, so
// lookupd never blocks writing them while serve is still writing).
const maxPipelined = 128

// reply is one reply (or read error) from the reader goroutine of serve.
type reply struct {
	data []byte
	err  error
}

// serve sends queued commands and PINGs until an error or ctx is done.
//
// While serving, a reader goroutine (owned by serve, which waits for it)
// reads every reply. lookupd never sends unsolicited data, so anything read
// while no request is outstanding, in particular EOF, means the connection
// is gone: serve returns at once and the peer reconnects, instead of
// noticing only at the next PING as the reference does.
func (p *peer) serve(ctx context.Context, conn net.Conn) error {
	replies := make(chan reply)
	stop := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			data, err := protocol.ReadLookupReply(conn, p.cfg.MaxReplySize)
			select {
			case replies <- reply{data, err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		close(stop)
		conn.Close() // unblocks the reader
		<-readerDone
	}()
	conn.SetReadDeadline(time.Time{}) // idle waits are unbounded; requests time out below

	ping := protocol.AppendLookupCommand(nil, protocol.LookupCmdPing)
	ticker := time.NewTicker(p.cfg.PingInterval)
	defer ticker.Stop()
	timer := time.NewTimer(p.cfg.Timeout)
	defer timer.Stop()
	request := func(cmd []byte) error {
		conn.SetWriteDeadline(time.Now().Add(p.cfg.Timeout))
		if _, err := conn.Write(cmd); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		timer.Reset(p.cfg.Timeout)
		select {
		case r := <-replies:
			if r.err != nil {
				return r.err
			}
			if protocol.IsLookupErrorReply(r.data) {
				return fmt.Errorf("lookupd replied %q", r.data)
			}
			return nil
		case <-timer.C:
			return fmt.Errorf("no reply within %v", p.cfg.Timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	var batch []byte
	pipeline := func(cmds [][]byte) error {
		batch = batch[:0]
		for _, cmd := range cmds {
			batch = append(batch, cmd...)
		}
		conn.SetWriteDeadline(time.Now().Add(p.cfg.Timeout))
		if _, err := conn.Write(batch); err != nil {
			return fmt.Errorf("send %q: write: %w", cmds[0][:len(cmds[0])-1], err)
		}
		for _, cmd := range cmds {
			timer.Reset(p.cfg.Timeout)
			select {
			case r := <-replies:
				if r.err != nil {
					return fmt.Errorf("send %q: %w", cmd[:len(cmd)-1], r.err)
				}
				if protocol.IsLookupErrorReply(r.data) {
					return fmt.Errorf("send %q: lookupd replied %q", cmd[:len(cmd)-1], r.data)
				}
			case <-timer.C:
				return fmt.Errorf("send %q: no reply within %v", cmd[:len(cmd)-1], p.cfg.Timeout)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case r := <-replies:
			if r.err != nil {
				return fmt.Errorf("connection closed by lookupd: %w", r.err)
			}
			return fmt.Errorf("unsolicited data from lookupd: %q", r.data)
		case <-p.wake:
			// Queued commands go out together, up to maxPipelined per
			// write, and their replies are then read in order: creating
			// topics and channels one after the other costs one write and
			// one wake-up per batch instead of per command.
			for q := p.takeQueue(); len(q) > 0; {
				n := min(len(q), maxPipelined)
				if err := pipeline(q[:n]); err != nil {
					return err
				}
				q = q[n:]
			}
		case <-ticker.C:
			if err := request(ping); err != nil {
				return fmt.Errorf("PING: %w", err)
			}
		}
	}
}

// roundTrip writes msg and reads one reply, each within Timeout. An error
// reply ("E_...") is returned as an error (lookupd closes after it).
func (p *peer) roundTrip(conn net.Conn, msg []byte) ([]byte, error) {
	conn.SetWriteDeadline(time.Now().Add(p.cfg.Timeout))
	if _, err := conn.Write(msg); err != nil {
		return nil, fmt.Errorf("write: %w", err)
	}
	conn.SetReadDeadline(time.Now().Add(p.cfg.Timeout))
	reply, err := protocol.ReadLookupReply(conn, p.cfg.MaxReplySize)
	if err != nil {
		return nil, err
	}
	if protocol.IsLookupErrorReply(reply) {
		return nil, fmt.Errorf("lookupd replied %q", reply)
	}
	return reply, nil
}
