// Package outbox is ferry's durable local log: the place a published record
// lives between the 202 answered to the app and the XADD that hands it to Redis.
//
// A Log is a directory of segment files (00000001.seg, 00000002.seg, …) plus a
// checkpoint file. Append frames a record (length, CRC-32C, time, data), and
// returns only once a write and an fsync covering it have completed. Appends
// that arrive together share one write and one fsync (group commit), done by a
// single writer goroutine. A relay reads records in order with Read, sends them
// on, and calls Commit with the position it reached; Commit persists the
// checkpoint in place (one of two CRC-checked slots of a preallocated file,
// pwrite and fdatasync: no free space needed) and deletes segments that lie
// wholly before it, and the active one too once it is wholly relayed and
// large (1 MiB) or the volume is short of space.
//
// Guarantees:
//
//   - A record for which Append returned nil is on disk and is returned by
//     Read, after any crash and reopen, until a Commit at or beyond it.
//   - Read returns records in append order and only records that are durable.
//   - AppendBatch puts its records in one group commit and one segment: nil
//     means all are durable, an error means none was acknowledged (a crash
//     during the fsync may leave a prefix on disk, as for any unanswered
//     append; publishers re-send with the same ids and dedupe absorbs it).
//   - A crash between sending and Commit re-reads the records after the last
//     checkpoint: delivery is at least once, never skipped.
//   - Open repairs the directory: a torn tail of the last segment (a write cut
//     short by a crash) is truncated; a bad frame anywhere else has its
//     segment moved aside to <name>.corrupt, never deleted, and the valid
//     prefix kept under the original name.
//   - A failed write or fsync fails every Append of its batch with an error
//     wrapping the syscall error; the segment is cut back to its last durable
//     size through a new file descriptor before anything else is written. If
//     that repair fails the Log is failed: every later Append returns an error
//     wrapping ErrFailed, and Err reports it.
//   - A full volume heals without a restart: Appends are refused with an
//     error wrapping syscall.ENOSPC while the volume's free space (statfs)
//     is under Options.ReserveBytes, before the kernel's ENOSPC, so that the
//     relay's way out (the checkpoint, deleting relayed segments, a new
//     segment) always has room; Commit frees the space. Open needs no free
//     space either: it may migrate the checkpoint file of earlier versions
//     in place and, failing that, Commit releases relayed segments whole,
//     which needs no checkpoint, until the file can be made.
//   - A disk error is logged once when it starts refusing Appends and once,
//     with the count, when an Append is accepted again (or Commit freed the
//     space), not per Append; Stats.DiskFull and Stats.Refused tell the rest.
//
// Errors callers act on, all matched with errors.Is: ErrFull (the outbox holds
// MaxBytes of records not yet committed; Commit frees space), syscall.ENOSPC
// (the volume is full, or under the reserve; Commit frees space) and
// syscall.EROFS (the disk is read-only; the Log repaired itself and later
// Appends may succeed), ErrFailed (the Log cannot write any more; only a new
// Open, normally a restart, clears it) and ErrClosed.
//
// # Caveats
//
// One process per directory: Open takes an flock on Dir/LOCK (on Dir
// itself when a full volume has no room for a new LOCK file) and fails with
// ErrLocked when another process holds it.
//
// The reserve assumes a file system that overwrites in place (ext4, xfs,
// tmpfs): on copy-on-write ones (btrfs, ZFS) the checkpoint's overwrite
// needs new blocks too, which the reserve normally covers. Off Linux free
// space is not known, so only the kernel's ENOSPC refuses Appends.
//
// The guarantee is as good as fsync on the volume: a disk or filesystem that
// acknowledges fsync without persisting, or a volume that is itself lost, loses
// records. Corruption found while the Log runs (bit rot under Read) is returned
// as a *CorruptError and is not repaired until the next Open.
//
// Records behind a corrupt frame are not lost but are no longer relayed: they
// stay in the .corrupt file for an operator to inspect.
//
// An Append that returned an error was not acknowledged, but a crash at the
// wrong moment can still leave it on disk to be relayed after restart; the
// reverse never happens. Consumers must tolerate duplicates anyway.
//
// MaxBytes counts framed bytes (16 bytes of overhead per record) appended and
// not yet committed, not disk usage: segments are deleted only once wholly
// committed, so the directory can hold up to about one segment more (1 MiB
// more once the relay has caught up). A MaxBytes larger than the volume is
// logged at Open: the volume fills first.
//
// Positions before the checkpoint may point into deleted segments; Read from
// such a position starts at the oldest retained record.
package outbox
