// Package sidecar composes ferry from its parts: it builds them from a
// config.Config, runs them as one group, and shuts them down in order. It
// holds no logic of its own beyond that order.
//
// # Guarantees
//
//   - Every goroutine it starts is joined before the Redis client and the
//     outbox close.
//   - Shutdown follows DESIGN.md: /readyz 503; the publish listener stays
//     open and answers 503 shutting-down; consumers stop reading and
//     in-flight deliveries finish within the budget; the relay drains the
//     outbox; the outbox closes; the servers close; Redis closes.
//   - Run returns *UndrainedError when records remain in the outbox: they
//     are kept for the next start.
package sidecar
