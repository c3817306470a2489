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

	"github.com/sluicemq/sluice/internal/diskq"
	"github.com/sluicemq/sluice/protocol"
)

// diskBackend is the disk overflow of one topic or channel: a queue in
// go-diskqueue's format (internal/diskq) plus a scratch buffer for
// serializing records. Put and Empty are safe for concurrent use.
//
// The queue is opened only when it is needed: at creation when the queue
// has files on disk, otherwise at the first put. An unopened queue is an
// empty one and costs no goroutine, timer or file; an opened one costs
// none either while idle (diskq runs no goroutine per queue, and one
// Syncer per node serves --sync-timeout). The files, once written, are
// go-diskqueue's, exactly as NSQ writes them.
type diskBackend struct {
	name   string
	n      *NSQD // options, health (after every write) and the Syncer
	logger *slog.Logger
	owner  diskOwner

	dq      atomic.Pointer[diskq.Queue] // nil until opened
	mu      sync.Mutex                  // guards scratch, opening and orders puts
	scratch []byte
	deleted bool // guarded by mu: puts after delete are dropped
}

// diskOwner is the topic or channel of a diskBackend; the backend calls it
// without holding locks.
type diskOwner interface {
	diskOpened() // a put opened the queue
	diskPut()    // a put wrote records
}

// newDiskBackend returns the backend of queue name; it opens the queue at
// once when onDisk says it has files.
func newDiskBackend(name string, n *NSQD, logger *slog.Logger, owner diskOwner, onDisk bool) *diskBackend {
	b := &diskBackend{name: name, n: n, logger: logger, owner: owner}
	if onDisk {
		b.openLocked()
	}
	return b
}

func (b *diskBackend) openLocked() *diskq.Queue {
	if q := b.dq.Load(); q != nil {
		return q
	}
	o := b.n.opts
	q := diskq.Open(b.name, dataPathOf(o), diskq.Options{
		MaxBytesPerFile: o.MaxBytesPerFile,
		MinMsgSize:      int32(protocol.MessageHeaderSize),
		MaxMsgSize:      int32(o.MaxMsgSize) + protocol.MessageHeaderSize,
		SyncEvery:       o.SyncEvery,
		Syncer:          b.n.diskSyncer,
		Logger:          b.logger,
		WriteBuffer:     int(o.DiskWriteBuffer),
	})
	b.dq.Store(q)
	return q
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

// putEntries appends the messages of queue entries to the disk queue with
// one write (per data file), serializing batch messages straight from
// their MPUB body: no Message is made for a message that only passes
// through on its way to disk.
func (b *diskBackend) putEntries(ents []qentry) error {
	b.mu.Lock()
	if b.deleted {
		b.mu.Unlock()
		return nil
	}
	opened := !b.isOpen()
	q := b.openLocked()
	buf := b.scratch[:0]
	for _, e := range ents {
		for k := e.len(); k > 0; k-- {
			var start int
			buf, start = diskq.AppendFrame(buf)
			buf = e.appendNextRecord(buf)
			diskq.EndFrame(buf, start)
		}
	}
	err := q.PutFramed(buf)
	b.n.setHealth(err)
	if err != nil {
		err = fmt.Errorf("write messages to disk queue: %w", err)
	}
	if cap(buf) > 256<<10 {
		buf = nil
	}
	b.scratch = buf
	b.mu.Unlock()
	if opened {
		b.owner.diskOpened()
	}
	b.owner.diskPut()
	return err
}

func (b *diskBackend) depth() int64 {
	if q := b.dq.Load(); q != nil {
		return q.Depth()
	}
	return 0
}

// read appends up to max records read from the queue to dst (none while
// unopened). The records alias a read-ahead block that is never reused:
// a message decoded from one may keep its body there.
func (b *diskBackend) read(dst [][]byte, max int) [][]byte {
	q := b.dq.Load()
	if q == nil {
		return dst
	}
	dst, _ = q.Read(dst, max) // fails only once closed: nothing read
	return dst
}

func (b *diskBackend) empty() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if q := b.dq.Load(); q != nil {
		return q.Empty()
	}
	return nil
}

// close closes the queue. An unopened queue leaves the metadata file that
// go-diskqueue leaves for an empty one, so the data path holds the same
// files as NSQ's.
func (b *diskBackend) close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if q := b.dq.Load(); q != nil {
		return q.Close()
	}
	if b.deleted {
		return nil
	}
	path := filepath.Join(dataPathOf(b.n.opts), b.name+".diskqueue.meta.dat")
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

// delete discards every message and removes the queue's files (Delete,
// like go-diskqueue's, only closes the queue).
func (b *diskBackend) delete() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.deleted = true
	q := b.dq.Load()
	if q == nil {
		return nil
	}
	err := q.Empty()
	if derr := q.Delete(); err == nil {
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
