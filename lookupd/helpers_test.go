package lookupd

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/sluicemq/sluice/protocol"
)

// startLookupd starts a Daemon on 127.0.0.1 ephemeral ports and stops it at
// the end of the test.
func startLookupd(t testing.TB, mod func(*Options)) *Daemon {
	t.Helper()
	opts := NewOptions()
	opts.TCPAddress, opts.HTTPAddress = "127.0.0.1:0", "127.0.0.1:0"
	opts.BroadcastAddress = "127.0.0.1"
	if mod != nil {
		mod(opts)
	}
	d, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Exit)
	return d
}

// v1conn is a raw registration connection, as nsqd would open it.
type v1conn struct {
	t testing.TB
	net.Conn
}

// dialRaw connects without sending the magic.
func dialRaw(t testing.TB, d *Daemon) *v1conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", d.TCPAddr().String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &v1conn{t: t, Conn: c}
}

// dialV1 connects and sends the "  V1" magic.
func dialV1(t testing.TB, d *Daemon) *v1conn {
	c := dialRaw(t, d)
	c.send([]byte(protocol.MagicV1))
	return c
}

func (c *v1conn) send(b []byte) {
	c.t.Helper()
	c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// reply reads one [size][data] reply.
func (c *v1conn) reply() (string, error) {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := protocol.ReadLookupReply(c, protocol.MaxLookupIdentifySize)
	return string(b), err
}

func (c *v1conn) mustReply() string {
	c.t.Helper()
	r, err := c.reply()
	if err != nil {
		c.t.Fatalf("read reply: %v", err)
	}
	return r
}

// cmd sends one command line and returns the reply.
func (c *v1conn) cmd(line string) string {
	c.t.Helper()
	c.send([]byte(line + "\n"))
	return c.mustReply()
}

func identifyBody(bcast string, tcpPort, httpPort int) []byte {
	b, _ := json.Marshal(protocol.LookupIdentify{BroadcastAddress: bcast, Hostname: "host-" + bcast,
		TCPPort: tcpPort, HTTPPort: httpPort, Version: "1.3.0"})
	return b
}

func identifyMsg(body []byte) []byte {
	return protocol.AppendLookupIdentify(nil, body)
}

// identify sends IDENTIFY and checks the reply is the lookupd's JSON.
func (c *v1conn) identify(bcast string, tcpPort, httpPort int) protocol.LookupIdentifyReply {
	c.t.Helper()
	c.send(identifyMsg(identifyBody(bcast, tcpPort, httpPort)))
	r := c.mustReply()
	var info protocol.LookupIdentifyReply
	if err := json.Unmarshal([]byte(r), &info); err != nil {
		c.t.Fatalf("IDENTIFY reply %q: %v", r, err)
	}
	return info
}

// expectClosed checks the server closes the connection (EOF or reset).
func (c *v1conn) expectClosed() {
	c.t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	n, err := c.Read(b[:])
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		c.t.Fatalf("connection still open (read %d bytes, err %v)", n, err)
	}
	// EOF, or a reset when unread input was pending at the server's close.
	if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		c.t.Fatalf("unexpected read error %v", err)
	}
}

func sizePrefix(n int32) []byte {
	return binary.BigEndian.AppendUint32(nil, uint32(n))
}

// producerIDs returns the IDs of /lookup's producers for topic (nil if the
// topic is not registered).
func producerIDs(d *Daemon, topic string) []string {
	_, ps, ok := d.Registry().Lookup(topic, time.Now())
	if !ok {
		return nil
	}
	out := []string{}
	for _, p := range ps {
		out = append(out, p.ID)
	}
	return out
}

// waitFor polls cond every 10 ms for up to 10 s. (internal/testutil's
// WaitFor is not used: that package imports nsqd, which lookupd's tests
// must not depend on.)
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
