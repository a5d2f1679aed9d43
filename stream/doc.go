// Package stream is ferry's wire format, shared by everything that writes or
// reads a topic stream: the event record stored in the outbox, the fields of
// a stream entry, the Redis key names, the headers ferry adds to deliveries,
// stream-ID arithmetic, and the validation of topic names and keys.
//
// It is pure code: no I/O, no Redis client, no goroutines.
//
// # Guarantees
//
//   - Every key of one topic carries the topic in braces (a Redis Cluster
//     hash tag), so all of a topic's keys share one hash slot and every
//     multi-key operation on them stays on one shard.
//   - DecodeEvent is the exact inverse of AppendEvent and never panics on
//     malformed input (it is fuzzed).
//   - Stream ids compare numerically ("9-0" < "10-0"), as Redis orders them.
package stream
