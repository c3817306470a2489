package lookupd

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// httpFront accepts the HTTP connections and answers the one request that
// clients send over and over — GET /lookup?topic=T over a keep-alive
// HTTP/1.1 connection with ordinary headers, for a registered topic —
// itself, from the cache of encoded answers, with the bytes net/http would
// send. Every other request (another path or method, an error answer,
// HTTP/1.0, a body, Connection, Expect or anything unusual in the request)
// hands its connection, with the bytes already read, to the net/http
// server, which serves it from then on. net/http spends most of a /lookup's
// CPU around the handler (a background read and a context per request,
// header maps, response buffers); here a request costs one read and one
// write.
//
// httpFront is the net.Listener of the net/http server: Accept returns the
// handed-over connections.
type httpFront struct {
	d       *Daemon
	ln      net.Listener
	handoff chan net.Conn
	done    chan struct{} // closed by Close
	once    sync.Once
	conns   sync.WaitGroup // the connections served here

	mu      sync.Mutex
	active  map[net.Conn]struct{} // guarded by mu
	closing bool                  // guarded by mu

	date   atomic.Pointer[httpDate]
	served atomic.Uint64 // answers written here (tests)
}

// httpDate is a Date header value and the second it is for.
type httpDate struct {
	unix  int64
	value []byte
}

func newHTTPFront(d *Daemon, ln net.Listener) *httpFront {
	return &httpFront{d: d, ln: ln, handoff: make(chan net.Conn), done: make(chan struct{}), active: make(map[net.Conn]struct{})}
}

// Accept returns the next connection handed to net/http.
func (f *httpFront) Accept() (net.Conn, error) {
	select {
	case c := <-f.handoff:
		return c, nil
	case <-f.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting and has every connection served here close once
// its current answer is written. Idempotent.
func (f *httpFront) Close() error {
	f.once.Do(func() {
		close(f.done)
		f.ln.Close()
		f.mu.Lock()
		f.closing = true
		for c := range f.active {
			c.SetReadDeadline(time.Unix(1, 0)) // wakes a connection waiting for a request
		}
		f.mu.Unlock()
	})
	return nil
}

// Addr is the listening address.
func (f *httpFront) Addr() net.Addr { return f.ln.Addr() }

// serve accepts connections until Close, then waits for those it serves.
func (f *httpFront) serve() {
	defer f.conns.Wait()
	var delay time.Duration
	for {
		c, err := f.ln.Accept()
		if err != nil {
			select {
			case <-f.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ECONNABORTED) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				f.d.logger.Warn("HTTP: accept failed", "err", err, "retry_in", delay)
				select {
				case <-time.After(delay):
				case <-f.done:
					return
				}
				continue
			}
			f.d.logger.Error("HTTP: accept failed", "err", err)
			return
		}
		delay = 0
		f.mu.Lock()
		if f.closing {
			f.mu.Unlock()
			c.Close()
			continue
		}
		f.active[c] = struct{}{}
		f.conns.Add(1)
		f.mu.Unlock()
		go f.serveConn(c)
	}
}

// serveConn answers the requests of c it can and hands c to net/http at
// the first it cannot.
func (f *httpFront) serveConn(c net.Conn) {
	defer f.conns.Done()
	br := bufio.NewReaderSize(c, 4096)
	var out []byte
	// The idle and write deadlines are moved forward at most once a
	// second (each move is a timer update): they hold to within a second
	// (a write timeout below 10 s, in tests, is set for every answer).
	var readSet, writeSet time.Time
	for {
		if now := time.Now(); now.Sub(readSet) >= time.Second {
			c.SetReadDeadline(now.Add(httpIdleTimeout))
			readSet = now
		}
		// After the deadline was set: Close's deadline in the past, set
		// once closing is true, then comes after it and wakes the read.
		f.mu.Lock()
		closing := f.closing
		f.mu.Unlock()
		if closing {
			f.drop(c)
			return
		}
		head, headerDeadline, err := readHead(br, c)
		if err != nil {
			f.drop(c)
			return
		}
		if headerDeadline {
			readSet = time.Time{}
		}
		topic, ok := simpleLookup(head)
		if !ok {
			f.handOff(c, br)
			return
		}
		now := time.Now()
		e := f.d.lookups.get(topic, f.d.registry.gen.Load(), now)
		if e == nil {
			e, err = f.d.lookup(string(topic), now)
		}
		if err != nil || e == nil {
			f.handOff(c, br) // net/http answers the error
			return
		}
		br.Discard(len(head))
		out = append(out[:0], "HTTP/1.1 200 OK\r\nContent-Length: "...)
		out = append(out, e.contentLength[0]...)
		out = append(out, "\r\nContent-Type: application/json; charset=utf-8\r\nX-Nsq-Content-Type: nsq; version=1.0\r\nDate: "...)
		out = append(out, f.dateValue(now)...)
		out = append(out, "\r\n\r\n"...)
		out = append(out, e.body...)
		f.served.Add(1) // before the write: a test reads it once the answer arrived
		if now.Sub(writeSet) >= time.Second || f.d.httpWriteTimeout < 10*time.Second {
			c.SetWriteDeadline(now.Add(f.d.httpWriteTimeout))
			writeSet = now
		}
		if _, err := c.Write(out); err != nil {
			f.drop(c)
			return
		}
		if cap(out) > 64<<10 {
			out = nil // a topic with a huge answer does not pin its buffer
		}
	}
}

func (f *httpFront) drop(c net.Conn) {
	f.mu.Lock()
	delete(f.active, c)
	f.mu.Unlock()
	c.Close()
}

// handOff gives c, with what br has read of it, to the net/http server.
func (f *httpFront) handOff(c net.Conn, br *bufio.Reader) {
	f.mu.Lock()
	delete(f.active, c)
	f.mu.Unlock()
	c.SetDeadline(time.Time{})
	select {
	case f.handoff <- &bufferedConn{Conn: c, r: br}:
	case <-f.done:
		c.Close()
	}
}

// bufferedConn is a connection whose first bytes were read into r.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// dateValue is the Date header value of now, formatted once a second.
func (f *httpFront) dateValue(now time.Time) []byte {
	sec := now.Unix()
	if d := f.date.Load(); d != nil && d.unix == sec {
		return d.value
	}
	d := &httpDate{unix: sec, value: now.UTC().AppendFormat(nil, http.TimeFormat)}
	f.date.Store(d)
	return d.value
}

var headEnd = []byte("\r\n\r\n")

// readHead returns the request line and headers at the start of br's
// buffer, through the empty line, without consuming them. A request head
// larger than the buffer is returned incomplete (simpleLookup refuses it;
// net/http reads it). Once a request has begun, the rest of its head must
// come within net/http's ReadHeaderTimeout; headerDeadline reports that
// this deadline was set.
func readHead(br *bufio.Reader, c net.Conn) (head []byte, headerDeadline bool, err error) {
	if _, err := br.Peek(1); err != nil {
		return nil, false, err
	}
	for {
		buf, _ := br.Peek(br.Buffered())
		if i := bytes.Index(buf, headEnd); i >= 0 {
			return buf[:i+len(headEnd)], headerDeadline, nil
		}
		if br.Buffered() == br.Size() {
			return buf, headerDeadline, nil
		}
		if !headerDeadline {
			c.SetReadDeadline(time.Now().Add(httpReadHeaderTimeout))
			headerDeadline = true
		}
		if _, err := br.Peek(br.Buffered() + 1); err != nil {
			return nil, headerDeadline, err
		}
	}
}

// simpleLookup returns the topic of head if head is a request this front
// answers: "GET /lookup?<query> HTTP/1.1", a query of plain characters
// (nothing escaped) with a topic parameter, and headers that are all well
// formed, one Host and none that changes how the request is read or
// answered.
func simpleLookup(head []byte) ([]byte, bool) {
	const prefix, suffix = "GET /lookup?", " HTTP/1.1"
	line, rest, ok := bytes.Cut(head, []byte("\r\n"))
	if !ok || !bytes.HasPrefix(line, []byte(prefix)) || !bytes.HasSuffix(line, []byte(suffix)) {
		return nil, false
	}
	query := line[len(prefix) : len(line)-len(suffix)]
	for _, b := range query {
		if !plainQueryByte(b) {
			return nil, false
		}
	}
	var topic []byte
	found := false
	for q := query; len(q) > 0 && !found; {
		var pair []byte
		pair, q, _ = bytes.Cut(q, []byte("&"))
		key, value, _ := bytes.Cut(pair, []byte("="))
		if string(key) == "topic" {
			topic, found = value, true
		}
	}
	if !found {
		return nil, false
	}
	hosts := 0
	for {
		var hl []byte
		hl, rest, ok = bytes.Cut(rest, []byte("\r\n"))
		if !ok {
			return nil, false // incomplete head
		}
		if len(hl) == 0 {
			break
		}
		name, value, ok := bytes.Cut(hl, []byte(":"))
		if !ok || len(name) == 0 {
			return nil, false
		}
		for _, b := range name {
			if !tokenByte(b) {
				return nil, false
			}
		}
		for _, b := range value {
			if b < ' ' && b != '\t' || b == 0x7f {
				return nil, false
			}
		}
		switch {
		case asciiEqualFold(name, "Host"):
			hosts++
			for _, b := range bytes.Trim(value, " \t") {
				if !hostByte(b) {
					return nil, false
				}
			}
		case asciiEqualFold(name, "Content-Length"), asciiEqualFold(name, "Transfer-Encoding"),
			asciiEqualFold(name, "Connection"), asciiEqualFold(name, "Expect"), asciiEqualFold(name, "Upgrade"),
			asciiEqualFold(name, "Trailer"), asciiEqualFold(name, "Te"):
			return nil, false
		}
	}
	if hosts != 1 || len(rest) != 0 {
		return nil, false
	}
	return topic, true
}

// plainQueryByte: a query byte that url.ParseQuery keeps as it is.
func plainQueryByte(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' ||
		b == '-' || b == '.' || b == '_' || b == '~' || b == '/' || b == '=' || b == '&' || b == ':' || b == '@' || b == ','
}

// tokenByte: a header-name byte (RFC 9110 token).
func tokenByte(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' ||
		bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), b) >= 0
}

// hostByte: a byte of a plain host[:port] Host value.
func hostByte(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' ||
		b == '-' || b == '.' || b == ':' || b == '[' || b == ']' || b == '_'
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
