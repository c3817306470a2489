// Command nsqd is Sluice's queue daemon, flag- and config-compatible with
// NSQ's nsqd.
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
	"github.com/sluicemq/sluice/nsqd"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	opts, done, code := loadOptions(args, stdout, stderr)
	if done {
		return code
	}
	logger := opts.Logger
	n, err := nsqd.New(opts)
	if err != nil {
		logger.Log(context.Background(), config.LevelFatal, "failed to instantiate nsqd", "err", err)
		return 1
	}
	if err := n.Start(); err != nil {
		logger.Log(context.Background(), config.LevelFatal, "failed to start nsqd", "err", err)
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	signal.Stop(sig)
	n.Exit()
	return 0
}

// loadOptions turns the command line and the --config file into Options
// (flags win over the file, the file over defaults). done reports that the
// program should exit with code (after --version, --help or an error).
func loadOptions(args []string, stdout, stderr io.Writer) (opts *nsqd.Options, done bool, code int) {
	opts = nsqd.NewOptions()
	level := new(slog.LevelVar)
	fs := newFlagSet(opts, level)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, true, 0
		}
		return nil, true, 2
	}
	if fs.Lookup("version").Value.String() == "true" {
		fmt.Fprintln(stdout, config.VersionLine("nsqd"))
		return nil, true, 0
	}
	if path := fs.Lookup("config").Value.String(); path != "" {
		if err := config.Load(fs, path, keyOverrides); err != nil {
			fmt.Fprintf(stderr, "nsqd: failed to load config file %s: %v\n", path, err)
			return nil, true, 1
		}
	}
	opts.Logger = config.NewLogger(stderr, opts.LogPrefix, level)
	opts.LogLevelVar = level
	opts.LogLevel = config.LevelFlag{Var: level}.String()
	return opts, false, 0
}
