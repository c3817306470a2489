package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// Admin is a running (or startable) admin server. Create it with New, then Start; Exit
// stops it. Its goroutines (HTTP server, sampler, notifier) are owned by it and end in Exit.
type Admin struct {
	opts     *Options
	logger   *slog.Logger
	up       *upstream
	cluster  *cluster
	sampler  *sampler
	notifier *notifier
	cidr     *net.IPNet
	hostname string

	listener net.Listener
	server   *http.Server

	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	exitOnce sync.Once
}

// New validates opts and builds an Admin without opening any socket.
func New(opts *Options) (*Admin, error) {
	o := *opts
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("admin options: %w", err)
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.Default()
	}
	up, err := newUpstream(&o)
	if err != nil {
		return nil, fmt.Errorf("admin options: %w", err)
	}
	a := &Admin{opts: &o, logger: logger, up: up}
	a.cluster = &cluster{up: up, lookupds: append([]string(nil), o.NSQLookupdHTTPAddresses...),
		nsqds: append([]string(nil), o.NSQDHTTPAddresses...)}
	a.sampler = newSampler(a.cluster, o.SampleInterval, o.HistoryWindow, o.HTTPClientRequestTimeout, o.HistoryMaxSeries, logger)
	a.notifier = newNotifier(up.client.Transport, o.NotificationHTTPEndpoint, o.HTTPClientConnectTimeout+o.HTTPClientRequestTimeout, logger)
	if o.AllowConfigFromCIDR != "" {
		_, a.cidr, _ = net.ParseCIDR(o.AllowConfigFromCIDR)
	}
	a.hostname, _ = os.Hostname()
	a.ctx, a.cancel = context.WithCancel(context.Background())
	return a, nil
}

// Start opens the HTTP listener and starts serving, sampling and notifying; it does not block.
func (a *Admin) Start() error {
	ln, err := net.Listen("tcp", a.opts.HTTPAddress)
	if err != nil {
		return fmt.Errorf("listen on --http-address %q: %w", a.opts.HTTPAddress, err)
	}
	a.listener = ln
	a.server = &http.Server{
		Handler:           a.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(a.logger.Handler(), slog.LevelWarn),
	}
	a.logger.Info("HTTP: listening", "addr", ln.Addr().String())
	a.wg.Add(3)
	go func() {
		defer a.wg.Done()
		if err := a.server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.logger.Error("HTTP server stopped", "err", err)
		}
	}()
	go func() {
		defer a.wg.Done()
		a.sampler.run(a.ctx)
	}()
	go func() {
		defer a.wg.Done()
		a.notifier.run(a.ctx)
	}()
	return nil
}

// HTTPAddr returns the address the UI and API listen on (nil before Start).
func (a *Admin) HTTPAddr() net.Addr {
	if a.listener == nil {
		return nil
	}
	return a.listener.Addr()
}

// Exit stops serving, sampling and notifying, and waits for every goroutine. Idempotent.
func (a *Admin) Exit() {
	a.exitOnce.Do(func() {
		if a.server != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := a.server.Shutdown(ctx); err != nil {
				a.logger.Warn("HTTP shutdown", "err", err)
				_ = a.server.Close()
			}
			cancel()
		}
		a.cancel()
		a.wg.Wait()
		a.up.close()
	})
}
