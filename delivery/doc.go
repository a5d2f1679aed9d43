// Package delivery consumes one topic for one app: it reads the app's
// consumer group, keeps a bounded window of messages in flight, runs one
// attempt per message (dedupe claim, rate limit, breaker, HTTP POST) that
// returns an outcome, and acts on that outcome in one place: settle (mark
// done in the dedupe store, then XACK), retry later, or dead-letter.
//
// It also owns what an operator does to a subscription: list and redrive
// dead letters, replay from a time or id.
//
// # Guarantees
//
//   - A message is acked only after its dedupe completion is written, and
//     dead-lettered (XADD to the group's dead-letter stream) before it is
//     acked: a crash in between duplicates, never loses.
//   - A message waiting for a retry never blocks others, except later
//     messages of its own Ordering-Key, which are delivered one at a time
//     in stream order.
//   - Attempts survive restarts: the attempt number is the entry's
//     delivery count in Redis.
//   - Every goroutine a Subscriber starts is joined before Run returns.
//
// # Caveats
//
// A crash after the app answered 2xx and before the completion is written
// redelivers that message; Settling reports how many are in that window.
package delivery
