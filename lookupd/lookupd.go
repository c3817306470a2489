package lookupd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/sluicemq/sluice/internal/config"
	"github.com/sluicemq/sluice/protocol"
)

// Daemon is an nsqlookupd: the registration protocol on TCPAddress, the
// HTTP API on HTTPAddress, and the Registry behind both.
//
// Lifecycle: New validates the options; Start opens both listeners and
// serves in the background; Exit closes the listeners and every connection
// and waits for all goroutines. Exit is idempotent.
type Daemon struct {
	opts     Options
	logger   *slog.Logger
	registry *Registry
	hostname string
	stats    counters
	lookups  lookupCache

	tcpLn   net.Listener
	httpLn  net.Listener
	httpSrv *http.Server
	front   *httpFront // accepts HTTP connections, hands most to httpSrv

	// wg tracks the accept loop, the HTTP server and one goroutine per
	// registration connection.
	wg sync.WaitGroup

	// mu guards conns and closing.
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	closing bool

	exitOnce sync.Once

	// httpWriteTimeout bounds writing one HTTP response (set by New; tests
	// may lower it before Start).
	httpWriteTimeout time.Duration

	// testHookPeerClose, if set (tests only, before Start), runs when a
	// registration connection starts closing, before its registrations are
	// removed.
	testHookPeerClose func(id string)
}

// New returns a Daemon configured by opts (copied). It opens nothing.
func New(opts *Options) (*Daemon, error) {
	if opts == nil {
		opts = NewOptions()
	}
	if err := opts.validate(); err != nil {
		return nil, err
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	host, err := os.Hostname()
	if err != nil {
		return nil, fmt.Errorf("read hostname: %w", err)
	}
	return &Daemon{
		opts:   *opts,
		logger: logger,
		registry: NewRegistry(RegistryConfig{
			InactiveTimeout:   opts.InactiveProducerTimeout,
			TombstoneLifetime: opts.TombstoneLifetime,
		}),
		hostname:         host,
		conns:            make(map[net.Conn]struct{}),
		httpWriteTimeout: httpWriteTimeout,
	}, nil
}

// Start opens the TCP and HTTP listeners and serves both in background
// goroutines owned by the Daemon. It returns once both are listening.
func (d *Daemon) Start() error {
	tcpLn, err := net.Listen("tcp", d.opts.TCPAddress)
	if err != nil {
		return fmt.Errorf("listen tcp %s: %w", d.opts.TCPAddress, err)
	}
	httpLn, err := net.Listen("tcp", d.opts.HTTPAddress)
	if err != nil {
		tcpLn.Close()
		return fmt.Errorf("listen http %s: %w", d.opts.HTTPAddress, err)
	}
	d.tcpLn, d.httpLn = tcpLn, httpLn
	d.httpSrv = &http.Server{
		Handler:           d.withWriteDeadline(d.newRouter()),
		ReadHeaderTimeout: httpReadHeaderTimeout,
		IdleTimeout:       httpIdleTimeout,
		ErrorLog:          slog.NewLogLogger(d.logger.Handler(), slog.LevelWarn),
	}
	d.logger.Info("TCP: listening", "addr", tcpLn.Addr().String())
	d.logger.Info("HTTP: listening", "addr", httpLn.Addr().String())

	d.front = newHTTPFront(d, httpLn)

	d.wg.Add(3)
	go func() {
		defer d.wg.Done()
		d.acceptLoop(tcpLn)
	}()
	go func() {
		defer d.wg.Done()
		d.front.serve()
	}()
	go func() {
		defer d.wg.Done()
		if err := d.httpSrv.Serve(d.front); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.logger.Error("HTTP: serve failed", "err", err)
		}
	}()
	return nil
}

// TCPAddr returns the actual registration listen address (after Start).
func (d *Daemon) TCPAddr() net.Addr { return d.tcpLn.Addr() }

// HTTPAddr returns the actual HTTP listen address (after Start).
func (d *Daemon) HTTPAddr() net.Addr { return d.httpLn.Addr() }

// Registry returns the registration database (for embedding and tests).
func (d *Daemon) Registry() *Registry { return d.registry }

// Exit stops serving: it closes both listeners and every registration
// connection (their producers are removed), shuts the HTTP server down and
// waits for every goroutine. Safe to call more than once and before Start.
func (d *Daemon) Exit() {
	d.exitOnce.Do(func() {
		d.mu.Lock()
		d.closing = true
		for c := range d.conns {
			c.Close()
		}
		d.mu.Unlock()
		if d.tcpLn != nil {
			d.tcpLn.Close()
		}
		if d.httpSrv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := d.httpSrv.Shutdown(ctx); err != nil {
				d.httpSrv.Close()
			}
			cancel()
		}
		if d.front != nil {
			d.front.Close() // Shutdown closes it unless it came before Serve
		}
		d.wg.Wait()
		d.logger.Info("exited")
	})
}

// withWriteDeadline gives every response except pprof's (whose profiles
// stream for as long as asked) httpWriteTimeout to be written, so a client
// that stops reading a large answer (/debug, /nodes with thousands of
// topics) releases its connection and goroutine instead of holding them
// forever. Handlers build their answer from a copy of the registry, so such
// a client never holds the registry lock.
func (d *Daemon) withWriteDeadline(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// On a keep-alive connection the deadline of the previous request
		// is still set: pprof clears it. Not every ResponseWriter supports
		// deadlines; the error only means no deadline.
		deadline := time.Now().Add(d.httpWriteTimeout)
		if strings.HasPrefix(r.URL.Path, "/debug/pprof") {
			deadline = time.Time{}
		}
		_ = http.NewResponseController(w).SetWriteDeadline(deadline)
		h.ServeHTTP(w, r)
	})
}

// identifyReply is the JSON this lookupd returns to IDENTIFY.
func (d *Daemon) identifyReply() protocol.LookupIdentifyReply {
	return protocol.LookupIdentifyReply{
		BroadcastAddress: d.opts.BroadcastAddress,
		Hostname:         d.hostname,
		HTTPPort:         d.httpLn.Addr().(*net.TCPAddr).Port,
		TCPPort:          d.tcpLn.Addr().(*net.TCPAddr).Port,
		Version:          config.Version,
	}
}

// trackConn registers c for Exit; it returns false when exiting (c must
// then be closed by the caller).
func (d *Daemon) trackConn(c net.Conn) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closing {
		return false
	}
	d.conns[c] = struct{}{}
	return true
}

func (d *Daemon) untrackConn(c net.Conn) {
	d.mu.Lock()
	delete(d.conns, c)
	d.mu.Unlock()
}
