// Command nsqlookupd is Sluice's discovery daemon, a drop-in replacement for
// NSQ 1.3.0's nsqlookupd: same flags, config keys and defaults
// (protocol.md §15.3), plus --peer-read-timeout (see package lookupd).
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

	"github.com/sluicemq/sluice/internal/config"
	"github.com/sluicemq/sluice/lookupd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run parses flags and the config file, starts the daemon and serves until
// ctx is done (SIGINT/SIGTERM), then exits gracefully. It returns the process
// exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	defaults := lookupd.NewOptions()
	fs := flag.NewFlagSet("nsqlookupd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	level := new(slog.LevelVar)
	configPath := fs.String("config", "", "path to config file")
	showVersion := fs.Bool("version", false, "print version string")
	fs.Var(config.LevelFlag{Var: level}, "log-level", "set log verbosity: debug, info, warn, error, or fatal")
	logPrefix := fs.String("log-prefix", "[nsqlookupd] ", "log message prefix")
	fs.Bool("verbose", false, "[deprecated] has no effect, use --log-level")
	tcpAddress := fs.String("tcp-address", defaults.TCPAddress, "<addr>:<port> to listen on for TCP clients")
	httpAddress := fs.String("http-address", defaults.HTTPAddress, "<addr>:<port> to listen on for HTTP clients")
	broadcastAddress := fs.String("broadcast-address", defaults.BroadcastAddress, "address of this lookupd node, (default to the OS hostname)")
	inactive := fs.Duration("inactive-producer-timeout", defaults.InactiveProducerTimeout, "duration of time a producer will remain in the active list since its last ping")
	tombstone := fs.Duration("tombstone-lifetime", defaults.TombstoneLifetime, "duration of time a producer will remain tombstoned if registration remains")
	peerRead := fs.Duration("peer-read-timeout", defaults.PeerReadTimeout, "close an nsqd registration connection silent for this long (0 = never; nsqd PINGs every 15s)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}

	if *showVersion {
		fmt.Fprintln(stdout, config.VersionLine("nsqlookupd"))
		return 0
	}
	if *configPath != "" {
		if err := config.Load(fs, *configPath, nil); err != nil {
			fmt.Fprintf(stderr, "%sFATAL: failed to load config file %s: %v\n", *logPrefix, *configPath, err)
			return 1
		}
	}
	logger := config.NewLogger(stderr, *logPrefix, level)

	opts := lookupd.NewOptions()
	opts.TCPAddress = *tcpAddress
	opts.HTTPAddress = *httpAddress
	opts.BroadcastAddress = *broadcastAddress
	opts.InactiveProducerTimeout = *inactive
	opts.TombstoneLifetime = *tombstone
	opts.PeerReadTimeout = *peerRead
	opts.Logger = logger

	d, err := lookupd.New(opts)
	if err != nil {
		logger.Log(ctx, config.LevelFatal, "failed to instantiate nsqlookupd", "err", err)
		return 1
	}
	logger.Info(config.VersionLine("nsqlookupd"))
	if err := d.Start(); err != nil {
		logger.Log(ctx, config.LevelFatal, "failed to start nsqlookupd", "err", err)
		return 1
	}
	<-ctx.Done()
	d.Exit()
	return 0
}
