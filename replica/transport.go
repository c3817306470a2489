package replica

import (
	"context"
	"hash/fnv"

	"go.etcd.io/raft/v3/raftpb"
)

// Envelope is one Raft message of one group. Every group of a node shares
// the node's transport, so a message carries the name of its group (a
// replicated topic's name, or MetaGroup).
type Envelope struct {
	Group string
	Msg   *raftpb.Message // protobuf structs must not be copied by value
}

// MetaGroup is the name of the group that agrees on placement. It cannot
// collide with a topic: topic names never start with '#'.
const MetaGroup = "#meta"

// Transport carries Raft messages between nodes.
type Transport interface {
	// Send queues msgs for node to and returns at once: it never waits on
	// the network. Messages that cannot be queued (the peer is unknown,
	// unreachable or too slow) are dropped; Raft retransmits what matters.
	// Messages to one peer are delivered in the order sent, or not at all.
	Send(to uint64, msgs []Envelope)
}

// Receiver takes the messages a transport receives from peers. Receive
// must not block for long: it is called on the connection's read loop.
type Receiver interface {
	Receive(msgs []Envelope)
}

// NodeID is a node's identity in every group: a 64-bit hash (FNV-1a) of
// the broadcast_address:tcp_port it registers with nsqlookupd, so nodes
// agree on each other's IDs without exchanging them. Never 0 (Raft's
// "none").
func NodeID(addr string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(addr))
	id := h.Sum64()
	if id == 0 {
		id = 1
	}
	return id
}

// Requester sends a request to a peer over the same connection as its Raft
// messages and waits for the answer: the control plane of replication
// (joining the meta group, handing a topic to its members, forwarding a
// publish from a node that holds no replica).
type Requester interface {
	// Request sends body as a request of kind to node to and returns the
	// peer's answer, a *RemoteError when the peer's handler failed, or an
	// error when the request could not be delivered or ctx ended first.
	Request(ctx context.Context, to uint64, kind string, body []byte) ([]byte, error)
}

// RequestHandler answers requests from peers.
type RequestHandler interface {
	// HandleRequest answers one request. Its error reaches the caller as a
	// *RemoteError carrying the error's text.
	HandleRequest(ctx context.Context, from uint64, kind string, body []byte) ([]byte, error)
}

// RemoteError is a peer's handler's error, as its caller receives it.
type RemoteError struct{ Msg string }

func (e *RemoteError) Error() string { return e.Msg }
