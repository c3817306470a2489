package lookupd

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/sluicemq/sluice/protocol"
)

// readBufferSize is the per-connection read buffer. Request lines are short
// (REGISTER with two 64-byte names is < 150 bytes) and nsqd sends one
// command per round trip, so a small buffer keeps idle connections cheap;
// longer lines are reassembled up to maxLineSize.
const readBufferSize = 512

func (d *Daemon) acceptLoop(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Resource exhaustion (EMFILE...) is transient: back off a little.
			d.logger.Warn("TCP: accept failed", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if !d.trackConn(c) {
			c.Close()
			return
		}
		d.stats.connections.Add(1)
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			defer d.untrackConn(c)
			d.serveConn(c)
		}()
	}
}

// peerConn is the state of one registration connection, owned by the
// goroutine running serveConn.
type peerConn struct {
	d          *Daemon
	conn       net.Conn
	r          *bufio.Reader
	id         string // remote ip:port, the producer key
	identified bool
	// peer is this connection's registry handle (nil before IDENTIFY). It
	// stops working if a newer connection from the same ip:port identifies.
	peer *Peer
	// pending holds replies not written yet: while the next request line
	// is already read (an nsqd sending its REGISTERs together), replies
	// wait to go out in one write with the last one.
	pending []byte
}

// serveConn runs the V1 protocol on c until the peer disconnects, a
// protocol error occurs (reply sent, then close), the read deadline passes or
// the daemon exits. The peer is then removed from every registration.
//
// Idle cost: the goroutine spends its life blocked in nextLine, so
// everything else (set-up, logging, command handling, the JSON decoding of
// IDENTIFY) lives in helpers kept out of line. This keeps the idle stack
// shallow enough for the GC to shrink it back after IDENTIFY grew it
// (measured: 8 KiB -> 4 KiB per connection).
func (d *Daemon) serveConn(c net.Conn) {
	p := d.newPeerConn(c)
	defer p.close()
	if !p.handshake() {
		return
	}
	for {
		line, err := p.nextLine()
		if err != nil {
			p.readFailed(err)
			return
		}
		if !p.handle(line) {
			return
		}
	}
}

//go:noinline
func (d *Daemon) newPeerConn(c net.Conn) *peerConn {
	p := &peerConn{
		d:    d,
		conn: c,
		r:    bufio.NewReaderSize(c, readBufferSize),
		id:   c.RemoteAddr().String(),
	}
	p.d.logger.Debug("TCP: new client", "remote_addr", p.id)
	return p
}

// close removes the peer from every registration, then closes the socket:
// while the socket is open its ip:port cannot be reused by a new connection
// whose registrations we would drop.
//
//go:noinline
func (p *peerConn) close() {
	if hook := p.d.testHookPeerClose; hook != nil {
		hook(p.id)
	}
	// Remove through the handle: if a newer connection from the same
	// ip:port has identified meanwhile, its registrations are not ours.
	if p.peer != nil && p.peer.Remove() {
		p.d.logger.Info("DB: client removed from all registrations", "remote_addr", p.id)
	}
	p.conn.Close()
}

// handshake reads and checks the protocol magic.
//
//go:noinline
func (p *peerConn) handshake() bool {
	p.setReadDeadline()
	var magic [4]byte
	if _, err := io.ReadFull(p.r, magic[:]); err != nil {
		p.d.logger.Debug("TCP: failed to read protocol magic", "remote_addr", p.id, "err", err)
		return false
	}
	if string(magic[:]) != protocol.MagicV1 {
		p.d.logger.Warn("TCP: bad protocol magic", "remote_addr", p.id, "magic", string(magic[:]))
		p.fail(&protocol.Error{Code: protocol.ErrBadProtocol, Fatal: true})
		return false
	}
	return true
}

// nextLine waits (up to the read deadline) for the next request line.
func (p *peerConn) nextLine() ([]byte, error) {
	if !p.lineBuffered() {
		p.setReadDeadline()
	}
	return p.readLine()
}

// readFailed handles the error that ended the read loop.
//
//go:noinline
func (p *peerConn) readFailed(err error) {
	var perr *protocol.Error
	var ne net.Error
	switch {
	case errors.As(err, &perr):
		p.fail(perr)
	case errors.As(err, &ne) && ne.Timeout():
		p.d.stats.peersDropped.Add(1)
		p.d.logger.Warn("TCP: peer silent for too long, closing", "remote_addr", p.id, "timeout", p.d.opts.PeerReadTimeout)
	case !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed):
		p.d.logger.Info("TCP: closing connection", "remote_addr", p.id, "err", err)
	}
}

// handle executes one request line and writes the reply; it returns false
// when the connection must close (error replied or write failed).
//
//go:noinline
func (p *peerConn) handle(line []byte) bool {
	reply, perr := p.exec(line)
	if perr != nil {
		p.fail(perr)
		return false
	}
	p.pending = protocol.AppendLookupReply(p.pending, reply)
	if p.lineBuffered() {
		return true
	}
	if err := p.flush(); err != nil {
		p.d.logger.Info("TCP: write failed", "remote_addr", p.id, "err", err)
		return false
	}
	return true
}

// lineBuffered reports whether a whole request line has been read already.
func (p *peerConn) lineBuffered() bool {
	buf, _ := p.r.Peek(p.r.Buffered())
	return bytes.IndexByte(buf, '\n') >= 0
}

// flush writes the pending replies.
func (p *peerConn) flush() error {
	if len(p.pending) == 0 {
		return nil
	}
	p.conn.SetWriteDeadline(time.Now().Add(peerWriteTimeout))
	_, err := p.conn.Write(p.pending)
	if cap(p.pending) > 1024 {
		p.pending = nil // an idle connection keeps no large buffer
	} else {
		p.pending = p.pending[:0]
	}
	if err != nil {
		return fmt.Errorf("write reply: %w", err)
	}
	return nil
}

func (p *peerConn) setReadDeadline() {
	if t := p.d.opts.PeerReadTimeout; t > 0 {
		p.conn.SetReadDeadline(time.Now().Add(t))
	}
}

// readLine returns the next request line (without the LF), reassembling
// lines longer than the buffer up to maxLineSize.
func (p *peerConn) readLine() ([]byte, error) {
	line, err := p.r.ReadSlice('\n')
	if err == nil {
		return line[:len(line)-1], nil
	}
	if !errors.Is(err, bufio.ErrBufferFull) {
		return nil, err
	}
	long := append([]byte(nil), line...)
	for {
		line, err = p.r.ReadSlice('\n')
		long = append(long, line...)
		if len(long) > maxLineSize {
			return nil, protocol.Fatalf(protocol.ErrInvalid, "command line longer than %d bytes", maxLineSize)
		}
		if err == nil {
			return long[:len(long)-1], nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
}

// errSuperseded ends a connection whose ip:port has since been identified by
// a newer connection (the registry handle no longer owns the ID): nothing it
// sends may touch the successor's registrations. nsqd reconnects and
// re-registers.
var errSuperseded = protocol.Fatalf(protocol.ErrInvalid, "connection superseded by a newer IDENTIFY from the same address")

// exec runs one command and returns the reply data or a (fatal) error.
func (p *peerConn) exec(line []byte) ([]byte, *protocol.Error) {
	name, params := protocol.ParseLookupCommand(line)
	switch name {
	case protocol.LookupCmdPing:
		if p.identified && !p.peer.Touch(time.Now()) {
			return nil, errSuperseded
		}
		return protocol.LookupOK, nil
	case protocol.LookupCmdIdentify:
		if err := p.flush(); err != nil { // before waiting for the body
			return nil, protocol.Fatalf(protocol.ErrInvalid, "write reply: %v", err)
		}
		return p.identify()
	case protocol.LookupCmdRegister:
		return p.register(name, params, true)
	case protocol.LookupCmdUnregister:
		return p.register(name, params, false)
	}
	return nil, protocol.Fatalf(protocol.ErrInvalid, "invalid command %s", name)
}

func (p *peerConn) identify() ([]byte, *protocol.Error) {
	if p.identified {
		return nil, protocol.Fatalf(protocol.ErrInvalid, "cannot IDENTIFY again")
	}
	var hdr [4]byte
	if _, err := io.ReadFull(p.r, hdr[:]); err != nil {
		return nil, protocol.Fatalf(protocol.ErrBadBody, "IDENTIFY failed to read body size")
	}
	size := int32(binary.BigEndian.Uint32(hdr[:]))
	if size <= 0 || size > protocol.MaxLookupIdentifySize {
		return nil, protocol.Fatalf(protocol.ErrBadBody, "IDENTIFY invalid body size %d", size)
	}
	// Read the body as it arrives instead of allocating the announced size
	// up front: a peer announcing 5 MiB and sending nothing would otherwise
	// pin 5 MiB per connection.
	var body bytes.Buffer
	body.Grow(min(int(size), readBufferSize))
	if _, err := io.CopyN(&body, p.r, int64(size)); err != nil {
		return nil, protocol.Fatalf(protocol.ErrBadBody, "IDENTIFY failed to read body")
	}
	var req protocol.LookupIdentify
	if err := json.Unmarshal(body.Bytes(), &req); err != nil {
		return nil, protocol.Fatalf(protocol.ErrBadBody, "IDENTIFY failed to decode JSON body")
	}
	if err := req.Validate(); err != nil {
		return nil, protocol.Fatalf(protocol.ErrBadBody, "IDENTIFY missing fields")
	}
	reply, err := json.Marshal(p.d.identifyReply())
	if err != nil {
		return nil, protocol.Fatalf(protocol.ErrInvalid, "IDENTIFY failed to encode reply")
	}
	p.peer = p.d.registry.AddPeer(PeerInfo{
		ID:               p.id,
		RemoteAddress:    p.id,
		Hostname:         req.Hostname,
		BroadcastAddress: req.BroadcastAddress,
		TCPPort:          req.TCPPort,
		HTTPPort:         req.HTTPPort,
		Version:          req.Version,
	}, time.Now())
	p.identified = true
	p.d.logger.Info("CLIENT: IDENTIFY", "remote_addr", p.id, "broadcast_address", req.BroadcastAddress,
		"tcp_port", req.TCPPort, "http_port", req.HTTPPort, "version", req.Version)
	return reply, nil
}

// register runs REGISTER (add) or UNREGISTER (!add).
func (p *peerConn) register(cmd string, params []string, add bool) ([]byte, *protocol.Error) {
	if !p.identified {
		return nil, protocol.Fatalf(protocol.ErrInvalid, "client must IDENTIFY")
	}
	if len(params) == 0 {
		return nil, protocol.Fatalf(protocol.ErrInvalid, "%s insufficient number of params", cmd)
	}
	// An empty second parameter ("REGISTER t  c") means no channel, like
	// the reference; parameters after the second are ignored.
	topic, channel := params[0], ""
	if len(params) >= 2 {
		channel = params[1]
	}
	if !protocol.IsValidTopicName(topic) {
		return nil, protocol.Fatalf(protocol.ErrBadTopic, "%s topic name '%s' is not valid", cmd, topic)
	}
	if channel != "" && !protocol.IsValidChannelName(channel) {
		return nil, protocol.Fatalf(protocol.ErrBadChannel, "%s channel name '%s' is not valid", cmd, channel)
	}
	ok := false
	if add {
		ok = p.peer.Register(topic, channel)
	} else {
		ok = p.peer.Unregister(topic, channel)
	}
	if !ok {
		return nil, errSuperseded
	}
	p.d.logger.Debug("DB: "+cmd, "remote_addr", p.id, "topic", topic, "channel", channel)
	return protocol.LookupOK, nil
}

// fail sends a fatal error reply; the caller closes the connection.
func (p *peerConn) fail(e *protocol.Error) {
	p.d.stats.protocolErrors.Add(1)
	p.d.logger.Info("TCP: protocol error, closing", "remote_addr", p.id, "err", e.Error())
	p.pending = protocol.AppendLookupReply(p.pending, []byte(e.Error()))
	if err := p.flush(); err != nil {
		p.d.logger.Debug("TCP: failed to send error", "remote_addr", p.id, "err", err)
	}
}
