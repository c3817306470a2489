package store

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
)

// MemFS is a strict in-memory FS for crash tests. Every file keeps what was
// written and, separately, what was last synced; every directory keeps its
// entries as they are and as they were at its last SyncDir. Crash throws
// away everything not synced, as a power cut would: unsynced file contents
// and unsynced creations, renames and removals.
//
// SetSpace limits the bytes all files may hold together (writes beyond it
// fail with ENOSPC after writing what fits, as a full disk does), and
// FailAfter makes every operation after the next n fail, to crash the
// store at any step.
type MemFS struct {
	mu    sync.Mutex
	nodes map[string]*memNode // live view: path -> file
	dirs  map[string]bool     // live directories
	// durable view: directory -> entry name -> node, as of the last SyncDir
	synced      map[string]map[string]*memNode
	syncedDirs  map[string]bool
	space       int64 // 0 = unlimited
	opsLeft     int   // -1 = unlimited
	crashed     bool
	SyncCount   int
	WrittenSize int64
}

type memNode struct {
	data     []byte
	synced   []byte
	reserved int64 // Reserve: space held up to this offset (0: none)
}

// size is the space the node takes: its bytes, or its reservation when
// that reaches further.
func (nd *memNode) size() int64 { return max(int64(len(nd.data)), nd.reserved) }

// NewMemFS returns an empty MemFS with the root directory "/" durable.
func NewMemFS() *MemFS {
	return &MemFS{
		nodes:      map[string]*memNode{},
		dirs:       map[string]bool{"/": true},
		synced:     map[string]map[string]*memNode{},
		syncedDirs: map[string]bool{"/": true},
		opsLeft:    -1,
	}
}

// errInjected is returned by operations after FailAfter's budget is spent.
var errInjected = fmt.Errorf("memfs: injected failure: %w", syscall.EIO)

// FailAfter lets n more operations succeed; after that every mutating
// operation fails (n < 0: never).
func (fs *MemFS) FailAfter(n int) {
	fs.mu.Lock()
	fs.opsLeft = n
	fs.mu.Unlock()
}

// SetSpace limits the total size of all files (0: unlimited).
func (fs *MemFS) SetSpace(n int64) {
	fs.mu.Lock()
	fs.space = n
	fs.mu.Unlock()
}

func (fs *MemFS) step() error {
	if fs.opsLeft == 0 {
		return errInjected
	}
	if fs.opsLeft > 0 {
		fs.opsLeft--
	}
	return nil
}

func (fs *MemFS) used() int64 {
	var n int64
	for _, nd := range fs.nodes {
		n += nd.size()
	}
	return n
}

// Crash simulates a power cut: the live view becomes the durable view.
// Directories never synced vanish with their contents, except "/".
func (fs *MemFS) Crash() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.nodes = map[string]*memNode{}
	fs.dirs = map[string]bool{}
	for d := range fs.syncedDirs {
		fs.dirs[d] = true
	}
	for dir, ents := range fs.synced {
		if !fs.dirs[dir] {
			continue
		}
		for name, nd := range ents {
			nd.data = append([]byte(nil), nd.synced...)
			nd.reserved = 0
			fs.nodes[filepath.Join(dir, name)] = nd
		}
	}
	fs.opsLeft = -1
}

// Files returns the live paths, sorted (for tests).
func (fs *MemFS) Files() []string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	var out []string
	for p := range fs.nodes {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// ReadFile returns a copy of the live contents of name (for tests).
func (fs *MemFS) ReadFile(name string) ([]byte, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	nd, ok := fs.nodes[filepath.Clean(name)]
	if !ok {
		return nil, &os.PathError{Op: "read", Path: name, Err: os.ErrNotExist}
	}
	return append([]byte(nil), nd.data...), nil
}

// WriteFile replaces name's live and durable contents (for tests that
// corrupt files).
func (fs *MemFS) WriteFile(name string, data []byte) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	name = filepath.Clean(name)
	nd, ok := fs.nodes[name]
	if !ok {
		nd = &memNode{}
		fs.nodes[name] = nd
	}
	nd.data = append([]byte(nil), data...)
	nd.synced = append([]byte(nil), data...)
	dir, base := filepath.Split(name)
	dir = filepath.Clean(dir)
	if fs.synced[dir] == nil {
		fs.synced[dir] = map[string]*memNode{}
	}
	fs.synced[dir][base] = nd
}

func (fs *MemFS) OpenAppend(name string, create bool) (File, int64, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	name = filepath.Clean(name)
	nd, ok := fs.nodes[name]
	if !ok {
		if !create {
			return nil, 0, &os.PathError{Op: "open", Path: name, Err: os.ErrNotExist}
		}
		if !fs.dirs[filepath.Dir(name)] {
			return nil, 0, &os.PathError{Op: "open", Path: name, Err: os.ErrNotExist}
		}
		if err := fs.step(); err != nil {
			return nil, 0, &os.PathError{Op: "open", Path: name, Err: err}
		}
		nd = &memNode{}
		fs.nodes[name] = nd
	}
	return &memFile{fs: fs, nd: nd, name: name}, int64(len(nd.data)), nil
}

// OpenAt implements OffsetFS: the file is written at offsets.
func (fs *MemFS) OpenAt(name string, create bool) (FileAt, int64, error) {
	f, size, err := fs.OpenAppend(name, create)
	if err != nil {
		return nil, 0, err
	}
	return &memFileAt{f.(*memFile)}, size, nil
}

func (fs *MemFS) Remove(name string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	name = filepath.Clean(name)
	if _, ok := fs.nodes[name]; !ok {
		return &os.PathError{Op: "remove", Path: name, Err: os.ErrNotExist}
	}
	if err := fs.step(); err != nil {
		return &os.PathError{Op: "remove", Path: name, Err: err}
	}
	delete(fs.nodes, name)
	return nil
}

func (fs *MemFS) RemoveAll(dir string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	dir = filepath.Clean(dir)
	if err := fs.step(); err != nil {
		return err
	}
	for p := range fs.nodes {
		if strings.HasPrefix(p, dir+"/") {
			delete(fs.nodes, p)
		}
	}
	for d := range fs.dirs {
		if d == dir || strings.HasPrefix(d, dir+"/") {
			delete(fs.dirs, d)
		}
	}
	// removing a directory tree is made durable at once: the store only
	// does it for deleted topics, where a resurrection is harmless but
	// confusing in tests.
	for d := range fs.syncedDirs {
		if d == dir || strings.HasPrefix(d, dir+"/") {
			delete(fs.syncedDirs, d)
			delete(fs.synced, d)
		}
	}
	return nil
}

func (fs *MemFS) Rename(oldname, newname string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	oldname, newname = filepath.Clean(oldname), filepath.Clean(newname)
	nd, ok := fs.nodes[oldname]
	if !ok {
		return &os.PathError{Op: "rename", Path: oldname, Err: os.ErrNotExist}
	}
	if err := fs.step(); err != nil {
		return &os.PathError{Op: "rename", Path: oldname, Err: err}
	}
	delete(fs.nodes, oldname)
	fs.nodes[newname] = nd
	return nil
}

func (fs *MemFS) MkdirAll(dir string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	dir = filepath.Clean(dir)
	for d := dir; ; d = filepath.Dir(d) {
		if fs.dirs[d] {
			break
		}
		fs.dirs[d] = true
		// a new directory's own entry in its parent is durable once the
		// parent is synced; keep it simple: directories become durable
		// when they are synced themselves.
		if d == "/" || d == "." {
			break
		}
	}
	return nil
}

func (fs *MemFS) List(dir string) ([]string, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	dir = filepath.Clean(dir)
	if !fs.dirs[dir] {
		return nil, &os.PathError{Op: "readdir", Path: dir, Err: os.ErrNotExist}
	}
	var out []string
	for p := range fs.nodes {
		if filepath.Dir(p) == dir {
			out = append(out, filepath.Base(p))
		}
	}
	for d := range fs.dirs {
		if d != dir && filepath.Dir(d) == dir {
			out = append(out, filepath.Base(d))
		}
	}
	sort.Strings(out)
	return out, nil
}

func (fs *MemFS) SyncDir(dir string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	dir = filepath.Clean(dir)
	if !fs.dirs[dir] {
		return &os.PathError{Op: "sync", Path: dir, Err: os.ErrNotExist}
	}
	if err := fs.step(); err != nil {
		return &os.PathError{Op: "sync", Path: dir, Err: err}
	}
	ents := map[string]*memNode{}
	for p, nd := range fs.nodes {
		if filepath.Dir(p) == dir {
			ents[filepath.Base(p)] = nd
		}
	}
	fs.synced[dir] = ents
	for d := dir; ; d = filepath.Dir(d) {
		fs.syncedDirs[d] = true
		if d == "/" || d == "." {
			break
		}
	}
	return nil
}

type memFile struct {
	fs     *MemFS
	nd     *memNode
	name   string
	closed bool
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if off >= int64(len(f.nd.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.nd.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) Write(p []byte) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return 0, os.ErrClosed
	}
	if err := f.fs.step(); err != nil {
		return 0, &os.PathError{Op: "write", Path: f.name, Err: err}
	}
	n := len(p)
	var err error
	if f.fs.space > 0 {
		// bytes written into the node's reservation take no new space
		held := max(f.nd.reserved-int64(len(f.nd.data)), 0)
		if room := f.fs.space - f.fs.used() + held; int64(n) > room {
			n = int(max(room, 0))
			err = &os.PathError{Op: "write", Path: f.name, Err: syscall.ENOSPC}
		}
	}
	f.nd.data = append(f.nd.data, p[:n]...)
	f.fs.WrittenSize += int64(n)
	return n, err
}

// memFileAt is a memFile written at offsets (MemFS.OpenAt).
type memFileAt struct{ *memFile }

// WriteAt writes p at off, growing the file (with zeros before off when
// off is past its end) as needed; like Write, it is lost in a crash until
// synced.
func (f *memFileAt) WriteAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return 0, os.ErrClosed
	}
	if off < 0 {
		return 0, &os.PathError{Op: "writeat", Path: f.name, Err: os.ErrInvalid}
	}
	if err := f.fs.step(); err != nil {
		return 0, &os.PathError{Op: "writeat", Path: f.name, Err: err}
	}
	n := len(p)
	var err error
	if grow := off + int64(n) - f.nd.size(); grow > 0 && f.fs.space > 0 {
		if room := f.fs.space - f.fs.used(); grow > room {
			n = int(max(int64(n)-(grow-max(room, 0)), 0))
			err = &os.PathError{Op: "writeat", Path: f.name, Err: syscall.ENOSPC}
		}
	}
	if end := off + int64(n); end > int64(len(f.nd.data)) {
		f.nd.data = append(f.nd.data, make([]byte, end-int64(len(f.nd.data)))...)
	}
	copy(f.nd.data[off:], p[:n])
	f.fs.WrittenSize += int64(n)
	return n, err
}

func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.step(); err != nil {
		return &os.PathError{Op: "sync", Path: f.name, Err: err}
	}
	f.nd.synced = append(f.nd.synced[:0], f.nd.data...)
	f.fs.SyncCount++
	return nil
}

func (f *memFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.step(); err != nil {
		return &os.PathError{Op: "truncate", Path: f.name, Err: err}
	}
	if size < int64(len(f.nd.data)) {
		f.nd.data = f.nd.data[:size:size]
	}
	f.nd.reserved = 0 // truncating frees the blocks past the end
	return nil
}

// Reserve implements Reserver: space for bytes [off, off+n) is taken from
// SetSpace's budget at once (all or nothing: ENOSPC when it does not fit),
// and writes into it take none. A reservation is not durable: Crash drops
// it.
func (f *memFile) Reserve(off, n int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return os.ErrClosed
	}
	if err := f.fs.step(); err != nil {
		return &os.PathError{Op: "fallocate", Path: f.name, Err: err}
	}
	end := off + n
	if grow := end - f.nd.size(); grow > 0 {
		if f.fs.space > 0 && grow > f.fs.space-f.fs.used() {
			return &os.PathError{Op: "fallocate", Path: f.name, Err: syscall.ENOSPC}
		}
		f.nd.reserved = end
	}
	return nil
}

func (f *memFile) Close() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	f.closed = true
	return nil
}
