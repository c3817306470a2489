package testutil

import "os"

func envLogOn() bool { return os.Getenv(LogEnv) != "" }

// logWriter forwards go-nsq log lines to stderr.
type logWriter struct{}

func (logWriter) Write(p []byte) (int, error) { return os.Stderr.Write(p) }
