//go:build !nosluice

package main

import (
	"log/slog"

	"github.com/sluicemq/sluice/bench"
	"github.com/sluicemq/sluice/bench/inproc"
)

// inprocLauncher returns the in-process Sluice nsqd launcher.
func inprocLauncher(logger *slog.Logger) bench.Launcher {
	return &inproc.Launcher{Logger: logger}
}
