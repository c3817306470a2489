package nsqd

import (
	"net"
	"time"
)

// SetReplicaHandler makes nsqd hand every connection that opens with the
// "  R1" magic (protocol.MagicR1) to h, which then owns it: h reads from
// right after the magic, with no deadline set, and returns when it is done
// with the connection or the connection is closed (nsqd closes it once h
// returns). h runs on the connection's own goroutine and must return
// promptly when its connection is closed: Exit closes every connection h
// is serving and waits for h to return.
//
// With no handler (the default, or h == nil) "  R1" gets E_BAD_PROTOCOL
// and the connection is closed, exactly as NSQ's nsqd answers any unknown
// magic: a node without replication is byte-for-byte NSQ. It may be called
// before or after Start; connections already being served keep their
// handler.
func (n *NSQD) SetReplicaHandler(h func(net.Conn)) {
	if h == nil {
		n.replicaHandler.Store(nil)
		return
	}
	n.replicaHandler.Store(&h)
}

// serveReplicaConn runs h on conn, tracking conn so that Exit can close it.
func (n *NSQD) serveReplicaConn(conn net.Conn, h func(net.Conn)) {
	n.clientsMu.Lock()
	if n.exiting.Load() {
		n.clientsMu.Unlock()
		conn.Close()
		return
	}
	n.replicaConns[conn] = struct{}{}
	n.clientsMu.Unlock()
	defer func() {
		n.clientsMu.Lock()
		delete(n.replicaConns, conn)
		n.clientsMu.Unlock()
		conn.Close()
	}()
	conn.SetReadDeadline(time.Time{}) // the magic's deadline; the handler sets its own
	h(conn)
}

// LookupdHTTPAddresses returns the HTTP addresses (broadcast_address:http_port)
// of the nsqlookupds this nsqd is registered with, as learnt from their
// IDENTIFY replies, sorted; nil before Start or without lookupds. Peer
// discovery (replica.Discovery) polls their /nodes.
func (n *NSQD) LookupdHTTPAddresses() []string {
	if n.lookup == nil {
		return nil
	}
	return n.lookup.HTTPAddresses()
}
