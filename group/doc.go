// Package group owns one app's consumer group on one topic in Redis: its
// keys (the topic stream, the group's redrive and dead-letter streams, its
// replay mark), creating it, its figures (pending, lag, last delivered),
// its dead letters (add, list, redrive) and replay.
//
// delivery uses a Group to read and settle; the admin API reaches the same
// operations through delivery.Subscriber.
//
// # Guarantees
//
//   - Every key of a Group shares the topic's hash slot, so each script and
//     pipeline here stays on one Redis Cluster shard.
//   - Redrive moves a dead letter to the redrive stream atomically (Lua):
//     it is never lost and never in both places.
//   - A replay's mark is kept in Redis, so a restart or another replica
//     treats the same entries as replays.
package group
