//go:build nosluice

package main

import (
	"log/slog"

	"github.com/sluicemq/sluice/bench"
)

// inprocLauncher returns nil: this build has no in-process nsqd.
func inprocLauncher(*slog.Logger) bench.Launcher { return nil }
