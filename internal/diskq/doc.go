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
// # Write buffer (opt-in)
//
// With Options.WriteBuffer (nsqd --disk-write-buffer) a put of a few
// records (less than an eighth of the buffer) does not write them: they
// join the records put before them in a buffer of at most that many
// bytes, and one write syscall takes the lot. A larger put (an MPUB of
// many messages) already pays for its own write: the buffer is written
// and then the put, at once, as without the option. Profiled under nsqd
// (one PUB per round trip, a channel without a consumer past its
// --mem-queue-size), the write syscall of every single-message put was
// 14% of the daemon's CPU. The buffer is written:
//
//   - before it would overflow, and before a larger put is written;
//   - at every sync, before the data file is fsynced and the metadata
//     written, so metadata never counts a record that is not in its file
//     (a put that makes --sync-every due writes and syncs in the put, so
//     --sync-every=1 writes and fsyncs every put before it returns);
//   - before a roll to a new data file;
//   - in Read, once the reader has reached the records still buffered
//     (Depth counts them, and the Read that wants them writes them and
//     returns them);
//   - FlushDelay (10ms, or --sync-timeout when shorter) after its first
//     record was put, by the Syncer's second timer line, which like the
//     first runs only while some queue has something due: an idle queue
//     still has no goroutine, timer, open file or buffer (the timed write
//     lets go of it);
//   - on Close.
//
// Full disk: each put reserves the disk space of the records it buffers
// before it returns (store.Reserver: fallocate with FALLOC_FL_KEEP_SIZE,
// a write buffer's worth ahead, or exactly the records' size when the
// disk has less); a reservation changes neither the size nor the bytes
// of the file (the blocks reserved past the end of a file the writer
// has left, at most a buffer's worth, are freed with the file). A put
// whose reservation fails with ENOSPC fails with that
// error, storing none of its records, as the write of an unbuffered put
// would; nsqd's diskBackend passes the error on unchanged, so that the
// publish fails as one whose write failed does (health set to the error,
// E_PUB_FAILED over TCP, 503 over HTTP). The
// records buffered by earlier, acknowledged puts keep their reserved
// space, so their later write cannot run out of it (on file systems that
// allocate in place: ext4, xfs, tmpfs; copy-on-write ones such as btrfs
// promise less). A file system that cannot reserve (EOPNOTSUPP, ENOSYS,
// or a store.FS whose files are not Reservers) makes the queue write
// every put at once, as without the option. A write of the buffer that
// fails for another reason (EIO) keeps the records buffered, to be
// written again at the next occasion (the file is first cut back to
// where they begin, as after a failed unbuffered write); the put that
// made the failing write due fails: one that the buffer could not take
// is not stored, one that made --sync-every due has its records taken
// back out of the buffer, so that neither is acknowledged, as an
// unbuffered put whose write failed is not. No metadata is written while
// the buffer cannot be, and a Read stops short of the records it holds.
//
// Crashes: power loss loses nothing a sync promised, since every sync
// writes the buffer first. A kill -9 is where the option costs: records
// still buffered are lost (less than WriteBuffer bytes, put within the
// last FlushDelay unless a write failed), while go-diskqueue's and this
// package's unbuffered writes are in the page cache at once, and Open
// salvages them even past the metadata's write position. That is why it
// is off by default.
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
//   - with the write buffer (opt-in, above) records are written in fewer,
//     larger writes, at the moments listed there; the files after a sync
//     or Close are the same bytes;
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
