package main

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nsqio/go-nsq"
)

// fileNamer computes output file names from --filename-format.
type fileNamer struct {
	format         string // with <TOPIC>, <HOST>, <PID>, <DATETIME>, <REV>
	datetimeFormat string // strftime
	host           string
	gzip           bool
	useRev         bool // gzip, rotation or a work dir: files are never appended to
}

// base returns the file name for topic at now with <REV> still unreplaced.
func (n fileNamer) base(topic string, now time.Time) string {
	r := strings.NewReplacer(
		"<TOPIC>", topic,
		"<HOST>", n.host,
		"<PID>", strconv.Itoa(os.Getpid()),
		"<DATETIME>", strftime(n.datetimeFormat, now),
	)
	name := r.Replace(n.format)
	if n.gzip && !strings.HasSuffix(name, ".gz") {
		name += ".gz"
	}
	return name
}

// withRev replaces <REV> in base.
func (n fileNamer) withRev(base string, rev int) string {
	s := ""
	if n.useRev {
		s = fmt.Sprintf("-%06d", rev)
	}
	return strings.ReplaceAll(base, "<REV>", s)
}

// writerConfig is what every topicWriter shares.
type writerConfig struct {
	namer          fileNamer
	outputDir      string
	workDir        string
	gzipLevel      int
	rotateSize     int64
	rotateInterval time.Duration
	syncInterval   time.Duration
	skipEmpty      bool
	maxInFlight    int
}

// topicWriter appends one topic's messages to files, one body per line.
// Messages are finished only after the data is flushed and fsynced, so a
// crash never loses an acknowledged message (it may duplicate unsynced ones).
//
// All fields are owned by the goroutine running loop.
type topicWriter struct {
	cfg    *writerConfig
	topic  string
	logger *slog.Logger
	msgs   chan *nsq.Message // from the go-nsq handlers

	file     *os.File
	gz       *gzip.Writer
	buf      *bufio.Writer
	size     int64 // bytes written to file
	lines    int64 // messages in the current file
	base     string
	rev      int
	workPath string
	outPath  string
	opened   time.Time
	pending  []*nsq.Message // written, not yet synced/finished
}

func newTopicWriter(cfg *writerConfig, topic string, logger *slog.Logger) *topicWriter {
	return &topicWriter{cfg: cfg, topic: topic, logger: logger.With("topic", topic), msgs: make(chan *nsq.Message)}
}

// HandleMessage is the go-nsq handler: it hands the message to loop, which
// finishes it after the next sync.
func (w *topicWriter) HandleMessage(m *nsq.Message) error {
	m.DisableAutoResponse()
	w.msgs <- m
	return nil
}

// loop writes messages until the consumer has stopped (stopped closed) and
// then closes the last file. After stopping is closed, every message is
// synced (and finished) at once so the consumer can drain. starved reports
// whether the consumer waits for answers (go-nsq IsStarved).
//
// On a write error loop requeues every unsynced message, calls onFail (which
// must make the consumer stop), keeps requeueing whatever still arrives
// until the consumer has stopped, and returns the error.
func (w *topicWriter) loop(stopping, stopped <-chan int, starved func() bool, onFail func(error)) error {
	err := w.writeLoop(stopping, stopped, starved)
	if err == nil {
		return nil
	}
	w.logger.Error("write failed, requeueing unsynced messages", "err", err, "count", len(w.pending))
	for _, m := range w.pending {
		m.RequeueWithoutBackoff(0)
	}
	w.pending = nil
	if w.file != nil {
		w.file.Close()
		w.file = nil
	}
	onFail(err)
	for {
		select {
		case m := <-w.msgs:
			m.RequeueWithoutBackoff(0)
		case <-stopped:
			return err
		}
	}
}

func (w *topicWriter) writeLoop(stopping, stopped <-chan int, starved func() bool) error {
	syncT := time.NewTicker(w.cfg.syncInterval)
	defer syncT.Stop()
	var rotateC <-chan time.Time
	if w.cfg.rotateInterval > 0 {
		t := time.NewTicker(w.cfg.rotateInterval)
		defer t.Stop()
		rotateC = t.C
	}
	draining := false
	for {
		select {
		case m := <-w.msgs:
			if err := w.write(m); err != nil {
				return err
			}
			if draining || len(w.pending) >= w.cfg.maxInFlight || starved() {
				if err := w.sync(); err != nil {
					return err
				}
			}
		case <-syncT.C:
			if err := w.sync(); err != nil {
				return err
			}
		case <-rotateC:
			if w.file != nil {
				w.logger.Info("rotating on interval", "file", w.workPath)
				if err := w.closeFile(); err != nil {
					return err
				}
			}
		case <-stopping:
			stopping = nil
			draining = true
			if err := w.sync(); err != nil {
				return err
			}
		case <-stopped:
			return w.closeFile()
		}
	}
}

func (w *topicWriter) write(m *nsq.Message) error {
	now := time.Now()
	if w.file != nil && w.cfg.namer.base(w.topic, now) != w.base {
		w.logger.Info("rotating on datetime change", "file", w.workPath)
		if err := w.closeFile(); err != nil {
			return err
		}
	}
	// Pending before the open: a failed open requeues it too.
	w.pending = append(w.pending, m)
	if w.file == nil {
		if err := w.openFile(now); err != nil {
			return err
		}
	}
	w.buf.Write(m.Body)
	if err := w.buf.WriteByte('\n'); err != nil {
		return fmt.Errorf("write %s: %w", w.workPath, err)
	}
	w.lines++
	if w.cfg.rotateSize > 0 {
		// Flush the buffer (not the gzip stream) so size counts what
		// the file holds.
		if err := w.buf.Flush(); err != nil {
			return fmt.Errorf("write %s: %w", w.workPath, err)
		}
		// With gzip, size grows as the compressor emits blocks.
		if w.size > w.cfg.rotateSize {
			w.logger.Info("rotating on size", "file", w.workPath, "size", w.size, "rotate_size", w.cfg.rotateSize)
			return w.closeFile()
		}
	}
	return nil
}

// sync flushes every layer, fsyncs and then finishes the pending messages.
func (w *topicWriter) sync() error {
	if w.file == nil {
		return nil
	}
	if len(w.pending) == 0 {
		return nil
	}
	if err := w.buf.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", w.workPath, err)
	}
	if w.gz != nil {
		if err := w.gz.Flush(); err != nil {
			return fmt.Errorf("write %s: %w", w.workPath, err)
		}
	}
	if err := w.file.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", w.workPath, err)
	}
	w.logger.Debug("synced", "file", w.workPath, "records", len(w.pending))
	for _, m := range w.pending {
		m.Finish()
	}
	w.pending = w.pending[:0]
	return nil
}

// exists reports whether path exists (any error but "not exist" counts as
// existing, so that we never overwrite).
func exists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, fs.ErrNotExist)
}

func (w *topicWriter) openFile(now time.Time) error {
	base := w.cfg.namer.base(w.topic, now)
	if base != w.base {
		w.base, w.rev = base, 0
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_APPEND
	for {
		name := w.cfg.namer.withRev(base, w.rev)
		w.workPath = filepath.Join(w.cfg.workDir, name)
		w.outPath = filepath.Join(w.cfg.outputDir, name)
		if !w.cfg.namer.useRev {
			break // plain mode appends to the existing file
		}
		if !exists(w.workPath) && !exists(w.outPath) {
			flags |= os.O_EXCL
			break
		}
		w.logger.Warn("file already exists, trying the next revision", "file", name)
		w.rev++
	}
	if err := os.MkdirAll(filepath.Dir(w.workPath), 0o755); err != nil {
		return fmt.Errorf("create directory: %w", err)
	}
	f, err := os.OpenFile(w.workPath, flags, 0o644)
	if err != nil {
		return fmt.Errorf("open output file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat %s: %w", w.workPath, err)
	}
	w.logger.Info("opening", "file", w.workPath)
	w.file, w.size, w.lines, w.opened = f, st.Size(), 0, now
	var out io.Writer = countingWriter{w}
	if w.cfg.gzipLevel > 0 {
		w.gz, err = gzip.NewWriterLevel(out, w.cfg.gzipLevel)
		if err != nil {
			f.Close()
			return fmt.Errorf("gzip: %w", err)
		}
		out = w.gz
	} else {
		w.gz = nil
	}
	w.buf = bufio.NewWriterSize(out, 64<<10)
	return nil
}

// countingWriter writes to the topicWriter's file and counts the bytes.
type countingWriter struct{ w *topicWriter }

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.file.Write(p)
	c.w.size += int64(n)
	return n, err
}

// closeFile syncs (finishing pending messages), ends the gzip stream,
// closes the file and moves it to the output directory (or removes it when
// empty and --skip-empty-files is set).
func (w *topicWriter) closeFile() error {
	if w.file == nil {
		return nil
	}
	if err := w.sync(); err != nil {
		return err
	}
	if w.gz != nil {
		if err := w.gz.Close(); err != nil {
			return fmt.Errorf("write %s: %w", w.workPath, err)
		}
		if err := w.file.Sync(); err != nil {
			return fmt.Errorf("fsync %s: %w", w.workPath, err)
		}
	}
	if err := w.file.Close(); err != nil {
		return fmt.Errorf("close %s: %w", w.workPath, err)
	}
	w.file, w.gz = nil, nil
	if w.lines == 0 && w.cfg.skipEmpty {
		w.logger.Info("removing empty file", "file", w.workPath)
		return os.Remove(w.workPath)
	}
	if w.workPath != w.outPath {
		if exists(w.outPath) {
			return fmt.Errorf("move %s: %s already exists", w.workPath, w.outPath)
		}
		if err := os.MkdirAll(filepath.Dir(w.outPath), 0o755); err != nil {
			return fmt.Errorf("create directory: %w", err)
		}
		if err := os.Rename(w.workPath, w.outPath); err != nil {
			return fmt.Errorf("move to output dir: %w", err)
		}
	}
	w.logger.Info("closed", "file", w.outPath, "messages", w.lines)
	w.rev++
	return nil
}
