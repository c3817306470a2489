package diskq

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/sluicemq/sluice/store"
)

// countingFS counts the writes to its files; its files reserve space
// through the wrapped ones when reserve is set.
type countingFS struct {
	store.FS
	writes  int
	reserve bool
}

type countingFile struct {
	store.File
	fs *countingFS
}

type reservingCountingFile struct{ countingFile }

func (f *countingFS) OpenAppend(name string, create bool) (store.File, int64, error) {
	file, size, err := f.FS.OpenAppend(name, create)
	if err != nil {
		return nil, 0, err
	}
	c := countingFile{file, f}
	if f.reserve {
		return reservingCountingFile{c}, size, nil
	}
	return c, size, nil
}

func (f countingFile) Write(p []byte) (int, error) {
	f.fs.writes++
	return f.File.Write(p)
}

func (f reservingCountingFile) Reserve(off, n int64) error {
	return f.File.(store.Reserver).Reserve(off, n)
}

func memDir(t *testing.T) *store.MemFS {
	t.Helper()
	mem := store.NewMemFS()
	mem.MkdirAll("/d")
	mem.SyncDir("/d")
	return mem
}

func readAll(t *testing.T, q *Queue) [][]byte {
	t.Helper()
	var out [][]byte
	for {
		n := len(out)
		var err error
		out, err = q.Read(out, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) == n {
			return out
		}
	}
}

func checkSeqs(t *testing.T, what string, recs [][]byte, from, to uint64) {
	t.Helper()
	if uint64(len(recs)) != to-from {
		t.Fatalf("%s: %d records, want %d (%d to %d)", what, len(recs), to-from, from, to-1)
	}
	for i, b := range recs {
		seq, err := checkCrashBody(b)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if seq != from+uint64(i) {
			t.Fatalf("%s: record %d is number %d, want %d", what, i, seq, from+uint64(i))
		}
	}
}

// TestBufferedSinglePutsShareWrites: single-record puts into a queue with
// a write buffer cost one write per buffer's worth, and leave the same
// files as the same puts without a buffer.
func TestBufferedSinglePutsShareWrites(t *testing.T) {
	run := func(wbuf int) (*countingFS, *store.MemFS) {
		mem := memDir(t)
		fs := &countingFS{FS: mem, reserve: true}
		o := Options{FS: fs, MaxBytesPerFile: 100 << 10, MinMsgSize: 8, MaxMsgSize: 64, SyncEvery: 1 << 30, Logger: quiet}
		if wbuf > 0 {
			o.WriteBuffer, o.Syncer = wbuf, idleSyncer()
		}
		q := Open("coalesce", "/d", o)
		for seq := range uint64(3000) {
			if err := q.Put(crashBody(seq)); err != nil {
				t.Fatal(err)
			}
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
		return fs, mem
	}
	plain, plainMem := run(0)
	buffered, bufMem := run(16 << 10)
	if plain.writes < 3000 {
		t.Fatalf("unbuffered: %d writes for 3000 puts, want one each", plain.writes)
	}
	// about 70 KiB of records in two files: a handful of writes
	if buffered.writes > 20 {
		t.Fatalf("buffered: %d writes for 3000 puts", buffered.writes)
	}
	names := plainMem.Files()
	if got := bufMem.Files(); len(got) != len(names) {
		t.Fatalf("files %v with a buffer, %v without", got, names)
	}
	for _, n := range names {
		a, _ := plainMem.ReadFile(n)
		b, err := bufMem.ReadFile(n)
		if err != nil || string(a) != string(b) {
			t.Fatalf("%s differs with a buffer (%d bytes, %d without; %v)", n, len(b), len(a), err)
		}
	}
}

// TestReaderGetsBufferedRecordsAtOnce: records still in the write buffer
// (not in the file) are delivered by the next Read, and counted in Depth.
func TestReaderGetsBufferedRecordsAtOnce(t *testing.T) {
	mem := memDir(t)
	q := Open("reader", "/d", Options{FS: mem, MaxBytesPerFile: 1 << 20, MinMsgSize: 8, MaxMsgSize: 64,
		SyncEvery: 1 << 30, Logger: quiet, WriteBuffer: 64 << 10, Syncer: idleSyncer()})
	defer q.Close()
	for seq := range uint64(5) {
		if err := q.Put(crashBody(seq)); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := mem.ReadFile("/d/reader.diskqueue.000000.dat"); len(b) != 0 {
		t.Fatalf("%d bytes in the data file: the records were not buffered", len(b))
	}
	if d := q.Depth(); d != 5 {
		t.Fatalf("depth %d, want 5", d)
	}
	recs, err := q.Read(nil, 3)
	if err != nil {
		t.Fatal(err)
	}
	checkSeqs(t, "first read", recs, 0, 3)
	// more puts after the reader caught up with the file: the same
	for seq := uint64(5); seq < 9; seq++ {
		if err := q.Put(crashBody(seq)); err != nil {
			t.Fatal(err)
		}
	}
	checkSeqs(t, "second read", readAll(t, q), 3, 9)
	if d := q.Depth(); d != 0 {
		t.Fatalf("depth %d after reading everything", d)
	}
}

// TestBufferedRecordsAreWrittenSoonAfterPutsStop: with a real Syncer the
// buffered records reach the data file without any further call, the
// queue lets go of its buffer, and the Syncer's flush timer is disarmed.
func TestBufferedRecordsAreWrittenSoonAfterPutsStop(t *testing.T) {
	dir := t.TempDir()
	s := NewSyncer(time.Hour) // the metadata waits; only the flush is due
	q := Open("timed", dir, Options{MaxBytesPerFile: 1 << 20, MinMsgSize: 1, MaxMsgSize: 100,
		SyncEvery: 1 << 30, Syncer: s, Logger: quiet, WriteBuffer: 64 << 10})
	defer q.Close()
	for i := range 10 {
		if err := q.Put(body(i, 20)); err != nil {
			t.Fatal(err)
		}
	}
	data := filepath.Join(dir, "timed.diskqueue.000000.dat")
	waitFor(t, "the 10 records in the data file", func() bool {
		st, err := os.Stat(data)
		return err == nil && st.Size() == 240
	})
	waitFor(t, "buffer released and flush timer disarmed", func() bool {
		q.mu.Lock()
		released := q.wbuf == nil && !q.flushQueued
		q.mu.Unlock()
		s.flush.mu.Lock()
		defer s.flush.mu.Unlock()
		return released && !s.flush.armed && len(s.flush.items) == 0
	})
	if _, err := os.Stat(filepath.Join(dir, "timed.diskqueue.meta.dat")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("metadata written by a flush: %v", err)
	}
}

// TestSyncEveryOneWritesAndSyncsInEachPut: with --sync-every=1 a queue with
// a write buffer still writes and fsyncs every put before it returns: a
// power cut right after a put keeps it.
func TestSyncEveryOneWritesAndSyncsInEachPut(t *testing.T) {
	mem := memDir(t)
	o := Options{FS: mem, MaxBytesPerFile: 300, MinMsgSize: 8, MaxMsgSize: 64, SyncEvery: 1, Logger: quiet,
		WriteBuffer: 64 << 10, Syncer: idleSyncer()}
	q := Open("sync1", "/d", o)
	for seq := range uint64(30) {
		if err := q.Put(crashBody(seq)); err != nil {
			t.Fatal(err)
		}
		if len(q.wbuf) != 0 {
			t.Fatalf("put %d left %d bytes buffered", seq, len(q.wbuf))
		}
	}
	mem.Crash()
	q = Open("sync1", "/d", o)
	defer q.Close()
	checkSeqs(t, "after the power cut", readAll(t, q), 0, 30)
}

// TestFailedWriteOfASyncingPutFailsIt: when the put that makes
// --sync-every due cannot write the buffer, it fails and its record is not
// stored; the records acknowledged before stay buffered and are written
// by the next sync.
func TestFailedWriteOfASyncingPutFailsIt(t *testing.T) {
	mem := memDir(t)
	fs := &flakyFS{FS: mem}
	o := Options{FS: fs, MaxBytesPerFile: 1 << 20, MinMsgSize: 8, MaxMsgSize: 64, SyncEvery: 4, Logger: quiet,
		WriteBuffer: 64 << 10, Syncer: idleSyncer()}
	q := Open("flaky", "/d", o)
	for seq := range uint64(3) {
		if err := q.Put(crashBody(seq)); err != nil {
			t.Fatal(err)
		}
	}
	fs.fail = true
	if err := q.Put(crashBody(3)); err == nil {
		t.Fatal("the put whose write failed succeeded")
	}
	if d := q.Depth(); d != 3 {
		t.Fatalf("depth %d after the failed put, want 3", d)
	}
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	mem.Crash()
	q = Open("flaky", "/d", Options{FS: mem, MaxBytesPerFile: 1 << 20, MinMsgSize: 8, MaxMsgSize: 64, SyncEvery: 4, Logger: quiet})
	defer q.Close()
	checkSeqs(t, "after the power cut", readAll(t, q), 0, 3)
}

// TestFullDiskFailsBufferedPutsAtOnce: on a disk that fills up, the put
// that no longer fits fails with ENOSPC when it is made, as an unbuffered
// write would, and every put acknowledged before it is stored.
func TestFullDiskFailsBufferedPutsAtOnce(t *testing.T) {
	mem := memDir(t)
	mem.SetSpace(20 << 10)
	o := Options{FS: mem, MaxBytesPerFile: 8 << 10, MinMsgSize: 8, MaxMsgSize: 64, SyncEvery: 1 << 30, Logger: quiet,
		WriteBuffer: 4 << 10, Syncer: idleSyncer()}
	q := Open("full", "/d", o)
	var seq uint64
	var err error
	for ; seq < 10000; seq++ {
		if err = q.Put(crashBody(seq)); err != nil {
			break
		}
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("put %d: %v, want ENOSPC", seq, err)
	}
	if err := q.Put(crashBody(seq + 1)); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("next put on the full disk: %v, want ENOSPC", err)
	}
	mem.SetSpace(0) // space freed: room for the metadata
	checkSeqsAfterCrash(t, mem, q, 8<<10, seq)
}

// TestBufferedRecordsKeepTheirSpaceWhenTheDiskFills: something else takes
// every free byte of the disk while records are buffered: they are still
// written (their space was reserved as they were put), puts go on only
// as far as that reservation reaches, and then fail with ENOSPC.
func TestBufferedRecordsKeepTheirSpaceWhenTheDiskFills(t *testing.T) {
	mem := memDir(t)
	mem.SetSpace(1 << 20)
	o := Options{FS: mem, MaxBytesPerFile: 1 << 20, MinMsgSize: 8, MaxMsgSize: 64, SyncEvery: 1 << 30, Logger: quiet,
		WriteBuffer: 4 << 10, Syncer: idleSyncer()}
	q := Open("full", "/d", o)
	var seq uint64
	for ; seq < 10; seq++ {
		if err := q.Put(crashBody(seq)); err != nil {
			t.Fatal(err)
		}
	}
	hog, _, err := mem.OpenAppend("/d/hog", true)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := hog.Write(make([]byte, 16)); err != nil {
			break
		}
	}
	if len(q.wbuf) == 0 {
		t.Fatal("nothing buffered when the disk filled up")
	}
	for ; seq < 10000; seq++ {
		if err = q.Put(crashBody(seq)); err != nil {
			break
		}
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("put %d on the full disk: %v, want ENOSPC", seq, err)
	}
	if err := q.flush(); err != nil {
		t.Fatalf("writing the buffered records on the full disk: %v", err)
	}
	hog.Close()
	mem.Remove("/d/hog") // room for the metadata
	checkSeqsAfterCrash(t, mem, q, 1<<20, seq)
}

// TestLargePutsAreWrittenAtOnce: a put of an eighth of the buffer or more
// is written in the put (after the records buffered before it), as
// without a buffer.
func TestLargePutsAreWrittenAtOnce(t *testing.T) {
	mem := memDir(t)
	fs := &countingFS{FS: mem, reserve: true}
	q := Open("large", "/d", Options{FS: fs, MaxBytesPerFile: 1 << 20, MinMsgSize: 8, MaxMsgSize: 64,
		SyncEvery: 1 << 30, Logger: quiet, WriteBuffer: 800, Syncer: idleSyncer()})
	defer q.Close()
	if err := q.Put(crashBody(0)); err != nil {
		t.Fatal(err)
	}
	var b []byte
	for seq := uint64(1); seq < 9; seq++ {
		var start int
		b, start = AppendFrame(b)
		b = append(b, crashBody(seq)...)
		EndFrame(b, start)
	}
	if len(b) < 100 {
		t.Fatalf("batch of %d bytes: not an eighth of the buffer", len(b))
	}
	if err := q.PutFramed(b); err != nil {
		t.Fatal(err)
	}
	if fs.writes != 2 || len(q.wbuf) != 0 {
		t.Fatalf("%d writes, %d bytes buffered; want 2 (the buffered record, then the batch), none", fs.writes, len(q.wbuf))
	}
	data, _ := mem.ReadFile("/d/large.diskqueue.000000.dat")
	if int64(len(data)) != q.writePos {
		t.Fatalf("data file of %d bytes, write position %d", len(data), q.writePos)
	}
}

// TestWithoutReservationEveryPutIsWritten: on a file system that cannot
// reserve space, a queue asked to buffer writes every put at once.
func TestWithoutReservationEveryPutIsWritten(t *testing.T) {
	mem := memDir(t)
	fs := &countingFS{FS: mem}
	q := Open("noreserve", "/d", Options{FS: fs, MaxBytesPerFile: 1 << 20, MinMsgSize: 8, MaxMsgSize: 64,
		SyncEvery: 1 << 30, Logger: quiet, WriteBuffer: 64 << 10, Syncer: idleSyncer()})
	defer q.Close()
	for seq := range uint64(10) {
		if err := q.Put(crashBody(seq)); err != nil {
			t.Fatal(err)
		}
	}
	if fs.writes != 10 || len(q.wbuf) != 0 {
		t.Fatalf("%d writes for 10 puts, %d bytes buffered; want one each, none", fs.writes, len(q.wbuf))
	}
}

// TestKill9WithBufferLosesOnlyTheBufferedTail: the process dies without
// closing a queue with a write buffer: what comes back runs without a gap
// from where the last sync left the reader; the records lost are the last
// ones put, fewer than the buffer holds, none put before the last sync.
func TestKill9WithBufferLosesOnlyTheBufferedTail(t *testing.T) {
	for seed := range uint64(16) {
		r := rand.New(rand.NewPCG(seed, 6))
		dir := t.TempDir()
		o := bufferedCrashOptions(nil, r)
		c := &crashRun{acked: map[uint64]bool{}, q: Open("crash", dir, o)}
		for range 300 {
			c.step(t, r)
		}
		buffered := len(c.q.wbuf)
		// kill -9: the files are not closed and nothing more is synced
		q := Open("crash", dir, o)
		got := readAll(t, q)
		q.Close()
		first := c.next
		if len(got) > 0 {
			first, _ = checkCrashBody(got[0])
		}
		if first < c.syncedRead || first > c.read {
			t.Fatalf("seed %d: after kill -9 reading starts at record %d, want between %d (last Sync) and %d (read)", seed, first, c.syncedRead, c.read)
		}
		end := first + uint64(len(got))
		checkSeqs(t, "after kill -9", got, first, end)
		if end < c.syncedPut {
			t.Fatalf("seed %d: records from %d lost, put before the last sync (to %d)", seed, end, c.syncedPut-1)
		}
		lostBytes := 0
		for s := end; s < c.next; s++ {
			lostBytes += 4 + len(crashBody(s))
		}
		if lostBytes != buffered {
			t.Fatalf("seed %d: records %d to %d (%d bytes) lost, %d bytes were buffered", seed, end, c.next-1, lostBytes, buffered)
		}
		if buffered >= o.WriteBuffer {
			t.Fatalf("seed %d: %d bytes buffered, more than the buffer's %d", seed, buffered, o.WriteBuffer)
		}
	}
}

// checkSeqsAfterCrash closes q (writing what it buffered), crashes mem,
// reopens the queue full in /d without a buffer and checks that it holds
// records 0 to n-1.
func checkSeqsAfterCrash(t *testing.T, mem *store.MemFS, q *Queue, maxBytesPerFile int64, n uint64) {
	t.Helper()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	mem.Crash()
	q = Open("full", "/d", Options{FS: mem, MaxBytesPerFile: maxBytesPerFile, MinMsgSize: 8, MaxMsgSize: 64, SyncEvery: 1 << 30, Logger: quiet})
	defer q.Close()
	checkSeqs(t, "after the disk filled up", readAll(t, q), 0, n)
}
