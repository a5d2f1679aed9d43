// Package dedupe is ferry's idempotency store: it makes the at-least-once
// wire (Redis Streams, relay re-sends, redeliveries, re-publishes with the same
// Idempotency-Key) effectively-once to the app.
//
// It owns one Redis string per consumer group and message,
// ferry:{<topic>}:dedupe:<app id>:<message id> (see Key), and nothing else. The
// value is "p:<owner>" while a delivery is in progress, expiring after the
// lease, and "d" once the app answered 2xx, expiring after the TTL. All state
// changes are single-key commands or single-key Lua scripts, so they are atomic
// and work in Redis Cluster. The package imports go-redis only.
//
// # Usage
//
// One Store per consumer, named by the pod:
//
//	s := dedupe.New(rdb, dedupe.Options{TTL: 24 * time.Hour, Lease: 30 * time.Second, Owner: os.Getenv("HOSTNAME")})
//	key := dedupe.Key(topic, appID, msgID)
//	switch st, err := s.Claim(ctx, key); {
//	case err != nil, st == dedupe.Busy:
//		// leave the message pending; it comes back later
//	case st == dedupe.Done:
//		// ack without delivering
//	default: // dedupe.Claimed
//		if deliver(ctx) == nil {
//			// ack, then s.Complete(ctx, key) (batched per read: s.Complete(ctx, keys...))
//		} else {
//			_ = s.Release(ctx, key) // the next attempt may claim at once
//		}
//	}
//
// A redrive calls Forget so that the messages are delivered again. At startup,
// CheckEvictionPolicy tells whether Redis may evict keys.
//
// # Guarantee
//
// While the key exists, a message is delivered by at most one owner at a time
// and, once completed, not delivered again for the TTL. Claim and Release are
// compare-and-set scripts, so two owners racing for one message cannot both
// get Claimed. A claim is re-entrant for its own owner: a container restarted
// under the same pod name takes its claims back at once (renewing the lease)
// rather than waiting for them to expire. The flip side is that the store does
// not serialise deliveries inside one owner: the caller must not work on one
// message twice at the same time.
//
// Scripts run with EVALSHA and fall back to EVAL when Redis has lost its
// script cache (restart, failover). Claim returns Busy together with every
// error, so no error ever leads to a delivery.
//
// # Caveats
//
// Effectively-once has windows; in each of them a message is delivered again,
// never lost:
//
//   - A crash (or a Redis error) after the app answered 2xx and before Complete
//     leaves the key in progress: the message is redelivered once the lease
//     expires, or at once by the same owner after a restart. Apps should still
//     treat Ferry-Message-Id as an idempotency key.
//   - A delivery that outlives its lease (an app slower than Lease) lets another
//     owner claim and deliver the same message concurrently. Keep Lease above
//     the delivery timeout.
//   - A done key expires after TTL: a duplicate arriving later is delivered.
//   - Redis may lose keys: an evicting maxmemory-policy (anything but
//     noeviction) drops them under memory pressure, and a failover with
//     asynchronous replication or a crash with appendfsync everysec loses the
//     latest writes. Run Redis with maxmemory-policy noeviction and appendfsync
//     always; CheckEvictionPolicy reports the policy.
package dedupe
