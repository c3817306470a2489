package store

import (
	"encoding/binary"
	"fmt"
	"sort"
)

// Reader reads a log's committed records in order from a position. Each
// channel has its own. It reads from the log's cache of recent commits when
// it can and from the segment files in large blocks otherwise; record
// bodies alias the block they came from, which is never reused. A Reader is
// not safe for concurrent use.
type Reader struct {
	l   *Log
	seq uint64   // next sequence number to return
	seg *segment // segment holding seq, with off its record's offset; nil = locate
	off int64

	// the last block read from a file, kept while the reader is inside it
	// (a Read returns at most max records, usually far fewer than a block)
	blk    []byte
	blkSeg *segment
	blkOff int64
}

// NewReader returns a reader positioned at seq.
func (l *Log) NewReader(seq uint64) *Reader { return &Reader{l: l, seq: seq} }

// Seq returns the sequence number the next Read starts at.
func (r *Reader) Seq() uint64 { return r.seq }

// Seek repositions the reader at seq.
func (r *Reader) Seek(seq uint64) {
	if seq != r.seq {
		r.seq, r.seg = seq, nil
	}
}

// Read appends up to max committed records from the reader's position to
// dst. It returns none when the reader is at the end of the log. Sequence
// numbers no longer held (removed by retention, or lost with a quarantined
// segment) are skipped.
func (r *Reader) Read(dst []Record, max int) ([]Record, error) {
	l := r.l
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return dst, ErrClosed
	}
	for max > 0 && r.seq < l.next {
		if r.seg == nil || r.seg.removed {
			if !r.locateLocked() {
				break
			}
		}
		seg := r.seg
		if r.off >= seg.size {
			// past this segment's records: on to the next one
			r.seg = nil
			if r.seq < seg.end {
				r.seq = seg.end
			}
			continue
		}
		data, fromFile, err := r.bytesLocked(seg)
		if err != nil {
			return dst, err
		}
		pos := 0
		for pos < len(data) && max > 0 {
			rec, sz, err := decodeRecord(data[pos:], l.opts.MaxRecordBytes, fromFile)
			if err == errShort {
				if pos == 0 {
					return dst, fmt.Errorf("record at %s offset %d does not fit the bytes read", seg.name, r.off)
				}
				break
			}
			if err != nil {
				return dst, fmt.Errorf("read %s at offset %d: %w", seg.name, r.off+int64(pos), err)
			}
			pos += sz
			if rec.Seq < r.seq {
				continue // scanning forward from an index point
			}
			r.seq = rec.Seq + 1
			dst = append(dst, rec)
			max--
		}
		r.off += int64(pos)
	}
	if r.seq >= l.next {
		// caught up: an idle reader holds no block (there may be many
		// channels); new records come from the cache
		r.blk, r.blkSeg = nil, nil
	}
	return dst, nil
}

// locateLocked finds the segment and offset of r.seq (or of the first held
// record after it).
func (r *Reader) locateLocked() bool {
	segs := r.l.segs
	i := sort.Search(len(segs), func(i int) bool { return segs[i].end > r.seq })
	if i == len(segs) {
		return false
	}
	seg := segs[i]
	if r.seq < seg.base {
		r.seq = seg.base
	}
	r.seg, r.off = seg, 0
	j := sort.Search(len(seg.idx), func(j int) bool { return seg.idx[j].seq > r.seq })
	if j > 0 {
		r.off = seg.idx[j-1].off
	}
	// a cache chunk may start closer
	for k := len(r.l.cache) - 1; k >= 0; k-- {
		c := &r.l.cache[k]
		if c.seg == seg && c.first <= r.seq {
			if c.off > r.off {
				r.off = c.off
			}
			break
		}
	}
	return true
}

// bytesLocked returns the segment's committed bytes from r.off on: a slice of
// a cache chunk when one holds them, else a block read from the file
// (fromFile: the checksums are verified when decoding).
func (r *Reader) bytesLocked(seg *segment) ([]byte, bool, error) {
	cache := r.l.cache
	k := sort.Search(len(cache), func(k int) bool {
		c := &cache[k]
		return c.seg.base > seg.base || (c.seg == seg && c.off+int64(len(c.data)) > r.off)
	})
	if k < len(cache) && cache[k].seg == seg && cache[k].off <= r.off {
		c := &cache[k]
		return c.data[r.off-c.off:], false, nil
	}
	if r.blkSeg == seg && r.off >= r.blkOff && r.off < r.blkOff+int64(len(r.blk)) {
		rest := r.blk[r.off-r.blkOff:]
		if len(rest) >= recHeader && int64(recHeader)+int64(binary.BigEndian.Uint32(rest)) <= int64(len(rest)) {
			return rest, true, nil
		}
	}
	n := min(int64(readBlock), seg.size-r.off)
	buf := make([]byte, n)
	if k, err := r.l.readSegment(seg, buf, r.off); int64(k) < n {
		return nil, true, fmt.Errorf("read %s at offset %d: %v", seg.name, r.off, err)
	}
	if len(buf) >= recHeader {
		if need := int64(recHeader) + int64(binary.BigEndian.Uint32(buf)); need > n && r.off+need <= seg.size {
			big := make([]byte, need)
			if k, err := r.l.readSegment(seg, big, r.off); int64(k) < need {
				return nil, true, fmt.Errorf("read %s at offset %d: %v", seg.name, r.off, err)
			}
			buf = big
		}
	}
	r.blk, r.blkSeg, r.blkOff = buf, seg, r.off
	return buf, true, nil
}
