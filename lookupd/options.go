package lookupd

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// Defaults (protocol.md §15.3) and Sluice's own limits, in one place.
const (
	// DefaultTCPAddress is where nsqds register.
	DefaultTCPAddress = "0.0.0.0:4160"
	// DefaultHTTPAddress serves the HTTP API (§10).
	DefaultHTTPAddress = "0.0.0.0:4161"
	// DefaultInactiveProducerTimeout hides producers silent for longer.
	DefaultInactiveProducerTimeout = 300 * time.Second
	// DefaultTombstoneLifetime is how long /topic/tombstone hides a producer.
	DefaultTombstoneLifetime = 45 * time.Second
	// DefaultPeerReadTimeout closes a registration connection that sent
	// nothing for this long. nsqd PINGs every 15 s, so 2 x 15 s tolerates one
	// lost or late PING and drops a dead peer (host gone, no FIN/RST) within
	// 30 s instead of never: the reference sets no deadline and keeps such
	// producers registered forever (hidden only after the inactive timeout).
	DefaultPeerReadTimeout = 30 * time.Second
	// peerWriteTimeout bounds each reply write; replies are a few bytes.
	peerWriteTimeout = 10 * time.Second
	// httpWriteTimeout bounds writing one HTTP response (pprof excepted);
	// httpIdleTimeout closes idle keep-alive connections.
	httpWriteTimeout = 30 * time.Second
	httpIdleTimeout  = 2 * time.Minute
	// httpReadHeaderTimeout bounds reading a request's head once it began.
	httpReadHeaderTimeout = 10 * time.Second
	// maxLineSize bounds a request line. A valid REGISTER line is < 150
	// bytes; longer lines are answered E_INVALID and closed.
	maxLineSize = 64 << 10
)

// Options configures a Daemon. Field names follow NSQ's; NewOptions returns
// the defaults.
type Options struct {
	// TCPAddress is the listen address for the V1 registration protocol
	// (--tcp-address).
	TCPAddress string
	// HTTPAddress is the listen address for the HTTP API (--http-address).
	HTTPAddress string
	// BroadcastAddress is returned to nsqds in the IDENTIFY reply; they use
	// it with the HTTP port to query /channels (--broadcast-address;
	// default: the OS hostname).
	BroadcastAddress string
	// InactiveProducerTimeout hides producers whose last PING is older from
	// /lookup and /nodes (--inactive-producer-timeout).
	InactiveProducerTimeout time.Duration
	// TombstoneLifetime is how long a tombstoned producer stays hidden from
	// /lookup (--tombstone-lifetime).
	TombstoneLifetime time.Duration
	// PeerReadTimeout closes a registration connection silent for longer
	// (--peer-read-timeout, Sluice extension; 0 disables, like NSQ).
	PeerReadTimeout time.Duration
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
}

// NewOptions returns NSQ 1.3.0's nsqlookupd defaults.
func NewOptions() *Options {
	host, err := os.Hostname()
	if err != nil {
		host = "localhost"
	}
	return &Options{
		TCPAddress:              DefaultTCPAddress,
		HTTPAddress:             DefaultHTTPAddress,
		BroadcastAddress:        host,
		InactiveProducerTimeout: DefaultInactiveProducerTimeout,
		TombstoneLifetime:       DefaultTombstoneLifetime,
		PeerReadTimeout:         DefaultPeerReadTimeout,
	}
}

// validate returns an error naming the first bad option.
func (o *Options) validate() error {
	switch {
	case o.TCPAddress == "":
		return errors.New("option tcp-address: must not be empty")
	case o.HTTPAddress == "":
		return errors.New("option http-address: must not be empty")
	case o.InactiveProducerTimeout < 0:
		return fmt.Errorf("option inactive-producer-timeout: %v must not be negative", o.InactiveProducerTimeout)
	case o.TombstoneLifetime < 0:
		return fmt.Errorf("option tombstone-lifetime: %v must not be negative", o.TombstoneLifetime)
	case o.PeerReadTimeout < 0:
		return fmt.Errorf("option peer-read-timeout: %v must not be negative", o.PeerReadTimeout)
	}
	return nil
}
