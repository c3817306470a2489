package replica

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/sluicemq/sluice/store"
)

// The Raft log of a group is a write-ahead log of its own, not a store.Log:
// Raft replaces a follower's conflicting suffix and every entry carries a
// term, while a store.Log's sequence numbers only grow. It is a directory of
// segment files 00000000000000000001.wal, ...02.wal, ..., each written
// append-only as a run of records
//
//	[crc u32][len u32][kind u8][body]
//
// where len counts kind and body and crc is CRC-32C of len, kind and body (a
// damaged length fails the check too). Integers are big-endian.
//
// Records are events, replayed in file order at recovery:
//
//	header     [seq][term][vote][commit][snapIndex][snapTerm][base][baseTerm]
//	           the first record of every segment: its sequence number and the
//	           state when it was started, so older segments can be removed
//	           without losing the hard state, the snapshot or the compaction
//	           point (it acts as a compact record for base)
//	entry      a raftpb.Entry in protobuf: what raft gets back is what it
//	           gave, and the encoded size is the one raft's maxSize counts. An
//	           entry whose index is at or below the last one's replaces that
//	           entry and everything after it (a follower's conflicting suffix)
//	hardState  [term][vote][commit]: the newest one wins
//	compact    [index][term]: entries up to index are gone; index had term
//	snapshot   [index][term]: the snapshot is now the file <index>.snap
//	restore    [index][term]: a snapshot from the leader replaced the log
//
// The hard state is a record here rather than a file rewritten with
// store.WriteFileAtomic: it changes in almost every Ready (the commit
// index), and as a record it costs one small append that shares the
// entries' single fdatasync; a file would cost a write, two fsyncs and a
// rename each time. Within one Save it is written after the entries, so a
// torn write never leaves a commit index above the entries that survived.
//
// Snapshots live in their own files, <index>.snap, one record of kind
// snapFile holding the raftpb.Snapshot; a snapshot or restore record in the
// log makes one current, and only after that record is synced are older
// snapshot files removed.
const (
	frameHeader = 8       // crc, len
	maxFrame    = 1 << 30 // the largest plausible len
	headerNums  = 8       // numbers in a header record
)

const (
	recHeader byte = 1 + iota
	recEntry
	recHardState
	recCompact
	recSnapshot
	recRestore
	recSnapFile
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// openFrame starts a record of kind on dst; closeFrame(dst, start) ends it.
func openFrame(dst []byte, kind byte) []byte {
	return append(dst, 0, 0, 0, 0, 0, 0, 0, 0, kind)
}

func closeFrame(dst []byte, start int) []byte {
	binary.BigEndian.PutUint32(dst[start+4:], uint32(len(dst)-start-frameHeader))
	binary.BigEndian.PutUint32(dst[start:], crc32.Checksum(dst[start+4:], castagnoli))
	return dst
}

// appendNumbers appends a record of kind whose body is nums.
func appendNumbers(dst []byte, kind byte, nums ...uint64) []byte {
	start := len(dst)
	dst = openFrame(dst, kind)
	for _, n := range nums {
		dst = binary.BigEndian.AppendUint64(dst, n)
	}
	return closeFrame(dst, start)
}

// errTorn means the bytes end inside a record.
var errTorn = errors.New("incomplete record")

// decodeFrame checks the record at the start of b and returns its kind, its
// body (aliasing b) and its encoded size.
func decodeFrame(b []byte) (kind byte, body []byte, size int, err error) {
	if len(b) < frameHeader {
		return 0, nil, 0, errTorn
	}
	n := binary.BigEndian.Uint32(b[4:])
	if n == 0 || n > maxFrame {
		return 0, nil, 0, fmt.Errorf("record length %d out of range", n)
	}
	if uint64(len(b)-frameHeader) < uint64(n) {
		return 0, nil, 0, errTorn
	}
	end := frameHeader + int(n)
	if crc32.Checksum(b[4:end], castagnoli) != binary.BigEndian.Uint32(b) {
		return 0, nil, 0, errors.New("checksum mismatch")
	}
	return b[frameHeader], b[frameHeader+1 : end], end, nil
}

// numbers decodes a body of exactly k big-endian uint64s.
func numbers(body []byte, k int) ([]uint64, error) {
	if len(body) != 8*k {
		return nil, fmt.Errorf("body of %d bytes, want %d", len(body), 8*k)
	}
	out := make([]uint64, k)
	for i := range out {
		out[i] = binary.BigEndian.Uint64(body[8*i:])
	}
	return out, nil
}

// Field numbers of raftpb.Entry.
const (
	entryTermField  = 2
	entryIndexField = 3
)

// entryIndexTerm reads the index and term of an encoded raftpb.Entry
// without decoding it, and checks that it is well-formed protobuf.
func entryIndexTerm(b []byte) (index, term uint64, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, 0, protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == entryTermField && typ == protowire.VarintType:
			term, n = protowire.ConsumeVarint(b)
		case num == entryIndexField && typ == protowire.VarintType:
			index, n = protowire.ConsumeVarint(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return 0, 0, protowire.ParseError(n)
		}
		b = b[n:]
	}
	return index, term, nil
}

type hardState struct{ term, vote, commit uint64 }

// entryLoc is what is kept in memory for each live entry: its term (Term
// never reads the disk) and where its record is.
type entryLoc struct {
	term uint64
	off  int64  // of the record in its segment
	seq  uint32 // the segment
	size uint32 // of the entry's protobuf encoding: what maxSize counts
}

// recordSize is the encoded size of the entry record at l.
func (l entryLoc) recordSize() int64 { return frameHeader + 1 + int64(l.size) }

// walState is the log's logical state: what replaying records yields, and
// what Save and Compact keep up to date. It does no I/O.
type walState struct {
	hs                  hardState
	base, baseTerm      uint64 // entries up to base are gone; base had baseTerm
	snapIndex, snapTerm uint64 // the current snapshot (0: none)
	first               uint64 // index of ents[0], when there are any
	ents                []entryLoc
}

// last returns the index of the last entry (base when there is none).
func (st *walState) last() uint64 {
	if len(st.ents) == 0 {
		return st.base
	}
	return st.first + uint64(len(st.ents)) - 1
}

// appendEntry applies an entry record: it replaces the entry at index and
// everything after it. During a replay the entries between base and the
// first one may be missing for a while (they were in segments compaction
// removed, and a later compact record drops them); check says whether they
// still are at the end.
func (st *walState) appendEntry(index uint64, loc entryLoc) error {
	if index <= st.base {
		return nil // already compacted away
	}
	switch n := uint64(len(st.ents)); {
	case n == 0 || index < st.first:
		st.ents = st.ents[:0]
		st.first = index
	case index > st.first+n:
		return fmt.Errorf("entry %d after entry %d leaves a gap", index, st.first+n-1)
	default:
		st.ents = st.ents[:index-st.first]
	}
	st.ents = append(st.ents, loc)
	return nil
}

// compact drops the entries up to index and makes it the compaction point.
func (st *walState) compact(index, term uint64) {
	if n := uint64(len(st.ents)); n > 0 && index >= st.first {
		if k := index + 1 - st.first; k >= n {
			st.ents = st.ents[:0]
		} else {
			st.ents = append([]entryLoc(nil), st.ents[k:]...) // let go of the old array
			st.first = index + 1
		}
	}
	st.base, st.baseTerm = index, term
}

// restore replaces the whole log with a snapshot at index.
func (st *walState) restore(index, term uint64) {
	st.ents = nil
	st.base, st.baseTerm = index, term
	st.snapIndex, st.snapTerm = index, term
}

// check reports a log that does not run contiguously from base+1.
func (st *walState) check() error {
	if len(st.ents) > 0 && st.first != st.base+1 {
		return fmt.Errorf("entries %d to %d are missing (the log starts after the compaction point %d)", st.base+1, st.first-1, st.base)
	}
	return nil
}

// headerNumbers is the body of a header record of segment seq.
func (st *walState) headerNumbers(seq uint32) []uint64 {
	return []uint64{uint64(seq), st.hs.term, st.hs.vote, st.hs.commit, st.snapIndex, st.snapTerm, st.base, st.baseTerm}
}

// replay applies the record of kind at offset off of segment seq.
func (st *walState) replay(kind byte, body []byte, seq uint32, off int64) error {
	if (off == 0) != (kind == recHeader) {
		if off == 0 {
			return fmt.Errorf("segment starts with a record of kind %d, not a header", kind)
		}
		return errors.New("header record inside the segment")
	}
	var nums []uint64
	var err error
	switch kind {
	case recHeader:
		nums, err = numbers(body, headerNums)
	case recHardState:
		nums, err = numbers(body, 3)
	case recCompact, recSnapshot, recRestore:
		nums, err = numbers(body, 2)
	case recEntry:
		index, term, err := entryIndexTerm(body)
		if err != nil {
			return fmt.Errorf("entry record: %w", err)
		}
		if index == 0 {
			return errors.New("entry record without an index")
		}
		return st.appendEntry(index, entryLoc{term: term, off: off, seq: seq, size: uint32(len(body))})
	default:
		return fmt.Errorf("unknown record kind %d", kind)
	}
	if err != nil {
		return fmt.Errorf("record of kind %d: %w", kind, err)
	}
	switch kind {
	case recHeader:
		if nums[0] != uint64(seq) {
			return fmt.Errorf("header of segment %d in the file of segment %d", nums[0], seq)
		}
		st.hs = hardState{nums[1], nums[2], nums[3]}
		st.snapIndex, st.snapTerm = nums[4], nums[5]
		st.compact(nums[6], nums[7])
	case recHardState:
		st.hs = hardState{nums[0], nums[1], nums[2]}
	case recCompact:
		st.compact(nums[0], nums[1])
	case recSnapshot:
		st.snapIndex, st.snapTerm = nums[0], nums[1]
	case recRestore:
		st.restore(nums[0], nums[1])
	}
	return nil
}

// replaySegment applies the records of one segment file. It returns the
// offset after the last good record, how many records were good, and why it
// stopped before the end ("" when it did not).
func (st *walState) replaySegment(data []byte, seq uint32) (good int64, records int, bad string) {
	for good < int64(len(data)) {
		kind, body, n, err := decodeFrame(data[good:])
		if err == nil {
			err = st.replay(kind, body, seq, good)
		}
		if err != nil {
			return good, records, fmt.Sprintf("%v at offset %d", err, good)
		}
		good += int64(n)
		records++
	}
	return good, records, ""
}

// walSegment is one segment file. f is open for the active (newest)
// segment only; sealed segments are opened per read, so a group with many
// of them holds one descriptor.
type walSegment struct {
	seq  uint32
	size int64 // of its records
	// alloc is the file's size: size, plus a zero-filled tail written
	// ahead of the records on a file system that writes at offsets
	// (Storage.preallocate). A segment is cut back to size before it is
	// sealed.
	alloc      int64
	noPrealloc bool // preallocating failed (a full disk): the segment is written without
	f          segFile
}

// segFile is the open file of the active segment.
type segFile interface {
	io.ReaderAt
	WriteAt(p []byte, off int64) (int, error)
	Sync() error
	Truncate(size int64) error
	Close() error
}

// appendFile is a segFile on a file system that only appends: the storage
// writes such a segment only at its end (off is always its size).
type appendFile struct{ store.File }

func (f appendFile) WriteAt(p []byte, _ int64) (int, error) { return f.Write(p) }

// openSegFile opens a segment for writing: at offsets where fs can,
// appending otherwise.
func openSegFile(fs store.FS, path string, create bool) (segFile, int64, error) {
	if ofs, ok := fs.(store.OffsetFS); ok {
		return ofs.OpenAt(path, create)
	}
	f, size, err := fs.OpenAppend(path, create)
	if err != nil {
		return nil, 0, err
	}
	return appendFile{f}, size, nil
}

// zeroTail reports whether b holds only zeros: the preallocated space
// after a segment's last record, not a torn write.
func zeroTail(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

var zeros = make([]byte, 64<<10)

func segName(seq uint32) string { return fmt.Sprintf("%020d.wal", seq) }

func parseSegName(name string) (uint32, bool) {
	if len(name) != 24 || !strings.HasSuffix(name, ".wal") {
		return 0, false
	}
	n, err := strconv.ParseUint(name[:20], 10, 32)
	return uint32(n), err == nil && n > 0
}

func snapName(index uint64) string { return fmt.Sprintf("%020d.snap", index) }

func parseSnapName(name string) (uint64, bool) {
	if len(name) != 25 || !strings.HasSuffix(name, ".snap") {
		return 0, false
	}
	n, err := strconv.ParseUint(name[:20], 10, 64)
	return n, err == nil
}

// readWhole reads the file at path.
func readWhole(fs store.FS, path string) ([]byte, error) {
	f, size, err := fs.OpenAppend(path, false)
	if err != nil {
		return nil, err // names the file
	}
	defer f.Close()
	data := make([]byte, size)
	if n, err := f.ReadAt(data, 0); int64(n) < size {
		return nil, fmt.Errorf("read %s: %d of %d bytes: %v", path, n, size, err)
	}
	return data, nil
}

// recoverWAL replays the segments seqs (ascending, contiguous) of dir. A
// bad record in an older segment is an error naming the file and offset;
// in the newest one, it and everything after it are cut off (a torn write),
// reported in cut, unless everything after it is zeros: the space
// preallocated ahead of the records, kept. The newest segment comes back
// open; when it held no good header any more it is started afresh.
func recoverWAL(fs store.FS, dir string, seqs []uint32, logger *slog.Logger) (st *walState, segs []*walSegment, cut []string, err error) {
	st = &walState{}
	var newest segFile // closed on failure (the returns clear segs)
	defer func() {
		if err != nil && newest != nil {
			newest.Close()
		}
	}()
	for i, seq := range seqs {
		if i > 0 && seq != seqs[i-1]+1 {
			missing := fmt.Sprintf("segments %d to %d are", seqs[i-1]+1, seq-1)
			if seq == seqs[i-1]+2 {
				missing = fmt.Sprintf("segment %d is", seq-1)
			}
			return nil, nil, nil, fmt.Errorf("raft log %s: %s missing", dir, missing)
		}
		path := filepath.Join(dir, segName(seq))
		var f segFile
		var data []byte
		if i == len(seqs)-1 {
			var size int64
			if f, size, err = openSegFile(fs, path, false); err == nil {
				newest = f
				data = make([]byte, size)
				if n, rerr := f.ReadAt(data, 0); int64(n) < size {
					err = fmt.Errorf("read %s: %d of %d bytes: %v", path, n, size, rerr)
				}
			}
		} else {
			data, err = readWhole(fs, path)
		}
		if err != nil {
			return nil, nil, nil, fmt.Errorf("raft log: %w", err)
		}
		good, records, bad := st.replaySegment(data, seq)
		if bad != "" && f != nil && records > 0 && zeroTail(data[good:]) {
			bad = "" // preallocated space after the last record
		}
		if records == 0 && bad == "" {
			bad = "no header record (the segment's creation did not finish)"
		}
		seg := &walSegment{seq: seq, size: good, alloc: int64(len(data)), f: f}
		segs = append(segs, seg)
		if bad == "" {
			continue
		}
		if f == nil {
			return nil, nil, nil, fmt.Errorf("raft log segment %s: %s (only the newest segment may end in a torn write)", path, bad)
		}
		msg := fmt.Sprintf("%s: %s; cut %d bytes after %d good records", path, bad, int64(len(data))-good, records)
		cut = append(cut, msg)
		logger.Warn("cut torn tail of raft log segment", "segment", path, "reason", bad, "bytes_cut", int64(len(data))-good, "good_records", records)
		if err := f.Truncate(good); err != nil {
			return nil, nil, nil, fmt.Errorf("cut torn tail of %s at %d: %w", path, good, err)
		}
		seg.size, seg.alloc = good, good
		if records == 0 { // not even a header: the segment is started again
			buf := appendNumbers(nil, recHeader, st.headerNumbers(seq)...)
			if _, err := f.WriteAt(buf, 0); err != nil {
				return nil, nil, nil, fmt.Errorf("rewrite header of %s: %w", path, err)
			}
			seg.size, seg.alloc = int64(len(buf)), int64(len(buf))
		}
		if err := f.Sync(); err != nil {
			return nil, nil, nil, fmt.Errorf("sync %s after cutting its tail: %w", path, err)
		}
	}
	if err := st.check(); err != nil {
		return nil, nil, nil, fmt.Errorf("raft log %s: %w", dir, err)
	}
	return st, segs, cut, nil
}
