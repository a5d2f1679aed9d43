// Package relay moves records from the outbox to their topic streams, in
// order: read a batch after the checkpoint, XADD it in one pipeline, then
// commit the checkpoint (at most every CommitEvery while busy).
//
// # Guarantees
//
//   - Nothing is skipped: a crash between the XADDs and the checkpoint
//     re-sends what was not committed (the dedupe store absorbs copies).
//   - While Redis fails, records stay in the outbox and the relay backs
//     off behind a breaker instead of spinning; it logs the first failure
//     and every 50th, and once when it resumes.
//   - With Wait (FERRY_REDIS_WAIT_REPLICAS), a batch counts as relayed only
//     once WAIT reported the replicas for it on every master it touched:
//     the XADDs and WAIT travel in one pipeline on that master's own
//     connection, and every XADD's answer is checked. Anything less keeps
//     the whole batch in the outbox, to be sent again after a backoff.
package relay
