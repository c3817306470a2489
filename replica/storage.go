package replica

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/sluicemq/sluice/store"
)

// Defaults of StorageOptions.
const (
	DefaultSegmentSize = 16 << 20 // start a new segment file past 16 MiB
	DefaultCacheBytes  = 8 << 20  // newest entries served from memory
	readChunk          = 4 << 20  // disk reads of entries in runs of at most this much
)

// ErrStorageClosed is returned by a Storage's methods after Close.
var ErrStorageClosed = errors.New("replica: raft storage closed")

// StorageOptions configures a Storage.
type StorageOptions struct {
	// SegmentSize: the first Sync after the newest segment reaches it
	// starts a new one; 0 = DefaultSegmentSize.
	SegmentSize int64
	// CacheBytes: the newest entries, up to this many encoded bytes, are
	// kept in memory and read without touching the disk; older ones are
	// read from their segments. 0 = DefaultCacheBytes, negative = none.
	CacheBytes int64
	// Logger receives recovery reports (torn tails cut); nil = slog.Default().
	Logger *slog.Logger
}

// RecoveryReport says what opening a Storage found wrong and repaired.
type RecoveryReport struct {
	Cut []string // torn or corrupt tails cut off the newest segment, one line each
}

// Storage is the disk-backed Raft log of one group: it implements
// raft.Storage, and Save, Sync, Compact and CreateSnapshot write it. The
// file format and why it is not a store.Log are described in wal.go.
//
// Writers (Save, Sync, Compact, CreateSnapshot, Close) are serialized by
// wmu and change the in-memory state under mu; raft.Storage's methods read
// under mu.RLock, holding it across their disk reads, so a Sync's fdatasync
// never blocks them. Lock order: wmu before mu.
type Storage struct {
	fs     store.FS
	dir    string
	opts   StorageOptions
	logger *slog.Logger
	report RecoveryReport

	wmu        sync.Mutex    // serializes writers; guards the fields below
	segs       []*walSegment // oldest first; the last is active
	dirty      bool          // written since the active segment's last fdatasync
	broken     error         // a write or sync failed: no more writes
	staleSnaps []uint64      // snapshot files to remove once the newer one's record is synced

	mu     sync.RWMutex // guards the fields below (written only with wmu held too)
	st     walState
	active *walSegment
	snap   *pb.Snapshot // the current snapshot; nil: none
	cache  entryCache
	closed bool
	// conf is the membership of the newest applied conf change, at
	// confIndex (confstate.go); nil when none was recorded.
	conf      *pb.ConfState
	confIndex uint64
}

// OpenStorage opens (creating when needed) the Raft storage of one group in
// dir and recovers it: every segment is read and checked record by record.
// A torn tail of the newest segment is cut off and reported (Recovery); a
// bad record anywhere else is an error naming the file and offset, as is a
// missing segment or snapshot file: the log is never silently shortened.
func OpenStorage(fs store.FS, dir string, opts StorageOptions) (*Storage, error) {
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	if opts.CacheBytes == 0 {
		opts.CacheBytes = DefaultCacheBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Storage{fs: fs, dir: dir, opts: opts, logger: opts.Logger.With("raft_log", dir)}
	s.cache.limit = max(opts.CacheBytes, 0)
	if err := fs.MkdirAll(dir); err != nil {
		return nil, fmt.Errorf("create raft log directory %s: %w", dir, err)
	}
	if err := s.loadConf(); err != nil {
		return nil, err
	}
	names, err := fs.List(dir)
	if err != nil {
		return nil, fmt.Errorf("list raft log directory %s: %w", dir, err)
	}
	var seqs []uint32
	var snaps []uint64
	var junk []string
	for _, name := range names {
		if seq, ok := parseSegName(name); ok {
			seqs = append(seqs, seq)
		} else if index, ok := parseSnapName(name); ok {
			snaps = append(snaps, index)
		} else if strings.HasSuffix(name, ".tmp") {
			junk = append(junk, name)
		}
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	if len(seqs) == 0 {
		if len(snaps) > 0 {
			return nil, fmt.Errorf("raft log %s: snapshot files but no log segments", dir)
		}
		seg, err := s.createSegment(1)
		if err != nil {
			return nil, err
		}
		s.segs, s.active = []*walSegment{seg}, seg
		// the directory itself, when it was just made
		if err := fs.SyncDir(filepath.Dir(filepath.Clean(dir))); err != nil {
			seg.f.Close()
			return nil, fmt.Errorf("create raft log %s: %w", dir, err)
		}
		return s, nil
	}
	st, segs, cut, err := recoverWAL(fs, dir, seqs, s.logger)
	if err != nil {
		return nil, err
	}
	s.st, s.segs, s.active, s.report.Cut = *st, segs, segs[len(segs)-1], cut
	if s.st.snapIndex > 0 {
		if s.snap, err = s.loadSnapshot(s.st.snapIndex, s.st.snapTerm); err != nil {
			s.active.f.Close()
			return nil, err
		}
	}
	// What was read is made durable before the snapshot files it does not
	// name are removed: one of them may be named by an older record that
	// the newest would otherwise fall back to after a power cut.
	if err := s.active.f.Sync(); err != nil {
		s.active.f.Close()
		return nil, fmt.Errorf("sync %s: %w", s.segPath(s.active.seq), err)
	}
	for _, index := range snaps {
		if index != s.st.snapIndex {
			junk = append(junk, snapName(index))
		}
	}
	for _, name := range junk {
		if err := fs.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.logger.Warn("cannot remove stale file of the raft log", "file", name, "err", err)
		}
	}
	return s, nil
}

// Recovery returns what opening the storage found wrong and repaired.
func (s *Storage) Recovery() RecoveryReport { return s.report }

func (s *Storage) segPath(seq uint32) string    { return filepath.Join(s.dir, segName(seq)) }
func (s *Storage) snapPath(index uint64) string { return filepath.Join(s.dir, snapName(index)) }

// createSegment creates segment seq holding a header of the current state,
// and makes it durable with its directory entry.
func (s *Storage) createSegment(seq uint32) (*walSegment, error) {
	path := s.segPath(seq)
	f, size, err := openSegFile(s.fs, path, true)
	if err != nil {
		return nil, fmt.Errorf("create raft log segment %s: %w", path, err)
	}
	if size != 0 {
		err = f.Truncate(0) // left by a creation that failed
	}
	buf := appendNumbers(nil, recHeader, s.st.headerNumbers(seq)...)
	if err == nil {
		_, err = f.WriteAt(buf, 0)
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = s.fs.SyncDir(s.dir)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("create raft log segment %s: %w", path, err)
	}
	return &walSegment{seq: seq, size: int64(len(buf)), alloc: int64(len(buf)), f: f}, nil
}

// writable returns why writes are refused, if they are. wmu is held.
func (s *Storage) writable() error {
	if s.closed {
		return ErrStorageClosed
	}
	if s.broken != nil {
		return fmt.Errorf("raft log %s failed earlier (close and open it again): %w", s.dir, s.broken)
	}
	return nil
}

// fail makes err sticky: after a failed write or sync what is on disk is
// unknown, so writes stop until the storage is opened again, whose
// recovery cuts what the failure left.
func (s *Storage) fail(err error) error {
	s.broken = err
	return err
}

// write appends buf to the active segment's records. wmu is held.
func (s *Storage) write(buf []byte) error {
	seg := s.active
	end := seg.size + int64(len(buf))
	if _, err := seg.f.WriteAt(buf, seg.size); err != nil {
		return s.fail(fmt.Errorf("write raft log segment %s: %w", s.segPath(seg.seq), err))
	}
	seg.size = end
	seg.alloc = max(seg.alloc, end)
	s.dirty = true
	if _, ok := seg.f.(appendFile); !ok && !seg.noPrealloc {
		if lo := min(preallocMin, s.opts.SegmentSize/4); end >= lo && seg.alloc-end < lo {
			s.preallocate()
		}
	}
	return nil
}

// Bounds of the zero-filled space written ahead of a segment's records:
// none before the segment holds preallocMin of them (or a quarter of the
// segment size, when smaller), then when less than that is left.
const (
	preallocMin = 64 << 10
	preallocMax = 4 << 20
)

// preallocate zero-fills the active segment ahead of its records, by as
// much as the segment holds (at most preallocMax, and not past the
// segment's size limit): a busy segment grows in a few large steps, and a
// group that writes little writes no zeros (10,000 idle groups cost no
// disk). The zeros are made durable by the
// next Sync, with the records before them; from then on a write into them
// changes no metadata, and its fdatasync flushes the data alone instead of
// committing the file system's journal (a file whose size changes needs
// that at every sync). Recovery takes a zero tail for the end of the
// records. Only on a file system that writes at offsets. A failure (a
// full disk) only stops the segment's preallocation: its records are
// intact, and the writes that follow extend the file. wmu is held.
func (s *Storage) preallocate() {
	seg := s.active
	grow := min(seg.size, preallocMax)
	target := min(seg.size+grow, max(s.opts.SegmentSize, seg.alloc))
	for seg.alloc < target {
		n, err := seg.f.WriteAt(zeros[:min(target-seg.alloc, int64(len(zeros)))], seg.alloc)
		seg.alloc += int64(n)
		if err != nil {
			seg.noPrealloc = true
			s.logger.Warn("cannot preallocate raft log segment; writing it without", "segment", s.segPath(seg.seq), "err", err)
			return
		}
	}
}

// cutPrealloc cuts the active segment's zero-filled tail, durably, so that
// it ends at its last record. wmu is held.
func (s *Storage) cutPrealloc() error {
	seg := s.active
	if seg.alloc <= seg.size {
		return nil
	}
	err := seg.f.Truncate(seg.size)
	if err == nil {
		err = seg.f.Sync()
	}
	if err != nil {
		return s.fail(fmt.Errorf("cut the preallocated tail of raft log segment %s: %w", s.segPath(seg.seq), err))
	}
	seg.alloc = seg.size
	return nil
}

var bufPool = sync.Pool{New: func() any { return new([]byte) }}

// Save writes hard state hs (unless nil or empty), the entries ents
// (replacing any existing entries at and after ents[0]'s index; entries at
// or below the compaction point are skipped) and the snapshot snap (unless
// nil or empty; it replaces the whole log, and its index must be above the
// current snapshot's, else raft.ErrSnapOutOfDate). The log is written
// without an fdatasync; Sync makes it durable. When Save returns, the
// raft.Storage methods already see the new state. Arguments are those of a
// raft.Ready (rd.HardState, rd.Entries, rd.Snapshot), in that meaning; the
// entries are kept (not copied) for the cache and must not be mutated.
//
// A non-empty snapshot's file is written and synced by Save itself, before
// the log record that names it, so the log never names a file a power cut
// lost. The caller restores its state machine from the snapshot.
//
// After an error from Save, Sync, Compact or CreateSnapshot the Storage
// refuses further writes: close it and open it again.
func (s *Storage) Save(hs *pb.HardState, ents []*pb.Entry, snap *pb.Snapshot) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.writable(); err != nil {
		return err
	}
	base, last := s.st.base, s.st.last()
	restore := snap != nil && !raft.IsEmptySnap(snap)
	if restore {
		if snap.GetMetadata().GetIndex() <= s.st.snapIndex {
			return raft.ErrSnapOutOfDate
		}
		base = snap.GetMetadata().GetIndex()
		last = base
	}
	if len(ents) > 0 {
		first := ents[0].GetIndex()
		for k, e := range ents {
			if e.GetIndex() != first+uint64(k) || e.GetIndex() == 0 {
				return fmt.Errorf("save to raft log %s: entry %d of the batch has index %d, want %d", s.dir, k, e.GetIndex(), first+uint64(k))
			}
		}
		if first+uint64(len(ents))-1 <= base {
			ents = nil
		} else if first <= base {
			ents = ents[base+1-first:]
		} else if first > last+1 {
			return fmt.Errorf("save to raft log %s: entries from %d would leave a gap after the last entry %d", s.dir, first, last)
		}
	}
	writeHS := hs != nil && !raft.IsEmptyHardState(hs) && s.st.hs != (hardState{hs.GetTerm(), hs.GetVote(), hs.GetCommit()})
	if !restore && len(ents) == 0 && !writeHS {
		return nil
	}

	bp := bufPool.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= 1<<20 {
			bufPool.Put(bp)
		}
	}()
	buf := (*bp)[:0]
	var snapCopy *pb.Snapshot
	if restore {
		snapCopy = proto.Clone(snap).(*pb.Snapshot)
		pb.EnsureSnapshot(snapCopy)
		if err := s.writeSnapshotFile(snapCopy); err != nil {
			return err // nothing in the log names it yet: not a failure of the log
		}
		buf = appendNumbers(buf, recRestore, base, snap.GetMetadata().GetTerm())
	}
	locs := make([]entryLoc, len(ents))
	off := s.active.size
	for k, e := range ents {
		start := len(buf)
		buf = openFrame(buf, recEntry)
		var err error
		if buf, err = (proto.MarshalOptions{}).MarshalAppend(buf, e); err != nil {
			return fmt.Errorf("save to raft log %s: encode entry %d: %w", s.dir, e.GetIndex(), err)
		}
		if len(buf)-start-frameHeader > maxFrame {
			return fmt.Errorf("save to raft log %s: entry %d of %d bytes is over the limit of %d", s.dir, e.GetIndex(), len(buf)-start-frameHeader-1, maxFrame-1)
		}
		buf = closeFrame(buf, start)
		locs[k] = entryLoc{term: e.GetTerm(), off: off + int64(start), seq: s.active.seq, size: uint32(len(buf) - start - frameHeader - 1)}
	}
	if writeHS { // after the entries: a torn write never keeps a commit above them
		buf = appendNumbers(buf, recHardState, hs.GetTerm(), hs.GetVote(), hs.GetCommit())
	}
	*bp = buf
	if err := s.write(buf); err != nil {
		return err
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if restore {
		if s.st.snapIndex > 0 {
			s.staleSnaps = append(s.staleSnaps, s.st.snapIndex)
		}
		s.st.restore(base, snap.GetMetadata().GetTerm())
		s.snap = snapCopy
		s.cache.clear()
	}
	for k, e := range ents {
		if err := s.st.appendEntry(e.GetIndex(), locs[k]); err != nil {
			panic(err) // checked above
		}
		s.cache.put(e, int64(locs[k].size))
	}
	if writeHS {
		s.st.hs = hardState{hs.GetTerm(), hs.GetVote(), hs.GetCommit()}
	}
	return nil
}

// Sync makes everything written so far durable: an fdatasync of the
// active segment, which holds every unsynced write. It then removes the
// segments and snapshot files that compaction or a newer snapshot made
// unneeded (each removal made durable before the next, so a crash leaves
// a suffix of the segments), and starts a new segment when the active one
// is full. A host saves every group with work, then syncs each.
func (s *Storage) Sync() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.syncLocked()
}

func (s *Storage) syncLocked() error {
	if err := s.writable(); err != nil {
		return err
	}
	if s.dirty {
		if err := s.active.f.Sync(); err != nil {
			return s.fail(fmt.Errorf("sync raft log segment %s: %w", s.segPath(s.active.seq), err))
		}
		s.dirty = false
	}
	s.removeStaleSnapshots()
	s.removeCompactedSegments()
	if s.active.size >= s.opts.SegmentSize {
		// A sealed segment ends at its last record: only the newest
		// may end in zeros.
		if err := s.cutPrealloc(); err != nil {
			return err
		}
		seg, err := s.createSegment(s.active.seq + 1)
		if err != nil {
			return s.fail(err) // a half-made newer segment would make the active one's next torn tail look like corruption
		}
		s.mu.Lock()
		old := s.active
		s.active = seg
		s.mu.Unlock()
		old.f.Close() // sealed: opened per read from here on
		old.f = nil
		s.segs = append(s.segs, seg)
	}
	return nil
}

// removeStaleSnapshots removes the snapshot files older than the current
// one; it is called after a sync made the record naming that one durable.
// A file that cannot be removed is left for the next open.
func (s *Storage) removeStaleSnapshots() {
	for _, index := range s.staleSnaps {
		if err := s.fs.Remove(s.snapPath(index)); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.logger.Warn("cannot remove old raft snapshot", "file", snapName(index), "err", err)
		}
	}
	s.staleSnaps = s.staleSnaps[:0]
}

// removeCompactedSegments removes the segments older than the one holding
// the first live entry (all but the active one when there is none). It is
// called after a sync made the compact or restore record that allowed it
// durable. Each removal is made durable before the next, oldest first, so
// a crash leaves a suffix of the segments, whose headers carry what the
// removed ones held; replaying an arbitrary subset could bring back
// entries a removed segment had overwritten. A failed removal is retried
// at the next Sync (the data is durable either way).
func (s *Storage) removeCompactedSegments() {
	keep := s.active.seq
	if len(s.st.ents) > 0 {
		keep = s.st.ents[0].seq
	}
	for len(s.segs) > 1 && s.segs[0].seq < keep {
		path := s.segPath(s.segs[0].seq)
		err := s.fs.Remove(path)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			err = s.fs.SyncDir(s.dir)
		}
		if err != nil {
			s.logger.Warn("cannot remove compacted raft log segment; retrying at the next sync", "segment", path, "err", err)
			return
		}
		s.segs = s.segs[1:]
	}
}

// Compact discards the entries up to and including index, which must not
// be above the index the caller has applied (raft.ErrCompacted when it is
// at or below the compaction point already; an error past the last entry).
// FirstIndex becomes index+1 at once and Term(index) stays answerable. The
// compaction is written without an fdatasync; the next Sync makes it
// durable and then removes the segment files holding only entries up to
// index. A crash before then recovers the old FirstIndex.
func (s *Storage) Compact(index uint64) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.writable(); err != nil {
		return err
	}
	if index <= s.st.base {
		return raft.ErrCompacted
	}
	if index > s.st.last() {
		return fmt.Errorf("compact raft log %s to %d: past the last entry %d", s.dir, index, s.st.last())
	}
	term := s.st.ents[index-s.st.first].term
	if err := s.write(appendNumbers(nil, recCompact, index, term)); err != nil {
		return err
	}
	s.mu.Lock()
	s.st.compact(index, term)
	s.cache.dropThrough(index)
	s.mu.Unlock()
	return nil
}

// CreateSnapshot records a snapshot of the state machine at index i (the
// caller's applied index or below) with ConfState cs (nil: the current
// snapshot's) and data, and returns it. It is durable when CreateSnapshot
// returns: its file is written and synced, then the log record naming it,
// with everything saved before it. It does not compact the log; call
// Compact for that. raft.ErrSnapOutOfDate when i is not above the current
// snapshot's index, raft.ErrCompacted when it is below the compaction point.
func (s *Storage) CreateSnapshot(i uint64, cs *pb.ConfState, data []byte) (*pb.Snapshot, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.writable(); err != nil {
		return nil, err
	}
	if i <= s.st.snapIndex {
		return nil, raft.ErrSnapOutOfDate
	}
	if i < s.st.base {
		return nil, raft.ErrCompacted
	}
	if i > s.st.last() {
		return nil, fmt.Errorf("snapshot of raft log %s at %d: past the last entry %d", s.dir, i, s.st.last())
	}
	term := s.st.baseTerm
	if i > s.st.base {
		term = s.st.ents[i-s.st.first].term
	}
	if cs == nil {
		cs = s.snap.GetMetadata().GetConfState()
	}
	snap := &pb.Snapshot{Data: data, Metadata: &pb.SnapshotMetadata{Index: &i, Term: &term}}
	if cs != nil {
		snap.Metadata.ConfState = proto.Clone(cs).(*pb.ConfState)
	}
	pb.EnsureSnapshot(snap)
	if err := s.writeSnapshotFile(snap); err != nil {
		return nil, err
	}
	if err := s.write(appendNumbers(nil, recSnapshot, i, term)); err != nil {
		return nil, err
	}
	if err := s.active.f.Sync(); err != nil {
		return nil, s.fail(fmt.Errorf("sync raft log segment %s: %w", s.segPath(s.active.seq), err))
	}
	s.dirty = false
	s.mu.Lock()
	if s.st.snapIndex > 0 {
		s.staleSnaps = append(s.staleSnaps, s.st.snapIndex)
	}
	s.st.snapIndex, s.st.snapTerm = i, term
	s.snap = snap
	s.mu.Unlock()
	s.removeStaleSnapshots()
	return proto.Clone(snap).(*pb.Snapshot), nil
}

// writeSnapshotFile writes snap's file durably.
func (s *Storage) writeSnapshotFile(snap *pb.Snapshot) error {
	buf := openFrame(nil, recSnapFile)
	buf, err := (proto.MarshalOptions{}).MarshalAppend(buf, snap)
	if err != nil {
		return fmt.Errorf("encode raft snapshot %d: %w", snap.GetMetadata().GetIndex(), err)
	}
	path := s.snapPath(snap.GetMetadata().GetIndex())
	if err := store.WriteFileAtomic(s.fs, path, closeFrame(buf, 0)); err != nil {
		return fmt.Errorf("write raft snapshot %s: %w", path, err)
	}
	return nil
}

// loadSnapshot reads the snapshot file of index and checks it is the one
// the log names.
func (s *Storage) loadSnapshot(index, term uint64) (*pb.Snapshot, error) {
	path := s.snapPath(index)
	data, err := readWhole(s.fs, path)
	if err != nil {
		return nil, fmt.Errorf("raft snapshot named by the log: %w", err)
	}
	kind, body, n, err := decodeFrame(data)
	if err == nil && (kind != recSnapFile || n != len(data)) {
		err = fmt.Errorf("not a snapshot file (kind %d, %d of %d bytes)", kind, n, len(data))
	}
	snap := &pb.Snapshot{}
	if err == nil {
		err = proto.Unmarshal(body, snap)
	}
	if err == nil && (snap.GetMetadata().GetIndex() != index || snap.GetMetadata().GetTerm() != term) {
		err = fmt.Errorf("holds index %d term %d, the log names index %d term %d", snap.GetMetadata().GetIndex(), snap.GetMetadata().GetTerm(), index, term)
	}
	if err != nil {
		return nil, fmt.Errorf("raft snapshot %s: %w", path, err)
	}
	return pb.EnsureSnapshot(snap), nil
}

// Close makes what was saved durable (unless a write failed before) and
// closes the files. Later calls of any method fail with ErrStorageClosed.
func (s *Storage) Close() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return nil
	}
	var err error
	if s.broken == nil {
		err = s.syncLocked()
	}
	if err == nil && s.broken == nil {
		err = s.cutPrealloc() // a closed log keeps no zeros
	}
	s.mu.Lock()
	s.closed = true
	f := s.active.f
	s.active.f = nil
	s.cache.clear()
	s.mu.Unlock()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
