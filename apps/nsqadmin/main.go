// Command nsqadmin is Sluice's admin web UI, a drop-in replacement for NSQ 1.3.0's
// nsqadmin: same flags, config keys and defaults (protocol.md §15.4), plus live graphs
// from its own sampler instead of Graphite (--sample-interval, --history-window).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/sluicemq/sluice/admin"
	"github.com/sluicemq/sluice/internal/config"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

// keyOverrides maps flags whose config key is not the flag name with - -> _.
var keyOverrides = map[string]string{
	"lookupd-http-address": "nsqlookupd_http_addresses",
	"nsqd-http-address":    "nsqd_http_addresses",
	"admin-user":           "admin_users",
}

func run(args []string) int {
	opts, showVersion, err := parseOptions(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if showVersion {
		fmt.Println(config.VersionLine("nsqadmin"))
		return 0
	}
	logger := opts.Logger
	a, err := admin.New(opts)
	if err != nil {
		logger.Log(context.Background(), config.LevelFatal, "failed to instantiate nsqadmin", "err", err)
		return 1
	}
	logger.Info(config.VersionLine("nsqadmin"))
	if err := a.Start(); err != nil {
		logger.Log(context.Background(), config.LevelFatal, "failed to start nsqadmin", "err", err)
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	signal.Stop(sig)
	a.Exit()
	return 0
}

// parseOptions turns the command line and the --config file into admin options, with a
// logger writing to logOut. It reports --version instead of options when given.
func parseOptions(args []string, logOut io.Writer) (*admin.Options, bool, error) {
	d := admin.NewOptions()
	fs := flag.NewFlagSet("nsqadmin", flag.ContinueOnError)
	level := new(slog.LevelVar)
	configPath := fs.String("config", "", "path to config file")
	showVersion := fs.Bool("version", false, "print version string")
	fs.Var(config.LevelFlag{Var: level}, "log-level", "set log verbosity: debug, info, warn, error, or fatal")
	logPrefix := fs.String("log-prefix", "[nsqadmin] ", "log message prefix")
	fs.Bool("verbose", false, "[deprecated] has no effect, use --log-level")

	httpAddress := fs.String("http-address", d.HTTPAddress, "<addr>:<port> to listen on for HTTP clients")
	basePath := fs.String("base-path", d.BasePath, "URL base path")
	devStaticDir := fs.String("dev-static-dir", d.DevStaticDir, "(development use only) serve UI assets from this folder")
	graphiteURL := fs.String("graphite-url", d.GraphiteURL, "graphite HTTP address (accepted for compatibility; Sluice graphs from its own sampler)")
	proxyGraphite := fs.Bool("proxy-graphite", d.ProxyGraphite, "proxy HTTP requests to graphite (accepted for compatibility)")
	statsdPrefix := fs.String("statsd-prefix", d.StatsdPrefix, "prefix used for keys sent to statsd (accepted for compatibility)")
	statsdCounterFormat := fs.String("statsd-counter-format", d.StatsdCounterFormat, "the counter stats key formatting applied by the implementation of statsd")
	statsdGaugeFormat := fs.String("statsd-gauge-format", d.StatsdGaugeFormat, "the gauge stats key formatting applied by the implementation of statsd")
	statsdInterval := fs.Duration("statsd-interval", d.StatsdInterval, "time interval nsqd is configured to push to statsd (must match nsqd)")
	var lookupds, nsqds, adminUsers config.StringList
	fs.Var(&lookupds, "lookupd-http-address", "lookupd HTTP address (may be given multiple times)")
	fs.Var(&nsqds, "nsqd-http-address", "nsqd HTTP address (may be given multiple times)")
	connectTimeout := fs.Duration("http-client-connect-timeout", d.HTTPClientConnectTimeout, "timeout for HTTP connect")
	requestTimeout := fs.Duration("http-client-request-timeout", d.HTTPClientRequestTimeout, "timeout for HTTP request")
	tlsSkip := fs.Bool("http-client-tls-insecure-skip-verify", d.HTTPClientTLSInsecureSkipVerify, "configure the HTTP client to skip verification of TLS certificates")
	tlsRootCA := fs.String("http-client-tls-root-ca-file", d.HTTPClientTLSRootCAFile, "path to CA file for the HTTP client")
	tlsCert := fs.String("http-client-tls-cert", d.HTTPClientTLSCert, "path to certificate file for the HTTP client")
	tlsKey := fs.String("http-client-tls-key", d.HTTPClientTLSKey, "path to key file for the HTTP client")
	allowCIDR := fs.String("allow-config-from-cidr", d.AllowConfigFromCIDR, "a CIDR from which to allow HTTP requests to the /config endpoint")
	notify := fs.String("notification-http-endpoint", d.NotificationHTTPEndpoint, "HTTP endpoint (fully qualified) to which POST notifications of admin actions will be sent")
	aclHeader := fs.String("acl-http-header", d.ACLHTTPHeader, "HTTP header to check for authenticated admin users")
	fs.Var(&adminUsers, "admin-user", "admin user (may be given multiple times; if specified, only these users will be able to perform privileged actions)")
	sampleInterval := fs.Duration("sample-interval", d.SampleInterval, "how often to sample every nsqd's /stats for the live graphs")
	historyWindow := fs.Duration("history-window", d.HistoryWindow, "how much sampled history to keep in memory for the live graphs")
	historyMaxSeries := fs.Int("history-max-series", d.HistoryMaxSeries, "most series (topics and channels) whose sampled history is kept in memory")
	if err := fs.Parse(args); err != nil {
		return nil, false, err
	}
	if *showVersion {
		return nil, true, nil
	}
	if *configPath != "" {
		if err := config.Load(fs, *configPath, keyOverrides); err != nil {
			return nil, false, fmt.Errorf("%sFATAL: failed to load config file %s - %w", *logPrefix, *configPath, err)
		}
	}
	logger := config.NewLogger(logOut, *logPrefix, level)

	opts := admin.NewOptions()
	opts.Logger, opts.LogLevel = logger, level
	opts.HTTPAddress, opts.BasePath, opts.DevStaticDir = *httpAddress, *basePath, *devStaticDir
	opts.GraphiteURL, opts.ProxyGraphite = *graphiteURL, *proxyGraphite
	opts.StatsdPrefix, opts.StatsdCounterFormat, opts.StatsdGaugeFormat = *statsdPrefix, *statsdCounterFormat, *statsdGaugeFormat
	opts.StatsdInterval = *statsdInterval
	opts.NSQLookupdHTTPAddresses, opts.NSQDHTTPAddresses = lookupds, nsqds
	opts.HTTPClientConnectTimeout, opts.HTTPClientRequestTimeout = *connectTimeout, *requestTimeout
	opts.HTTPClientTLSInsecureSkipVerify, opts.HTTPClientTLSRootCAFile = *tlsSkip, *tlsRootCA
	opts.HTTPClientTLSCert, opts.HTTPClientTLSKey = *tlsCert, *tlsKey
	opts.AllowConfigFromCIDR, opts.NotificationHTTPEndpoint = *allowCIDR, *notify
	opts.ACLHTTPHeader, opts.AdminUsers = *aclHeader, adminUsers
	opts.SampleInterval, opts.HistoryWindow, opts.HistoryMaxSeries = *sampleInterval, *historyWindow, *historyMaxSeries

	return opts, false, nil
}
