// Package diskq reads and writes the on-disk format of go-diskqueue
// (github.com/nsqio/go-diskqueue v1.1.0), the disk overflow NSQ keeps for
// every topic and channel. A queue named N in directory D is:
//
//   - data files D/N.diskqueue.000000.dat, .000001.dat, ...: records of a
//     4-byte big-endian length followed by that many bytes, a new file
//     started before a record that would take the file past
//     MaxBytesPerFile (a record always goes to an empty file whole);
//   - D/N.diskqueue.meta.dat, the text "depth\nreadFile,readPos\n
//     writeFile,writePos\n", replaced atomically (temporary file, fsync,
//     rename) at every sync;
//   - a data file that cannot be read is renamed to .dat.bad and reading
//     goes on with the next file.
//
// # Why Sluice carries its own
//
// go-diskqueue serves each queue from a goroutine: every Put is two
// channel hand-offs to it and back and one write syscall, every message
// read is one more hand-off through its unbuffered ReadChan, and Depth is
// a channel receive. Profiled under nsqd with --mem-queue-size=0 (every
// message goes through a channel's disk queue), those hand-offs, the
// goroutine wake-ups behind them and the per-message syscalls were 43% of
// the daemon's time. This package does the same file operations
// synchronously under a mutex instead: Put writes a whole batch of records
// (an MPUB's messages) with one write syscall per data file it touches,
// Read returns many records from one large pread, and an idle queue has no
// goroutine, timer or open file. The --sync-timeout flush of all queues is
// driven by one shared Syncer.
//
// # Compatibility
//
// The files are byte for byte those go-diskqueue writes for the same
// sequence of puts and reads, and each side reads the other's files,
// including metadata left mid-file and rolled files (the package tests
// check both directions against the library itself). Semantics follow the
// library: depth counts the records not yet read and is persisted with
// the positions; --sync-every counts reads and writes between syncs; a
// sync fsyncs the current data file and then replaces the metadata file;
// a read past what the metadata promises, or a record whose length is
// outside [MinMsgSize, MaxMsgSize], marks the file bad; reaching the
// write position with a non-zero depth resets the depth to 0; Empty
// removes every data file and the metadata file and goes on at the next
// file number.
//
// Differences, none of which changes the bytes of a record, a data file
// or the metadata for the same puts and reads:
//
//   - a Put of many records fsyncs (when --sync-every is due) before it
//     returns rather than just after; Close fsyncs the data file it was
//     writing;
//   - a data file created since the last sync is made durable with an
//     fsync of the directory at the next sync (go-diskqueue never syncs
//     the directory, so a power cut could lose a whole new file);
//   - a data file whose write or fsync failed is fsynced again by the next
//     sync (go-diskqueue closes it, and its next sync writes metadata
//     counting records that were never made durable);
//   - when the writer rolls to a new file while the reader has read the
//     old one to its end, go-diskqueue, having read ahead, takes the end
//     of the finished file for a read error and renames that file, every
//     record of which was read, .bad; diskq removes it, as any file read
//     to its end;
//   - corrupt metadata cannot make it spin: a missing data file is
//     skipped to the next one there is at once (go-diskqueue tries one
//     file number after another), a read position past the write position
//     at open moves the write position there (go-diskqueue would try
//     missing files for ever), and a record running past the write
//     position is a read error (go-diskqueue reads on into whatever
//     follows);
//   - at open, when the metadata is older than the data (a write position
//     short of the file's size), the writer skips past every later data
//     file that already holds bytes instead of only the first, so that
//     stale metadata never makes it write over records a reader can
//     still salvage.
package diskq
