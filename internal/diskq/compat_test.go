package diskq

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	diskqueue "github.com/nsqio/go-diskqueue"
)

// The tests here run go-diskqueue itself beside this package: the same
// operations must leave the same bytes in the same files, and each must
// go on from where the other stopped.

const (
	testMin = 1
	testMax = 1 << 16
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func libLog(t testing.TB) diskqueue.AppLogFunc {
	return func(lvl diskqueue.LogLevel, f string, args ...any) {}
}

// queueUnderTest is what the scripts drive: go-diskqueue or this package.
type queueUnderTest interface {
	put(b []byte) error
	read(n int) [][]byte
	depth() int64
	empty() error
	close() error
}

type libQueue struct {
	t testing.TB
	q diskqueue.Interface
}

func openLib(t testing.TB, name, dir string, maxBytes, syncEvery int64) *libQueue {
	return &libQueue{t, diskqueue.New(name, dir, maxBytes, testMin, testMax, syncEvery, time.Hour, libLog(t))}
}

func (l *libQueue) put(b []byte) error { return l.q.Put(b) }
func (l *libQueue) depth() int64       { return l.q.Depth() }
func (l *libQueue) empty() error       { return l.q.Empty() }
func (l *libQueue) close() error       { return l.q.Close() }

// read takes n messages from ReadChan; the caller knows they are there.
func (l *libQueue) read(n int) [][]byte {
	var out [][]byte
	for range n {
		select {
		case b := <-l.q.ReadChan():
			out = append(out, b)
		case <-time.After(10 * time.Second):
			l.t.Fatalf("go-diskqueue: no message after %d of %d", len(out), n)
		}
	}
	return out
}

type ownQueue struct {
	t testing.TB
	q *Queue
}

func openOwn(t testing.TB, name, dir string, maxBytes, syncEvery int64, block int) *ownQueue {
	return openOwnBuffered(t, name, dir, maxBytes, syncEvery, block, 0)
}

// openOwnBuffered opens a diskq queue with a write buffer of wbuf bytes
// (0: none), served by a Syncer whose timers never fire during a test:
// what is buffered is written only when the queue itself must.
func openOwnBuffered(t testing.TB, name, dir string, maxBytes, syncEvery int64, block, wbuf int) *ownQueue {
	o := Options{
		MaxBytesPerFile: maxBytes, MinMsgSize: testMin, MaxMsgSize: testMax,
		SyncEvery: syncEvery, Logger: quiet, ReadBlock: block,
	}
	if wbuf > 0 {
		o.WriteBuffer, o.Syncer = wbuf, idleSyncer()
	}
	return &ownQueue{t, Open(name, dir, o)}
}

// idleSyncer is a Syncer that syncs and flushes only after an hour.
func idleSyncer() *Syncer {
	s := NewSyncer(time.Hour)
	s.flush.delay = time.Hour
	return s
}

func (o *ownQueue) put(b []byte) error { return o.q.Put(b) }
func (o *ownQueue) depth() int64       { return o.q.Depth() }
func (o *ownQueue) empty() error       { return o.q.Empty() }
func (o *ownQueue) close() error       { return o.q.Close() }

func (o *ownQueue) read(n int) [][]byte {
	var out [][]byte
	for len(out) < n {
		before := len(out)
		var err error
		out, err = o.q.Read(out, n-len(out))
		if err != nil {
			o.t.Fatal(err)
		}
		if len(out) == before {
			o.t.Fatalf("diskq: no record after %d of %d", len(out), n)
		}
	}
	return out
}

// dirFiles returns the contents of every file in dir but temporary ones.
func dirFiles(t testing.TB, dir string) map[string]string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = string(b)
	}
	return out
}

func sameFiles(t testing.TB, want, got map[string]string) {
	t.Helper()
	var names []string
	for n := range want {
		names = append(names, n)
	}
	for n := range got {
		if _, ok := want[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		w, okw := want[n]
		g, okg := got[n]
		switch {
		case !okw:
			t.Errorf("file %s: only diskq wrote it (%d bytes)", n, len(g))
		case !okg:
			t.Errorf("file %s: only go-diskqueue wrote it (%d bytes)", n, len(w))
		case w != g:
			if strings.HasSuffix(n, ".meta.dat") {
				t.Errorf("file %s: go-diskqueue %q, diskq %q", n, w, g)
			} else {
				t.Errorf("file %s: %d bytes from go-diskqueue, %d from diskq, differing", n, len(w), len(g))
			}
		}
	}
}

// body returns message i of a script: its index, padded to a size that
// varies with i.
func body(i, size int) []byte {
	b := fmt.Appendf(nil, "m%d-", i)
	for len(b) < size {
		b = append(b, byte('a'+i%26))
	}
	return b
}

// op is one step of a script: put k messages, read k, empty, or close and
// reopen.
type op struct {
	kind byte // 'p', 'r', 'e', 'c'
	k    int
}

func randomScript(r *rand.Rand, steps int) []op {
	var s []op
	depth := 0
	for range steps {
		switch x := r.IntN(20); {
		case x < 10:
			k := 1 + r.IntN(40)
			s = append(s, op{'p', k})
			depth += k
		case x < 17 && depth > 0:
			k := 1 + r.IntN(depth)
			s = append(s, op{'r', k})
			depth -= k
		case x == 18:
			s = append(s, op{'e', 0})
			depth = 0
		default:
			s = append(s, op{'c', 0})
		}
	}
	return s
}

// runScript applies s to a queue opened by open, returning what was read.
func runScript(t *testing.T, s []op, open func() queueUnderTest, sizes *rand.Rand) []string {
	q := open()
	next := 0
	var read []string
	for _, o := range s {
		switch o.kind {
		case 'p':
			for range o.k {
				if err := q.put(body(next, 1+sizes.IntN(300))); err != nil {
					t.Fatal(err)
				}
				next++
			}
		case 'r':
			for _, b := range q.read(o.k) {
				read = append(read, string(b))
			}
		case 'e':
			if err := q.empty(); err != nil {
				t.Fatal(err)
			}
		case 'c':
			if err := q.close(); err != nil {
				t.Fatal(err)
			}
			q = open()
		}
	}
	read = append(read, fmt.Sprintf("depth %d", q.depth()))
	if err := q.close(); err != nil {
		t.Fatal(err)
	}
	return read
}

// TestSameOperationsWriteTheSameFiles runs random scripts of puts, reads,
// empties and restarts on go-diskqueue and on diskq, with small files so
// that they roll often: both read the same records, report the same
// depth and leave byte-identical data and metadata files.
// With a write buffer (every other seed; sizes from a few records to more
// than a file), the files are the same.
func TestSameOperationsWriteTheSameFiles(t *testing.T) {
	for seed := range uint64(24) {
		wbuf := 0
		if seed%2 == 1 {
			wbuf = []int{700, 2400, 4096, 64 << 10}[seed/2%4]
		}
		t.Run(fmt.Sprintf("%d/buffer=%d", seed, wbuf), func(t *testing.T) {
			script := randomScript(rand.New(rand.NewPCG(seed, 1)), 60)
			maxBytes := int64(512 + 400*seed)
			libDir, ownDir := t.TempDir(), t.TempDir()
			libRead := runScript(t, script, func() queueUnderTest { return openLib(t, "t:c", libDir, maxBytes, 1<<30) }, rand.New(rand.NewPCG(seed, 2)))
			ownRead := runScript(t, script, func() queueUnderTest {
				return openOwnBuffered(t, "t:c", ownDir, maxBytes, 1<<30, 256+int(seed)*97, wbuf)
			}, rand.New(rand.NewPCG(seed, 2)))
			if len(libRead) != len(ownRead) {
				t.Fatalf("go-diskqueue read %d records, diskq %d", len(libRead), len(ownRead))
			}
			for i := range libRead {
				if libRead[i] != ownRead[i] {
					t.Fatalf("record %d: go-diskqueue %q, diskq %q", i, libRead[i], ownRead[i])
				}
			}
			own := dirFiles(t, ownDir)
			for n := range own {
				if strings.HasSuffix(n, ".bad") {
					t.Errorf("diskq renamed %s .bad in a run without corruption", n)
				}
			}
			sameFiles(t, withoutFinishedBad(t, libDir), own)
		})
	}
}

// TestEachReadsWhereTheOtherStopped alternates the two implementations
// over one directory: each life opens the files the other left (read
// position mid-file, several rolled files, depth in the metadata), reads
// some, writes some and closes. Every record comes out once, in order.
// diskq's lives alternate between no write buffer and one.
func TestEachReadsWhereTheOtherStopped(t *testing.T) {
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(7, 7))
	next, want := 0, 0
	for life := range 16 {
		var q queueUnderTest
		switch life % 4 {
		case 0, 2:
			q = openLib(t, "handoff", dir, 2000, 1<<30)
		case 1:
			q = openOwn(t, "handoff", dir, 2000, 1<<30, 300)
		default:
			q = openOwnBuffered(t, "handoff", dir, 2000, 1<<30, 300, 4000)
		}
		if d := q.depth(); d != int64(next-want) {
			t.Fatalf("life %d: depth %d at open, want %d", life, d, next-want)
		}
		for range 1 + r.IntN(60) {
			if err := q.put(body(next, 10+r.IntN(200))); err != nil {
				t.Fatal(err)
			}
			next++
		}
		k := r.IntN(next - want + 1)
		for _, b := range q.read(k) {
			if !bytes.HasPrefix(b, fmt.Appendf(nil, "m%d-", want)) {
				t.Fatalf("life %d: read %.20q, want message %d", life, b, want)
			}
			want++
		}
		if err := q.close(); err != nil {
			t.Fatal(err)
		}
	}
	q := openOwn(t, "handoff", dir, 2000, 1<<30, 0)
	for _, b := range q.read(next - want) {
		if !bytes.HasPrefix(b, fmt.Appendf(nil, "m%d-", want)) {
			t.Fatalf("read %.20q, want message %d", b, want)
		}
		want++
	}
	if d := q.depth(); d != 0 {
		t.Fatalf("depth %d after reading everything", d)
	}
	q.close()
}

// TestMetadataFileIsGoDiskqueues checks the metadata text a sync writes
// and that go-diskqueue parses it back.
func TestMetadataFileIsGoDiskqueues(t *testing.T) {
	dir := t.TempDir()
	q := openOwn(t, "meta", dir, 100, 1<<30, 0)
	for i := range 7 {
		q.put(body(i, 30)) // 34 bytes a record: two per 100-byte file
	}
	q.read(3)
	q.close()
	b, err := os.ReadFile(filepath.Join(dir, "meta.diskqueue.meta.dat"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), "4\n1,34\n3,34\n"; got != want {
		t.Fatalf("metadata %q, want %q", got, want)
	}
	l := openLib(t, "meta", dir, 100, 1<<30)
	if d := l.depth(); d != 4 {
		t.Fatalf("go-diskqueue depth %d, want 4", d)
	}
	got := l.read(4)
	if !bytes.HasPrefix(got[0], []byte("m3-")) || !bytes.HasPrefix(got[3], []byte("m6-")) {
		t.Fatalf("go-diskqueue read %q", got)
	}
	l.close()
}

// TestBatchPutRollsLikeSinglePuts: records put in one batch land in the
// same files at the same offsets as the same records put one at a time
// through go-diskqueue.
func TestBatchPutRollsLikeSinglePuts(t *testing.T) {
	libDir, ownDir := t.TempDir(), t.TempDir()
	l := openLib(t, "b", libDir, 1000, 1<<30)
	o := openOwn(t, "b", ownDir, 1000, 1<<30, 0)
	r := rand.New(rand.NewPCG(3, 3))
	var batch []byte
	for i := range 300 {
		b := body(i, 1+r.IntN(120))
		if err := l.put(b); err != nil {
			t.Fatal(err)
		}
		var start int
		batch, start = AppendFrame(batch)
		batch = append(batch, b...)
		EndFrame(batch, start)
		if i%97 == 96 {
			if err := o.q.PutFramed(batch); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if err := o.q.PutFramed(batch); err != nil {
		t.Fatal(err)
	}
	if l.depth() != 300 || o.depth() != 300 {
		t.Fatalf("depths %d and %d, want 300", l.depth(), o.depth())
	}
	l.close()
	o.close()
	sameFiles(t, dirFiles(t, libDir), dirFiles(t, ownDir))
}

// TestPutRejectsSizesOutOfBounds: as go-diskqueue, a record shorter than
// the minimum or longer than the maximum is refused; in a batch, the
// records before it are written.
func TestPutRejectsSizesOutOfBounds(t *testing.T) {
	q := Open("bounds", t.TempDir(), Options{MaxBytesPerFile: 1 << 20, MinMsgSize: 4, MaxMsgSize: 10, SyncEvery: 1 << 30, Logger: quiet})
	defer q.Close()
	if err := q.Put([]byte("abc")); err == nil {
		t.Fatal("3-byte record accepted with minimum 4")
	}
	if err := q.Put([]byte("abcdefghijk")); err == nil {
		t.Fatal("11-byte record accepted with maximum 10")
	}
	var b []byte
	for _, s := range []string{"good1", "good2", "way too long", "good3"} {
		var start int
		b, start = AppendFrame(b)
		b = append(b, s...)
		EndFrame(b, start)
	}
	if err := q.PutFramed(b); err == nil {
		t.Fatal("batch with a 12-byte record accepted")
	}
	recs, _ := q.Read(nil, 10)
	if len(recs) != 2 || string(recs[0]) != "good1" || string(recs[1]) != "good2" {
		t.Fatalf("read %q, want the two records before the bad one", recs)
	}
}

// TestCorruptFileIsRenamedBadLikeGoDiskqueue corrupts a record's length
// in the middle of the first of three files: both implementations read
// the records before it, rename the file .bad, go on with the next file,
// and end with the same files.
func TestCorruptFileIsRenamedBadLikeGoDiskqueue(t *testing.T) {
	setup := func(dir string) {
		l := openLib(t, "bad", dir, 200, 1<<30)
		for i := range 12 {
			l.put(body(i, 46)) // 50 bytes a record: 4 per file
		}
		l.close()
		name := filepath.Join(dir, "bad.diskqueue.000000.dat")
		b, _ := os.ReadFile(name)
		copy(b[100:], []byte{0xff, 0xff, 0xff, 0xff}) // record 2's length
		os.WriteFile(name, b, 0o600)
	}
	libDir, ownDir := t.TempDir(), t.TempDir()
	setup(libDir)
	setup(ownDir)
	// 2 good records, then file 0 is bad: 4 more from file 1, 4 from file 2
	l := openLib(t, "bad", libDir, 200, 1<<30)
	libGot := l.read(10)
	l.close()
	o := openOwn(t, "bad", ownDir, 200, 1<<30, 0)
	ownGot := o.read(10)
	if d := o.depth(); d != 0 {
		t.Errorf("depth %d at the tail, want 0 (reset as go-diskqueue does)", d)
	}
	o.close()
	for i := range libGot {
		if string(libGot[i]) != string(ownGot[i]) {
			t.Fatalf("record %d: go-diskqueue %.12q, diskq %.12q", i, libGot[i], ownGot[i])
		}
	}
	if !bytes.HasPrefix(ownGot[2], []byte("m4-")) {
		t.Fatalf("third record read %.12q, want the first of file 1", ownGot[2])
	}
	files := dirFiles(t, ownDir)
	if _, ok := files["bad.diskqueue.000000.dat.bad"]; !ok {
		t.Fatalf("no .bad file: %v", keys(files))
	}
	sameFiles(t, dirFiles(t, libDir), files)
}

// withoutFinishedBad returns the files of go-diskqueue's dir without the
// .bad files it leaves when the writer rolls to a new file while its
// reader, having read the write file to its end, has already read ahead:
// the reader then finds the end of a finished file, takes it for a read
// error and renames the file, every record of which was read, .bad (diskq
// removes it, as it does every file read to its end).
func withoutFinishedBad(t *testing.T, dir string) map[string]string {
	files := dirFiles(t, dir)
	for n := range files {
		if strings.HasSuffix(n, ".bad") {
			delete(files, n)
		}
	}
	return files
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestStaleMetadataSkipsToANewWriteFile: after a crash that left more
// bytes in the write file than the metadata knows, the writer goes on in
// a new file and the reader still gets every record of the old one, as
// with go-diskqueue (depth is reset at the tail).
func TestStaleMetadataSkipsToANewWriteFile(t *testing.T) {
	dir := t.TempDir()
	q := openOwn(t, "stale", dir, 1<<20, 1<<30, 0)
	for i := range 3 {
		q.put(body(i, 20))
	}
	q.close() // metadata: depth 3, write position after record 2
	// records written after the last sync, then a crash
	q = openOwn(t, "stale", dir, 1<<20, 1<<30, 0)
	for i := 3; i < 6; i++ {
		q.put(body(i, 20))
	}
	q.q.closeFiles() // dropped without a sync: kill -9
	q = openOwn(t, "stale", dir, 1<<20, 1<<30, 0)
	if q.q.writeFileNum != 1 || q.q.writePos != 0 {
		t.Fatalf("write position %d,%d, want 1,0", q.q.writeFileNum, q.q.writePos)
	}
	q.put(body(6, 20))
	got := q.read(4) // depth says 4 (3 + 1)
	recs, _ := q.q.Read(nil, 10)
	for _, r := range recs {
		got = append(got, r)
	}
	if len(got) != 7 {
		t.Fatalf("read %d records, want all 7", len(got))
	}
	for i, b := range got {
		if !bytes.HasPrefix(b, fmt.Appendf(nil, "m%d-", i)) {
			t.Fatalf("record %d is %.12q", i, b)
		}
	}
	if d := q.depth(); d != 0 {
		t.Fatalf("depth %d at the tail", d)
	}
	q.close()
}
