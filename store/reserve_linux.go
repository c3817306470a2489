package store

import (
	"os"

	"golang.org/x/sys/unix"
)

// Reserve allocates disk blocks for bytes [off, off+n) of the file without
// changing its size (fallocate with FALLOC_FL_KEEP_SIZE): later writes
// into that range need no new blocks, so a full disk fails the Reserve
// instead of those writes. File systems without fallocate return an
// error wrapping ENOTSUP (or EOPNOTSUPP, ENOSYS).
func (f osFile) Reserve(off, n int64) error {
	for {
		err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, off, n)
		if err != unix.EINTR {
			if err != nil {
				return &os.PathError{Op: "fallocate", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}
