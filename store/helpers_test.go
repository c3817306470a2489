package store

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Helpers shared by the storage tests of this package. Messages carry their
// own identity: msgBody(id) is derived from a 64-bit id, and so are the TS
// and DeliverAt a test gives them, so any record read back can be checked
// without keeping every body.

// testSeed returns the seed of a randomized test, printed so a failure can be
// replayed with SLUICE_STORE_SEED=<seed>.
func testSeed(t testing.TB) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SLUICE_STORE_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SLUICE_STORE_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (replay: SLUICE_STORE_SEED=%d)", seed, seed)
	return seed
}

// longTests reports whether the long variants run (SLUICE_STORE_LONG=1).
func longTests() bool { return os.Getenv("SLUICE_STORE_LONG") != "" }

func msgBody(id uint64, size int) []byte {
	b := make([]byte, max(size, 8))
	binary.BigEndian.PutUint64(b, id)
	for i := 8; i < len(b); i++ {
		b[i] = byte(id>>3) + byte(i)
	}
	return b
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

func msgTS(id uint64) int64        { return int64(id*7 + 1000) }
func msgDeliverAt(id uint64) int64 { return int64(id % 5 * 1e9) }

// msgEntry is a single-message entry for id.
func msgEntry(id uint64, size int) Entry {
	return Entry{TS: msgTS(id), DeliverAt: msgDeliverAt(id), Body: msgBody(id, size)}
}

// packEntry is an MPUB-style entry holding ids, which all get the TS and
// DeliverAt of the first (one Entry has one TS).
func packEntry(ids []uint64, size int) Entry {
	var p []byte
	for _, id := range ids {
		b := msgBody(id, size)
		p = binary.BigEndian.AppendUint32(p, uint32(len(b)))
		p = append(p, b...)
	}
	return Entry{TS: msgTS(ids[0]), DeliverAt: msgDeliverAt(ids[0]), Packed: p, Count: len(ids)}
}

// checkRecord verifies rec's body and, given the id of the first message of
// its entry (0: same as its own), its TS and DeliverAt. It returns the id.
func checkRecord(t testing.TB, rec Record, first map[uint64]uint64) uint64 {
	t.Helper()
	if len(rec.Body) < 8 {
		t.Fatalf("record %d: body of %d bytes", rec.Seq, len(rec.Body))
	}
	id := binary.BigEndian.Uint64(rec.Body)
	want := msgBody(id, len(rec.Body))
	if string(rec.Body) != string(want) {
		t.Fatalf("record %d (message %x): damaged body", rec.Seq, id)
	}
	f := id
	if first != nil {
		if v, ok := first[id]; ok {
			f = v
		}
	}
	if rec.TS != msgTS(f) || rec.DeliverAt != msgDeliverAt(f) {
		t.Fatalf("record %d (message %x): TS %d DeliverAt %d, want %d %d", rec.Seq, id, rec.TS, rec.DeliverAt, msgTS(f), msgDeliverAt(f))
	}
	return id
}

// newMemDir returns a MemFS with dir created and durable.
func newMemDir(t testing.TB, dir string) *MemFS {
	t.Helper()
	fs := NewMemFS()
	if err := fs.MkdirAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := fs.SyncDir(dir); err != nil {
		t.Fatal(err)
	}
	return fs
}

func mustOpenLog(t testing.TB, fs FS, dir string, opts LogOptions) (*Log, RecoveryReport) {
	t.Helper()
	l, rep, err := OpenLog(fs, dir, opts)
	if err != nil {
		t.Fatalf("open log %s: %v", dir, err)
	}
	return l, rep
}

// commitWait appends ents to l and waits for the round.
func commitWait(c *Committer, l *Log, ents ...Entry) error {
	r, err := c.Append(l, ents)
	if err != nil {
		return err
	}
	return r.Wait(l)
}

// readFrom reads l from seq to its end.
func readFrom(t testing.TB, l *Log, seq uint64, batch int) []Record {
	t.Helper()
	r := l.NewReader(seq)
	var out []Record
	for {
		n := len(out)
		var err error
		out, err = r.Read(out, batch)
		if err != nil {
			t.Fatalf("read from %d: %v", seq, err)
		}
		if len(out) == n {
			return out
		}
	}
}

// memSyncs returns fs.SyncCount under its lock.
func memSyncs(fs *MemFS) int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.SyncCount
}

// faultFS wraps an FS and makes single operations fail, as a flaky disk
// does, instead of everything after a point (MemFS.FailAfter). Every
// mutating call (create, write, sync, truncate, remove, rename, directory
// sync) draws from a seeded RNG: with probability failP it returns EIO, and
// half of those failures happen after the operation took effect (the write
// reached the file, the fsync flushed, the rename happened), as real
// errors may.
type faultFS struct {
	FS
	mu     sync.Mutex
	rng    *rand.Rand
	failP  float64
	failed int
	off    bool
}

var errFlaky = errors.New("faultfs: flaky disk")

func newFaultFS(inner FS, seed uint64, failP float64) *faultFS {
	return &faultFS{FS: inner, rng: rand.New(rand.NewPCG(seed, 77)), failP: failP}
}

// decide reports whether the next operation fails and whether it takes
// effect anyway.
func (f *faultFS) decide() (fail, applied bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.off || f.rng.Float64() >= f.failP {
		return false, false
	}
	f.failed++
	return true, f.rng.IntN(2) == 0
}

// setOff stops (true) or resumes injecting failures.
func (f *faultFS) setOff(off bool) {
	f.mu.Lock()
	f.off = off
	f.mu.Unlock()
}

func flaky(op string) error {
	return &os.PathError{Op: op, Path: "faultfs", Err: errors.Join(errFlaky, syscall.EIO)}
}

// do runs op unless the draw says it fails before taking effect.
func (f *faultFS) do(name string, op func() error) error {
	fail, applied := f.decide()
	if fail && !applied {
		return flaky(name)
	}
	if err := op(); err != nil {
		return err
	}
	if fail {
		return flaky(name)
	}
	return nil
}

func (f *faultFS) OpenAppend(name string, create bool) (File, int64, error) {
	var file File
	var size int64
	err := f.do("open", func() (err error) {
		file, size, err = f.FS.OpenAppend(name, create)
		return err
	})
	if err != nil {
		if file != nil {
			file.Close()
		}
		return nil, 0, err
	}
	return &faultFile{File: file, fs: f}, size, nil
}

func (f *faultFS) Remove(name string) error {
	return f.do("remove", func() error { return f.FS.Remove(name) })
}

func (f *faultFS) Rename(a, b string) error {
	return f.do("rename", func() error { return f.FS.Rename(a, b) })
}

func (f *faultFS) SyncDir(dir string) error {
	return f.do("syncdir", func() error { return f.FS.SyncDir(dir) })
}

type faultFile struct {
	File
	fs *faultFS
}

func (f *faultFile) Write(p []byte) (int, error) {
	n := 0
	err := f.fs.do("write", func() (err error) {
		n, err = f.File.Write(p)
		return err
	})
	return n, err
}

func (f *faultFile) Sync() error { return f.fs.do("sync", f.File.Sync) }

func (f *faultFile) Truncate(size int64) error {
	return f.fs.do("truncate", func() error { return f.File.Truncate(size) })
}
