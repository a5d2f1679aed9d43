// Package redisconn makes ferry's Redis client and watches its health.
//
// New builds a redis.UniversalClient for one of three modes (a standalone
// server, Redis Cluster, or a Sentinel-managed primary) from go-redis URL
// forms, with TLS (private CA, client certificate) and ACL users in every
// mode. Health is a go-redis hook that follows whether Redis answers and
// reports each transition once, through a callback.
//
// # Guarantees
//
//   - No error, log line or redacted string from this package contains a
//     password: URLs are redacted, dial errors reformatted.
//   - Health counts only failures that say something about Redis (network
//     errors, LOADING, READONLY, MASTERDOWN, CLUSTERDOWN, TRYAGAIN), never
//     our own cancellations or a command's own error.
//   - Logs say what happened once: Health logs one "redis down"/"redis up"
//     per episode (failover flaps folded into it), Logger (go-redis's own
//     lines) one line per kind per minute.
//   - Cluster mode reloads the slot map every second; the read timeout is
//     at least Options.WaitTimeout+1s, so a blocking WAIT is never taken
//     for a dead connection (go-redis would resend the whole pipeline).
//   - In Sentinel mode the URL's userinfo is the Sentinels' password and
//     Options.Password (FERRY_REDIS_PASSWORD_FILE) the data nodes'.
package redisconn
