package replicatest

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/lookupdtest"
	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/nsqd"
	"github.com/sluicemq/sluice/protocol"
	"github.com/sluicemq/sluice/replica"
)

// startTLSCluster starts n nodes whose replication connections use mutual
// TLS: each has --tls-cert, --tls-key and --tls-root-ca-file.
func startTLSCluster(t *testing.T, n int, certs testutil.TLSFiles) *cluster {
	t.Helper()
	c := &cluster{t: t, lookupd: lookupdtest.Start(t, nil)}
	for range n {
		c.nodes = append(c.nodes, testutil.StartNSQD(t, func(o *nsqd.Options) {
			o.NSQLookupdTCPAddresses = []string{c.lookupd.TCPAddr().String()}
			o.LookupdPingInterval = time.Second
			o.TLSCert, o.TLSKey, o.TLSRootCAFile = certs.CertFile, certs.KeyFile, certs.CAFile
		}))
	}
	testutil.WaitFor(t, 10*time.Second, func() bool { return c.registered() == n }, "%d nodes on nsqlookupd", n)
	return c
}

// r1Hello is what a node sends first on a replication connection: the
// magic, then a hello frame (size, from, to).
func r1Hello(from uint64) []byte {
	b := []byte(protocol.MagicR1)
	b = binary.BigEndian.AppendUint32(b, 16)
	b = binary.BigEndian.AppendUint64(b, from)
	return binary.BigEndian.AppendUint64(b, 0)
}

// closedWithin reports whether the server ends conn within d.
func closedWithin(conn net.Conn, d time.Duration) bool {
	conn.SetReadDeadline(time.Now().Add(d))
	_, err := io.ReadAll(conn)
	return !errors.Is(err, os.ErrDeadlineExceeded)
}

func TestReplicationBetweenNodesUsesMutualTLS(t *testing.T) {
	certs := testutil.GenerateTLS(t)
	c := startTLSCluster(t, 3, certs)
	lead, follower := c.replicated("secured")
	// a publish to a follower is forwarded and committed over TLS
	p := testutil.NewProducer(t, follower.TCPAddr, nil)
	for i := range 20 {
		if err := p.Publish("secured", []byte(fmt.Sprintf("m%d", i))); err != nil {
			t.Fatalf("publish to a follower: %v", err)
		}
	}
	testutil.MustPost(t, lead.URL("/channel/create?topic=secured&channel=audit"), nil)
	col := &collector{}
	c.consumer("secured", "audit", col)
	testutil.WaitFor(t, 20*time.Second, func() bool { return col.distinct() == 20 }, "20 delivered")

	// Nobody speaks Raft to a node without a certificate the CA signed.
	stranger := replica.NodeID("127.0.0.1:1")
	plain, err := net.Dial("tcp", lead.TCPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := plain.Write(r1Hello(stranger)); err != nil {
		t.Fatal(err)
	}
	if !closedWithin(plain, 8*time.Second) {
		t.Fatal("a replication connection in the clear was kept open by a node with replication TLS")
	}
	raw, err := net.Dial("tcp", lead.TCPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.Write([]byte(protocol.MagicR1))
	noCert := tls.Client(raw, &tls.Config{RootCAs: certs.Pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	noCert.SetDeadline(time.Now().Add(8 * time.Second))
	err = noCert.Handshake()
	if err == nil {
		// TLS 1.3 reports the missing certificate on the first read
		noCert.Write(r1Hello(stranger)[4:])
		_, err = noCert.Read(make([]byte, 1))
	}
	if err == nil {
		t.Fatal("a TLS peer without a client certificate was accepted")
	}
}
