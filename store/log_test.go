package store

import (
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// readCountFS counts reads of file data, to tell the cache path from the
// file path.
type readCountFS struct {
	FS
	reads atomic.Int64
}

type readCountFile struct {
	File
	fs *readCountFS
}

func (f *readCountFS) OpenAppend(name string, create bool) (File, int64, error) {
	file, size, err := f.FS.OpenAppend(name, create)
	if err != nil {
		return nil, 0, err
	}
	return &readCountFile{file, f}, size, nil
}

func (f *readCountFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.reads.Add(1)
	return f.File.ReadAt(p, off)
}

// fillLog appends n messages to l one round at a time, in entries of random
// shape (single messages and MPUB-style batches). Message ids are their
// sequence numbers. It returns each message's entry's first id (the one
// whose TS and DeliverAt it carries).
func fillLog(t testing.TB, c *Committer, l *Log, n int, rng *rand.Rand, bodySize func() int) map[uint64]uint64 {
	t.Helper()
	first := map[uint64]uint64{}
	next := l.End()
	end := next + uint64(n)
	for next < end {
		var ents []Entry
		for range 1 + rng.IntN(3) {
			if next == end {
				break
			}
			if rng.IntN(2) == 0 {
				ents = append(ents, msgEntry(next, bodySize()))
				next++
				continue
			}
			var ids []uint64
			for range 1 + rng.IntN(20) {
				if next == end {
					break
				}
				ids = append(ids, next)
				first[next] = ids[0]
				next++
			}
			ents = append(ents, packEntry(ids, min(bodySize(), 4096)))
		}
		if err := commitWait(c, l, ents...); err != nil {
			t.Fatalf("append: %v", err)
		}
	}
	if l.End() != end {
		t.Fatalf("log ends at %d after appending up to %d", l.End(), end)
	}
	return first
}

// checkRange asserts recs are exactly the messages [from, to) in order.
func checkRange(t testing.TB, recs []Record, from, to uint64, first map[uint64]uint64) {
	t.Helper()
	if uint64(len(recs)) != to-from {
		t.Fatalf("read %d records, want %d (%d..%d)", len(recs), to-from, from, to)
	}
	for i, rec := range recs {
		if rec.Seq != from+uint64(i) {
			t.Fatalf("record %d has seq %d, want %d", i, rec.Seq, from+uint64(i))
		}
		if id := checkRecord(t, rec, first); id != rec.Seq {
			t.Fatalf("seq %d holds message %d", rec.Seq, id)
		}
	}
}

func TestLogAppendAndReadBack(t *testing.T) {
	tests := []struct {
		name      string
		opts      LogOptions
		bodySize  func(*rand.Rand) int
		fileReads bool // reading everything from 0 must hit the files
	}{
		{"cache, one segment", LogOptions{}, func(r *rand.Rand) int { return 8 + r.IntN(300) }, false},
		{"files, many segments", LogOptions{SegmentBytes: 4096, CacheBytes: 1}, func(r *rand.Rand) int { return 8 + r.IntN(300) }, true},
		{"files, records larger than a read block", LogOptions{SegmentBytes: 3 << 20, CacheBytes: 1}, func(r *rand.Rand) int {
			if r.IntN(300) == 0 {
				return readBlock + r.IntN(readBlock)
			}
			return 8 + r.IntN(5000)
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(len(tt.name))))
			fs := &readCountFS{FS: newMemDir(t, "/d")}
			l, _ := mustOpenLog(t, fs, "/d", tt.opts)
			c := NewCommitter(0)
			defer c.Close()
			// a reader that follows the writer reads from the cache
			follower := l.NewReader(0)
			var followed []Record
			n := 3000
			first := map[uint64]uint64{}
			for k := range 6 {
				for id, f := range fillLog(t, c, l, n/6, rng, func() int { return tt.bodySize(rng) }) {
					first[id] = f
				}
				var err error
				if followed, err = follower.Read(followed, 1<<20); err != nil {
					t.Fatalf("follower, part %d: %v", k, err)
				}
			}
			checkRange(t, followed, 0, uint64(n), first)
			if tt.opts.SegmentBytes == 0 && fs.reads.Load() != 0 {
				t.Fatalf("a follower within the cache read the files %d times", fs.reads.Load())
			}
			if tt.opts.SegmentBytes > 0 && tt.opts.SegmentBytes < 1<<20 && l.Segments() < 10 {
				t.Fatalf("%d segments: SegmentBytes did not roll", l.Segments())
			}
			for _, batch := range []int{1, 7, 1000} {
				before := fs.reads.Load()
				checkRange(t, readFrom(t, l, 0, batch), 0, uint64(n), first)
				if got := fs.reads.Load() > before; got != tt.fileReads {
					t.Fatalf("batch %d: read the files: %v, want %v", batch, got, tt.fileReads)
				}
			}
			// reopened, everything comes from the files, with the index
			// points rebuilt by recovery
			c.Close()
			l.Close()
			l, rep := mustOpenLog(t, fs, "/d", tt.opts)
			defer l.Close()
			if len(rep.Cut)+len(rep.Quarantined) != 0 {
				t.Fatalf("clean reopen reported %+v", rep)
			}
			checkRange(t, readFrom(t, l, 0, 333), 0, uint64(n), first)
			checkRange(t, readFrom(t, l, uint64(n)/2, 50), uint64(n)/2, uint64(n), first)
		})
	}
}

func TestReaderSeek(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	fs := newMemDir(t, "/d")
	l, _ := mustOpenLog(t, fs, "/d", LogOptions{SegmentBytes: 2048, CacheBytes: 4096})
	c := NewCommitter(0)
	defer c.Close()
	first := fillLog(t, c, l, 1500, rng, func() int { return 8 + rng.IntN(100) })
	r := l.NewReader(0)
	for i := range 400 {
		seq := uint64(rng.IntN(1600)) // some past the end
		r.Seek(seq)
		if r.Seq() != seq {
			t.Fatalf("Seq() after Seek(%d) = %d", seq, r.Seq())
		}
		k := 1 + rng.IntN(40)
		recs, err := r.Read(nil, k)
		if err != nil {
			t.Fatalf("seek %d to %d: %v", i, seq, err)
		}
		to := min(seq+uint64(k), 1500)
		if seq >= 1500 {
			if len(recs) != 0 {
				t.Fatalf("read %d records past the end", len(recs))
			}
			continue
		}
		checkRange(t, recs, seq, to, first)
		if r.Seq() != to {
			t.Fatalf("Seq() after reading to %d = %d", to, r.Seq())
		}
	}
}

func TestSeqAtTime(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	fs := newMemDir(t, "/d")
	l, _ := mustOpenLog(t, fs, "/d", LogOptions{SegmentBytes: 1024, CacheBytes: 1})
	defer l.Close()
	c := NewCommitter(0)
	defer c.Close()
	if seq, err := l.SeqAtTime(0); err != nil || seq != 0 {
		t.Fatalf("empty log: SeqAtTime = %d, %v", seq, err)
	}
	first := fillLog(t, c, l, 800, rng, func() int { return 8 + rng.IntN(60) })
	tsOf := func(seq uint64) int64 {
		if f, ok := first[seq]; ok {
			return msgTS(f)
		}
		return msgTS(seq)
	}
	for range 300 {
		ts := rng.Int64N(msgTS(820))
		want := uint64(0)
		for want < 800 && tsOf(want) < ts {
			want++
		}
		got, err := l.SeqAtTime(ts)
		if err != nil || got != want {
			t.Fatalf("SeqAtTime(%d) = %d, %v; want %d", ts, got, err, want)
		}
	}
	// after retention removed the oldest segments, times before them map
	// to the first message held
	if _, err := l.Retain(400, Retention{}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if got, _ := l.SeqAtTime(0); got != l.Start() || got == 0 {
		t.Fatalf("SeqAtTime(0) after retention = %d, start %d", got, l.Start())
	}
}

// segmentFiles lists the .seg files in dir.
func segmentFiles(fs *MemFS, dir string) []string {
	var out []string
	for _, p := range fs.Files() {
		if strings.HasPrefix(p, dir+"/") && strings.HasSuffix(p, ".seg") {
			out = append(out, p)
		}
	}
	return out
}

func TestRetain(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	// ten segments of 100 messages; message seq has TS now-(1000-seq)s,
	// so segment k's newest message is (1000-100k-99)s old
	build := func(t *testing.T) (*MemFS, *Log) {
		fs := newMemDir(t, "/d")
		l, _ := mustOpenLog(t, fs, "/d", LogOptions{SegmentBytes: 100 * (recOverhead + 10)})
		c := NewCommitter(0)
		defer c.Close()
		for seq := range uint64(1000) {
			ts := now.Add(-time.Duration(1000-seq) * time.Second).UnixNano()
			if err := commitWait(c, l, Entry{TS: ts, Body: msgBody(seq, 10)}); err != nil {
				t.Fatal(err)
			}
		}
		if l.Segments() != 10 {
			t.Fatalf("%d segments, want 10", l.Segments())
		}
		return fs, l
	}
	segBytes := int64(100 * (recOverhead + 10))
	tests := []struct {
		name    string
		floor   uint64
		keep    Retention
		removed int
	}{
		{"nothing finished", 0, Retention{}, 0},
		{"floor inside the first segment", 99, Retention{}, 0},
		{"floor at the end of the first segment", 100, Retention{}, 1},
		{"floor inside the fourth segment", 350, Retention{}, 3},
		{"everything finished keeps the active segment", ^uint64(0), Retention{}, 9},
		{"time keeps segments with a young newest message", ^uint64(0), Retention{Time: 650 * time.Second}, 3},
		{"time older than everything", ^uint64(0), Retention{Time: time.Hour}, 0},
		{"bytes keep the newest segments", ^uint64(0), Retention{Bytes: 4 * segBytes}, 6},
		{"bytes just above four segments keep four", ^uint64(0), Retention{Bytes: 4*segBytes + 1}, 6},
		{"bytes just below four segments keep three", ^uint64(0), Retention{Bytes: 4*segBytes - 1}, 7},
		{"floor wins over generous retention", 250, Retention{Bytes: 1}, 2},
		{"both retentions: the stricter keeps", ^uint64(0), Retention{Time: 650 * time.Second, Bytes: 8 * segBytes}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, l := build(t)
			defer l.Close()
			r := l.NewReader(0) // a reader inside what gets removed
			if recs, err := r.Read(nil, 30); err != nil || len(recs) != 30 {
				t.Fatalf("read: %d, %v", len(recs), err)
			}
			n, err := l.Retain(tt.floor, tt.keep, now)
			if err != nil || n != tt.removed {
				t.Fatalf("Retain = %d, %v; want %d", n, err, tt.removed)
			}
			start := uint64(100 * n)
			if l.Start() != start || l.Segments() != 10-n || len(segmentFiles(fs, "/d")) != 10-n {
				t.Fatalf("after removing %d: start %d, %d segments, files %v", n, l.Start(), l.Segments(), segmentFiles(fs, "/d"))
			}
			if l.End() != 1000 {
				t.Fatalf("end %d", l.End())
			}
			// the reader skips what was removed and goes on where it can
			recs := readFrom(t, l, 0, 1000)
			if len(recs) != 1000-int(start) || (len(recs) > 0 && recs[0].Seq != start) {
				t.Fatalf("a new reader read %d records", len(recs))
			}
			recs, err = r.Read(nil, 1000)
			if err != nil {
				t.Fatal(err)
			}
			want := max(uint64(30), start)
			if len(recs) == 0 || recs[0].Seq != want || recs[len(recs)-1].Seq != 999 {
				t.Fatalf("the reader inside the removed range went on at %d", recs[0].Seq)
			}
			// appending goes on (in a new segment: the active one is
			// full), and the new active segment is never removed
			c := NewCommitter(0)
			defer c.Close()
			if err := commitWait(c, l, msgEntry(1000, 10)); err != nil {
				t.Fatal(err)
			}
			if _, err := l.Retain(^uint64(0), Retention{}, now); err != nil {
				t.Fatal(err)
			}
			if recs := readFrom(t, l, 0, 10); l.Segments() != 1 || len(recs) != 1 || recs[0].Seq != 1000 {
				t.Fatalf("after removing all but the active segment: %d segments, %d records", l.Segments(), len(recs))
			}
		})
	}
}

func TestSkipTo(t *testing.T) {
	fs := newMemDir(t, "/d")
	l, _ := mustOpenLog(t, fs, "/d", LogOptions{})
	c := NewCommitter(0)
	defer c.Close()
	if err := l.SkipTo(0); err != nil || l.End() != 0 {
		t.Fatalf("SkipTo(0) on an empty log: end %d, %v", l.End(), err)
	}
	for seq := range uint64(10) {
		if err := commitWait(c, l, msgEntry(seq, 20)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.SkipTo(5); err != nil || l.End() != 10 {
		t.Fatalf("SkipTo backwards: end %d, %v", l.End(), err)
	}
	r := l.NewReader(3)
	if err := l.SkipTo(100); err != nil || l.End() != 100 {
		t.Fatalf("SkipTo(100): end %d, %v", l.End(), err)
	}
	for seq := uint64(100); seq < 105; seq++ {
		if err := commitWait(c, l, msgEntry(seq, 20)); err != nil {
			t.Fatal(err)
		}
	}
	check := func(l *Log, what string, end uint64) {
		t.Helper()
		recs := readFrom(t, l, 0, 100)
		var seqs []uint64
		for _, rec := range recs {
			if id := checkRecord(t, rec, nil); id != rec.Seq {
				t.Fatalf("%s: seq %d holds message %d", what, rec.Seq, id)
			}
			seqs = append(seqs, rec.Seq)
		}
		if len(seqs) != 15 || seqs[9] != 9 || seqs[10] != 100 || l.End() != end {
			t.Fatalf("%s: seqs %v end %d", what, seqs, l.End())
		}
	}
	recs, err := r.Read(nil, 100)
	if err != nil || len(recs) != 12 || recs[7].Seq != 100 {
		t.Fatalf("reader across the skipped range: %d records, %v", len(recs), err)
	}
	check(l, "live", 105)
	// the skip survives a crash even when nothing was appended after it
	if err := l.SkipTo(200); err != nil {
		t.Fatal(err)
	}
	c.Close()
	fs.Crash()
	l2, _ := mustOpenLog(t, fs, "/d", LogOptions{})
	defer l2.Close()
	if l2.End() != 200 {
		t.Fatalf("after a crash the log ends at %d, want 200", l2.End())
	}
	check(l2, "recovered", 200)
	c2 := NewCommitter(0)
	defer c2.Close()
	if err := commitWait(c2, l2, msgEntry(200, 20)); err != nil {
		t.Fatal(err)
	}
	if recs := readFrom(t, l2, 105, 10); len(recs) != 1 || recs[0].Seq != 200 {
		t.Fatalf("append after the recovered skip: %+v", recs)
	}
}

// Readers following the writer while producers append and retention
// removes what every reader passed (and drops the cache as if it were
// old) each read every message once, in order, from the cache or the
// files as they come.
func TestLogConcurrentReadersAppendsAndRetention(t *testing.T) {
	fs := newMemDir(t, "/d")
	l, _ := mustOpenLog(t, fs, "/d", LogOptions{SegmentBytes: 4096, CacheBytes: 8192})
	defer l.Close()
	c := NewCommitter(0)
	defer c.Close()
	const producers, appends, readers = 3, 150, 4
	total := uint64(0)
	var wg sync.WaitGroup
	var next atomic.Uint64
	first := make([]map[uint64]uint64, producers)
	for p := range producers {
		first[p] = map[uint64]uint64{}
		r := rand.New(rand.NewPCG(uint64(p), 9))
		// ids are handed out in advance so packs are known to the checker
		var ents []Entry
		for range appends {
			n := 1 + r.IntN(5)
			ids := make([]uint64, n)
			for i := range ids {
				ids[i] = next.Add(1)
				first[p][ids[i]] = ids[0]
			}
			ents = append(ents, packEntry(ids, 10+r.IntN(200)))
			total += uint64(n)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, e := range ents {
				if err := commitWait(c, l, e); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	allFirst := map[uint64]uint64{}
	for _, f := range first {
		for id, v := range f {
			allFirst[id] = v
		}
	}
	var pos [readers]atomic.Uint64
	var rwg sync.WaitGroup
	for k := range readers {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			r := l.NewReader(0)
			seen := map[uint64]bool{}
			for uint64(len(seen)) < total {
				changed := l.Changed()
				recs, err := r.Read(nil, 1+k*7)
				if err != nil {
					t.Errorf("reader %d: %v", k, err)
					return
				}
				for _, rec := range recs {
					if rec.Seq != uint64(len(seen)) {
						t.Errorf("reader %d: seq %d after %d records", k, rec.Seq, len(seen))
						return
					}
					id, err := recordProblem(rec, allFirst)
					if err != nil {
						t.Errorf("reader %d: %v", k, err)
						return
					}
					if seen[id] {
						t.Errorf("reader %d: message %d twice", k, id)
						return
					}
					seen[id] = true
				}
				pos[k].Store(r.Seq())
				if len(recs) == 0 {
					select {
					case <-changed:
					case <-time.After(time.Second):
						t.Errorf("reader %d: no commit within a second at %d of %d", k, len(seen), total)
						return
					}
				}
			}
		}()
	}
	stop := make(chan struct{})
	retained := make(chan int)
	go func() {
		n := 0
		defer func() { retained <- n }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Microsecond):
			}
			floor := ^uint64(0)
			for k := range readers {
				floor = min(floor, pos[k].Load())
			}
			removed, err := l.Retain(floor, Retention{}, time.Now().Add(time.Minute))
			if err != nil {
				t.Error(err)
			}
			n += removed
		}
	}()
	wg.Wait()
	rwg.Wait()
	close(stop)
	t.Logf("%d messages; retention removed %d segments meanwhile", total, <-retained)
}
