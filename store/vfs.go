package store

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
)

// File is an open file of an FS. Writes append at the end (files are opened
// for appending); ReadAt reads anywhere. Sync makes every write so far
// durable (fdatasync where the platform has it).
type File interface {
	io.ReaderAt
	io.Writer
	Sync() error
	Truncate(size int64) error
	Close() error
}

// Reserver is implemented by files that can set disk space aside for
// bytes not yet written (on Linux, OSFS's files: fallocate keeping the
// size). Writes into a reserved range cannot fail for want of space on a
// file system that allocates in place (ext4, xfs, tmpfs); copy-on-write
// file systems (btrfs, zfs) promise less. The file's size and contents
// are unchanged.
type Reserver interface {
	Reserve(off, n int64) error
}

// FS is the part of a file system the store uses. Creating, renaming and
// removing files changes a directory; those changes are durable only after
// SyncDir of that directory.
type FS interface {
	// OpenAppend opens name for reading and appending, creating it when
	// create is set. It returns the file and its current size.
	OpenAppend(name string, create bool) (File, int64, error)
	Remove(name string) error
	Rename(oldname, newname string) error
	MkdirAll(dir string) error
	// List returns the names (not paths) of the entries of dir, sorted.
	List(dir string) ([]string, error)
	SyncDir(dir string) error
	RemoveAll(dir string) error
}

// FileAt is an open file of an OffsetFS, written at offsets instead of
// appended to. Sync makes every write so far durable (fdatasync where the
// platform has it).
type FileAt interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Truncate(size int64) error
	Close() error
}

// OffsetFS is implemented by file systems that can also open a file for
// writes at offsets. Overwriting bytes a file already holds, once they are
// synced, changes none of its metadata, so the fdatasync that follows
// flushes the data alone, without a journal commit (ext4, xfs): a log that
// zero-fills space ahead of its writes syncs faster than one that appends.
type OffsetFS interface {
	// OpenAt opens name for reading and writing at offsets, creating it
	// when create is set. It returns the file and its current size.
	OpenAt(name string, create bool) (FileAt, int64, error)
}

// OSFS is the operating system's file system.
type OSFS struct{}

type osFile struct{ *os.File }

func (f osFile) Sync() error { return fdatasync(f.File) }

func (OSFS) OpenAppend(name string, create bool) (File, int64, error) {
	f, size, err := openSized(name, os.O_RDWR|os.O_APPEND, create)
	if err != nil {
		return nil, 0, err
	}
	return osFile{f}, size, nil
}

func (OSFS) OpenAt(name string, create bool) (FileAt, int64, error) {
	f, size, err := openSized(name, os.O_RDWR, create)
	if err != nil {
		return nil, 0, err
	}
	return osFile{f}, size, nil
}

// openSized opens name with flag (and O_CREATE when create) and returns it
// with its size.
func openSized(name string, flag int, create bool) (*os.File, int64, error) {
	if create {
		flag |= os.O_CREATE
	}
	f, err := os.OpenFile(name, flag, 0o600)
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}

func (OSFS) Remove(name string) error             { return os.Remove(name) }
func (OSFS) Rename(oldname, newname string) error { return os.Rename(oldname, newname) }
func (OSFS) MkdirAll(dir string) error            { return os.MkdirAll(dir, 0o755) }
func (OSFS) RemoveAll(dir string) error           { return os.RemoveAll(dir) }

func (OSFS) List(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	sort.Strings(names)
	return names, nil
}

func (OSFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// tmpSuffix names WriteFileAtomic's temporary file beside its target.
const tmpSuffix = ".tmp"

// WriteFileAtomic replaces name with data durably: a temporary file
// (name+tmpSuffix) is written and synced, renamed over name, and the
// directory synced.
func WriteFileAtomic(fs FS, name string, data []byte) error {
	tmp := name + tmpSuffix
	_ = fs.Remove(tmp)
	f, size, err := fs.OpenAppend(tmp, true)
	if err != nil {
		return err
	}
	if size > 0 {
		// a stale temporary file the Remove above could not delete
		// used to be appended to, and renamed over name with its old bytes
		// in front of data
		err = f.Truncate(0)
	}
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = fs.Remove(tmp)
		return err
	}
	if err := fs.Rename(tmp, name); err != nil {
		return err
	}
	return fs.SyncDir(filepath.Dir(name))
}

// isNotExist reports whether err means a missing file.
func isNotExist(err error) bool { return errors.Is(err, os.ErrNotExist) }
