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
// Differences, none of which changes a file's bytes: a Put of many
// records fsyncs (when --sync-every is due) before it returns rather than
// just after; a data file created since the last sync is made durable
// with an fsync of the directory at the next sync (go-diskqueue never
// syncs the directory, so a power cut could lose a whole new file); Close
// fsyncs the data file it was writing; and at open, when the metadata is
// older than the data (a write position short of the file's size), the
// writer skips past every later data file that already holds bytes
// instead of only the first, so that stale metadata never makes it write
// over records a reader can still salvage.
package diskq
