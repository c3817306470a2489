//go:build linux

package nsqd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// idlePoller holds idle connections without a goroutine: a connection
// whose reader has nothing to do is parked here, in an epoll set of the
// poller's own, and its reader goroutine ends. An idle connection then
// costs its client, its socket and a map entry, not a goroutine (a 2 KiB
// stack at the very least, and a g).
//
// When a parked socket becomes readable the poller reads it itself
// (non-blocking, into the connection's 64-byte array): heartbeat replies,
// NOPs, are answered there and the connection stays parked, so an idle
// consumer costs one read per heartbeat interval and no goroutine;
// anything else, or the end of the stream, starts a reader goroutine with
// the bytes already in its buffer.
//
// Parking adds the socket to the set, edge-triggered: bytes that arrived
// between the reader's last read and the park are reported at once, and
// answering a NOP needs no epoll_ctl; a connection handed back to a reader
// leaves the set. Go's own poller keeps watching the socket for writes
// (heartbeats, messages) and for reads once a reader is back; the kernel
// allows an fd in several epoll sets. The poller's goroutine
// waits on the epoll descriptor through Go's poller too, so it holds no
// thread while nothing happens.
//
// Lock order: client.writeMu, then idlePoller.mu (closeConn, which may run
// under writeMu, unparks).
type idlePoller struct {
	epfd    int
	file    *os.File // epfd, registered with Go's poller; closing it stops run
	raw     syscall.RawConn
	nopOnly bool // NOPs may be answered by the poller (no TLS requirement)

	mu       sync.Mutex
	parked   map[int32]*client // by fd; guarded by mu
	stopping atomic.Bool       // set by stop before it closes file
	done     chan struct{}     // closed when run returns
}

// newIdlePoller opens the epoll set; the caller runs run and, at the end,
// stop. answerNOPs is false when a NOP must be refused on a connection
// without TLS (--tls-required): those go to the reader.
func newIdlePoller(answerNOPs bool) (*idlePoller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		return nil, fmt.Errorf("epoll fd non-blocking: %w", err)
	}
	file := os.NewFile(uintptr(epfd), "idle-connections-epoll")
	// Only a descriptor in Go's poller takes a deadline: run waits there.
	if err := file.SetReadDeadline(time.Time{}); err != nil {
		file.Close()
		return nil, fmt.Errorf("epoll fd not pollable: %w", err)
	}
	raw, err := file.SyscallConn()
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("epoll fd: %w", err)
	}
	return &idlePoller{epfd: epfd, file: file, raw: raw, nopOnly: answerNOPs,
		parked: make(map[int32]*client), done: make(chan struct{})}, nil
}

// pollFD returns the descriptor of a socket connection that can be
// parked, or -1.
func pollFD(conn any) int32 {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return -1
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1
	}
	fd := int32(-1)
	rc.Control(func(s uintptr) { fd = int32(s) })
	return fd
}

// park hands c's idle socket to the poller and reports true; the caller's
// goroutine must then leave c alone. It reports false when c cannot be
// parked (closed, or the kernel refused), and the caller keeps it.
func (p *idlePoller) park(c *client) bool {
	if p == nil || c.fd < 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.closed.Load() {
		return false // closeConn did not find it parked: the caller cleans up
	}
	if !p.armLocked(c.fd) {
		return false
	}
	p.parked[c.fd] = c
	return true
}

// epollET is EPOLLET as the uint32 of EpollEvent.Events (the syscall
// package declares it as a negative int).
const epollET = 1 << 31

// armLocked adds fd to the set; mu held. Edge-triggered: each arrival of
// bytes is reported once and the socket stays in the set, so answering a
// NOP costs no epoll_ctl; bytes already there are reported at once.
func (p *idlePoller) armLocked(fd int32) bool {
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | epollET, Fd: fd}
	err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	if errors.Is(err, syscall.EEXIST) { // cannot happen: taken out on every unpark and resume
		err = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_MOD, int(fd), &ev)
	}
	return err == nil
}

// disarmLocked takes fd out of the set; mu held.
func (p *idlePoller) disarmLocked(fd int32) {
	syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
}

// unpark takes c out of the poller if it is parked there, before its
// socket is closed, and reports whether it was: the caller then owes c a
// reader goroutine (to clean up).
func (p *idlePoller) unpark(c *client) bool {
	if p == nil || c.fd < 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.parked[c.fd] != c {
		return false
	}
	delete(p.parked, c.fd)
	p.disarmLocked(c.fd)
	return true
}

// run handles readiness reports until stop.
func (p *idlePoller) run() {
	defer close(p.done)
	events := make([]syscall.EpollEvent, 256)
	var ready []*client
	err := p.raw.Read(func(fd uintptr) bool {
		for {
			n, err := syscall.EpollWait(int(fd), events, 0)
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			if err != nil {
				panic(fmt.Sprintf("nsqd: epoll_wait on the idle set: %v", err)) // cannot happen on a valid set
			}
			if n == 0 {
				return false // wait until Go's poller reports the set readable
			}
			ready = p.handle(events[:n], ready[:0])
			for _, c := range ready {
				go c.serve() // connWG still counts the connection
			}
			clear(ready)
			if n < len(events) {
				return false
			}
		}
	})
	if err != nil && !p.stopping.Load() {
		panic(fmt.Sprintf("nsqd: waiting on the idle set: %v", err))
	}
}

// handle deals with readiness reports: each parked connection is read
// once; those that only sent NOPs stay parked, the others are taken out
// and appended to resume, which is returned.
func (p *idlePoller) handle(events []syscall.EpollEvent, resume []*client) []*client {
	now := time.Now().UnixNano()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ev := range events {
		c := p.parked[ev.Fd]
		if c == nil {
			continue // unparked since the report
		}
		if p.readParkedLocked(c, now) {
			continue
		}
		delete(p.parked, ev.Fd)
		p.disarmLocked(ev.Fd) // the reader takes over; no reports while it reads
		resume = append(resume, c)
	}
	return resume
}

// readParkedLocked reads what a parked socket has and reports whether the
// connection may stay parked: the reads brought only complete NOPs, or
// nothing (a report that went stale). Otherwise the bytes are left in the
// connection's buffer for its reader, which will see an end of stream or
// error itself. The socket cannot be closed meanwhile: closeConn unparks
// under mu first.
func (p *idlePoller) readParkedLocked(c *client, now int64) bool {
	r := &c.rd
	for {
		n, err := syscall.Read(int(c.fd), r.small[:])
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EAGAIN):
			return true
		case n > 0 && p.nopOnly && onlyNOPs(r.small[:n]):
			c.readSince.Store(now) // one wait ended, the next begins
			if n < len(r.small) {
				return true // drained: the next bytes bring a new report
			}
			continue // edge-triggered: read on until the socket is empty
		}
		return p.handOverLocked(c, n)
	}
}

// handOverLocked leaves the n bytes just read in c's buffer (n <= 0: none,
// the stream ended or failed) for the reader goroutine about to start.
func (p *idlePoller) handOverLocked(c *client, n int) bool {
	r := &c.rd
	if n > 0 {
		r.buf, r.r, r.w = r.small[:], 0, n
		r.lastFill, r.fullRead = n, n == len(r.small)
		c.readSince.Store(0)
		c.keepSince = false
	} else {
		c.woken = true // the reader reads again and sees how the stream ended
	}
	return false
}

// onlyNOPs reports whether b is one or more complete NOP commands.
func onlyNOPs(b []byte) bool {
	for len(b) > 0 {
		switch {
		case len(b) >= 4 && string(b[:4]) == "NOP\n":
			b = b[4:]
		case len(b) >= 5 && string(b[:5]) == "NOP\r\n":
			b = b[5:]
		default:
			return false
		}
	}
	return true
}

// stop ends run and closes the set; no connection may be parked (NSQD
// closes every connection first).
func (p *idlePoller) stop() {
	if p == nil {
		return
	}
	p.stopping.Store(true)
	p.file.Close()
	<-p.done
}

// writeNow writes b to conn's socket as far as that can go without
// blocking and reports how much it wrote; ok is false when conn is not a
// socket or is closed, or the write failed (the caller writes the usual
// way, and sees the error there).
func writeNow(conn net.Conn, b []byte) (n int, ok bool) {
	sc, isSock := conn.(syscall.Conn)
	if !isSock {
		return 0, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var werr error
	err = rc.Write(func(fd uintptr) bool {
		for {
			n, werr = syscall.Write(int(fd), b)
			if !errors.Is(werr, syscall.EINTR) {
				return true // one attempt: never wait for room
			}
		}
	})
	if err != nil || (werr != nil && !errors.Is(werr, syscall.EAGAIN)) {
		return 0, false
	}
	return max(n, 0), true
}

// canWriteNow says whether writeNow can write without blocking here.
const canWriteNow = true

// nowWriter is writeNow for a caller that writes to one socket often (the
// durable replies' notifier): the raw connection and the callback are made
// once, so that a write allocates nothing. One writer at a time.
type nowWriter struct {
	rc  syscall.RawConn
	fn  func(fd uintptr) bool
	b   []byte
	n   int
	err error
}

// newNowWriter returns nil when conn is not a socket.
func newNowWriter(conn net.Conn) *nowWriter {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	w := &nowWriter{rc: rc}
	w.fn = w.write
	return w
}

func (w *nowWriter) write(fd uintptr) bool {
	for {
		w.n, w.err = syscall.Write(int(fd), w.b)
		if !errors.Is(w.err, syscall.EINTR) {
			return true // one attempt: never wait for room
		}
	}
}

// writeNow is the package's writeNow on w's socket.
func (w *nowWriter) writeNow(b []byte) (n int, ok bool) {
	w.b = b
	err := w.rc.Write(w.fn)
	w.b = nil
	if err != nil || (w.err != nil && !errors.Is(w.err, syscall.EAGAIN)) {
		return 0, false
	}
	return max(w.n, 0), true
}
