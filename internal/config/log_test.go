package config

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{
		"debug": slog.LevelDebug, "INFO": slog.LevelInfo, "Warn": slog.LevelWarn,
		"error": slog.LevelError, "FATAL": LevelFatal,
	} {
		got, err := ParseLevel(in)
		if err != nil || got != want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "warning", "trace", "5"} {
		if _, err := ParseLevel(bad); err == nil {
			t.Errorf("ParseLevel(%q) accepted", bad)
		}
	}
}

func TestLoggerFormat(t *testing.T) {
	var buf bytes.Buffer
	var lv slog.LevelVar
	log := NewLogger(&buf, "[nsqd] ", &lv)

	log.Info("TOPIC(t2): closing", "topic", "t2", "n", 3, "d", 1500*time.Millisecond)
	log.Debug("hidden")
	log.Warn("slow consumer", "remote_addr", "127.0.0.1:4000", "why", "rdy is 0", "empty", "")
	log.With("client", "c1").WithGroup("g").Error("boom", "err", errors.New("read: EOF"), slog.Group("sub", "k", "v"))
	log.Log(context.Background(), LevelFatal, "cannot start")
	lv.Set(slog.LevelDebug)
	log.Debug("now visible", "q", `say "hi"`)
	lv.Set(slog.LevelError)
	log.Warn("hidden again")

	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	ts := `\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}\.\d{6}`
	want := []string{
		`^\[nsqd\] ` + ts + ` INFO: TOPIC\(t2\): closing topic=t2 n=3 d=1\.5s$`,
		`^\[nsqd\] ` + ts + ` WARNING: slow consumer remote_addr=127\.0\.0\.1:4000 why="rdy is 0" empty=""$`,
		`^\[nsqd\] ` + ts + ` ERROR: boom client=c1 g\.err="read: EOF" g\.sub\.k=v$`,
		`^\[nsqd\] ` + ts + ` FATAL: cannot start$`,
		`^\[nsqd\] ` + ts + ` DEBUG: now visible q="say \\"hi\\""$`,
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), buf.String())
	}
	for i, re := range want {
		if !regexp.MustCompile(re).MatchString(lines[i]) {
			t.Errorf("line %d = %q\n does not match %s", i, lines[i], re)
		}
	}
}

func TestLoggerTimestamp(t *testing.T) {
	var buf bytes.Buffer
	h := NewLogger(&buf, "", nil).Handler()
	r := slog.NewRecord(time.Date(2026, 11, 22, 1, 29, 21, 402376999, time.Local), slog.LevelInfo, "x", 0)
	if err := h.Handle(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); got != "2026/11/22 01:29:21.402376 INFO: x\n" {
		t.Fatalf("line = %q", got)
	}
}

func TestLoggerConcurrentLinesIntact(t *testing.T) {
	var buf bytes.Buffer
	log := NewLogger(&buf, "[p] ", nil)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				log.Info("msg", "g", g, "i", i)
			}
		}()
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 1600 {
		t.Fatalf("lines = %d, want 1600", len(lines))
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "[p] ") || !strings.Contains(l, " INFO: msg g=") {
			t.Fatalf("corrupt line %q", l)
		}
	}
}

func TestLevelFlag(t *testing.T) {
	var lv slog.LevelVar
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Var(LevelFlag{&lv}, "log-level", "")
	if err := fs.Parse([]string{"--log-level=WARN"}); err != nil {
		t.Fatal(err)
	}
	if lv.Level() != slog.LevelWarn || (LevelFlag{&lv}).String() != "warn" {
		t.Fatalf("level = %v", lv.Level())
	}
	if err := LoadString(fs, `log_level = "debug"`, nil); err != nil {
		t.Fatal(err)
	}
	if lv.Level() != slog.LevelWarn {
		t.Fatal("file overrode explicit flag")
	}
	fs2 := flag.NewFlagSet("x", flag.ContinueOnError)
	fs2.Var(LevelFlag{&lv}, "log-level", "")
	_ = fs2.Parse(nil)
	if err := LoadString(fs2, `log_level = "Debug"`, nil); err != nil || lv.Level() != slog.LevelDebug {
		t.Fatalf("file level: %v %v", err, lv.Level())
	}
	if err := LoadString(fs2, `log_level = "loud"`, nil); err == nil || !strings.Contains(err.Error(), "log_level") {
		t.Fatalf("bad level error = %v", err)
	}
}
