package nsqd

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	diskqueue "github.com/nsqio/go-diskqueue"

	"github.com/sluicemq/sluice/protocol"
)

// diskBackend is the disk overflow of one topic or channel: a go-diskqueue
// plus a scratch buffer for serializing records. Put and Empty are safe for
// concurrent use.
//
// The go-diskqueue is opened only when it is needed: at creation when the
// queue has files on disk, otherwise at the first put. An unopened queue
// is an empty one and costs no goroutine, timer or file (go-diskqueue runs
// a goroutine with a sync ticker per queue: with 100,000 idle channels
// those tickers alone kept a core busy). The files, once written, are
// go-diskqueue's, exactly as NSQ writes them.
type diskBackend struct {
	name   string
	opts   *Options
	logger *slog.Logger
	onErr  func(error) // reports health after every write
	onOpen func()      // called, without locks held, when a put opened the queue

	dq      atomic.Pointer[dqBox] // nil until opened
	mu      sync.Mutex            // guards scratch, opening and orders puts
	scratch []byte
	deleted bool // guarded by mu: puts after delete are dropped
}

type dqBox struct{ q diskqueue.Interface }

// newDiskBackend returns the backend of queue name; it opens the queue at
// once when onDisk says it has files.
func newDiskBackend(name string, o *Options, logger *slog.Logger, onErr func(error), onDisk bool) *diskBackend {
	b := &diskBackend{name: name, opts: o, logger: logger, onErr: onErr}
	if onDisk {
		b.openLocked()
	}
	return b
}

func (b *diskBackend) openLocked() diskqueue.Interface {
	if box := b.dq.Load(); box != nil {
		return box.q
	}
	name, logger := b.name, b.logger
	logf := func(lvl diskqueue.LogLevel, f string, args ...any) {
		msg := strings.TrimSpace(fmt.Sprintf(f, args...))
		switch lvl {
		case diskqueue.DEBUG:
			logger.Debug(msg, "queue", name)
		case diskqueue.INFO:
			logger.Info(msg, "queue", name)
		case diskqueue.WARN:
			logger.Warn(msg, "queue", name)
		default:
			logger.Error(msg, "queue", name)
		}
	}
	o := b.opts
	dq := diskqueue.New(name, dataPathOf(o), o.MaxBytesPerFile,
		int32(protocol.MessageHeaderSize), int32(o.MaxMsgSize)+protocol.MessageHeaderSize,
		o.SyncEvery, o.SyncTimeout, logf)
	b.dq.Store(&dqBox{dq})
	return dq
}

// isOpen reports whether the queue has been opened.
func (b *diskBackend) isOpen() bool { return b.dq.Load() != nil }

// put appends messages to the disk queue, opening it if needed.
func (b *diskBackend) put(msgs []*Message) error {
	if len(msgs) == 0 {
		return nil
	}
	var arr [8]qentry
	ents := arr[:0]
	if len(msgs) > len(arr) {
		ents = make([]qentry, 0, len(msgs))
	}
	for _, m := range msgs {
		ents = append(ents, qentry{m: m})
	}
	return b.putEntries(ents)
}

// putEntries appends the messages of queue entries to the disk queue,
// serializing batch messages straight from their MPUB body: no Message is
// made for a message that only passes through on its way to disk.
func (b *diskBackend) putEntries(ents []qentry) error {
	b.mu.Lock()
	if b.deleted {
		b.mu.Unlock()
		return nil
	}
	opened := !b.isOpen()
	dq := b.openLocked()
	var err error
	for _, e := range ents {
		for k := e.len(); k > 0 && err == nil; k-- {
			b.scratch = e.appendNextRecord(b.scratch[:0])
			err = dq.Put(b.scratch)
			b.onErr(err)
		}
		if err != nil {
			err = fmt.Errorf("write message to disk queue: %w", err)
			break
		}
	}
	if cap(b.scratch) > 64<<10 {
		b.scratch = nil
	}
	b.mu.Unlock()
	if opened && b.onOpen != nil {
		b.onOpen()
	}
	return err
}

func (b *diskBackend) depth() int64 {
	if box := b.dq.Load(); box != nil {
		return box.q.Depth()
	}
	return 0
}

// readChan is the queue's read channel; nil (never ready) while unopened.
func (b *diskBackend) readChan() <-chan []byte {
	if box := b.dq.Load(); box != nil {
		return box.q.ReadChan()
	}
	return nil
}

func (b *diskBackend) empty() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if box := b.dq.Load(); box != nil {
		return box.q.Empty()
	}
	return nil
}

// close closes the queue. An unopened queue leaves the metadata file that
// go-diskqueue leaves for an empty one, so the data path holds the same
// files as NSQ's.
func (b *diskBackend) close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if box := b.dq.Load(); box != nil {
		return box.q.Close()
	}
	if b.deleted {
		return nil
	}
	path := filepath.Join(dataPathOf(b.opts), b.name+".diskqueue.meta.dat")
	if _, err := os.Stat(path); err == nil {
		return nil // left by an earlier run: empty, or it would have been opened
	}
	tmp := fmt.Sprintf("%s.%d.tmp", path, rand.Int())
	if err := os.WriteFile(tmp, []byte("0\n0,0\n0,0\n"), 0o600); err != nil {
		return fmt.Errorf("write disk queue metadata: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write disk queue metadata: %w", err)
	}
	return nil
}

// delete discards every message and removes the queue's files (go-diskqueue's
// Delete only closes the queue).
func (b *diskBackend) delete() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.deleted = true
	box := b.dq.Load()
	if box == nil {
		return nil
	}
	err := box.q.Empty()
	if derr := box.q.Delete(); err == nil {
		err = derr
	}
	return err
}

// diskQueueNames lists the queues that have go-diskqueue data files in dir
// (read once at start: one directory listing, not one per queue). A queue
// with only a metadata file has never held a message or was drained to
// its last file's end and that file removed: it is empty.
func diskQueueNames(dir string) (map[string]bool, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list --data-path: %w", err)
	}
	names := map[string]bool{}
	for _, e := range entries {
		i := strings.Index(e.Name(), ".diskqueue.")
		if i <= 0 || strings.HasSuffix(e.Name(), ".diskqueue.meta.dat") {
			continue
		}
		names[e.Name()[:i]] = true
	}
	return names, nil
}

func dataPathOf(o *Options) string {
	if o.DataPath == "" {
		return "."
	}
	return o.DataPath
}
