package bench

import (
	"net"
	"sync"
	"time"
)

// tcpServer is the listener side the raw sinks share: it serves every
// accepted connection on a goroutine of its own until close.
type tcpServer struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// serveTCP accepts connections on ln and runs serve on each, closing the
// connection when serve returns (its error only ends the connection).
func serveTCP(ln net.Listener, serve func(net.Conn) error) *tcpServer {
	t := &tcpServer{ln: ln, conns: make(map[net.Conn]struct{})}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.mu.Lock()
			t.conns[c] = struct{}{}
			t.mu.Unlock()
			t.wg.Add(1)
			go func() {
				defer t.wg.Done()
				serve(c)
				t.mu.Lock()
				delete(t.conns, c)
				t.mu.Unlock()
				c.Close()
			}()
		}
	}()
	return t
}

// Addr returns the listening address.
func (t *tcpServer) Addr() string { return t.ln.Addr().String() }

// close stops the listener, waits up to grace for the clients to close
// their connections (so that what they still send is counted), then closes
// the rest and waits for every goroutine.
func (t *tcpServer) close(grace time.Duration) error {
	err := t.ln.Close()
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		t.mu.Lock()
		n := len(t.conns)
		t.mu.Unlock()
		if n == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.mu.Lock()
	for c := range t.conns {
		c.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
	return err
}
