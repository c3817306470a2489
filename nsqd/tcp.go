package nsqd

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/sluicemq/sluice/protocol"
)

// serveTCP accepts V2 (and, with replication on, R1) connections until the
// listener closes.
func (n *NSQD) serveTCP(ln net.Listener) {
	defer close(n.acceptDone)
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			n.logger.Error("accept failed", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		n.connWG.Add(1) // done when the connection ends (handleConn, serve)
		go n.handleConn(conn)
	}
}

// handleConn owns one client connection from magic to close; connWG has
// been incremented for it.
func (n *NSQD) handleConn(conn net.Conn) {
	var magic [4]byte
	conn.SetReadDeadline(time.Now().Add(n.opts.ClientTimeout))
	if _, err := io.ReadFull(conn, magic[:]); err != nil {
		conn.Close()
		n.connWG.Done()
		return
	}
	if string(magic[:]) == protocol.MagicR1 {
		if h := n.replicaHandler.Load(); h != nil {
			n.serveReplicaConn(conn, *h)
			n.connWG.Done()
			return
		}
	}
	if string(magic[:]) != protocol.MagicV2 {
		conn.SetWriteDeadline(time.Now().Add(time.Second))
		conn.Write(protocol.AppendFrame(nil, protocol.FrameTypeError, []byte(protocol.ErrBadProtocol)))
		conn.Close()
		n.connWG.Done()
		return
	}
	conn.SetReadDeadline(time.Time{}) // from now on connTimers times reads out
	c := newClient(n.clientSeq.Add(1), conn, n)
	if !n.addClient(c) {
		conn.Close()
		n.connWG.Done()
		return
	}
	n.connTimers.start(c)
	c.dirty = true // this goroutine's stack holds the accept and the handshake
	c.serve()
}

func (c *client) subscribedChannel() *Channel {
	if s := c.state.Load(); s == stateSubscribed || s == stateClosing {
		return c.channel
	}
	return nil
}

// ioLoop reads and executes commands in order until the connection ends, a
// fatal error is sent, or it is time to shed the goroutine (errShed). Its
// frame is on every idle connection's stack: keep it small (see serve).
func (c *client) ioLoop() error {
	for {
		line, err := c.rd.readLine(c)
		if err != nil {
			return err
		}
		if err := c.execLine(line); err != nil {
			return err
		}
	}
}

// execLine executes one command line and sends its response or error
// frame; it returns an error when the connection must end.
//
//go:noinline
func (c *client) execLine(line []byte) error {
	var params [protocol.MaxParams][]byte
	p := protocol.SplitParams(line, params[:0])
	if !c.dirty && (len(p) != 1 || string(p[0]) != "NOP") {
		c.dirty = true
	}
	resp, kick, perr := c.exec(p)
	if kick {
		c.pendingKick = true
	}
	if perr != nil {
		var pe *protocol.Error
		if !errors.As(perr, &pe) {
			return perr // I/O failure while reading a body
		}
		c.awaitReplies() // replies to earlier commands go first
		if werr := c.writeFrame(protocol.FrameTypeError, []byte(pe.Error())); werr != nil {
			return werr
		}
		if pe.Fatal {
			return fmt.Errorf("fatal protocol error: %w", pe)
		}
		return nil
	}
	if resp != nil {
		c.awaitReplies()
		return c.writeFrame(protocol.FrameTypeResponse, resp)
	}
	return nil
}

// exec runs one command. It returns a response to send (nil for none),
// whether the consumer may now be able to take more messages, and an error:
// a *protocol.Error to send, or an I/O error that ends the connection.
func (c *client) exec(p [][]byte) (resp []byte, kick bool, err error) {
	cmd := p[0]
	if c.nsqd.opts.TLSRequired != TLSNotRequired && !c.tlsActive() && !bytes.Equal(cmd, []byte("IDENTIFY")) {
		return nil, false, protocol.Fatalf(protocol.ErrInvalid, "cannot %s in current state (TLS required)", cmd)
	}
	switch string(cmd) {
	case "FIN":
		return nil, true, c.fin(p)
	case "RDY":
		return nil, true, c.rdy(p)
	case "REQ":
		return nil, true, c.req(p)
	case "PUB":
		resp, err = c.pub(p)
		return resp, false, err
	case "MPUB":
		resp, err = c.mpub(p)
		return resp, false, err
	case "DPUB":
		resp, err = c.dpub(p)
		return resp, false, err
	case "NOP":
		return nil, false, nil
	case "TOUCH":
		return nil, false, c.touch(p)
	case "SUB":
		resp, err = c.execOffStack(cmdSUB, p)
		return resp, true, err
	case "CLS":
		resp, err = c.cls()
		return resp, false, err
	case "IDENTIFY":
		resp, err = c.execOffStack(cmdIDENTIFY, p)
		return resp, false, err
	case "AUTH":
		resp, err = c.execOffStack(cmdAUTH, p)
		return resp, false, err
	}
	return nil, false, protocol.Fatalf(protocol.ErrInvalid, "invalid command %s", cmd)
}

// The commands execOffStack runs.
const (
	cmdSUB = iota
	cmdIDENTIFY
	cmdAUTH
)

// execOffStack runs a once-per-connection command on a goroutine of its
// own (runOffStack). It is a function of its own so that the results its
// closure writes live on the heap only for these commands: captured in
// exec, they cost every FIN and RDY an allocation.
//
//go:noinline
func (c *client) execOffStack(cmd int, p [][]byte) (resp []byte, err error) {
	// these may change how the connection writes (TLS, compression) or
	// what it is: every reply the committer's side owes goes out first
	c.awaitReplies()
	switch cmd {
	case cmdSUB:
		q := cloneParams(p) // p lives in ioLoop's frame; the closure must not keep it
		runOffStack(func() { resp, err = c.sub(q) })
	case cmdIDENTIFY:
		runOffStack(func() { resp, err = c.identify() })
	default:
		nparams := len(p)
		runOffStack(func() { resp, err = c.authCmd(nparams) })
	}
	return resp, err
}

// cloneParams copies a command's parameters off the read buffer.
func cloneParams(p [][]byte) [][]byte {
	q := make([][]byte, len(p))
	for i, b := range p {
		q[i] = bytes.Clone(b)
	}
	return q
}

// runOffStack runs fn on a short-lived goroutine and waits for it. The
// once-per-connection commands (IDENTIFY, AUTH, SUB) go through JSON, TLS
// and topic creation, whose deep call chains would otherwise grow the
// connection goroutine's stack.
func runOffStack(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	<-done
}

func (c *client) tlsActive() bool {
	id := c.identity.Load()
	return id != nil && id.tls != nil
}

// readBody reads an int32 size and then that many bytes, checking the size
// against max before allocating anything. texts names the command for the
// error messages; code is the error code of size problems.
func (c *client) readSizedBody(cmd, code string, max int64, sizeErr, tooBig, invalid, bodyErr string) ([]byte, error) {
	size, err := c.rd.readInt32(c)
	if err != nil {
		return nil, protocol.Fatalf(code, "%s %s", cmd, sizeErr)
	}
	if int64(size) > max {
		return nil, protocol.Fatalf(code, "%s %s %d > %d", cmd, tooBig, size, max)
	}
	if size <= 0 {
		return nil, protocol.Fatalf(code, "%s %s %d", cmd, invalid, size)
	}
	body := make([]byte, size)
	if err := c.rd.readFull(body, c); err != nil {
		return nil, protocol.Fatalf(code, "%s %s", cmd, bodyErr)
	}
	return body, nil
}

// readMessageBody reads the body of a PUB or DPUB. The connection then
// keeps its read buffer between commands (see connReader.keep).
func (c *client) readMessageBody(cmd string) ([]byte, error) {
	c.rd.keep = true
	size, err := c.rd.readInt32(c)
	if err != nil {
		return nil, protocol.Fatalf(protocol.ErrBadMessage, "%s failed to read message body size", cmd)
	}
	if size <= 0 {
		return nil, protocol.Fatalf(protocol.ErrBadMessage, "%s invalid message body size %d", cmd, size)
	}
	if max := c.nsqd.opts.MaxMsgSize; int64(size) > max {
		return nil, protocol.Fatalf(protocol.ErrBadMessage, "%s message too big %d > %d", cmd, size, max)
	}
	body := make([]byte, size)
	if err := c.rd.readFull(body, c); err != nil {
		return nil, protocol.Fatalf(protocol.ErrBadMessage, "%s failed to read message body", cmd)
	}
	return body, nil
}

func (c *client) pub(p [][]byte) ([]byte, error) {
	if len(p) < 2 {
		return nil, protocol.Fatalf(protocol.ErrInvalid, "PUB insufficient number of parameters")
	}
	topicName := c.topicName(p[1])
	if !protocol.IsValidTopicName(topicName) {
		return nil, protocol.Fatalf(protocol.ErrBadTopic, "PUB topic name %q is not valid", topicName)
	}
	body, err := c.readMessageBody("PUB")
	if err != nil {
		return nil, err
	}
	if err := c.checkAuth("PUB", topicName, ""); err != nil {
		return nil, err
	}
	return c.publishOne("PUB", protocol.ErrPubFailed, topicName, body, 0)
}

// publishOne publishes the body of a PUB or DPUB. On a durable topic the
// reply is written by the committer's side once the message is synced (see
// publishDurableAsync): the response is then nil.
func (c *client) publishOne(cmd, failCode, topicName string, body []byte, deferBy time.Duration) ([]byte, error) {
	t, err := c.nsqd.GetTopic(topicName)
	if err != nil {
		return nil, publishFailure(failCode, cmd, err)
	}
	if t.dur != nil && c.asyncReplies() {
		if queued, err := c.publishDurableAsync(t, cmd, failCode, body, deferBy); queued {
			return nil, err
		}
	}
	return c.publish(cmd, failCode, t, [][]byte{body}, deferBy)
}

func (c *client) dpub(p [][]byte) ([]byte, error) {
	if len(p) < 3 {
		return nil, protocol.Fatalf(protocol.ErrInvalid, "DPUB insufficient number of parameters")
	}
	topicName := c.topicName(p[1])
	if !protocol.IsValidTopicName(topicName) {
		return nil, protocol.Fatalf(protocol.ErrBadTopic, "DPUB topic name %q is not valid", topicName)
	}
	maxMs := uint64(c.nsqd.opts.MaxReqTimeout / time.Millisecond)
	ms, ok := protocol.ParseUint(p[2], 1<<62)
	if !ok {
		return nil, protocol.Fatalf(protocol.ErrInvalid, "DPUB could not parse timeout %s", p[2])
	}
	if ms > maxMs {
		return nil, protocol.Fatalf(protocol.ErrInvalid, "DPUB timeout %d out of range 0-%d", ms, maxMs)
	}
	body, err := c.readMessageBody("DPUB")
	if err != nil {
		return nil, err
	}
	if err := c.checkAuth("DPUB", topicName, ""); err != nil {
		return nil, err
	}
	return c.publishOne("DPUB", protocol.ErrDPubFailed, topicName, body, time.Duration(ms)*time.Millisecond)
}

func (c *client) mpub(p [][]byte) ([]byte, error) {
	if len(p) < 2 {
		return nil, protocol.Fatalf(protocol.ErrInvalid, "MPUB insufficient number of parameters")
	}
	topicName := c.topicName(p[1])
	if !protocol.IsValidTopicName(topicName) {
		return nil, protocol.Fatalf(protocol.ErrBadTopic, "%s MPUB topic name %q is not valid", protocol.ErrBadTopic, topicName)
	}
	if err := c.checkAuth("MPUB", topicName, ""); err != nil {
		return nil, err
	}
	if _, err := c.nsqd.GetTopic(topicName); err != nil {
		var dw *durableWriteError
		if !errors.As(err, &dw) { // a storage failure is answered after the body is read
			return nil, protocol.Fatalf(protocol.ErrMPubFailed, "MPUB failed %s", err)
		}
	}
	o := c.nsqd.opts
	c.rd.keep = true // see connReader.keep
	size, err := c.rd.readInt32(c)
	if err != nil {
		return nil, protocol.Fatalf(protocol.ErrBadBody, "MPUB failed to read body size")
	}
	if size <= 0 {
		return nil, protocol.Fatalf(protocol.ErrBadBody, "MPUB invalid body size %d", size)
	}
	if int64(size) > o.MaxBodySize {
		return nil, protocol.Fatalf(protocol.ErrBadBody, "MPUB body too big %d > %d", size, o.MaxBodySize)
	}
	body := make([]byte, size)
	if err := c.rd.readFull(body, c); err != nil {
		return nil, protocol.Fatalf(protocol.ErrBadMessage, "MPUB failed to read message body")
	}
	ps := c.publisher()
	bodies, perr := protocol.ParseMPUB(body, o.MaxMsgSize, o.MaxBodySize, ps.scratchBodies[:0])
	if perr != nil {
		return nil, perr
	}
	clear(bodies)
	ps.scratchBodies = bodies[:0]
	t, err := c.nsqd.GetTopic(topicName)
	if err != nil {
		return nil, publishFailure(protocol.ErrMPubFailed, "MPUB", err)
	}
	count := len(bodies)
	b := c.nsqd.newBatch(body[4:], count)
	if err := t.putBatch(b, uint64(len(body)-4-4*count)); err != nil {
		return nil, publishFailure(protocol.ErrMPubFailed, "MPUB", err)
	}
	c.notePublish(topicName, count)
	return protocol.OK, nil
}

// publish turns bodies into messages and hands them to the topic in one go.
func (c *client) publish(cmd, failCode string, t *Topic, bodies [][]byte, deferBy time.Duration) ([]byte, error) {
	ps := c.publisher()
	msgs := c.nsqd.newMessages(bodies, deferBy, ps.scratchMsgs[:0])
	err := t.putMessages(msgs)
	clear(msgs)
	ps.scratchMsgs = msgs[:0]
	if err != nil {
		return nil, publishFailure(failCode, cmd, err)
	}
	c.notePublish(t.name, len(bodies))
	return protocol.OK, nil
}

func (c *client) sub(p [][]byte) ([]byte, error) {
	if c.state.Load() != stateInit {
		return nil, protocol.Fatalf(protocol.ErrInvalid, "cannot SUB in current state")
	}
	if c.heartbeat() <= 0 {
		return nil, protocol.Fatalf(protocol.ErrInvalid, "cannot SUB with heartbeats disabled")
	}
	if len(p) < 3 {
		return nil, protocol.Fatalf(protocol.ErrInvalid, "SUB insufficient number of parameters")
	}
	topicName, channelName := string(p[1]), string(p[2])
	if !protocol.IsValidTopicName(topicName) {
		return nil, protocol.Fatalf(protocol.ErrBadTopic, "SUB topic name %q is not valid", topicName)
	}
	if !protocol.IsValidChannelName(channelName) {
		return nil, protocol.Fatalf(protocol.ErrBadChannel, "SUB channel name %q is not valid", channelName)
	}
	if err := c.checkAuth("SUB", topicName, channelName); err != nil {
		return nil, err
	}
	var ch *Channel
	for attempt := 0; ; attempt++ {
		var err error
		ch, err = c.nsqd.subscribe(c, topicName, channelName)
		if err == nil {
			break
		}
		if errors.Is(err, errTooManyConsumers) {
			return nil, protocol.Fatalf(protocol.ErrSubFailed, "SUB failed consumers for %s:%s exceeds limit of %d",
				topicName, channelName, c.nsqd.opts.MaxChannelConsumers)
		}
		var re *errReplicatedElsewhere
		if errors.As(err, &re) {
			return nil, protocol.Fatalf(protocol.ErrSubFailed, "SUB failed: %v", re)
		}
		var pr *policyRefusal
		if errors.As(err, &pr) {
			return nil, protocol.Fatalf(protocol.ErrSubFailed, "SUB failed to create channel %s:%s: %v", topicName, channelName, pr.err)
		}
		if rj := (*replicationError)(nil); errors.As(err, &rj) {
			// a node rejoining the cluster cannot tell yet whether the
			// topic is replicated here: say so (the consumer reconnects)
			return nil, protocol.Fatalf(protocol.ErrSubFailed, "SUB failed: %v", rj)
		}
		if attempt == 1 {
			return nil, protocol.Fatalf(protocol.ErrSubFailed, "SUB failed to deleted topic/channel")
		}
		time.Sleep(100 * time.Millisecond) // a delete in progress; try once more
	}
	c.channel = ch
	ch.mu.Lock()
	c.state.Store(stateSubscribed)
	ch.mu.Unlock()
	return protocol.OK, nil
}

func (c *client) rdy(p [][]byte) error {
	switch c.state.Load() {
	case stateClosing:
		return nil
	case stateSubscribed:
	default:
		return protocol.Fatalf(protocol.ErrInvalid, "cannot RDY in current state")
	}
	count := uint64(1)
	if len(p) > 1 {
		var ok bool
		count, ok = protocol.ParseUint(p[1], 1<<62)
		if !ok {
			return protocol.Fatalf(protocol.ErrInvalid, "RDY could not parse count %s", p[1])
		}
	}
	if max := c.nsqd.opts.MaxRdyCount; count > uint64(max) {
		return protocol.Fatalf(protocol.ErrInvalid, "RDY count %d out of range 0-%d", count, max)
	}
	c.readyCount.Store(int64(count))
	return nil
}

// parseID validates the message ID parameter of FIN, REQ and TOUCH.
func (c *client) parseID(p [][]byte, cmd string, need int) (protocol.MessageID, error) {
	var id protocol.MessageID
	if s := c.state.Load(); s != stateSubscribed && s != stateClosing {
		return id, protocol.Fatalf(protocol.ErrInvalid, "cannot %s in current state", cmd)
	}
	if len(p) < need {
		return id, protocol.Fatalf(protocol.ErrInvalid, "%s insufficient number of params", cmd)
	}
	if len(p[1]) != protocol.MsgIDLength {
		return id, protocol.Fatalf(protocol.ErrInvalid, "invalid message ID")
	}
	copy(id[:], p[1])
	return id, nil
}

// idFailure is the error frame of a FIN, REQ or TOUCH that failed. A
// function of its own so that only a failure copies the ID to the heap.
//
//go:noinline
func idFailure(code, cmd string, id protocol.MessageID, err error) error {
	return protocol.Softf(code, "%s %s failed %s", cmd, id[:], err)
}

func (c *client) fin(p [][]byte) error {
	id, err := c.parseID(p, "FIN", 2)
	if err != nil {
		return err
	}
	if err := c.channel.finish(c, id); err != nil {
		return idFailure(protocol.ErrFinFailed, "FIN", id, err)
	}
	c.finishCount.Add(1)
	return nil
}

func (c *client) req(p [][]byte) error {
	id, err := c.parseID(p, "REQ", 3)
	if err != nil {
		return err
	}
	ms, ok := protocol.ParseUint(p[2], 1<<62)
	if !ok {
		return protocol.Fatalf(protocol.ErrInvalid, "REQ could not parse timeout %s", p[2])
	}
	delay := time.Duration(ms) * time.Millisecond
	if max := c.nsqd.opts.MaxReqTimeout; ms > uint64(max/time.Millisecond) {
		delay = max
	}
	if err := c.channel.requeue(c, id, delay); err != nil {
		return idFailure(protocol.ErrReqFailed, "REQ", id, err)
	}
	c.requeueCount.Add(1)
	return nil
}

func (c *client) touch(p [][]byte) error {
	id, err := c.parseID(p, "TOUCH", 2)
	if err != nil {
		return err
	}
	if err := c.channel.touch(c, id); err != nil {
		return idFailure(protocol.ErrTouchFailed, "TOUCH", id, err)
	}
	return nil
}

func (c *client) cls() ([]byte, error) {
	if c.state.Load() != stateSubscribed {
		return nil, protocol.Fatalf(protocol.ErrInvalid, "cannot CLS in current state")
	}
	// under the channel lock, so no pump takes another message once the
	// client has asked to close
	c.channel.mu.Lock()
	c.readyCount.Store(0)
	c.state.Store(stateClosing)
	c.channel.mu.Unlock()
	return protocol.CloseWait, nil
}

func jsonBytes(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only called with types that always encode
	}
	return b
}

// publishFailure is the error frame for a failed publish. A durable topic's
// failed write (a full disk, say) leaves the connection open, so the
// producer can back off and retry on it; anything else closes it, as in NSQ.
func publishFailure(code, cmd string, err error) *protocol.Error {
	var dw *durableWriteError
	if errors.As(err, &dw) {
		return protocol.Softf(code, "%s failed: %s", cmd, dw.Error())
	}
	var dl *depthLimitError
	if errors.As(err, &dl) {
		return protocol.Softf(code, "%s failed: %s", cmd, dl.Error())
	}
	var re *replicationError
	if errors.As(err, &re) {
		return protocol.Softf(code, "%s failed: %s", cmd, re.Error())
	}
	return protocol.Fatalf(code, "%s failed %s", cmd, err)
}
