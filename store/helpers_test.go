package store

import (
	"encoding/binary"
	"errors"
	"fmt"
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
// its entry (absent: its own), its TS and DeliverAt. It returns the id.
func checkRecord(t testing.TB, rec Record, first map[uint64]uint64) uint64 {
	t.Helper()
	id, err := recordProblem(rec, first)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// recordProblem is checkRecord for goroutines other than the test's.
func recordProblem(rec Record, first map[uint64]uint64) (uint64, error) {
	if len(rec.Body) < 8 {
		return 0, fmt.Errorf("record %d: body of %d bytes", rec.Seq, len(rec.Body))
	}
	id := binary.BigEndian.Uint64(rec.Body)
	if string(rec.Body) != string(msgBody(id, len(rec.Body))) {
		return id, fmt.Errorf("record %d (message %x): damaged body", rec.Seq, id)
	}
	f := id
	if v, ok := first[id]; ok {
		f = v
	}
	if rec.TS != msgTS(f) || rec.DeliverAt != msgDeliverAt(f) {
		return id, fmt.Errorf("record %d (message %x): TS %d DeliverAt %d, want %d %d", rec.Seq, id, rec.TS, rec.DeliverAt, msgTS(f), msgDeliverAt(f))
	}
	return id, nil
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
// sync) asks decide whether it fails; a failure may come after the
// operation took effect (the write reached the file, the fsync flushed, the
// rename happened), as real errors may.
type faultFS struct {
	FS
	mu     sync.Mutex
	decide func(op, name string) (fail, applied bool) // guarded by mu
	failed int
}

var errFlaky = errors.New("faultfs: flaky disk")

// newFlakyFS fails each operation with probability failP, half of the
// failures after the operation took effect.
func newFlakyFS(inner FS, seed uint64, failP float64) *faultFS {
	rng := rand.New(rand.NewPCG(seed, 77))
	return &faultFS{FS: inner, decide: func(string, string) (bool, bool) {
		if rng.Float64() >= failP {
			return false, false
		}
		return true, rng.IntN(2) == 0
	}}
}

// failOnce makes the next operation op on name (any name if empty) fail,
// after taking effect when applied.
func (f *faultFS) failOnce(op, name string, applied bool) {
	f.setDecide(func(o, n string) (bool, bool) {
		if o != op || (name != "" && n != name) {
			return false, false
		}
		f.decide = nil
		return true, applied
	})
}

// setDecide replaces the failure rule (nil: nothing fails).
func (f *faultFS) setDecide(d func(op, name string) (fail, applied bool)) {
	f.mu.Lock()
	f.decide = d
	f.mu.Unlock()
}

func flaky(op, name string) error {
	return &os.PathError{Op: op, Path: name, Err: errors.Join(errFlaky, syscall.EIO)}
}

// do runs op unless the rule says it fails before taking effect.
func (f *faultFS) do(op, name string, run func() error) error {
	f.mu.Lock()
	fail, applied := false, false
	if f.decide != nil {
		fail, applied = f.decide(op, name)
	}
	if fail {
		f.failed++
	}
	f.mu.Unlock()
	if fail && !applied {
		return flaky(op, name)
	}
	if err := run(); err != nil {
		return err
	}
	if fail {
		return flaky(op, name)
	}
	return nil
}

func (f *faultFS) failures() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

// OpenAppend fails only when it creates (reads of sealed segments open
// them per read; failing those would only fail reads).
func (f *faultFS) OpenAppend(name string, create bool) (File, int64, error) {
	if !create {
		file, size, err := f.FS.OpenAppend(name, false)
		if err != nil {
			return nil, 0, err
		}
		return &faultFile{File: file, fs: f, name: name}, size, nil
	}
	var file File
	var size int64
	err := f.do("open", name, func() (err error) {
		file, size, err = f.FS.OpenAppend(name, create)
		return err
	})
	if err != nil {
		if file != nil {
			file.Close()
		}
		return nil, 0, err
	}
	return &faultFile{File: file, fs: f, name: name}, size, nil
}

func (f *faultFS) Remove(name string) error {
	return f.do("remove", name, func() error { return f.FS.Remove(name) })
}

func (f *faultFS) Rename(a, b string) error {
	return f.do("rename", a, func() error { return f.FS.Rename(a, b) })
}

func (f *faultFS) SyncDir(dir string) error {
	return f.do("syncdir", dir, func() error { return f.FS.SyncDir(dir) })
}

type faultFile struct {
	File
	fs   *faultFS
	name string
}

func (f *faultFile) Write(p []byte) (int, error) {
	n := 0
	err := f.fs.do("write", f.name, func() (err error) {
		n, err = f.File.Write(p)
		return err
	})
	return n, err
}

func (f *faultFile) Sync() error { return f.fs.do("sync", f.name, f.File.Sync) }

func (f *faultFile) Truncate(size int64) error {
	return f.fs.do("truncate", f.name, func() error { return f.File.Truncate(size) })
}
