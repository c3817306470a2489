package nsqd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
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
	if n.replTLS != nil {
		// nodes authenticate each other: only a peer whose certificate the
		// root CA signed gets to speak Raft to this one
		tc := tls.Server(conn, n.replTLS.server)
		conn.SetDeadline(time.Now().Add(replicaHandshakeTimeout))
		if err := tc.Handshake(); err != nil {
			n.logger.Warn("refused a replication connection: TLS handshake failed", "remote_addr", conn.RemoteAddr().String(), "err", err)
			return
		}
		conn.SetDeadline(time.Time{})
		h(tc)
		return
	}
	h(conn)
}

// replicaHandshakeTimeout bounds the TLS handshake of a replication
// connection.
const replicaHandshakeTimeout = 5 * time.Second

// replicaTLS is the mutual TLS of replication connections: with
// --tls-cert, --tls-key and --tls-root-ca-file, a node presents its
// certificate both when it dials and when it accepts, and accepts only
// peers whose certificate the root CA signed (a node's certificate must
// therefore allow client and server authentication, and name its
// broadcast address). Without a root CA there is nothing to check a peer
// against, and replication runs in the clear, as without TLS.
type replicaTLS struct {
	server, client *tls.Config
}

func buildReplicaTLS(o *Options) (*replicaTLS, error) {
	if o.TLSCert == "" || o.TLSRootCAFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate %q / key %q: %w", o.TLSCert, o.TLSKey, err)
	}
	pem, err := os.ReadFile(o.TLSRootCAFile)
	if err != nil {
		return nil, fmt.Errorf("read --tls-root-ca-file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--tls-root-ca-file %q holds no certificate", o.TLSRootCAFile)
	}
	minVersion := max(o.TLSMinVersion, tls.VersionTLS12)
	return &replicaTLS{
		server: &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert,
			ClientCAs: pool, MinVersion: minVersion},
		client: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: minVersion},
	}, nil
}

// secureReplicaConn runs the client side of a replication connection's
// TLS handshake, checking that the peer's certificate names its address.
func (n *NSQD) secureReplicaConn(ctx context.Context, conn net.Conn, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	cfg := n.replTLS.client.Clone()
	cfg.ServerName = host
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	return tc, nil
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
