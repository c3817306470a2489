package diskq

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/sluicemq/sluice/store"
)

// The crash tests run a queue on the store package's MemFS, stop its disk
// after n more operations (a sweep of n, so that every step of a put, a
// roll, a read and a sync is the last to succeed in some run), keep using
// the queue a little on the dead disk, then cut the power (MemFS.Crash
// keeps only what was fsynced, and only the directory entries synced) and
// open the queue again. What a Sync that returned nil promised must hold:
//
//   - every record whose put returned nil before the last successful
//     Sync, and not read before the crash, is read after it;
//   - records come back in the order they were put, each at most once,
//     each intact (its body says which record it is), none never put.
//
// The same runs on the operating system's file system without a power
// cut is kill -9: the page cache keeps every record written, so every
// record put and not read comes back, after at most those read since the
// last sync.

// crashBody is record seq: its number, then filler whose length and
// bytes follow from it.
func crashBody(seq uint64) []byte {
	b := binary.BigEndian.AppendUint64(nil, seq)
	for i := range int(seq % 37) {
		b = append(b, byte(seq)+byte(i))
	}
	return b
}

func checkCrashBody(b []byte) (uint64, error) {
	if len(b) < 8 {
		return 0, fmt.Errorf("%d-byte record", len(b))
	}
	seq := binary.BigEndian.Uint64(b)
	if !bytes.Equal(b, crashBody(seq)) {
		return 0, fmt.Errorf("record %d damaged", seq)
	}
	return seq, nil
}

// crashRun is one life of a queue under a model of what it promised.
type crashRun struct {
	q          *Queue
	next       uint64 // next record number to put
	read       uint64 // records read so far are those < read (in order)
	syncedPut  uint64 // records < syncedPut were put before the last good Sync
	syncedRead uint64 // records < syncedRead were read before it
	acked      map[uint64]bool
}

func (c *crashRun) step(t *testing.T, r *rand.Rand) {
	switch x := r.IntN(10); {
	case x < 5:
		var b []byte
		k := 1 + r.IntN(8)
		for i := range k {
			var start int
			b, start = AppendFrame(b)
			b = append(b, crashBody(c.next+uint64(i))...)
			EndFrame(b, start)
		}
		if err := c.q.PutFramed(b); err == nil {
			for i := range k {
				c.acked[c.next+uint64(i)] = true
			}
		}
		// after a failure some of the batch may be on disk: the numbers
		// are used either way
		c.next += uint64(k)
	case x < 8:
		recs, err := c.q.Read(nil, 1+r.IntN(10))
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range recs {
			seq, err := checkCrashBody(b)
			if err != nil {
				t.Fatalf("before the crash: %v", err)
			}
			if seq < c.read {
				t.Fatalf("before the crash: record %d read again after %d", seq, c.read-1)
			}
			c.read = seq + 1
		}
	default:
		if err := c.q.Sync(); err == nil {
			c.syncedPut, c.syncedRead = c.next, c.read
		}
	}
}

// afterCrash opens the queue again and checks the promises.
func (c *crashRun) afterCrash(t *testing.T, fs store.FS, o Options, what string) {
	q := Open("crash", "/d", o)
	defer q.Close()
	var got []uint64
	for {
		recs, err := q.Read(nil, 64)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			break
		}
		for _, b := range recs {
			seq, err := checkCrashBody(b)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if seq >= c.next {
				t.Fatalf("%s: record %d read, only %d were put", what, seq, c.next)
			}
			if len(got) > 0 && seq <= got[len(got)-1] {
				t.Fatalf("%s: record %d read after record %d", what, seq, got[len(got)-1])
			}
			got = append(got, seq)
		}
	}
	have := map[uint64]bool{}
	for _, s := range got {
		have[s] = true
	}
	// records read before the crash may be gone (a sync on the way may
	// have recorded the read); the rest put before the last good Sync
	// must be there
	for s := c.read; s < c.syncedPut; s++ {
		if c.acked[s] && !have[s] {
			t.Fatalf("%s: record %d lost (records %d to %d were put before the last sync and not read; read after the crash: %d records)",
				what, s, c.read, c.syncedPut-1, len(got))
		}
	}
}

func crashOptions(fs store.FS, r *rand.Rand) Options {
	return Options{FS: fs, MaxBytesPerFile: int64(64 + r.IntN(400)), MinMsgSize: 8, MaxMsgSize: 64,
		SyncEvery: int64(1 + r.IntN(40)), Logger: quiet, ReadBlock: 32 + r.IntN(200)}
}

// bufferedCrashOptions adds a write buffer of a few records to a few
// files (and a Syncer that never fires within a test, so that the sweep
// of failure points stays deterministic).
func bufferedCrashOptions(fs store.FS, r *rand.Rand) Options {
	o := crashOptions(fs, r)
	o.WriteBuffer = []int{400, 1200, 4096, 16384}[r.IntN(4)]
	o.Syncer = idleSyncer()
	return o
}

// TestPowerCutKeepsWhatSyncPromised sweeps the moment the disk stops over
// a queue's life, then cuts the power.
//
// Seeds from 6 on run with a write buffer: records buffered at the cut
// are lost, but never one put before a Sync that returned nil.
func TestPowerCutKeepsWhatSyncPromised(t *testing.T) {
	for seed := range uint64(12) {
		for n := 0; n < 400; n += 3 {
			r := rand.New(rand.NewPCG(seed, uint64(n)))
			mem := store.NewMemFS()
			mem.MkdirAll("/d")
			mem.SyncDir("/d")
			o := crashOptions(mem, r)
			if seed >= 6 {
				o = bufferedCrashOptions(mem, r)
			}
			c := &crashRun{acked: map[uint64]bool{}, q: Open("crash", "/d", o)}
			mem.FailAfter(n)
			for range 150 {
				c.step(t, r)
			}
			mem.Crash()
			c.afterCrash(t, mem, o, fmt.Sprintf("seed %d, disk stopped after %d operations", seed, n))
		}
	}
}

// TestPowerCutAtRandomMoments cuts the power after a random number of
// steps of a healthy disk.
// Seeds from 40 on run with a write buffer.
func TestPowerCutAtRandomMoments(t *testing.T) {
	for seed := range uint64(80) {
		r := rand.New(rand.NewPCG(seed, 99))
		mem := store.NewMemFS()
		mem.MkdirAll("/d")
		mem.SyncDir("/d")
		o := crashOptions(mem, r)
		if seed >= 40 {
			o = bufferedCrashOptions(mem, r)
		}
		c := &crashRun{acked: map[uint64]bool{}, q: Open("crash", "/d", o)}
		for range r.IntN(600) {
			c.step(t, r)
		}
		mem.Crash()
		c.afterCrash(t, mem, o, fmt.Sprintf("seed %d", seed))
	}
}

// TestKill9KeepsEveryRecordWritten: the process dies without closing the
// queue (its files stay as the kernel has them): every record put and not
// read before the last sync comes back, in order.
func TestKill9KeepsEveryRecordWritten(t *testing.T) {
	for seed := range uint64(8) {
		r := rand.New(rand.NewPCG(seed, 5))
		dir := t.TempDir()
		o := crashOptions(nil, r)
		c := &crashRun{acked: map[uint64]bool{}, q: Open("crash", dir, o)}
		for range 300 {
			c.step(t, r)
		}
		// kill -9: the files are not closed and nothing more is synced
		q := Open("crash", dir, o)
		var got []uint64
		for {
			recs, _ := q.Read(nil, 50)
			if len(recs) == 0 {
				break
			}
			for _, b := range recs {
				seq, err := checkCrashBody(b)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, seq)
			}
		}
		q.Close()
		// what comes back runs, without a gap, from where the last sync
		// (explicit or --sync-every's) left the reader, to the last put
		first := c.next
		if len(got) > 0 {
			first = got[0]
		}
		if first < c.syncedRead || first > c.read {
			t.Fatalf("seed %d: after kill -9 reading starts at record %d, want between %d (last Sync) and %d (read)", seed, first, c.syncedRead, c.read)
		}
		for i, s := range got {
			if s != first+uint64(i) {
				t.Fatalf("seed %d: record %d after kill -9 is number %d, want %d", seed, i, s, first+uint64(i))
			}
		}
		if first+uint64(len(got)) != c.next {
			t.Fatalf("seed %d: %d records from %d after kill -9, want up to %d", seed, len(got), first, c.next-1)
		}
	}
}

// flakyFS fails the next Write of any of its files once armed, writing
// nothing: a transient error (EIO, a full disk freed at once).
type flakyFS struct {
	store.FS
	fail bool
}

type flakyFile struct {
	store.File
	fs *flakyFS
}

func (f *flakyFS) OpenAppend(name string, create bool) (store.File, int64, error) {
	file, size, err := f.FS.OpenAppend(name, create)
	if err != nil {
		return nil, 0, err
	}
	return flakyFile{file, f}, size, nil
}

// Reserve passes through, so that queues with a write buffer buffer.
func (f flakyFile) Reserve(off, n int64) error { return f.File.(store.Reserver).Reserve(off, n) }

func (f flakyFile) Write(p []byte) (int, error) {
	if f.fs.fail {
		f.fs.fail = false
		return 0, fmt.Errorf("flaky disk: %w", io.ErrShortWrite)
	}
	return f.File.Write(p)
}

// TestSyncAfterFailedWriteStillSyncsEarlierRecords: a write fails, nothing
// is written after it, and a sync then succeeds: the records written
// before the failure are durable (the metadata the sync writes counts
// them), and the failed ones are not there.
func TestSyncAfterFailedWriteStillSyncsEarlierRecords(t *testing.T) {
	mem := store.NewMemFS()
	mem.MkdirAll("/d")
	mem.SyncDir("/d")
	fs := &flakyFS{FS: mem}
	o := Options{FS: fs, MaxBytesPerFile: 1 << 20, MinMsgSize: 8, MaxMsgSize: 64, SyncEvery: 1 << 30, Logger: quiet}
	q := Open("crash", "/d", o)
	for seq := range uint64(3) {
		if err := q.Put(crashBody(seq)); err != nil {
			t.Fatal(err)
		}
	}
	fs.fail = true
	if err := q.Put(crashBody(3)); err == nil {
		t.Fatal("put on a failing disk succeeded")
	}
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	mem.Crash()
	q = Open("crash", "/d", Options{FS: mem, MaxBytesPerFile: 1 << 20, MinMsgSize: 8, MaxMsgSize: 64, SyncEvery: 1 << 30, Logger: quiet})
	recs, _ := q.Read(nil, 10)
	if len(recs) != 3 {
		t.Fatalf("read %d records after the crash, want the 3 written before the failed write", len(recs))
	}
	for i, b := range recs {
		if seq, err := checkCrashBody(b); err != nil || seq != uint64(i) {
			t.Fatalf("record %d: %d, %v", i, seq, err)
		}
	}
}
