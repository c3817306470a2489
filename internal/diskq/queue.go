package diskq

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/sluicemq/sluice/store"
)

// ErrClosed is returned by operations on a closed or deleted queue.
var ErrClosed = errors.New("exiting")

// Options configure a queue; the zero value of an optional field takes the
// default named beside it.
type Options struct {
	FS              store.FS // nil: the operating system's
	MaxBytesPerFile int64    // --max-bytes-per-file
	MinMsgSize      int32    // smallest record accepted, read or written
	MaxMsgSize      int32    // largest record accepted, read or written
	SyncEvery       int64    // --sync-every: reads and writes between syncs
	Syncer          *Syncer  // syncs a queue --sync-timeout after it changed; nil: none
	Logger          *slog.Logger
	ReadBlock       int // bytes read ahead per read syscall; 0: 128 KiB
	// WriteBuffer, when positive, lets puts of less than an eighth of it
	// collect up to that many bytes of records in memory and write them
	// with one write syscall (larger puts are written at once): when
	// the buffer would overflow, before every sync, before a read needs
	// them, on Close, and FlushDelay after the first of them was put (the
	// Syncer's timer). Space for buffered records is reserved on disk as
	// they are put (store.Reserver), so a full disk fails the put, as an
	// unbuffered write would. 0 (the default) writes every put at once,
	// as go-diskqueue does. It takes effect only with a Syncer, with
	// SyncEvery above 1 and on a file system that can reserve space.
	WriteBuffer int
}

const defaultReadBlock = 128 << 10

// Queue is one go-diskqueue queue. Its methods are safe for concurrent
// use; each holds the queue's mutex for the file operations it does.
type Queue struct {
	name string
	dir  string
	fs   store.FS
	o    Options
	log  *slog.Logger

	depth atomic.Int64 // records not yet read; persisted

	mu           sync.Mutex
	readFileNum  int64
	readPos      int64
	writeFileNum int64
	writePos     int64
	readFile     store.File
	readEnd      int64 // end of the read file when it is not the write file
	writeFile    store.File
	unsynced     []store.File // written files no longer written to, to fsync at the next sync

	// wbuf holds the newest records put (Options.WriteBuffer), not yet
	// written: they end at writePos, and the write file ends where they
	// begin. Metadata is never written while it holds any.
	wbuf        []byte
	putBufBytes int   // bytes at wbuf's end put by the put in progress
	putBufRecs  int   // and their records
	reserved    int64 // the write file has space reserved up to here
	noReserve   bool  // the file system cannot reserve space: no buffering
	flushQueued bool  // in the Syncer's flush line

	// buf[bufOff:] are the read file's bytes from readPos on, read ahead.
	// Bytes of buf before len(buf) are never written again: Read hands
	// out records that alias them. A fill appends into the spare capacity
	// or moves to a new block.
	buf    []byte
	bufOff int

	ops        int64 // reads and writes since the last sync (--sync-every)
	dataDirty  bool  // the write file has bytes not yet fsynced
	needSync   bool  // positions moved to another file: sync after this call
	newFile    bool  // a data file was created since the last sync
	syncQueued bool  // in the Syncer's list
	closed     bool
}

// Open opens the queue name in dir, reading its metadata file when there
// is one. It starts no goroutine and keeps no file open.
func Open(name, dir string, o Options) *Queue {
	if o.FS == nil {
		o.FS = store.OSFS{}
	}
	if o.ReadBlock <= 0 {
		o.ReadBlock = defaultReadBlock
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	q := &Queue{name: name, dir: dir, fs: o.FS, o: o, log: o.Logger.With("queue", name)}
	if err := q.loadMeta(); err != nil && !errors.Is(err, os.ErrNotExist) {
		q.log.Error("read disk queue metadata", "err", err)
	}
	if q.readFileNum > q.writeFileNum || (q.readFileNum == q.writeFileNum && q.readPos > q.writePos) {
		// corrupt metadata, from which go-diskqueue would try missing file
		// after missing file for ever: writing goes on after the reader
		q.log.Error("disk queue metadata read position past its write position, writing on from the read position",
			"read_file", q.readFileNum, "read_pos", q.readPos, "write_file", q.writeFileNum, "write_pos", q.writePos)
		q.writeFileNum, q.writePos = q.readFileNum, q.readPos
	}
	q.skipWrittenFiles()
	return q
}

func (q *Queue) metaName() string {
	return filepath.Join(q.dir, q.name+".diskqueue.meta.dat")
}

func (q *Queue) fileName(num int64) string {
	return filepath.Join(q.dir, fmt.Sprintf("%s.diskqueue.%06d.dat", q.name, num))
}

// loadMeta reads the metadata file. Malformed metadata leaves the state
// zero (skipWrittenFiles then keeps the writer off existing data).
func (q *Queue) loadMeta() error {
	f, size, err := q.fs.OpenAppend(q.metaName(), false)
	if err != nil {
		return err
	}
	defer f.Close()
	b := make([]byte, size)
	if _, err := f.ReadAt(b, 0); err != nil && !(errors.Is(err, io.EOF) && size == 0) {
		return fmt.Errorf("read %s: %w", q.metaName(), err)
	}
	m, err := parseMeta(b)
	if err != nil {
		return fmt.Errorf("parse %s: %w", q.metaName(), err)
	}
	q.readFileNum, q.readPos = m.readFile, m.readPos
	q.writeFileNum, q.writePos = m.writeFile, m.writePos
	q.depth.Store(m.depth)
	return nil
}

type meta struct {
	depth               int64
	readFile, readPos   int64
	writeFile, writePos int64
}

// parseMeta parses "depth\nrf,rp\nwf,wp\n", allowing the blanks around
// numbers that go-diskqueue's Fscanf allows.
func parseMeta(b []byte) (meta, error) {
	lines := strings.Split(string(b), "\n")
	if len(lines) < 3 {
		return meta{}, fmt.Errorf("%d lines, want 3", len(lines))
	}
	var m meta
	var err error
	num := func(s string) int64 {
		if err != nil {
			return 0
		}
		var v int64
		v, err = strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		return v
	}
	pair := func(s string) (int64, int64) {
		a, c, ok := strings.Cut(s, ",")
		if !ok && err == nil {
			err = fmt.Errorf("%q: want file,position", s)
		}
		return num(a), num(c)
	}
	m.depth = num(lines[0])
	m.readFile, m.readPos = pair(lines[1])
	m.writeFile, m.writePos = pair(lines[2])
	return m, err
}

func appendMeta(dst []byte, depth, rf, rp, wf, wp int64) []byte {
	return fmt.Appendf(dst, "%d\n%d,%d\n%d,%d\n", depth, rf, rp, wf, wp)
}

// skipWrittenFiles moves the write position to a new file while the write
// file holds more bytes than the metadata says were written (metadata not
// synced before a crash): writing resumes in a fresh file and the reader
// takes the old one whole. go-diskqueue skips once; this skips every file
// that already holds bytes, so that no record is written over.
func (q *Queue) skipWrittenFiles() {
	for {
		f, size, err := q.fs.OpenAppend(q.fileName(q.writeFileNum), false)
		if err != nil {
			return
		}
		f.Close()
		if q.writePos >= size {
			return
		}
		q.log.Warn("disk queue metadata write position short of the file's size, skipping to a new file",
			"file", q.fileName(q.writeFileNum), "write_pos", q.writePos, "size", size)
		q.writeFileNum++
		q.writePos = 0
	}
}

// Depth is the number of records not yet read.
func (q *Queue) Depth() int64 { return q.depth.Load() }

// flushedPos is where the write file ends: the write position less the
// records still buffered.
func (q *Queue) flushedPos() int64 { return q.writePos - int64(len(q.wbuf)) }

// buffering reports whether puts go through the write buffer.
func (q *Queue) buffering() bool {
	return q.o.WriteBuffer > 0 && q.o.Syncer != nil && q.o.SyncEvery > 1 && !q.noReserve
}

// Put appends one record.
func (q *Queue) Put(data []byte) error {
	b := make([]byte, 4, 4+len(data))
	binary.BigEndian.PutUint32(b, uint32(len(data)))
	return q.PutFramed(append(b, data...))
}

// AppendFrame starts a record in dst: it appends the 4-byte length field,
// to be filled by EndFrame once the record's bytes follow it.
func AppendFrame(dst []byte) (out []byte, start int) {
	return append(dst, 0, 0, 0, 0), len(dst)
}

// EndFrame fills the length field of the record started at start.
func EndFrame(b []byte, start int) {
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-4))
}

// PutFramed appends the records framed in b, each a 4-byte big-endian
// length and that many bytes: with one write syscall per data file they
// go to, rolling to a new file where go-diskqueue would. A record whose
// size is out of bounds fails the put; the records before it are written.
// Put returns once the records are written (and synced, when
// --sync-every is due).
func (q *Queue) PutFramed(b []byte) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrClosed
	}
	q.putBufBytes, q.putBufRecs = 0, 0
	err := q.putLocked(b)
	if q.ops >= q.o.SyncEvery || q.needSync {
		// the records are written in the put, as unbuffered, when it
		// syncs: if that write fails, those of this put are not stored
		if ferr := q.flush(); ferr != nil {
			q.unbufferPut()
			if err == nil {
				err = ferr
			}
		} else if serr := q.sync(); serr != nil {
			q.log.Error("sync disk queue", "err", serr)
		}
	} else {
		q.queueSync()
	}
	q.queueFlush()
	return err
}

// unbufferPut takes the records the put in progress buffered back out
// of the buffer, uncounted: the put fails as a failed write does.
func (q *Queue) unbufferPut() {
	q.wbuf = q.wbuf[:len(q.wbuf)-q.putBufBytes]
	q.writePos -= int64(q.putBufBytes)
	q.depth.Add(-int64(q.putBufRecs))
	q.ops -= int64(q.putBufRecs)
	q.putBufBytes, q.putBufRecs = 0, 0
}

func (q *Queue) putLocked(b []byte) error {
	start, pos, recs := 0, 0, 0
	for pos < len(b) {
		if len(b)-pos < 4 {
			return errors.New("disk queue put: truncated frame")
		}
		size := int32(binary.BigEndian.Uint32(b[pos:]))
		if size < q.o.MinMsgSize || size > q.o.MaxMsgSize {
			if err := q.store(b[start:pos], recs); err != nil {
				return err
			}
			return fmt.Errorf("invalid message write size (%d) minMsgSize=%d maxMsgSize=%d", size, q.o.MinMsgSize, q.o.MaxMsgSize)
		}
		total := 4 + int(size)
		if len(b)-pos < total {
			return errors.New("disk queue put: truncated frame")
		}
		if wp := q.writePos + int64(pos-start); wp > 0 && wp+int64(total) > q.o.MaxBytesPerFile {
			if err := q.store(b[start:pos], recs); err != nil {
				return err
			}
			if err := q.flush(); err != nil {
				return err
			}
			q.roll()
			start, recs = pos, 0
		}
		pos += total
		recs++
	}
	return q.store(b[start:pos], recs)
}

// store adds records (all for the current write file) to the write
// buffer, or writes them at once when the queue does not buffer or they
// take an eighth of the buffer or more. When the buffer cannot take them it is
// written out first; if that fails, they are not stored.
func (q *Queue) store(chunk []byte, recs int) error {
	if len(chunk) == 0 {
		return nil
	}
	if !q.buffering() {
		return q.writeChunk(chunk, recs)
	}
	if len(q.wbuf)+len(chunk) > q.o.WriteBuffer || len(chunk) >= q.o.WriteBuffer/8 {
		if err := q.flush(); err != nil {
			return err
		}
	}
	if len(chunk) >= q.o.WriteBuffer/8 {
		// a batch this large pays for its own write syscall: it is
		// written at once, as without a buffer (an MPUB's messages)
		return q.writeChunk(chunk, recs)
	}
	if err := q.reserve(int64(len(chunk))); err != nil {
		if !errors.Is(err, errCannotReserve) {
			return err
		}
		q.log.Warn("disk queue file system cannot reserve space: writing every put at once", "err", err)
		q.noReserve = true
		if err := q.flush(); err != nil {
			return err
		}
		return q.writeChunk(chunk, recs)
	}
	if q.wbuf == nil {
		q.wbuf = make([]byte, 0, q.o.WriteBuffer)
	}
	q.wbuf = append(q.wbuf, chunk...)
	q.putBufBytes += len(chunk)
	q.putBufRecs += recs
	q.writePos += int64(len(chunk))
	q.depth.Add(int64(recs))
	q.ops += int64(recs)
	return nil
}

// errCannotReserve marks a file system that cannot reserve space.
var errCannotReserve = errors.New("space reservation not supported")

// reserve makes sure the write file has space reserved for n more bytes
// at the write position: a write buffer's worth ahead (no further than
// the file will grow), or, on a disk too full for that, just n.
func (q *Queue) reserve(n int64) error {
	end := q.writePos + n
	if end <= q.reserved {
		return nil
	}
	f, err := q.openWriteFile()
	if err != nil {
		return err
	}
	r, ok := f.(store.Reserver)
	if !ok {
		return errCannotReserve
	}
	want := max(end, min(q.writePos+int64(q.o.WriteBuffer), q.o.MaxBytesPerFile))
	err = r.Reserve(q.writePos, want-q.writePos)
	if err != nil && want > end {
		want = end
		err = r.Reserve(q.writePos, want-q.writePos)
	}
	switch {
	case err == nil:
		q.reserved = want
		return nil
	case errors.Is(err, syscall.EOPNOTSUPP), errors.Is(err, syscall.ENOSYS):
		return fmt.Errorf("%w: %w", errCannotReserve, err)
	default:
		return fmt.Errorf("reserve disk queue space: %w", err)
	}
}

// flush writes the buffered records to the write file with one write.
// On failure they stay buffered, to be written again (the file is cut
// back to where they begin first).
func (q *Queue) flush() error {
	if len(q.wbuf) == 0 {
		return nil
	}
	if err := q.writeOut(q.wbuf); err != nil {
		return err
	}
	q.wbuf = q.wbuf[:0]
	q.putBufBytes, q.putBufRecs = 0, 0
	return nil
}

// queueFlush asks the Syncer to write the buffered records FlushDelay
// from now.
func (q *Queue) queueFlush() {
	if q.o.Syncer == nil || q.flushQueued || len(q.wbuf) == 0 {
		return
	}
	q.flushQueued = true
	q.o.Syncer.addFlush(q)
}

// timedFlush is the Syncer's call: write the buffered records, and let go
// of the buffer, so that a queue whose puts stopped keeps none.
func (q *Queue) timedFlush() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.flushQueued = false
	if q.closed {
		return
	}
	if err := q.flush(); err != nil {
		q.log.Error("write buffered disk queue records", "records_bytes", len(q.wbuf), "err", err)
		return
	}
	q.wbuf = nil
}

// roll starts a new write file, syncing the one written so far.
func (q *Queue) roll() {
	if q.readFileNum == q.writeFileNum {
		q.readEnd = q.writePos
	}
	q.writeFileNum++
	q.writePos = 0
	// a reader that had read all of it is done with it (go-diskqueue,
	// having read ahead of such a reader, renames the finished file .bad)
	if q.readFileNum == q.writeFileNum-1 && q.readPos >= q.readEnd {
		q.leaveFinishedFile()
	}
	q.setAsideWriteFile()
	if err := q.sync(); err != nil {
		q.log.Error("sync disk queue", "err", err)
	}
}

// setAsideWriteFile stops writing to the write file, which the next sync
// still fsyncs before it writes metadata that counts on its records.
func (q *Queue) setAsideWriteFile() {
	if q.writeFile != nil {
		if q.dataDirty {
			q.unsynced = append(q.unsynced, q.writeFile)
		} else {
			q.writeFile.Close()
		}
		q.writeFile = nil
		q.dataDirty = false
		q.reserved = 0
	}
}

// writeChunk writes records (all for the current write file) with one
// write. On failure nothing is counted as written; the next write starts
// again at the write position. (go-diskqueue closes a file whose write or
// fsync failed; this keeps it for the next sync to fsync, so that no
// metadata is written that counts on records not known to be durable.)
func (q *Queue) writeChunk(chunk []byte, recs int) error {
	if len(chunk) == 0 {
		return nil
	}
	if err := q.writeOut(chunk); err != nil {
		return err
	}
	q.writePos += int64(len(chunk))
	q.depth.Add(int64(recs))
	q.ops += int64(recs)
	return nil
}

// writeOut appends bytes to the write file, which ends at flushedPos.
func (q *Queue) writeOut(b []byte) error {
	f, err := q.openWriteFile()
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		q.setAsideWriteFile() // reopened, and cut back to where it ended, by the next write
		return fmt.Errorf("write disk queue file: %w", err)
	}
	q.dataDirty = true
	return nil
}

// openWriteFile opens the write file unless it is open, making it end at
// flushedPos.
func (q *Queue) openWriteFile() (store.File, error) {
	if q.writeFile != nil {
		return q.writeFile, nil
	}
	name := q.fileName(q.writeFileNum)
	f, size, err := q.fs.OpenAppend(name, true)
	if err != nil {
		return nil, fmt.Errorf("open disk queue file: %w", err)
	}
	// bytes past the write position are the remains of a failed write;
	// a file shorter than it gets zeros, as a write after a seek would
	pos := q.flushedPos()
	switch {
	case size > pos:
		err = f.Truncate(pos)
	case size < pos:
		_, err = f.Write(make([]byte, pos-size))
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("position disk queue file %s: %w", name, err)
	}
	if size == 0 {
		q.newFile = true
	}
	if size != pos {
		q.dataDirty = true
	}
	q.writeFile = f
	q.reserved = 0
	q.log.Debug("disk queue opened file for writing", "file", name)
	return f, nil
}

// Read appends up to max records to dst, in order, and counts them read
// (go-diskqueue's message sent on ReadChan). The records alias a read-ahead
// block that is never written again: they stay valid for as long as the
// caller keeps them. A file that cannot be read is renamed .bad and
// reading goes on with the next one, as go-diskqueue does.
func (q *Queue) Read(dst [][]byte, max int) ([][]byte, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return dst, ErrClosed
	}
	n := 0
	flushed := false
	for n < max {
		if q.readFileNum == q.writeFileNum && q.readPos >= q.flushedPos() {
			// the rest is buffered: write it for the reader, once per call
			if len(q.wbuf) == 0 || flushed {
				break
			}
			flushed = true
			if err := q.flush(); err != nil {
				q.log.Error("write buffered disk queue records for a reader", "err", err)
				break
			}
			continue
		}
		rec, err := q.readOne()
		if err != nil && errors.Is(err, os.ErrNotExist) && q.readFileNum < q.writeFileNum {
			q.log.Error("disk queue file missing, reading on with the next one", "file", q.fileName(q.readFileNum))
			q.skipMissingFiles()
			continue
		}
		if err != nil {
			q.log.Error("read disk queue", "pos", q.readPos, "file", q.fileName(q.readFileNum), "err", err)
			q.handleReadError()
			continue
		}
		if rec == nil {
			continue // a finished file left: read on in the next
		}
		dst = append(dst, rec)
		n++
		q.moveForward(int64(4 + len(rec)))
	}
	q.ops += int64(n)
	if q.ops >= q.o.SyncEvery || q.needSync {
		if err := q.sync(); err != nil {
			q.log.Error("sync disk queue", "err", err)
		}
	} else if n > 0 {
		q.queueSync()
	}
	if q.bufOff == len(q.buf) && cap(q.buf)-len(q.buf) < 4<<10 {
		q.buf, q.bufOff = nil, 0 // used up: the next fill takes a new block
	}
	return dst, nil
}

// readOne parses the record at the read position; it returns no record
// and no error when it left a finished file instead.
func (q *Queue) readOne() ([]byte, error) {
	if q.readFile == nil {
		name := q.fileName(q.readFileNum)
		f, size, err := q.fs.OpenAppend(name, false)
		if err != nil {
			return nil, err
		}
		q.readFile = f
		// a file the writer is done with ends at its size
		q.readEnd = q.o.MaxBytesPerFile
		if q.readFileNum < q.writeFileNum {
			q.readEnd = size
		}
		q.resetBuf()
		q.log.Debug("disk queue opened file for reading", "file", name)
		if q.readFileNum < q.writeFileNum && q.readPos >= q.readEnd {
			q.leaveFinishedFile() // metadata left at the end of a finished file
			return nil, nil
		}
	}
	if err := q.fill(4); err != nil {
		return nil, err
	}
	size := int32(binary.BigEndian.Uint32(q.buf[q.bufOff:]))
	if size < q.o.MinMsgSize || size > q.o.MaxMsgSize {
		return nil, fmt.Errorf("invalid message read size (%d)", size)
	}
	if err := q.fill(4 + int(size)); err != nil {
		return nil, err
	}
	s := q.bufOff + 4
	e := s + int(size)
	q.bufOff = e
	return q.buf[s:e:e], nil
}

// fill makes at least need bytes available at bufOff, reading ahead as
// much as a block holds, but never past what the write position (or, in a
// finished file, its size) says is there.
func (q *Queue) fill(need int) error {
	have := len(q.buf) - q.bufOff
	if have >= need {
		return nil
	}
	limit := q.readEnd
	if q.readFileNum == q.writeFileNum {
		limit = q.flushedPos()
	}
	from := q.readPos + int64(have) // file offset of the first unbuffered byte
	if q.readPos+int64(need) > limit {
		return fmt.Errorf("record at %d runs past the end of the data (%d): %w", q.readPos, limit, io.ErrUnexpectedEOF)
	}
	if spare := cap(q.buf) - len(q.buf); spare < need-have || spare < 4<<10 {
		nb := make([]byte, have, max(q.o.ReadBlock, need))
		copy(nb, q.buf[q.bufOff:])
		q.buf, q.bufOff = nb, 0
	}
	want := min(int64(cap(q.buf)-len(q.buf)), limit-from)
	dst := q.buf[len(q.buf) : len(q.buf)+int(want)]
	n, err := q.readFile.ReadAt(dst, from)
	q.buf = q.buf[:len(q.buf)+n]
	if len(q.buf)-q.bufOff >= need {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read disk queue file at %d: %w", from, err)
}

func (q *Queue) resetBuf() {
	q.buf = q.buf[len(q.buf):]
	q.bufOff = 0
}

// moveForward counts the record of size bytes just parsed as read,
// leaving (and removing) a finished file.
func (q *Queue) moveForward(size int64) {
	q.readPos += size
	q.depth.Add(-1)
	q.leaveFinishedFile()
	q.checkTailCorruption()
}

// leaveFinishedFile moves the read position to the next file, removing
// the one read, once every record of a file the writer is done with has
// been read.
func (q *Queue) leaveFinishedFile() {
	if q.readFileNum >= q.writeFileNum || q.readPos < q.readEnd {
		return
	}
	if q.readFile != nil {
		q.readFile.Close()
		q.readFile = nil
	}
	old := q.fileName(q.readFileNum)
	q.readFileNum++
	q.readPos = 0
	q.resetBuf()
	q.needSync = true
	if err := q.fs.Remove(old); err != nil {
		q.log.Error("remove read disk queue file", "file", old, "err", err)
	}
}

// checkTailCorruption resets the queue when reading has reached the write
// position: a depth other than 0 there, or a read position past the
// write position, means the metadata was wrong.
func (q *Queue) checkTailCorruption() {
	if q.readFileNum < q.writeFileNum || q.readPos < q.writePos {
		return
	}
	if d := q.depth.Load(); d != 0 {
		if d < 0 {
			q.log.Error("disk queue depth negative at its tail (metadata corruption), resetting to 0", "depth", d)
		} else {
			q.log.Error("disk queue depth positive at its tail (data lost), resetting to 0", "depth", d)
		}
		q.depth.Store(0)
		q.needSync = true
	}
	if q.readFileNum != q.writeFileNum || q.readPos != q.writePos {
		q.log.Error("disk queue read position past its write position (corruption), skipping to a new file",
			"read_file", q.readFileNum, "read_pos", q.readPos, "write_file", q.writeFileNum, "write_pos", q.writePos)
		q.skipToNextRWFile()
		q.needSync = true
	}
}

// handleReadError gives up on the read file: it is renamed .bad and
// reading goes on with the next file (and so does writing, when it was
// the write file).
func (q *Queue) handleReadError() {
	if q.readFileNum == q.writeFileNum {
		if q.writeFile != nil {
			q.writeFile.Close()
			q.writeFile = nil
			q.dataDirty = false
			q.reserved = 0
		}
		// records still buffered were not in the bad file: they go on to
		// the next
		q.writeFileNum++
		q.writePos = int64(len(q.wbuf))
	}
	if q.readFile != nil {
		q.readFile.Close()
		q.readFile = nil
	}
	bad := q.fileName(q.readFileNum)
	q.log.Warn("disk queue file unreadable: renamed .bad, reading goes on with the next file", "file", bad+".bad")
	if err := q.fs.Rename(bad, bad+".bad"); err != nil {
		q.log.Error("rename bad disk queue file", "file", bad, "err", err)
	}
	q.readFileNum++
	q.readPos = 0
	q.resetBuf()
	q.needSync = true
	q.checkTailCorruption()
}

// skipMissingFiles moves the read position from a missing file to the
// next data file there is (go-diskqueue tries each number in turn, which
// ends the same way, one failed open per number).
func (q *Queue) skipMissingFiles() {
	next := q.writeFileNum
	names, err := q.fs.List(q.dir)
	if err == nil {
		prefix := q.name + ".diskqueue."
		for _, n := range names {
			num, ok := strings.CutPrefix(n, prefix)
			if !ok {
				continue
			}
			num, ok = strings.CutSuffix(num, ".dat")
			if !ok {
				continue
			}
			if v, err := strconv.ParseInt(num, 10, 64); err == nil && v > q.readFileNum && v < next {
				next = v
			}
		}
	}
	q.readFileNum = next
	q.readPos = 0
	q.resetBuf()
	q.needSync = true
	q.checkTailCorruption()
}

// skipToNextRWFile removes every data file and goes on, empty, at the
// next file number.
func (q *Queue) skipToNextRWFile() error {
	q.closeFiles()
	var err error
	for i := q.readFileNum; i <= q.writeFileNum; i++ {
		if rerr := q.fs.Remove(q.fileName(i)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			q.log.Error("remove disk queue file", "file", q.fileName(i), "err", rerr)
			err = fmt.Errorf("remove disk queue file: %w", rerr)
		}
	}
	q.writeFileNum++
	q.writePos = 0
	q.readFileNum = q.writeFileNum
	q.readPos = 0
	q.depth.Store(0)
	q.buf, q.bufOff = nil, 0
	return err
}

func (q *Queue) closeFiles() {
	if q.readFile != nil {
		q.readFile.Close()
		q.readFile = nil
	}
	if q.writeFile != nil {
		q.writeFile.Close()
		q.writeFile = nil
		q.dataDirty = false
		q.reserved = 0
	}
	q.wbuf = nil
	q.putBufBytes, q.putBufRecs = 0, 0
	for _, f := range q.unsynced {
		f.Close()
	}
	q.unsynced = nil
}

// sync makes the data written so far durable and then persists the
// positions: fsync of the write file when it was written to since (and of
// the directory when a data file was created since the last sync), then
// the metadata file replaced.
func (q *Queue) sync() error {
	q.ops = 0
	q.needSync = true // until it succeeds: the next call tries again
	// the metadata counts on every record put: the buffered ones are
	// written first
	if err := q.flush(); err != nil {
		return err
	}
	for len(q.unsynced) > 0 {
		f := q.unsynced[0]
		if err := f.Sync(); err != nil {
			return fmt.Errorf("sync disk queue file: %w", err)
		}
		f.Close()
		q.unsynced = q.unsynced[1:]
	}
	q.unsynced = nil
	if q.writeFile != nil && q.dataDirty {
		// on failure the file stays open, to be fsynced again
		if err := q.writeFile.Sync(); err != nil {
			return fmt.Errorf("sync disk queue file: %w", err)
		}
		q.dataDirty = false
	}
	if q.newFile {
		if err := q.fs.SyncDir(q.dir); err != nil {
			return fmt.Errorf("sync disk queue directory: %w", err)
		}
		q.newFile = false
	}
	if err := q.persistMeta(); err != nil {
		return err
	}
	q.needSync = false
	return nil
}

// persistMeta replaces the metadata file: a temporary file written and
// fsynced, renamed over it.
func (q *Queue) persistMeta() error {
	name := q.metaName()
	tmp := fmt.Sprintf("%s.%d.tmp", name, rand.Int())
	f, size, err := q.fs.OpenAppend(tmp, true)
	if err != nil {
		return fmt.Errorf("write disk queue metadata: %w", err)
	}
	if size > 0 {
		err = f.Truncate(0)
	}
	if err == nil {
		_, err = f.Write(appendMeta(nil, q.depth.Load(), q.readFileNum, q.readPos, q.writeFileNum, q.writePos))
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = q.fs.Rename(tmp, name)
	}
	if err != nil {
		_ = q.fs.Remove(tmp)
		return fmt.Errorf("write disk queue metadata: %w", err)
	}
	return nil
}

// Sync syncs the queue now if it changed since its last sync.
func (q *Queue) Sync() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || (q.ops == 0 && !q.needSync) {
		return nil
	}
	return q.sync()
}

// queueSync asks the Syncer to sync the queue --sync-timeout from now.
func (q *Queue) queueSync() {
	if q.o.Syncer == nil || q.syncQueued || (q.ops == 0 && !q.needSync) {
		return
	}
	q.syncQueued = true
	q.o.Syncer.add(q)
}

// timedSync is the Syncer's call: sync if anything changed, and let go of
// the read-ahead block (what was buffered is read again when needed), so
// that a queue whose reads stopped keeps no block.
func (q *Queue) timedSync() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.syncQueued = false
	if q.closed {
		return
	}
	if q.ops > 0 || q.needSync {
		if err := q.sync(); err != nil {
			q.log.Error("sync disk queue", "err", err)
		}
	}
	q.buf, q.bufOff = nil, 0
}

// Empty discards every record: the data files and the metadata file are
// removed and the queue goes on at the next file number.
func (q *Queue) Empty() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrClosed
	}
	q.log.Info("emptying disk queue")
	err := q.skipToNextRWFile()
	if rerr := q.fs.Remove(q.metaName()); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		return fmt.Errorf("remove disk queue metadata: %w", rerr)
	}
	q.ops = 0
	q.needSync = false
	return err
}

// Close syncs the queue and closes its files.
func (q *Queue) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil
	}
	q.closed = true
	err := q.sync()
	if len(q.wbuf) > 0 {
		q.log.Error("disk queue closed with records it could not write: they are lost",
			"bytes", len(q.wbuf), "err", err)
	}
	q.closeFiles()
	q.buf, q.bufOff = nil, 0
	return err
}

// Delete closes the queue without writing its metadata (call Empty first
// to remove its files).
func (q *Queue) Delete() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.closeFiles()
	q.buf, q.bufOff = nil, 0
	return nil
}
