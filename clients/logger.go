package clients

import (
	"context"
	"log/slog"
	"strings"

	"github.com/nsqio/go-nsq"
)

// NSQLogger adapts a *slog.Logger to the logger go-nsq's Producer and
// Consumer accept (SetLogger). go-nsq prefixes each line with its level
// ("INF", "WRN", ...); the adapter turns that prefix into the slog level and
// passes the rest of the line as the message.
type NSQLogger struct {
	L *slog.Logger
}

// Output implements go-nsq's logger interface.
func (l NSQLogger) Output(_ int, s string) error {
	level := slog.LevelInfo
	if len(s) > 4 && s[3] == ' ' {
		switch s[:3] {
		case "DBG":
			level = slog.LevelDebug
		case "INF":
			level = slog.LevelInfo
		case "WRN":
			level = slog.LevelWarn
		case "ERR":
			level = slog.LevelError
		}
		s = strings.TrimLeft(s[4:], " ")
	}
	l.L.Log(context.Background(), level, s)
	return nil
}

// NSQLogLevel returns the go-nsq level matching the least severe slog level
// enabled on l, so that go-nsq does not format lines l would discard.
func NSQLogLevel(l *slog.Logger) nsq.LogLevel {
	ctx := context.Background()
	switch {
	case l.Enabled(ctx, slog.LevelDebug):
		return nsq.LogLevelDebug
	case l.Enabled(ctx, slog.LevelInfo):
		return nsq.LogLevelInfo
	case l.Enabled(ctx, slog.LevelWarn):
		return nsq.LogLevelWarning
	default:
		return nsq.LogLevelError
	}
}
