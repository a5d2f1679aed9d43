// Package outbox is ferry's durable local log: the place a published record
// lives between the 202 answered to the app and the XADD that hands it to Redis.
//
// A Log is a directory of segment files (00000001.seg, 00000002.seg, …) plus a
// checkpoint file. Append frames a record (length, CRC-32C, time, data), and
// returns only once a write and an fsync covering it have completed. Appends
// that arrive together share one write and one fsync (group commit), done by a
// single writer goroutine. A relay reads records in order with Read, sends them
// on, and calls Commit with the position it reached; Commit persists the
// checkpoint atomically (tmp, fsync, rename, fsync dir) and deletes segments
// that lie wholly before it.
//
// Guarantees:
//
//   - A record for which Append returned nil is on disk and is returned by
//     Read, after any crash and reopen, until a Commit at or beyond it.
//   - Read returns records in append order and only records that are durable.
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
//
// Errors callers act on, all matched with errors.Is: ErrFull (the outbox holds
// MaxBytes of records not yet committed; Commit frees space), syscall.ENOSPC
// and syscall.EROFS (the disk is full or read-only; the Log repaired itself and
// later Appends may succeed), ErrFailed (the Log cannot write any more; only a
// new Open, normally a restart, clears it) and ErrClosed.
//
// # Caveats
//
// One process per directory: the Log takes no lock on Dir, and two Logs
// appending to one directory corrupt each other.
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
// committed, so the directory can hold up to about one segment more.
//
// Positions before the checkpoint may point into deleted segments; Read from
// such a position starts at the oldest retained record.
package outbox
