package replica

import (
	"fmt"
	"io"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/sluicemq/sluice/store"
)

// The raft.Storage side of Storage: everything here reads under mu.RLock.
// Term, FirstIndex and LastIndex answer from memory; Entries from the
// cache of the newest entries, else from the segments. raft compares the
// errors it gets with ==, so raft.ErrCompacted and raft.ErrUnavailable are
// returned bare where the contract names them.

var _ raft.Storage = (*Storage)(nil)

// InitialState returns the saved hard state (nil when none was saved) and
// the ConfState of the current snapshot (empty when there is none).
func (s *Storage) InitialState() (*pb.HardState, *pb.ConfState, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, nil, ErrStorageClosed
	}
	var hs *pb.HardState
	if h := s.st.hs; h != (hardState{}) {
		hs = &pb.HardState{Term: new(h.term), Vote: new(h.vote), Commit: new(h.commit)}
	}
	cs := &pb.ConfState{}
	if c := s.snap.GetMetadata().GetConfState(); c != nil {
		cs = proto.Clone(c).(*pb.ConfState)
	}
	if s.conf != nil && s.confIndex > s.snap.GetMetadata().GetIndex() {
		cs = proto.Clone(s.conf).(*pb.ConfState)
	}
	return hs, pb.EnsureConfState(cs), nil
}

// Entries returns the entries [lo, hi), as many as fit in maxSize bytes of
// their protobuf encoding but at least one. It returns raft.ErrCompacted
// when lo is at or below the compaction point, raft.ErrUnavailable when
// the log holds no entries, and an error wrapping raft.ErrUnavailable when
// hi is past the last entry. The slice is the caller's; the entries must
// not be mutated.
func (s *Storage) Entries(lo, hi, maxSize uint64) ([]*pb.Entry, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrStorageClosed
	}
	if lo <= s.st.base {
		return nil, raft.ErrCompacted
	}
	if last := s.st.last(); hi > last+1 {
		return nil, fmt.Errorf("raft log %s: entries [%d, %d) asked, the last is %d: %w", s.dir, lo, hi, last, raft.ErrUnavailable)
	}
	if len(s.st.ents) == 0 {
		return nil, raft.ErrUnavailable
	}
	if lo > hi {
		return nil, fmt.Errorf("raft log %s: entries [%d, %d) asked", s.dir, lo, hi)
	}
	locs := s.st.ents[lo-s.st.first : hi-s.st.first]
	n, size := 0, uint64(0)
	for _, l := range locs {
		if n > 0 && size+uint64(l.size) > maxSize {
			break
		}
		size += uint64(l.size)
		n++
	}
	out := make([]*pb.Entry, n)
	onDisk := n
	if len(s.cache.ents) > 0 && s.cache.first < lo+uint64(n) {
		onDisk = int(max(s.cache.first, lo) - lo)
		for k := onDisk; k < n; k++ {
			out[k] = s.cache.ents[lo+uint64(k)-s.cache.first].e
		}
	}
	if err := s.readEntries(lo, locs[:onDisk], out); err != nil {
		return nil, err
	}
	return out, nil
}

// readEntries reads the entries from lo on, whose records are at locs, into
// out: runs of records back to back in one segment take one read. Each
// record's checksum is checked again, so damage done after the log was
// opened is an error and never a wrong entry.
func (s *Storage) readEntries(lo uint64, locs []entryLoc, out []*pb.Entry) error {
	var buf []byte
	var f io.ReaderAt
	var fseq uint32
	var sealed store.File // f when it was opened here (a sealed segment)
	defer func() {
		if sealed != nil {
			sealed.Close()
		}
	}()
	for k := 0; k < len(locs); {
		seq, start := locs[k].seq, locs[k].off
		end := start + locs[k].recordSize()
		j := k + 1
		for j < len(locs) && locs[j].seq == seq && locs[j].off == end && end-start < readChunk {
			end += locs[j].recordSize()
			j++
		}
		path := s.segPath(seq)
		if f == nil || fseq != seq {
			if sealed != nil {
				sealed.Close()
				sealed = nil
			}
			if seq == s.active.seq {
				f = s.active.f
			} else {
				var err error
				if sealed, _, err = s.fs.OpenAppend(path, false); err != nil {
					return fmt.Errorf("raft log: open segment %s to read entry %d: %w", path, lo+uint64(k), err)
				}
				f = sealed
			}
			fseq = seq
		}
		if int64(cap(buf)) < end-start {
			buf = make([]byte, end-start)
		}
		buf = buf[:end-start]
		if n, err := f.ReadAt(buf, start); n < len(buf) {
			return fmt.Errorf("raft log: read segment %s at %d: %d of %d bytes: %v", path, start, n, len(buf), err)
		}
		for p := 0; k < j; k++ {
			e, n, err := decodeEntry(buf[p:], lo+uint64(k), locs[k])
			if err != nil {
				return fmt.Errorf("raft log segment %s: entry %d at offset %d: %w", path, lo+uint64(k), locs[k].off, err)
			}
			out[k] = e
			p += n
		}
	}
	return nil
}

// decodeEntry decodes the entry record at the start of b, which must be
// entry index as loc describes it.
func decodeEntry(b []byte, index uint64, loc entryLoc) (*pb.Entry, int, error) {
	kind, body, n, err := decodeFrame(b)
	if err != nil {
		return nil, 0, err
	}
	if kind != recEntry || int64(n) != loc.recordSize() {
		return nil, 0, fmt.Errorf("record of kind %d and %d bytes where an entry record of %d was written", kind, n, loc.recordSize())
	}
	e := &pb.Entry{}
	if err := proto.Unmarshal(body, e); err != nil {
		return nil, 0, err
	}
	if e.GetIndex() != index || e.GetTerm() != loc.term {
		return nil, 0, fmt.Errorf("record holds entry %d of term %d, want term %d", e.GetIndex(), e.GetTerm(), loc.term)
	}
	return e, n, nil
}

// Term returns the term of entry i, for i from FirstIndex()-1 (the
// compaction point, whose term is kept) to LastIndex(): raft.ErrCompacted
// below, raft.ErrUnavailable above. It never reads the disk.
func (s *Storage) Term(i uint64) (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	switch {
	case s.closed:
		return 0, ErrStorageClosed
	case i < s.st.base:
		return 0, raft.ErrCompacted
	case i > s.st.last():
		return 0, raft.ErrUnavailable
	case i == s.st.base:
		return s.st.baseTerm, nil
	}
	return s.st.ents[i-s.st.first].term, nil
}

// LastIndex returns the index of the last entry (the compaction point when
// the log holds none).
func (s *Storage) LastIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, ErrStorageClosed
	}
	return s.st.last(), nil
}

// FirstIndex returns the index of the first entry Entries may return: one
// above the compaction point.
func (s *Storage) FirstIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, ErrStorageClosed
	}
	return s.st.base + 1, nil
}

// Snapshot returns a copy of the current snapshot (an empty one when there
// is none). It is always in memory: never ErrSnapshotTemporarilyUnavailable.
func (s *Storage) Snapshot() (*pb.Snapshot, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrStorageClosed
	}
	if s.snap == nil {
		return pb.EnsureSnapshot(nil), nil
	}
	return proto.Clone(s.snap).(*pb.Snapshot), nil
}

// entryCache holds the newest entries, a suffix of the log, as raft gave
// them to Save, up to limit bytes of their encoding.
type entryCache struct {
	first        uint64 // index of ents[0]
	ents         []cachedEntry
	bytes, limit int64
}

type cachedEntry struct {
	e    *pb.Entry
	size int64
}

// put adds e after the entries below its index, replacing those at and
// above it, and lets go of the oldest beyond the limit.
func (c *entryCache) put(e *pb.Entry, size int64) {
	i := e.GetIndex()
	if len(c.ents) == 0 || i < c.first || i > c.first+uint64(len(c.ents)) {
		c.clear()
		c.first = i
	} else {
		k := i - c.first
		for _, old := range c.ents[k:] {
			c.bytes -= old.size
		}
		clear(c.ents[k:])
		c.ents = c.ents[:k]
	}
	c.ents = append(c.ents, cachedEntry{e, size})
	c.bytes += size
	for len(c.ents) > 0 && c.bytes > c.limit {
		c.bytes -= c.ents[0].size
		c.ents[0] = cachedEntry{}
		c.ents = c.ents[1:]
		c.first++
	}
}

// dropThrough lets go of the entries up to index.
func (c *entryCache) dropThrough(index uint64) {
	for len(c.ents) > 0 && c.first <= index {
		c.bytes -= c.ents[0].size
		c.ents[0] = cachedEntry{}
		c.ents = c.ents[1:]
		c.first++
	}
}

func (c *entryCache) clear() {
	c.ents, c.bytes = nil, 0
}
