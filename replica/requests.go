package replica

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// Requests between nodes travel on the same peer connections as Raft
// messages, as envelopes of two reserved groups (group names starting with
// '#' are never topics): "#req" carries a request, "#resp" its answer. The
// envelope's raftpb.Message is only a carrier: From and To are the nodes,
// Index the request's number on the sender, Context the payload
// ([kind length u8][kind][body] for a request; the answer's body, or the
// error's text with Reject set). Connections carry one direction each, so
// an answer goes back on the answering node's own connection to the
// requester.
const (
	requestGroup  = "#req"
	responseGroup = "#resp"
)

// RequestMux adds requests to a Transport: it implements Requester, and
// as the transport's Receiver it answers requests with its handler and
// hands every other envelope on to next (the host).
type RequestMux struct {
	tr      Transport
	self    uint64
	handler RequestHandler
	next    Receiver

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	seq     uint64
	pending map[uint64]chan reply
	// served remembers the requests being or recently answered, by
	// requester and number: a request is sent again until answered (the
	// transport may drop it), and must run only once. A history read is
	// only remembered while it runs: sent again later, it runs again
	// (its answer may be large, and reading twice changes nothing).
	served map[servedKey]*servedReq
}

type servedKey struct{ from, id uint64 }

type servedReq struct {
	at   time.Time
	done bool
	resp *raftpb.Message
}

// resendEvery is how often an unanswered request is sent again;
// servedTTL how long an answer is kept for a request sent again.
const (
	resendEvery = 300 * time.Millisecond
	servedTTL   = time.Minute
)

type reply struct {
	body []byte
	err  error
}

// NewRequestMux returns a mux sending through tr as node self. SetHandler
// and SetNext complete it before the transport receives anything.
func NewRequestMux(tr Transport, self uint64) *RequestMux {
	ctx, cancel := context.WithCancel(context.Background())
	// Numbers start from the clock, so a restarted node never reuses one
	// a peer may still remember an answer for.
	return &RequestMux{tr: tr, self: self, ctx: ctx, cancel: cancel, pending: make(map[uint64]chan reply),
		served: make(map[servedKey]*servedReq), seq: uint64(time.Now().UnixNano())}
}

// SetHandler sets what answers requests from peers.
func (m *RequestMux) SetHandler(h RequestHandler) { m.handler = h }

// SetNext sets where Raft envelopes go.
func (m *RequestMux) SetNext(r Receiver) { m.next = r }

// SetTransport sets the transport requests and answers are sent through
// (when it is made after the mux).
func (m *RequestMux) SetTransport(tr Transport) { m.tr = tr }

// Close fails pending requests and waits for the handlers running.
func (m *RequestMux) Close() {
	m.cancel()
	m.wg.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, ch := range m.pending {
		ch <- reply{err: ErrStopped}
		delete(m.pending, id)
	}
}

// Request implements Requester.
func (m *RequestMux) Request(ctx context.Context, to uint64, kind string, body []byte) ([]byte, error) {
	if len(kind) == 0 || len(kind) > 255 {
		return nil, fmt.Errorf("request kind %q: length out of range 1-255", kind)
	}
	ch := make(chan reply, 1)
	m.mu.Lock()
	m.seq++
	id := m.seq
	m.pending[id] = ch
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.pending, id)
		m.mu.Unlock()
	}()
	payload := make([]byte, 0, 1+len(kind)+len(body))
	payload = append(payload, byte(len(kind)))
	payload = append(payload, kind...)
	payload = append(payload, body...)
	msg := &raftpb.Message{From: &m.self, To: &to, Index: &id, Context: payload}
	resend := time.NewTicker(resendEvery)
	defer resend.Stop()
	for {
		m.tr.Send(to, []Envelope{{Group: requestGroup, Msg: msg}})
		select {
		case r := <-ch:
			return r.body, r.err
		case <-ctx.Done():
			return nil, fmt.Errorf("request %s to %x: %w", kind, to, ctx.Err())
		case <-m.ctx.Done():
			return nil, ErrStopped
		case <-resend.C:
		}
	}
}

// Receive implements Receiver.
func (m *RequestMux) Receive(msgs []Envelope) {
	raftMsgs := msgs[:0:0]
	for _, e := range msgs {
		switch e.Group {
		case requestGroup:
			m.serve(e.Msg)
		case responseGroup:
			m.answer(e.Msg)
		default:
			raftMsgs = append(raftMsgs, e)
		}
	}
	if len(raftMsgs) > 0 && m.next != nil {
		m.next.Receive(raftMsgs)
	}
}

func (m *RequestMux) serve(msg *raftpb.Message) {
	p := msg.GetContext()
	from, id := msg.GetFrom(), msg.GetIndex()
	if len(p) < 1 || len(p) < 1+int(p[0]) || from == 0 || m.handler == nil {
		return
	}
	kind, body := string(p[1:1+int(p[0])]), p[1+int(p[0]):]
	select {
	case <-m.ctx.Done():
		return
	default:
	}
	key := servedKey{from, id}
	now := time.Now()
	m.mu.Lock()
	if sr, ok := m.served[key]; ok {
		// Sent again: answer again if done; if it still runs, its answer
		// will go out when it is.
		resp, done := sr.resp, sr.done
		m.mu.Unlock()
		if done {
			m.tr.Send(from, []Envelope{{Group: responseGroup, Msg: resp}})
		}
		return
	}
	for k, sr := range m.served {
		if sr.done && now.Sub(sr.at) > servedTTL {
			delete(m.served, k)
		}
	}
	sr := &servedReq{at: now}
	m.served[key] = sr
	m.mu.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		out, err := m.handler.HandleRequest(m.ctx, from, kind, body)
		resp := &raftpb.Message{From: &m.self, To: &from, Index: &id, Context: out}
		if err != nil {
			reject := true
			resp.Reject = &reject
			resp.Context = []byte(err.Error())
		}
		m.mu.Lock()
		if kind == historyKind {
			// a read: sent again, it runs again (its answer may be large)
			delete(m.served, key)
		} else {
			sr.done, sr.resp, sr.at = true, resp, time.Now()
		}
		m.mu.Unlock()
		m.tr.Send(from, []Envelope{{Group: responseGroup, Msg: resp}})
	}()
}

func (m *RequestMux) answer(msg *raftpb.Message) {
	m.mu.Lock()
	ch, ok := m.pending[msg.GetIndex()]
	delete(m.pending, msg.GetIndex())
	m.mu.Unlock()
	if !ok {
		return // answered after its caller gave up
	}
	if msg.GetReject() {
		ch <- reply{err: &RemoteError{Msg: string(msg.GetContext())}}
		return
	}
	ch <- reply{body: msg.GetContext()}
}
