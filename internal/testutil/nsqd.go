package testutil

import (
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"

	"github.com/sluicemq/sluice/nsqd"
)

// LogEnv names the environment variable that, when non-empty, sends the logs
// of daemons started by this package to stderr (they are discarded otherwise).
const LogEnv = "SLUICE_TEST_LOG"

// nsqdServer is the part of *nsqd.NSQD the helpers use; naming it as an
// interface keeps the helpers independent of the concrete type's name.
type nsqdServer interface {
	TCPAddr() net.Addr
	HTTPAddr() net.Addr
	Exit()
}

// httpsServer is implemented by an nsqd that can report its HTTPS listener.
type httpsServer interface {
	HTTPSAddr() net.Addr
}

// NSQDHandle is a running nsqd started by StartNSQD or RestartNSQD.
type NSQDHandle struct {
	// Opts are the options the daemon was started with.
	Opts *nsqd.Options
	// Server is the daemon itself.
	Server nsqdServer
	// TCPAddr, HTTPAddr are the actual listening addresses ("127.0.0.1:port").
	TCPAddr, HTTPAddr string
	// HTTPSAddr is the HTTPS listening address, "" when TLS is not configured.
	HTTPSAddr string
	// DataPath is the data directory; RestartNSQD reuses it.
	DataPath string

	mutate   func(*nsqd.Options)
	exitOnce sync.Once
}

// TestLogger returns the logger daemons started by tests use: discard unless
// LogEnv is set.
func TestLogger() *slog.Logger {
	if os.Getenv(LogEnv) != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// StartNSQD starts an nsqd listening on 127.0.0.1 with ephemeral TCP, HTTP and
// HTTPS ports, broadcast address 127.0.0.1 and a fresh data directory, after
// applying mutate (may be nil) to the options. The daemon is exited when the
// test ends. It fails the test if the daemon does not start.
func StartNSQD(t testing.TB, mutate func(*nsqd.Options)) *NSQDHandle {
	t.Helper()
	return startNSQD(t, t.TempDir(), mutate)
}

// StartNSQDAt is StartNSQD on a data directory of the caller's (a small
// tmpfs, say).
func StartNSQDAt(t testing.TB, dataPath string, mutate func(*nsqd.Options)) *NSQDHandle {
	t.Helper()
	return startNSQD(t, dataPath, mutate)
}

// RestartNSQD exits h (if it still runs) and starts a new nsqd with the same
// options and the same data directory. The new daemon listens on new
// ephemeral ports; clients must reconnect to the returned handle's addresses.
func RestartNSQD(t testing.TB, h *NSQDHandle) *NSQDHandle {
	t.Helper()
	h.Exit()
	return startNSQD(t, h.DataPath, h.mutate)
}

func startNSQD(t testing.TB, dataPath string, mutate func(*nsqd.Options)) *NSQDHandle {
	t.Helper()
	opts := nsqd.NewOptions()
	opts.TCPAddress = "127.0.0.1:0"
	opts.HTTPAddress = "127.0.0.1:0"
	opts.HTTPSAddress = "127.0.0.1:0"
	opts.BroadcastAddress = "127.0.0.1"
	opts.Logger = TestLogger()
	if mutate != nil {
		mutate(opts)
	}
	opts.DataPath = dataPath
	n, err := nsqd.New(opts)
	if err != nil {
		t.Fatalf("nsqd.New: %v", err)
	}
	if err := n.Start(); err != nil {
		t.Fatalf("nsqd Start: %v", err)
	}
	h := &NSQDHandle{
		Opts:     opts,
		Server:   n,
		TCPAddr:  n.TCPAddr().String(),
		HTTPAddr: n.HTTPAddr().String(),
		DataPath: dataPath,
		mutate:   mutate,
	}
	if hs, ok := any(n).(httpsServer); ok {
		if a := hs.HTTPSAddr(); a != nil && a.String() != "<nil>" {
			h.HTTPSAddr = a.String()
		}
	}
	t.Cleanup(h.Exit)
	return h
}

// Exit shuts the daemon down gracefully (flushing queues to disk) and waits
// for it. It is idempotent.
func (h *NSQDHandle) Exit() {
	h.exitOnce.Do(h.Server.Exit)
}

// URL returns "http://<HTTPAddr><pathAndQuery>".
func (h *NSQDHandle) URL(pathAndQuery string) string {
	return "http://" + h.HTTPAddr + pathAndQuery
}
