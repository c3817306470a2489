package admin

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"
)

// Options configures an Admin server. Field names follow nsqadmin's flags (§15.4 of
// protocol.md); NewOptions returns nsqadmin 1.3.0's defaults plus Sluice's own additions
// (the sampler that replaces Graphite).
type Options struct {
	// Logger receives every log line; nil means slog.Default().
	Logger *slog.Logger
	// LogLevel, when set, is the level variable behind Logger; PUT /config/log_level changes it.
	LogLevel *slog.LevelVar

	// HTTPAddress is the listen address of the UI and API (--http-address).
	HTTPAddress string
	// BasePath prefixes every route (--base-path); "/" or "/admin" style.
	BasePath string
	// DevStaticDir, when set, serves UI assets from this folder instead of the embedded copy.
	DevStaticDir string

	// GraphiteURL, ProxyGraphite and the statsd settings are accepted for compatibility
	// with nsqadmin's configuration; Sluice plots from its own sampler instead of Graphite.
	GraphiteURL         string
	ProxyGraphite       bool
	StatsdPrefix        string
	StatsdCounterFormat string
	StatsdGaugeFormat   string
	StatsdInterval      time.Duration

	// NSQLookupdHTTPAddresses and NSQDHTTPAddresses select cluster mode or direct mode;
	// exactly one of them must be non-empty.
	NSQLookupdHTTPAddresses []string
	NSQDHTTPAddresses       []string

	// HTTPClientConnectTimeout and HTTPClientRequestTimeout bound every upstream call.
	HTTPClientConnectTimeout time.Duration
	HTTPClientRequestTimeout time.Duration
	// TLS settings of the upstream HTTP client.
	HTTPClientTLSInsecureSkipVerify bool
	HTTPClientTLSRootCAFile         string
	HTTPClientTLSCert               string
	HTTPClientTLSKey                string

	// AllowConfigFromCIDR restricts GET/PUT /config/:opt to clients in this network.
	AllowConfigFromCIDR string
	// NotificationHTTPEndpoint receives a JSON POST per admin action when set.
	NotificationHTTPEndpoint string
	// ACLHTTPHeader names the request header that carries the user name.
	ACLHTTPHeader string
	// AdminUsers, when non-empty, are the only users allowed to act; everyone else is read-only.
	AdminUsers []string

	// SampleInterval is how often the sampler reads every node's /stats (Sluice addition).
	SampleInterval time.Duration
	// HistoryWindow is how much sampled history is kept in memory (Sluice addition).
	HistoryWindow time.Duration
	// HistoryMaxSeries bounds how many series (cluster, topics, channels) the history keeps
	// (Sluice addition; 0 means DefaultHistoryMaxSeries).
	HistoryMaxSeries int
}

// NewOptions returns nsqadmin 1.3.0's defaults.
func NewOptions() *Options {
	return &Options{
		HTTPAddress:              "0.0.0.0:4171",
		BasePath:                 "/",
		StatsdPrefix:             "nsq.%s",
		StatsdCounterFormat:      "stats.counters.%s.count",
		StatsdGaugeFormat:        "stats.gauges.%s",
		StatsdInterval:           60 * time.Second,
		HTTPClientConnectTimeout: 2 * time.Second,
		HTTPClientRequestTimeout: 5 * time.Second,
		AllowConfigFromCIDR:      "127.0.0.1/8",
		ACLHTTPHeader:            "X-Forwarded-User",
		SampleInterval:           5 * time.Second,
		HistoryWindow:            time.Hour,
		HistoryMaxSeries:         DefaultHistoryMaxSeries,
	}
}

// maxHistoryPoints bounds how many samples one series may hold (window / interval).
const maxHistoryPoints = 100_000

// validate checks the options and normalises BasePath; it returns an error naming the bad option.
func (o *Options) validate() error {
	if len(o.NSQLookupdHTTPAddresses) == 0 && len(o.NSQDHTTPAddresses) == 0 {
		return errors.New("--nsqd-http-address or --lookupd-http-address required")
	}
	if len(o.NSQLookupdHTTPAddresses) != 0 && len(o.NSQDHTTPAddresses) != 0 {
		return errors.New("use --nsqd-http-address or --lookupd-http-address not both")
	}
	if (o.HTTPClientTLSCert == "") != (o.HTTPClientTLSKey == "") {
		return errors.New("--http-client-tls-cert and --http-client-tls-key must both be set or both be empty")
	}
	if o.AllowConfigFromCIDR != "" {
		if _, _, err := net.ParseCIDR(o.AllowConfigFromCIDR); err != nil {
			return fmt.Errorf("invalid --allow-config-from-cidr %q: %w", o.AllowConfigFromCIDR, err)
		}
	}
	// Every upstream call must be bounded: a hung nsqd or nsqlookupd must not hang the UI.
	if o.HTTPClientConnectTimeout <= 0 {
		return fmt.Errorf("invalid --http-client-connect-timeout %s: must be positive", o.HTTPClientConnectTimeout)
	}
	if o.HTTPClientRequestTimeout <= 0 {
		return fmt.Errorf("invalid --http-client-request-timeout %s: must be positive", o.HTTPClientRequestTimeout)
	}
	if len(o.AdminUsers) > 0 && strings.TrimSpace(o.ACLHTTPHeader) == "" {
		return errors.New("--admin-user requires --acl-http-header")
	}
	for _, u := range o.AdminUsers {
		if strings.TrimSpace(u) == "" {
			return errors.New("invalid --admin-user: empty user name")
		}
	}
	if o.SampleInterval <= 0 {
		return fmt.Errorf("invalid sample interval %s: must be positive", o.SampleInterval)
	}
	if o.HistoryWindow < o.SampleInterval {
		return fmt.Errorf("invalid history window %s: shorter than the sample interval %s", o.HistoryWindow, o.SampleInterval)
	}
	if points := o.HistoryWindow / o.SampleInterval; points > maxHistoryPoints {
		return fmt.Errorf("invalid history window %s: %d samples per series at %s, more than %d", o.HistoryWindow, points, o.SampleInterval, maxHistoryPoints)
	}
	if o.HistoryMaxSeries < 0 {
		return fmt.Errorf("invalid history max series %d: must not be negative", o.HistoryMaxSeries)
	}
	o.BasePath = normalizeBasePath(o.BasePath)
	return nil
}

// normalizeBasePath returns "/" or "/x/y" (leading slash, no trailing slash).
func normalizeBasePath(p string) string {
	p = "/" + strings.Trim(p, "/")
	return p
}
