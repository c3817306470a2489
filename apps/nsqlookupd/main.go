// Command nsqlookupd is Sluice's discovery daemon, a drop-in replacement for
// NSQ 1.3.0's nsqlookupd: same flags, config keys and defaults
// (protocol.md §15.3).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/sluicemq/sluice/internal/config"
	"github.com/sluicemq/sluice/lookupd"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	defaults := lookupd.NewOptions()
	fs := flag.NewFlagSet("nsqlookupd", flag.ExitOnError)
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
	_ = fs.Parse(args)

	if *showVersion {
		fmt.Println(config.VersionLine("nsqlookupd"))
		return 0
	}
	if *configPath != "" {
		if err := config.Load(fs, *configPath, nil); err != nil {
			fmt.Fprintf(os.Stderr, "%sFATAL: failed to load config file %s - %s\n", *logPrefix, *configPath, err)
			return 1
		}
	}
	logger := config.NewLogger(os.Stderr, *logPrefix, level)

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
		logger.Log(context.Background(), config.LevelFatal, "failed to instantiate nsqlookupd", "err", err)
		return 1
	}
	logger.Info(config.VersionLine("nsqlookupd"))
	if err := d.Start(); err != nil {
		logger.Log(context.Background(), config.LevelFatal, "failed to start nsqlookupd", "err", err)
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	signal.Stop(sig)
	d.Exit()
	return 0
}
