package config

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// LevelFatal is the level of FATAL lines (start-up failures).
const LevelFatal = slog.LevelError + 4

// ParseLevel parses a log level: debug, info, warn, error or fatal,
// case-insensitive (protocol.md §15.1). fatal maps to LevelFatal.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	case "fatal":
		return LevelFatal, nil
	}
	return 0, fmt.Errorf("invalid log level %q (want debug, info, warn, error or fatal)", s)
}

// LevelName returns the NSQ name of a level: DEBUG, INFO, WARNING, ERROR or
// FATAL (levels in between round down).
func LevelName(l slog.Level) string {
	switch {
	case l < slog.LevelInfo:
		return "DEBUG"
	case l < slog.LevelWarn:
		return "INFO"
	case l < slog.LevelError:
		return "WARNING"
	case l < LevelFatal:
		return "ERROR"
	}
	return "FATAL"
}

// LevelFlag is a flag.Value that parses a level with ParseLevel into a
// *slog.LevelVar, so the flag (or config key) sets the logger's level
// directly. Its String is the lower-case level name.
type LevelFlag struct{ Var *slog.LevelVar }

// String returns the current level as debug, info, warn, error or fatal.
func (f LevelFlag) String() string {
	if f.Var == nil {
		return "" // the zero value: lets flag print "(default info)"
	}
	switch LevelName(f.Var.Level()) {
	case "DEBUG":
		return "debug"
	case "WARNING":
		return "warn"
	case "ERROR":
		return "error"
	case "FATAL":
		return "fatal"
	}
	return "info"
}

// Set parses s with ParseLevel and stores it.
func (f LevelFlag) Set(s string) error {
	l, err := ParseLevel(s)
	if err != nil {
		return err
	}
	f.Var.Set(l)
	return nil
}

// NewLogger returns a *slog.Logger writing NSQ-style lines to w:
//
//	<prefix><YYYY/MM/DD HH:MM:SS.micro> <LEVEL>: <msg> key=value ...
//
// e.g. "[nsqd] 2026/11/22 01:29:21.402376 INFO: TOPIC(t2): closing topic=t2".
// Times are local, LEVEL is DEBUG, INFO, WARNING, ERROR or FATAL, values
// containing spaces, quotes or '=' are quoted. Records below level (read on
// every record, so it can change at run time) are dropped; a nil level means
// info. Each line is written with one Write call; concurrent use is safe.
func NewLogger(w io.Writer, prefix string, level *slog.LevelVar) *slog.Logger {
	if level == nil {
		level = new(slog.LevelVar)
	}
	return slog.New(&nsqHandler{out: &lockedWriter{w: w}, prefix: prefix, level: level})
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) write(b []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err := l.w.Write(b)
	return err
}

// nsqHandler is immutable after creation; WithAttrs/WithGroup return copies.
type nsqHandler struct {
	out    *lockedWriter
	prefix string
	level  *slog.LevelVar
	attrs  []byte // preformatted " k=v" pairs from WithAttrs
	group  string // current group prefix, "a.b." or ""
}

func (h *nsqHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

func (h *nsqHandler) Handle(_ context.Context, r slog.Record) error {
	var buf bytes.Buffer
	buf.Grow(128 + len(h.attrs))
	buf.WriteString(h.prefix)
	t := r.Time
	if t.IsZero() {
		t = time.Now()
	}
	var tb [32]byte
	buf.Write(t.AppendFormat(tb[:0], "2006/01/02 15:04:05.000000"))
	buf.WriteByte(' ')
	buf.WriteString(LevelName(r.Level))
	buf.WriteString(": ")
	buf.WriteString(r.Message)
	buf.Write(h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		appendAttr(&buf, h.group, a)
		return true
	})
	buf.WriteByte('\n')
	return h.out.write(buf.Bytes())
}

func (h *nsqHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	var buf bytes.Buffer
	buf.Write(h.attrs)
	for _, a := range attrs {
		appendAttr(&buf, h.group, a)
	}
	h2 := *h
	h2.attrs = buf.Bytes()
	return &h2
}

func (h *nsqHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.group = h.group + name + "."
	return &h2
}

func appendAttr(buf *bytes.Buffer, group string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		attrs := a.Value.Group()
		if len(attrs) == 0 {
			return
		}
		g := group
		if a.Key != "" {
			g = group + a.Key + "."
		}
		for _, ga := range attrs {
			appendAttr(buf, g, ga)
		}
		return
	}
	buf.WriteByte(' ')
	appendText(buf, group+a.Key)
	buf.WriteByte('=')
	var s string
	switch a.Value.Kind() {
	case slog.KindTime:
		s = a.Value.Time().Format(time.RFC3339Nano)
	case slog.KindAny:
		if err, ok := a.Value.Any().(error); ok {
			s = err.Error()
		} else {
			s = a.Value.String()
		}
	default:
		s = a.Value.String()
	}
	appendText(buf, s)
}

// appendText writes s, quoted when it is empty or contains characters that
// would make the line ambiguous.
func appendText(buf *bytes.Buffer, s string) {
	if needsQuote(s) {
		buf.WriteString(strconv.Quote(s))
		return
	}
	buf.WriteString(s)
}

func needsQuote(s string) bool {
	if s == "" {
		return true
	}
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b == ' ' || b == '=' || b == '"' || b < 0x20 || b == 0x7f {
				return true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return true
		}
		i += size
	}
	return false
}
