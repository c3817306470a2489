// Package store is the durable topic log: one segmented, append-only log per
// topic with a checksum per record, and a cursor journal per topic that keeps
// each channel's progress (an ack floor, the finished messages above it, and
// the attempts and deferral deadlines of messages that went back to the
// queue) as a small state instead of a copy of every message per channel.
//
// Writes are group-committed: a Committer (one per node) collects what every
// topic appended while the previous write+fdatasync ran and makes it durable
// with one write and one sync per file, then wakes everyone it covered.
//
// Files go through the FS interface. OSFS is the real one; MemFS is a strict
// in-memory file system that, at a simulated crash, keeps only what was
// synced (file contents and directory entries), so the recovery code is
// tested at every crash point below the process.
//
// On-disk layout of a topic directory:
//
//	<base seq, 20 digits>.seg   segments: records [len u32][crc32c u32][kind u8][seq u64][ts i64][deliver_at i64][body]
//	cursors.jnl                 cursor journal: [len u32][crc32c u32][kind u8][payload]
//
// Recovery cuts a torn or corrupt tail of the newest segment at the last
// good record, quarantines (renames to *.corrupt) an older segment with a
// bad record, and reports both; it never skips a bad record silently.
package store
