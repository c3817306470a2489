//go:build !nosluice

// Package inproc runs Sluice's nsqd library inside the bench process, as a
// bench.Launcher. It is a separate package so that the bench library and the
// runner can be built without nsqd (build the runner with -tags nosluice).
package inproc

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/sluicemq/sluice/bench"
	"github.com/sluicemq/sluice/nsqd"
)

// Launcher starts an in-process Sluice nsqd per scenario.
type Launcher struct {
	// Label is the target name in the report ("sluice" if empty).
	Label string
	// Logger receives nsqd's logs; nil discards them.
	Logger *slog.Logger
}

// Name implements bench.Launcher.
func (l *Launcher) Name() string {
	if l.Label == "" {
		return "sluice"
	}
	return l.Label
}

// Launch implements bench.Launcher.
func (l *Launcher) Launch(ctx context.Context, cfg bench.NodeConfig) (*bench.Node, error) {
	opts := nsqd.NewOptions()
	opts.TCPAddress, opts.HTTPAddress, opts.HTTPSAddress = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	opts.BroadcastAddress = "127.0.0.1"
	opts.DataPath = cfg.DataPath
	opts.MemQueueSize = cfg.MemQueueSize
	opts.Durable = cfg.Durable
	if cfg.SyncEvery > 0 {
		opts.SyncEvery = cfg.SyncEvery
	}
	opts.Logger = l.Logger
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	n, err := nsqd.New(opts)
	if err != nil {
		return nil, fmt.Errorf("sluice nsqd: %w", err)
	}
	if err := n.Start(); err != nil {
		n.Exit()
		return nil, fmt.Errorf("start sluice nsqd: %w", err)
	}
	return bench.NewNode(n.TCPAddr().String(), n.HTTPAddr().String(), 0,
		fmt.Sprintf("in-process Sluice nsqd --mem-queue-size=%d%s", cfg.MemQueueSize, cfg.FlagNote()),
		func() error { n.Exit(); return nil }), nil
}

// SupportsDurable implements bench.DurableCapable.
func (l *Launcher) SupportsDurable() bool { return true }
