package store

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
)

// Backfill adds records the log is missing below messages it holds. It is
// for a log whose sequence numbers jumped over messages kept elsewhere (a
// replicated topic's replica restored from a snapshot skips to the
// snapshot's end; the retained history below it is copied from another
// replica afterwards).
//
// recs must be non-empty, with consecutive sequence numbers, below the
// log's end, and in a range where the log holds no record. They become one
// sealed segment: written under a temporary name, synced, renamed into
// place and the directory synced, so a crash leaves all of them or none.
// Empty sealed segments inside the range (left by SkipTo) are removed
// first. Readers see the records once Backfill returns; a reader already
// past them does not go back.
func (l *Log) Backfill(recs []Record) error {
	if len(recs) == 0 {
		return fmt.Errorf("backfill %s: no records", l.dir)
	}
	first, last := recs[0].Seq, recs[len(recs)-1].Seq
	for i := 1; i < len(recs); i++ {
		if recs[i].Seq != recs[i-1].Seq+1 {
			return fmt.Errorf("backfill %s: sequence %d follows %d (records must be consecutive)", l.dir, recs[i].Seq, recs[i-1].Seq)
		}
	}
	limit := l.opts.MaxRecordBytes - recOverhead
	for i := range recs {
		if len(recs[i].Body) > limit {
			return fmt.Errorf("backfill %s: message %d of %d bytes over the limit of %d", l.dir, recs[i].Seq, len(recs[i].Body), limit)
		}
	}
	l.backfillMu.Lock()
	defer l.backfillMu.Unlock()

	stale, err := l.backfillRoom(first, last)
	if err != nil {
		return err
	}
	// Empty sealed segments in the range would overlap the new one at the
	// next open (one of them may even have its name); they hold nothing.
	for _, s := range stale {
		if err := l.fs.Remove(filepath.Join(l.dir, s.name)); err != nil && !isNotExist(err) {
			return fmt.Errorf("backfill %s: remove empty segment %s: %w", l.dir, s.name, err)
		}
	}
	if len(stale) > 0 {
		if err := l.fs.SyncDir(l.dir); err != nil {
			return fmt.Errorf("backfill %s: %w", l.dir, err)
		}
		l.mu.Lock()
		l.segs = slicesDelete(l.segs, stale)
		l.mu.Unlock()
	}

	seg := &segment{base: first, end: last + 1, name: segName(first)}
	size := 0
	for i := range recs {
		size += recOverhead + len(recs[i].Body)
	}
	buf := make([]byte, 0, size)
	for i := range recs {
		r := &recs[i]
		off := int64(len(buf))
		if len(seg.idx) == 0 || off-seg.idx[len(seg.idx)-1].off >= indexEvery {
			seg.idx = append(seg.idx, indexPoint{r.Seq, off})
		}
		seg.maxTS = max(seg.maxTS, r.TS)
		buf = appendRecord(buf, r.Seq, r.TS, r.DeliverAt, r.Body)
	}
	seg.size = int64(len(buf))

	// written beside under a temporary name, synced, renamed into place
	if err := WriteFileAtomic(l.fs, filepath.Join(l.dir, seg.name), buf); err != nil {
		return fmt.Errorf("backfill %s: write segment %s: %w", l.dir, seg.name, err)
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil // durable; the next open finds it
	}
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].base > first })
	l.segs = append(l.segs, nil)
	copy(l.segs[i+1:], l.segs[i:])
	l.segs[i] = seg
	return nil
}

// backfillRoom checks that [first, last] is below the log's end and holds
// no record, and returns the empty sealed segments that start inside it.
func (l *Log) backfillRoom(first, last uint64) ([]*segment, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return nil, ErrClosed
	}
	if last >= l.next {
		return nil, fmt.Errorf("backfill %s: messages %d-%d reach the log's end %d", l.dir, first, last, l.next)
	}
	var stale []*segment
	for i, s := range l.segs {
		if s.end > s.base {
			if s.base <= last && first < s.end {
				return nil, fmt.Errorf("backfill %s: messages %d-%d overlap segment %s (%d-%d)", l.dir, first, last, s.name, s.base, s.end-1)
			}
			continue
		}
		if s.base >= first && s.base <= last && i < len(l.segs)-1 {
			stale = append(stale, s)
		}
	}
	return stale, nil
}

// slicesDelete returns segs without the segments in drop, marking them
// removed so that readers locate again.
func slicesDelete(segs []*segment, drop []*segment) []*segment {
	out := segs[:0]
	for _, s := range segs {
		gone := false
		for _, d := range drop {
			if s == d {
				gone = true
				break
			}
		}
		if gone {
			s.removed = true
			if s.f != nil {
				s.f.Close()
				s.f = nil
			}
			continue
		}
		out = append(out, s)
	}
	for i := len(out); i < len(segs); i++ {
		segs[i] = nil
	}
	return out
}

// removeParts deletes backfilled segments a crash left half written
// (WriteFileAtomic's temporary files: a segment only once renamed).
func (l *Log) removeParts(names []string) error {
	removed := false
	for _, name := range names {
		if !strings.HasSuffix(name, ".seg"+tmpSuffix) {
			continue
		}
		if err := l.fs.Remove(filepath.Join(l.dir, name)); err != nil && !isNotExist(err) {
			return fmt.Errorf("remove unfinished backfill %s: %w", filepath.Join(l.dir, name), err)
		}
		l.logger.Warn("removed an unfinished backfilled segment", "file", filepath.Join(l.dir, name))
		removed = true
	}
	if removed {
		return l.fs.SyncDir(l.dir)
	}
	return nil
}
