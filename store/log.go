package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of LogOptions.
const (
	DefaultSegmentBytes = 16 << 20        // roll a segment at 16 MiB
	DefaultCacheBytes   = 8 << 20         // recent committed data served from memory
	cacheAge            = 2 * time.Second // ... for this long: an idle topic holds none
	indexEvery          = 64 << 10        // one index point per 64 KiB of segment
	readBlock           = 1 << 20         // file reads in 1 MiB blocks
)

// ErrClosed is returned for operations on a closed log or committer.
var ErrClosed = errors.New("store: closed")

// LogOptions configures a Log.
type LogOptions struct {
	SegmentBytes   int64        // roll the active segment past this size; 0 = DefaultSegmentBytes
	MaxRecordBytes int          // largest plausible record (body + overhead); 0 = 64 MiB
	CacheBytes     int          // committed data kept in memory for readers; 0 = DefaultCacheBytes
	Logger         *slog.Logger // recovery reports; nil = discard
}

// Entry is what a publisher appends: one message (Body), or Count messages
// packed as [u32 size][body]... in Packed (an MPUB body), all with TS.
type Entry struct {
	TS        int64
	DeliverAt int64
	Body      []byte
	Packed    []byte
	Count     int
	// SeqOut, when set, receives the sequence number of the entry's (first)
	// message when the entry is written; read it after the round's Wait.
	SeqOut *uint64
}

// Messages is how many messages e holds.
func (e *Entry) Messages() int {
	if e.Packed != nil {
		return e.Count
	}
	return 1
}

// checkEntry reports why e cannot be appended to l: a message that the
// log would refuse to read back, or a pack not holding Count messages.
func (l *Log) checkEntry(e *Entry) error {
	limit := l.opts.MaxRecordBytes - recOverhead
	if e.Packed == nil {
		if len(e.Body) > limit {
			return fmt.Errorf("append to %s: message of %d bytes over the limit of %d", l.dir, len(e.Body), limit)
		}
		return nil
	}
	if e.Count < 0 {
		return fmt.Errorf("append to %s: negative message count %d", l.dir, e.Count)
	}
	p := e.Packed
	for k := 0; k < e.Count; k++ {
		if len(p) < 4 {
			return fmt.Errorf("append to %s: pack ends before message %d of %d", l.dir, k, e.Count)
		}
		n := binary.BigEndian.Uint32(p)
		if uint64(n) > uint64(len(p)-4) {
			return fmt.Errorf("append to %s: message %d of the pack runs past its end", l.dir, k)
		}
		if int64(n) > int64(limit) {
			return fmt.Errorf("append to %s: message of %d bytes over the limit of %d", l.dir, n, limit)
		}
		p = p[4+n:]
	}
	return nil
}

type indexPoint struct {
	seq uint64
	off int64
}

// segment is one file of a log. base is the sequence number of its first
// record, end the one after its last; size is the committed byte size.
type segment struct {
	base, end uint64
	size      int64
	maxTS     int64
	name      string
	f         File
	idx       []indexPoint
	removed   bool
}

// chunk is a round's committed bytes, kept for readers close behind the
// writer so they decode from memory instead of reading the file.
type chunk struct {
	seg   *segment
	off   int64
	first uint64
	data  []byte
	at    time.Time // when it was committed
}

// Log is the segmented append-only log of one topic. Appends go through a
// Committer; readers (one per channel) read what is committed.
//
// Lock order: Committer.mu before Log.mu.
type Log struct {
	fs     FS
	dir    string
	opts   LogOptions
	logger *slog.Logger

	pending []Entry // guarded by the Committer's mu
	spare   []Entry // guarded by the Committer's mu: a drained pending slice to reuse
	queued  bool    // guarded by the Committer's mu: in the open round's dirty list

	// deferSync: commits write without syncing (DeferSyncs). syncMu
	// serializes Sync with the sealing and closing of the active segment.
	// Lock order: syncMu before mu.
	deferSync atomic.Bool
	syncMu    sync.Mutex

	backfillMu sync.Mutex // one Backfill at a time

	mu         sync.RWMutex // guards the fields below
	segs       []*segment
	next       uint64 // sequence number of the next record; everything below is committed
	notify     chan struct{}
	cache      []chunk
	cacheBytes int
	dirtyTail  bool // a failed write may have left bytes past the active segment's size
	closed     bool

	bytesWritten atomic.Uint64
}

// RecoveryReport says what opening a log found wrong and did about it.
type RecoveryReport struct {
	Cut         []string // torn or corrupt tails cut off, one line each
	Quarantined []string // segments renamed to *.corrupt, one line each
}

func segName(base uint64) string { return fmt.Sprintf("%020d.seg", base) }

func parseSegName(name string) (uint64, bool) {
	if len(name) != 24 || !strings.HasSuffix(name, ".seg") {
		return 0, false
	}
	n, err := strconv.ParseUint(name[:20], 10, 64)
	return n, err == nil
}

// OpenLog opens (creating when needed) the log in dir and recovers it: each
// segment is read and checked record by record.
func OpenLog(fs FS, dir string, opts LogOptions) (*Log, RecoveryReport, error) {
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = DefaultSegmentBytes
	}
	if opts.MaxRecordBytes <= 0 {
		opts.MaxRecordBytes = 64 << 20
	}
	if opts.CacheBytes <= 0 {
		opts.CacheBytes = DefaultCacheBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Log{fs: fs, dir: dir, opts: opts, logger: opts.Logger, notify: make(chan struct{})}
	var rep RecoveryReport
	if err := fs.MkdirAll(dir); err != nil {
		return nil, rep, fmt.Errorf("create log directory %s: %w", dir, err)
	}
	names, err := fs.List(dir)
	if err != nil {
		return nil, rep, fmt.Errorf("list log directory %s: %w", dir, err)
	}
	if err := l.removeParts(names); err != nil {
		return nil, rep, err
	}
	var bases []uint64
	for _, name := range names {
		if base, ok := parseSegName(name); ok {
			bases = append(bases, base)
		}
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i] < bases[j] })
	for i, base := range bases {
		last := i == len(bases)-1
		seg, err := l.recoverSegment(base, last, &rep)
		if err != nil {
			l.closeFiles()
			return nil, rep, err
		}
		if seg == nil {
			continue
		}
		if n := len(l.segs); n > 0 && seg.base < l.segs[n-1].end {
			l.closeFiles()
			return nil, rep, fmt.Errorf("segment %s overlaps the one before it (ends at %d)", seg.name, l.segs[n-1].end)
		}
		l.segs = append(l.segs, seg)
	}
	if len(l.segs) == 0 {
		if err := l.createSegment(0); err != nil {
			return nil, rep, err
		}
	}
	l.next = l.segs[len(l.segs)-1].end
	return l, rep, nil
}

// recoverSegment opens and checks one segment. A bad record in the newest
// segment cuts it there; in an older one it quarantines the whole file.
func (l *Log) recoverSegment(base uint64, last bool, rep *RecoveryReport) (*segment, error) {
	name := segName(base)
	path := filepath.Join(l.dir, name)
	f, size, err := l.fs.OpenAppend(path, false)
	if err != nil {
		return nil, fmt.Errorf("open segment %s: %w", path, err)
	}
	seg := &segment{base: base, end: base, name: name, f: f}
	var win []byte
	var winOff int64
	var readErr error
	// window returns the bytes [off, off+n) of the file, false past its end
	window := func(off int64, n int) ([]byte, bool) {
		if off+int64(n) > size {
			return nil, false
		}
		if off >= winOff && off+int64(n) <= winOff+int64(len(win)) {
			return win[off-winOff : off-winOff+int64(n)], true
		}
		m := min(max(int64(n), readBlock), size-off)
		if int64(cap(win)) < m {
			win = make([]byte, m)
		}
		win = win[:m]
		if k, err := f.ReadAt(win, off); int64(k) < m {
			readErr = fmt.Errorf("read segment %s at %d: %v", path, off, err)
			return nil, false
		}
		winOff = off
		return win[:n], true
	}
	good, bad := int64(0), ""
	for good < size {
		hdr, ok := window(good, recHeader)
		if !ok {
			bad = fmt.Sprintf("incomplete record header at offset %d", good)
			break
		}
		n := int(binary.BigEndian.Uint32(hdr))
		if n < recFixed || n > l.opts.MaxRecordBytes {
			bad = fmt.Sprintf("record length %d out of range at offset %d", n, good)
			break
		}
		data, ok := window(good, recHeader+n)
		if !ok {
			bad = fmt.Sprintf("record at offset %d runs past the end of the file (%d bytes)", good, size)
			break
		}
		rec, sz, err := decodeRecord(data, l.opts.MaxRecordBytes, true)
		if err != nil {
			bad = fmt.Sprintf("%v at offset %d", err, good)
			break
		}
		if rec.Seq != seg.end {
			bad = fmt.Sprintf("sequence %d at offset %d, expected %d", rec.Seq, good, seg.end)
			break
		}
		if len(seg.idx) == 0 || good-seg.idx[len(seg.idx)-1].off >= indexEvery {
			seg.idx = append(seg.idx, indexPoint{rec.Seq, good})
		}
		seg.maxTS = max(seg.maxTS, rec.TS)
		seg.end++
		good += int64(sz)
	}
	if readErr != nil {
		f.Close()
		return nil, readErr
	}
	if bad == "" {
		seg.size = size
		if !last {
			// sealed: opened per read, so retained segments hold no descriptor
			f.Close()
			seg.f = nil
		}
		return seg, nil
	}
	if !last {
		f.Close()
		qname := path + ".corrupt"
		if err := l.fs.Rename(path, qname); err != nil {
			return nil, fmt.Errorf("quarantine corrupt segment %s (%s): %w", path, bad, err)
		}
		if err := l.fs.SyncDir(l.dir); err != nil {
			return nil, err
		}
		msg := fmt.Sprintf("%s: %s; the whole segment (messages from %d; %d to %d checked good) is withdrawn from the log and renamed to %s",
			path, bad, base, base, int64(seg.end)-1, filepath.Base(qname))
		rep.Quarantined = append(rep.Quarantined, msg)
		l.logger.Error("quarantined corrupt log segment", "segment", path, "reason", bad, "first_seq", base, "first_bad_seq", seg.end, "renamed_to", qname)
		return nil, nil
	}
	if err := f.Truncate(good); err != nil {
		f.Close()
		return nil, fmt.Errorf("cut torn tail of %s at %d: %w", path, good, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("sync %s after cutting its tail: %w", path, err)
	}
	msg := fmt.Sprintf("%s: %s; cut %d bytes after message %d", path, bad, size-good, int64(seg.end)-1)
	rep.Cut = append(rep.Cut, msg)
	l.logger.Warn("cut torn tail of log segment", "segment", path, "reason", bad, "bytes_cut", size-good, "last_good_seq", int64(seg.end)-1)
	seg.size = good
	return seg, nil
}

// createSegment adds a new, empty active segment starting at base and
// makes its directory entry durable. A log that defers its syncs syncs the
// segment it seals first, so only the newest segment can have unsynced
// records.
func (l *Log) createSegment(base uint64) error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	if l.deferSync.Load() {
		l.mu.RLock()
		var prev File
		if n := len(l.segs); n > 0 {
			prev = l.segs[n-1].f
		}
		l.mu.RUnlock()
		if prev != nil {
			if err := prev.Sync(); err != nil {
				return fmt.Errorf("sync segment before sealing it in %s: %w", l.dir, err)
			}
		}
	}
	name := segName(base)
	path := filepath.Join(l.dir, name)
	f, size, err := l.fs.OpenAppend(path, true)
	if err != nil {
		return fmt.Errorf("create segment %s: %w", path, err)
	}
	if size != 0 {
		if err := f.Truncate(0); err != nil {
			f.Close()
			return fmt.Errorf("reset stale segment %s: %w", path, err)
		}
	}
	if err := l.fs.SyncDir(l.dir); err != nil {
		f.Close()
		l.fs.Remove(path)
		return fmt.Errorf("create segment %s: %w", path, err)
	}
	l.mu.Lock()
	if n := len(l.segs); n > 0 && l.segs[n-1].f != nil {
		l.segs[n-1].f.Close() // sealed now: opened per read from here on
		l.segs[n-1].f = nil
	}
	l.segs = append(l.segs, &segment{base: base, end: base, name: name, f: f})
	l.mu.Unlock()
	return nil
}

// readSegment reads from seg at off: through the active segment's open
// file, or by opening a sealed one for this read.
func (l *Log) readSegment(seg *segment, p []byte, off int64) (int, error) {
	if seg.f != nil {
		return seg.f.ReadAt(p, off)
	}
	f, _, err := l.fs.OpenAppend(filepath.Join(l.dir, seg.name), false)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.ReadAt(p, off)
}

// SkipTo makes seq the next sequence number when the log ends before it
// (so numbers that cursors refer to are never handed out again, e.g. after
// the newest segment was lost).
func (l *Log) SkipTo(seq uint64) error {
	l.mu.RLock()
	next := l.next
	l.mu.RUnlock()
	if seq <= next {
		return nil
	}
	if err := l.createSegment(seq); err != nil {
		return err
	}
	l.mu.Lock()
	l.next = seq
	l.mu.Unlock()
	return nil
}

// commit writes ents as records after the log's end and syncs them (unless
// the log defers its syncs). It is called by the committer only. On failure nothing of ents is committed
// and the file is cut back before the next write.
func (l *Log) commit(ents []Entry) (written int, err error) {
	l.mu.RLock()
	closed := l.closed
	seg := l.segs[len(l.segs)-1]
	next := l.next
	l.mu.RUnlock()
	if closed {
		return 0, ErrClosed
	}
	if l.dirtyTail {
		if err := seg.f.Truncate(seg.size); err != nil {
			return 0, fmt.Errorf("cut failed write from %s: %w", seg.name, err)
		}
		l.dirtyTail = false
	}
	if seg.size >= l.opts.SegmentBytes {
		if err := l.createSegment(next); err != nil {
			return 0, err
		}
		l.mu.RLock()
		seg = l.segs[len(l.segs)-1]
		l.mu.RUnlock()
	}
	// encode into a fresh buffer: it becomes the readers' cache chunk
	size := 0
	for i := range ents {
		e := &ents[i]
		if e.Packed != nil {
			size += len(e.Packed) + e.Count*(recOverhead-4)
		} else {
			size += len(e.Body) + recOverhead
		}
	}
	buf := make([]byte, 0, size)
	seq := next
	var idx []indexPoint
	lastIdx := int64(-indexEvery)
	if n := len(seg.idx); n > 0 {
		lastIdx = seg.idx[n-1].off
	}
	maxTS := seg.maxTS
	add := func(ts, deliverAt int64, body []byte) {
		off := seg.size + int64(len(buf))
		if off-lastIdx >= indexEvery {
			idx = append(idx, indexPoint{seq, off})
			lastIdx = off
		}
		buf = appendRecord(buf, seq, ts, deliverAt, body)
		seq++
		maxTS = max(maxTS, ts)
	}
	for i := range ents {
		e := &ents[i]
		if e.SeqOut != nil {
			*e.SeqOut = seq
		}
		if e.Packed == nil {
			add(e.TS, e.DeliverAt, e.Body)
			continue
		}
		p := e.Packed
		for k := 0; k < e.Count; k++ {
			n := binary.BigEndian.Uint32(p)
			add(e.TS, e.DeliverAt, p[4:4+n])
			p = p[4+n:]
		}
	}
	if _, err := seg.f.Write(buf); err != nil {
		l.dirtyTail = true
		return 0, err // names the file and the cause (no space left on device, ...)
	}
	if !l.deferSync.Load() {
		if err := seg.f.Sync(); err != nil {
			l.dirtyTail = true
			return 0, err
		}
	}
	l.bytesWritten.Add(uint64(len(buf)))
	l.mu.Lock()
	off := seg.size
	seg.size += int64(len(buf))
	seg.end = seq
	seg.maxTS = maxTS
	seg.idx = append(seg.idx, idx...)
	l.next = seq
	l.cache = append(l.cache, chunk{seg: seg, off: off, first: next, data: buf, at: time.Now()})
	l.cacheBytes += len(buf)
	for len(l.cache) > 1 && l.cacheBytes > l.opts.CacheBytes {
		l.cacheBytes -= len(l.cache[0].data)
		l.cache[0] = chunk{}
		l.cache = l.cache[1:]
	}
	close(l.notify)
	l.notify = make(chan struct{})
	l.mu.Unlock()
	return len(buf), nil
}

// End returns the sequence number the next record will get: every record
// below it is committed.
func (l *Log) End() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.next
}

// Start returns the first sequence number still held.
func (l *Log) Start() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, s := range l.segs {
		if s.end > s.base {
			return s.base
		}
	}
	return l.next
}

// Changed returns a channel closed at the next commit. Take it before
// reading to the end, then wait on it: no commit is missed.
func (l *Log) Changed() <-chan struct{} {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.notify
}

// Size returns the bytes held in segments.
func (l *Log) Size() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	var n int64
	for _, s := range l.segs {
		n += s.size
	}
	return n
}

// Segments returns how many segment files the log has.
func (l *Log) Segments() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return len(l.segs)
}

// BytesWritten returns the record bytes written since the log was opened.
func (l *Log) BytesWritten() uint64 { return l.bytesWritten.Load() }

// SeqAtTime returns the sequence number of the first message whose
// timestamp is at or after ts (End when there is none). Timestamps are
// those nsqd gave at accept time, which follow commit order closely but
// not exactly; the search takes the first segment that reaches ts and the
// first record in it that does.
func (l *Log) SeqAtTime(ts int64) (uint64, error) {
	l.mu.RLock()
	var seg *segment
	for _, s := range l.segs {
		if s.end > s.base && s.maxTS >= ts {
			seg = s
			break
		}
	}
	end := l.next
	l.mu.RUnlock()
	if seg == nil {
		return end, nil
	}
	r := l.NewReader(seg.base)
	var recs []Record
	for {
		var err error
		recs, err = r.Read(recs[:0], 1024)
		if err != nil {
			return 0, err
		}
		if len(recs) == 0 {
			return end, nil
		}
		for _, rec := range recs {
			if rec.TS >= ts {
				return rec.Seq, nil
			}
		}
	}
}

// Retention says which finished segments a log keeps.
type Retention struct {
	Time  time.Duration // keep segments whose newest message is younger
	Bytes int64         // keep the newest segments up to this total size
}

// Retain removes the oldest segments that every reader has finished
// (their messages are all below floor) and that retention does not keep.
// The active segment always stays. It returns how many were removed. It
// also lets go of cached commits older than a few seconds (readers that
// far behind read the files), so call it regularly.
func (l *Log) Retain(floor uint64, keep Retention, now time.Time) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(l.cache) > 0 && now.Sub(l.cache[0].at) > cacheAge {
		l.cacheBytes -= len(l.cache[0].data)
		l.cache[0] = chunk{}
		l.cache = l.cache[1:]
	}
	if len(l.cache) == 0 {
		l.cache = nil
	}
	var total int64
	for _, s := range l.segs {
		total += s.size
	}
	removed := 0
	var firstErr error
	for len(l.segs) > 1 {
		s := l.segs[0]
		if s.end > floor {
			break
		}
		if keep.Time > 0 && s.maxTS >= now.Add(-keep.Time).UnixNano() {
			break
		}
		if keep.Bytes > 0 && total <= keep.Bytes {
			break
		}
		// a segment whose removal fails stays (the next Retain tries
		// again) and so do the newer ones. It used to be dropped and the
		// newer ones removed, so the next start found it again before a
		// gap: a log whose sequence numbers no longer ran from Start on.
		if err := l.fs.Remove(filepath.Join(l.dir, s.name)); err != nil && !isNotExist(err) {
			firstErr = fmt.Errorf("remove finished segment %s: %w", s.name, err)
			break
		}
		s.removed = true
		if s.f != nil {
			s.f.Close()
		}
		total -= s.size
		l.segs[0] = nil
		l.segs = l.segs[1:]
		for len(l.cache) > 0 && l.cache[0].seg == s {
			l.cacheBytes -= len(l.cache[0].data)
			l.cache = l.cache[1:]
		}
		removed++
	}
	return removed, firstErr
}

// DeferSyncs makes the log's commits write without syncing: a round is
// complete, and its records visible to readers, once written, and Sync
// makes everything committed so far durable. It is for a log that copies
// data kept durable elsewhere (a replicated topic's log, whose Raft log is
// synced on a majority of its replicas), which its owner can write again
// after a crash. A segment is synced before the next one is created, so a
// crash can only shorten the newest segment, which recovery cuts back to
// its last whole record as it does a torn write.
func (l *Log) DeferSyncs() { l.deferSync.Store(true) }

// Sync makes every record committed so far durable. Only a log that
// defers its syncs needs it.
func (l *Log) Sync() error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.RLock()
	closed := l.closed
	var f File
	if n := len(l.segs); n > 0 {
		f = l.segs[n-1].f
	}
	l.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	if f == nil {
		return nil
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync log %s: %w", l.dir, err)
	}
	return nil
}

// Close closes the log's files (syncing the active segment first when the
// log defers its syncs). Later appends fail with ErrClosed.
func (l *Log) Close() error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	var syncErr error
	if n := len(l.segs); l.deferSync.Load() && n > 0 && l.segs[n-1].f != nil {
		if err := l.segs[n-1].f.Sync(); err != nil {
			syncErr = fmt.Errorf("sync log %s: %w", l.dir, err)
		}
	}
	if err := l.closeFilesLocked(); err != nil {
		return err
	}
	return syncErr
}

func (l *Log) closeFiles() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closeFilesLocked()
}

func (l *Log) closeFilesLocked() error {
	var firstErr error
	for _, s := range l.segs {
		if s.f != nil {
			if err := s.f.Close(); err != nil && firstErr == nil {
				firstErr = err
			}
		}
	}
	l.cache = nil
	return firstErr
}
