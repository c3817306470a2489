package nsqd

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"

	diskqueue "github.com/nsqio/go-diskqueue"

	"github.com/sluicemq/sluice/protocol"
)

// diskBackend is the disk overflow of one topic or channel: a go-diskqueue
// plus a scratch buffer for serializing records. Put and Empty are safe for
// concurrent use.
type diskBackend struct {
	dq      diskqueue.Interface
	mu      sync.Mutex // guards scratch and orders puts
	scratch []byte
	onErr   func(error) // reports health after every write
	deleted bool        // guarded by mu: puts after delete are dropped
}

func newDiskBackend(name string, o *Options, logger *slog.Logger, onErr func(error)) *diskBackend {
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
	dq := diskqueue.New(name, dataPathOf(o), o.MaxBytesPerFile,
		int32(protocol.MessageHeaderSize), int32(o.MaxMsgSize)+protocol.MessageHeaderSize,
		o.SyncEvery, o.SyncTimeout, logf)
	return &diskBackend{dq: dq, onErr: onErr}
}

// put appends messages to the disk queue.
func (b *diskBackend) put(msgs []*Message) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.deleted {
		return nil // the topic or channel is gone, and its messages with it
	}
	for _, m := range msgs {
		b.scratch = m.appendRecord(b.scratch[:0])
		err := b.dq.Put(b.scratch)
		b.onErr(err)
		if err != nil {
			return fmt.Errorf("write message to disk queue: %w", err)
		}
	}
	if cap(b.scratch) > 64<<10 {
		b.scratch = nil
	}
	return nil
}

func (b *diskBackend) depth() int64 { return b.dq.Depth() }

func (b *diskBackend) readChan() <-chan []byte { return b.dq.ReadChan() }

func (b *diskBackend) empty() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dq.Empty()
}

func (b *diskBackend) close() error { return b.dq.Close() }

// delete discards every message and removes the queue's files (go-diskqueue's
// Delete only closes the queue).
func (b *diskBackend) delete() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.deleted = true
	err := b.dq.Empty()
	if derr := b.dq.Delete(); err == nil {
		err = derr
	}
	return err
}

func dataPathOf(o *Options) string {
	if o.DataPath == "" {
		return "."
	}
	return o.DataPath
}
