package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"path/filepath"
	"sort"
	"sync"
)

// Journal keeps the cursors of one topic's channels durable. A channel's
// whole state is written when it is created, reset or compacted (a state
// record); in between only changes are appended: finished sequence numbers
// (batched per channel and delta-encoded) and requeues with attempts and
// deadline. Changes are buffered and written and synced by the committer
// every journal interval; Compact rewrites the file as one state record per
// channel once it has grown.
//
// Records: [len u32][crc32c u32][kind u8][payload], len = 1 + len(payload).
//
// Replaying a journal is idempotent per channel: finishing twice is a
// no-op and a requeue of a finished message is ignored, so a change that
// lands on either side of a compaction is harmless.
type Journal struct {
	fs     FS
	path   string
	logger *slog.Logger

	mu       sync.Mutex // guards everything below
	f        File
	size     int64
	snapSize int64 // size right after the last compaction
	buf      []byte
	fins     map[uint32][]uint64
	delivs   map[uint32][]Delivery
	ids      map[string]uint32
	nextID   uint32
	broken   bool // a failed write may have left bytes past size
	closed   bool
	stateGen uint64 // bumped by every SetState and Delete
	dirty    bool   // changes recorded since the last flush
	onDirty  func(*Journal)

	// dirPending: a compaction replaced the file but could not sync its
	// directory; the next flush does before it writes (guarded by mu)
	dirPending bool
}

// markDirtyLocked tells the committer, once per flush, that changes wait.
func (j *Journal) markDirtyLocked() {
	if !j.dirty {
		j.dirty = true
		if j.onDirty != nil {
			j.onDirty(j)
		}
	}
}

const (
	jState = byte(1) // id u32, name (u16 len), floor u64, spans, held
	jFin   = byte(2) // id u32, count uvarint, first uvarint, deltas (zigzag uvarint)
	jReq   = byte(3) // id u32, seq u64, attempts u16, until i64
	jDel   = byte(4) // id u32
	jDeliv = byte(5) // id u32, count uvarint, then per delivery: seq (first uvarint, then zigzag delta), attempts uvarint

	maxJournalRecord = 1 << 30
	// TopicCursor is the journal name of the topic's own position: where a
	// first channel starts when the topic had none (NSQ hands such a
	// channel what the topic queued meanwhile).
	TopicCursor = ""
)

// OpenJournal opens (creating when needed) the journal at path and replays
// it. A torn or corrupt tail is cut at the last good record and logged.
func OpenJournal(fs FS, path string, logger *slog.Logger) (*Journal, map[string]*Cursor, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f, size, err := fs.OpenAppend(path, true)
	if err != nil {
		return nil, nil, fmt.Errorf("open cursor journal %s: %w", path, err)
	}
	if size == 0 {
		// a new (or empty) journal: make its directory entry durable before
		// any state record relies on it
		if err := fs.SyncDir(filepath.Dir(path)); err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("create cursor journal %s: %w", path, err)
		}
	}
	j := &Journal{fs: fs, path: path, logger: logger, f: f, fins: map[uint32][]uint64{}, delivs: map[uint32][]Delivery{}, ids: map[string]uint32{}}
	data := make([]byte, size)
	if size > 0 {
		if k, err := f.ReadAt(data, 0); int64(k) < size {
			f.Close()
			return nil, nil, fmt.Errorf("read cursor journal %s: %v", path, err)
		}
	}
	cursors := map[string]*Cursor{}
	byID := map[uint32]string{}
	good, bad := 0, ""
	for good < len(data) {
		rest := data[good:]
		if len(rest) < recHeader {
			bad = "incomplete record header"
			break
		}
		n := int(binary.BigEndian.Uint32(rest))
		if n < 1 || n > maxJournalRecord || len(rest) < recHeader+n {
			bad = fmt.Sprintf("record length %d does not fit", n)
			break
		}
		payload := rest[recHeader : recHeader+n]
		if crc32.Checksum(payload, castagnoli) != binary.BigEndian.Uint32(rest[4:]) {
			bad = "checksum mismatch"
			break
		}
		if err := applyJournalRecord(payload, cursors, byID); err != nil {
			bad = err.Error()
			break
		}
		good += recHeader + n
	}
	if bad != "" {
		logger.Warn("cut torn tail of cursor journal", "journal", path, "reason", bad, "offset", good, "bytes_cut", len(data)-good)
		if err := f.Truncate(int64(good)); err == nil {
			err = f.Sync()
		}
		if err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("cut torn tail of cursor journal %s: %w", path, err)
		}
	}
	j.size = int64(good)
	j.snapSize = j.size
	for id, name := range byID {
		j.ids[name] = id
		j.nextID = max(j.nextID, id+1)
	}
	return j, cursors, nil
}

var errBadJournal = errors.New("malformed journal record")

func applyJournalRecord(p []byte, cursors map[string]*Cursor, byID map[uint32]string) error {
	if len(p) < 5 {
		return errBadJournal
	}
	kind, id := p[0], binary.BigEndian.Uint32(p[1:])
	p = p[5:]
	switch kind {
	case jState:
		name, c, err := decodeState(p)
		if err != nil {
			return err
		}
		if old, ok := byID[id]; ok && old != name {
			delete(cursors, old)
		}
		for oid, n := range byID {
			if n == name && oid != id {
				delete(byID, oid)
			}
		}
		byID[id] = name
		cursors[name] = c
	case jFin:
		// checked whole before any of it is applied. A record
		// malformed halfway used to finish its first numbers and then be
		// cut, so the next start replayed something else.
		if err := checkSeqList(p, false); err != nil {
			return err
		}
		c := cursors[byID[id]]
		count, k := binary.Uvarint(p)
		if k <= 0 {
			return errBadJournal
		}
		p = p[k:]
		var seq uint64
		for i := uint64(0); i < count; i++ {
			if i == 0 {
				v, k := binary.Uvarint(p)
				if k <= 0 {
					return errBadJournal
				}
				seq, p = v, p[k:]
			} else {
				d, k := binary.Varint(p)
				if k <= 0 {
					return errBadJournal
				}
				seq, p = uint64(int64(seq)+d), p[k:]
			}
			if c != nil {
				c.Finish(seq)
			}
		}
	case jReq:
		if len(p) < 18 {
			return errBadJournal
		}
		if c := cursors[byID[id]]; c != nil {
			c.Requeue(binary.BigEndian.Uint64(p), Held{Attempts: binary.BigEndian.Uint16(p[8:]), Until: int64(binary.BigEndian.Uint64(p[10:]))})
		}
	case jDeliv:
		if err := checkSeqList(p, true); err != nil { // as for jFin
			return err
		}
		c := cursors[byID[id]]
		count, k := binary.Uvarint(p)
		if k <= 0 {
			return errBadJournal
		}
		p = p[k:]
		var seq uint64
		for i := uint64(0); i < count; i++ {
			if i == 0 {
				v, k := binary.Uvarint(p)
				if k <= 0 {
					return errBadJournal
				}
				seq, p = v, p[k:]
			} else {
				d, k := binary.Varint(p)
				if k <= 0 {
					return errBadJournal
				}
				seq, p = uint64(int64(seq)+d), p[k:]
			}
			a, k := binary.Uvarint(p)
			if k <= 0 || a > 0xffff {
				return errBadJournal
			}
			p = p[k:]
			if c != nil {
				c.Delivered(seq, uint16(a))
			}
		}
	case jDel:
		if name, ok := byID[id]; ok {
			delete(cursors, name)
			delete(byID, id)
		}
	default:
		return fmt.Errorf("unknown journal record kind %d", kind)
	}
	return nil
}

// checkSeqList reports whether p is a well-formed FIN (or, with attempts,
// delivery) list: count uvarint, first seq uvarint, then zigzag deltas,
// each seq followed by an attempts uvarint <= 0xffff when attempts is set.
func checkSeqList(p []byte, attempts bool) error {
	count, k := binary.Uvarint(p)
	if k <= 0 {
		return errBadJournal
	}
	p = p[k:]
	for i := uint64(0); i < count; i++ {
		if i == 0 {
			_, k = binary.Uvarint(p)
		} else {
			_, k = binary.Varint(p)
		}
		if k <= 0 {
			return errBadJournal
		}
		p = p[k:]
		if attempts {
			a, k := binary.Uvarint(p)
			if k <= 0 || a > 0xffff {
				return errBadJournal
			}
			p = p[k:]
		}
	}
	return nil
}

func appendState(dst []byte, name string, c *Cursor) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(name)))
	dst = append(dst, name...)
	dst = binary.BigEndian.AppendUint64(dst, c.Floor)
	dst = binary.AppendUvarint(dst, uint64(len(c.done)))
	prev := c.Floor
	for _, s := range c.done {
		dst = binary.AppendUvarint(dst, s.lo-prev)
		dst = binary.AppendUvarint(dst, s.hi-s.lo)
		prev = s.hi
	}
	dst = binary.AppendUvarint(dst, uint64(len(c.Held)))
	seqs := make([]uint64, 0, len(c.Held))
	for s := range c.Held {
		seqs = append(seqs, s)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	for _, s := range seqs {
		h := c.Held[s]
		dst = binary.BigEndian.AppendUint64(dst, s)
		dst = binary.BigEndian.AppendUint16(dst, h.Attempts)
		dst = binary.BigEndian.AppendUint64(dst, uint64(h.Until))
	}
	return dst
}

func decodeState(p []byte) (string, *Cursor, error) {
	if len(p) < 2 {
		return "", nil, errBadJournal
	}
	nl := int(binary.BigEndian.Uint16(p))
	p = p[2:]
	if len(p) < nl+8 {
		return "", nil, errBadJournal
	}
	name := string(p[:nl])
	p = p[nl:]
	c := NewCursor(binary.BigEndian.Uint64(p))
	p = p[8:]
	uv := func() (uint64, bool) {
		v, k := binary.Uvarint(p)
		if k <= 0 {
			return 0, false
		}
		p = p[k:]
		return v, true
	}
	n, ok := uv()
	if !ok || n > uint64(len(p)) {
		return "", nil, errBadJournal
	}
	prev := c.Floor
	for i := uint64(0); i < n; i++ {
		gap, ok1 := uv()
		ln, ok2 := uv()
		if !ok1 || !ok2 || gap == 0 || ln == 0 {
			return "", nil, errBadJournal
		}
		lo := prev + gap
		c.done = append(c.done, span{lo, lo + ln})
		prev = lo + ln
	}
	nh, ok := uv()
	if !ok || nh > uint64(len(p))/18 { // nh*18 could wrap and pass, then index out of range
		return "", nil, errBadJournal
	}
	for i := uint64(0); i < nh; i++ {
		if c.Held == nil {
			c.Held = make(map[uint64]Held, nh)
		}
		c.Held[binary.BigEndian.Uint64(p)] = Held{Attempts: binary.BigEndian.Uint16(p[8:]), Until: int64(binary.BigEndian.Uint64(p[10:]))}
		p = p[18:]
	}
	return name, c, nil
}

// appendJournalRecord frames a record with kind and id.
func appendJournalRecord(dst []byte, kind byte, id uint32, body func([]byte) []byte) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, 0, 0, 0, 0, kind)
	dst = binary.BigEndian.AppendUint32(dst, id)
	if body != nil {
		dst = body(dst)
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-recHeader))
	binary.BigEndian.PutUint32(dst[start+4:], crc32.Checksum(dst[start+recHeader:], castagnoli))
	return dst
}

// SetState records channel name's whole cursor. With sync it is written
// and synced before SetState returns (a new channel's start position must
// not be lost); otherwise with the next flush.
func (j *Journal) SetState(name string, c *Cursor, sync bool) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return ErrClosed
	}
	j.stateGen++
	id, ok := j.ids[name]
	if !ok {
		id = j.nextID
		j.nextID++
		j.ids[name] = id
	} else {
		// deliveries and finishes recorded before this state go
		// before it in the file. They used to be written at the next flush
		// after every buffered record, so a finish followed by a state
		// that does not contain it (a channel rewound) replayed as
		// finished: the message was never delivered again.
		j.appendChangesLocked(id)
	}
	j.buf = appendJournalRecord(j.buf, jState, id, func(b []byte) []byte { return appendState(b, name, c) })
	if !sync {
		j.markDirtyLocked()
		return nil
	}
	_, err := j.flushLocked()
	return err
}

// Delete forgets channel name, durably before it returns.
func (j *Journal) Delete(name string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return ErrClosed
	}
	id, ok := j.ids[name]
	if !ok {
		return nil
	}
	j.stateGen++
	delete(j.ids, name)
	delete(j.fins, id)
	delete(j.delivs, id)
	j.buf = appendJournalRecord(j.buf, jDel, id, nil)
	_, err := j.flushLocked()
	return err
}

// Finish records that channel name finished seq.
func (j *Journal) Finish(name string, seq uint64) {
	j.mu.Lock()
	if id, ok := j.ids[name]; ok {
		j.fins[id] = append(j.fins[id], seq)
		j.markDirtyLocked()
	}
	j.mu.Unlock()
}

// Delivery is one delivery of a message: its sequence number and how
// often it has been delivered now.
type Delivery struct {
	Seq      uint64
	Attempts uint16
}

// Deliver records deliveries of channel name, so that a message in flight
// at a crash keeps its attempts count.
func (j *Journal) Deliver(name string, ds []Delivery) {
	if len(ds) == 0 {
		return
	}
	j.mu.Lock()
	if id, ok := j.ids[name]; ok {
		j.delivs[id] = append(j.delivs[id], ds...)
		j.markDirtyLocked()
	}
	j.mu.Unlock()
}

// Requeue records attempts and a deadline for seq of channel name.
func (j *Journal) Requeue(name string, seq uint64, h Held) {
	j.mu.Lock()
	if id, ok := j.ids[name]; ok {
		j.buf = appendJournalRecord(j.buf, jReq, id, func(b []byte) []byte {
			b = binary.BigEndian.AppendUint64(b, seq)
			b = binary.BigEndian.AppendUint16(b, h.Attempts)
			return binary.BigEndian.AppendUint64(b, uint64(h.Until))
		})
		j.markDirtyLocked()
	}
	j.mu.Unlock()
}

// Flush writes and syncs what was recorded since the last flush. It
// reports the bytes written and whether it synced.
func (j *Journal) Flush() (int, bool, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed || (len(j.buf) == 0 && len(j.fins) == 0 && len(j.delivs) == 0 && !j.dirPending) {
		j.dirty = false
		return 0, false, nil
	}
	n, err := j.flushLocked()
	if err != nil && j.onDirty != nil {
		j.onDirty(j) // still dirty: the committer tries again
	}
	return n, err == nil, err
}

func (j *Journal) flushLocked() (int, error) {
	if j.dirPending {
		// (see Compact) a flush is not durable before the compacted
		// file's directory entry is
		if err := j.fs.SyncDir(filepath.Dir(j.path)); err != nil {
			return 0, fmt.Errorf("sync directory of cursor journal %s: %w", j.path, err)
		}
		j.dirPending = false
	}
	ids := make([]uint32, 0, len(j.delivs)+len(j.fins))
	for id := range j.delivs {
		ids = append(ids, id)
	}
	for id := range j.fins {
		if _, ok := j.delivs[id]; !ok {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(a, b int) bool { return ids[a] < ids[b] })
	for _, id := range ids {
		j.appendChangesLocked(id)
	}
	if len(j.buf) == 0 {
		j.dirty = false
		return 0, nil
	}
	if j.broken {
		if err := j.f.Truncate(j.size); err != nil {
			return 0, fmt.Errorf("cut failed write from cursor journal %s: %w", j.path, err)
		}
		j.broken = false
	}
	if _, err := j.f.Write(j.buf); err != nil {
		j.broken = true
		return 0, fmt.Errorf("write cursor journal %s: %w", j.path, err)
	}
	if err := j.f.Sync(); err != nil {
		j.broken = true
		return 0, fmt.Errorf("sync cursor journal %s: %w", j.path, err)
	}
	n := len(j.buf)
	j.size += int64(n)
	j.dirty = false
	if cap(j.buf) > 1<<20 {
		j.buf = nil
	} else {
		j.buf = j.buf[:0]
	}
	return n, nil
}

// appendChangesLocked encodes channel id's pending deliveries, then its
// finishes, into buf: a message delivered and finished within one flush
// replays as finished.
func (j *Journal) appendChangesLocked(id uint32) {
	ds := j.delivs[id]
	for len(ds) > 0 {
		part := ds[:min(len(ds), 1<<16)]
		ds = ds[len(part):]
		j.buf = appendJournalRecord(j.buf, jDeliv, id, func(b []byte) []byte {
			b = binary.AppendUvarint(b, uint64(len(part)))
			for i, d := range part {
				if i == 0 {
					b = binary.AppendUvarint(b, d.Seq)
				} else {
					b = binary.AppendVarint(b, int64(d.Seq-part[i-1].Seq))
				}
				b = binary.AppendUvarint(b, uint64(d.Attempts))
			}
			return b
		})
	}
	delete(j.delivs, id)
	seqs := j.fins[id]
	for len(seqs) > 0 {
		part := seqs[:min(len(seqs), 1<<16)]
		seqs = seqs[len(part):]
		j.buf = appendJournalRecord(j.buf, jFin, id, func(b []byte) []byte {
			b = binary.AppendUvarint(b, uint64(len(part)))
			b = binary.AppendUvarint(b, part[0])
			for i := 1; i < len(part); i++ {
				b = binary.AppendVarint(b, int64(part[i]-part[i-1]))
			}
			return b
		})
	}
	delete(j.fins, id)
}

// NeedsCompaction reports whether the journal has grown well past its last
// compacted size.
func (j *Journal) NeedsCompaction() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return !j.closed && j.size > 1<<20 && j.size > 4*j.snapSize
}

// ErrCompactionRaced is returned by Compact when a state record or delete
// was written after the caller's StateGen: the caller's list of channels
// may be stale, so nothing was rewritten; try again later.
var ErrCompactionRaced = errors.New("store: channels changed during journal compaction")

// StateGen returns a counter bumped by every SetState and Delete. Read it
// before collecting the channel list passed to Compact.
func (j *Journal) StateGen() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.stateGen
}

// Compact rewrites the journal as one state record per cursor. snapshot is
// called with the journal locked, so no change is recorded meanwhile; it
// must return every channel's current cursor (by name, TopicCursor
// included) and must not call back into the journal. gen is StateGen read
// before the caller listed its channels; if states changed since, Compact
// returns ErrCompactionRaced without rewriting.
func (j *Journal) Compact(gen uint64, snapshot func() map[string]*Cursor) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return ErrClosed
	}
	if gen != j.stateGen {
		return ErrCompactionRaced
	}
	cursors := snapshot()
	names := make([]string, 0, len(cursors))
	for name := range cursors {
		names = append(names, name)
	}
	sort.Strings(names)
	var data []byte
	ids := make(map[string]uint32, len(names))
	for i, name := range names {
		ids[name] = uint32(i)
		data = appendJournalRecord(data, jState, uint32(i), func(b []byte) []byte { return appendState(b, name, cursors[name]) })
	}
	// written here rather than with WriteFileAtomic, keeping the new
	// file open. Once the rename is done the journal must append to the
	// new file whatever fails after it: a failed directory sync used to
	// leave it appending to the replaced file, so every later change was
	// lost at the next start (or at a crash, if the rename had reached the
	// disk); now the directory sync is retried by the next flush, which
	// reports nothing synced before it succeeds.
	tmp := j.path + ".tmp"
	_ = j.fs.Remove(tmp)
	f, size, err := j.fs.OpenAppend(tmp, true)
	if err != nil {
		return fmt.Errorf("compact cursor journal %s: %w", j.path, err)
	}
	if size > 0 {
		err = f.Truncate(0) // a stale file the Remove above could not delete
	}
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		if err = j.fs.Rename(tmp, j.path); err != nil && j.renamed(tmp) {
			err = nil // the rename happened all the same
		}
	}
	if err != nil {
		f.Close()
		_ = j.fs.Remove(tmp)
		return fmt.Errorf("compact cursor journal %s: %w", j.path, err)
	}
	j.f.Close()
	j.f, j.size, j.snapSize = f, int64(len(data)), int64(len(data))
	j.ids, j.nextID = ids, uint32(len(names))
	j.buf = j.buf[:0]
	clear(j.fins)
	clear(j.delivs)
	j.broken = false
	j.dirty = false
	if err := j.fs.SyncDir(filepath.Dir(j.path)); err != nil {
		j.dirPending = true
		j.markDirtyLocked() // the committer retries soon
		return fmt.Errorf("compact cursor journal %s: %w", j.path, err)
	}
	j.dirPending = false
	return nil
}

// renamed reports whether the compaction's temporary file is gone (a
// rename that reported an error may have happened).
func (j *Journal) renamed(tmp string) bool {
	f, _, err := j.fs.OpenAppend(tmp, false)
	if err != nil {
		return isNotExist(err)
	}
	f.Close()
	return false
}

// Close flushes and closes the journal.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return nil
	}
	_, err := j.flushLocked()
	j.closed = true
	if cerr := j.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Size returns the journal file's size.
func (j *Journal) Size() int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.size
}
