// Package delivery consumes one topic for one app: it reads the app's
// consumer group, keeps a bounded window of messages in flight, runs one
// attempt per message (dedupe claim, rate limit, breaker, HTTP POST) that
// returns an outcome, and acts on that outcome in one place: settle (mark
// done in the dedupe store, then XACK), retry later, or dead-letter.
//
// It also owns what an operator does to a subscription: list and redrive
// dead letters, replay from a time or id.
//
// What one delivery looks like and what the app's answer means is a
// Format: the plain one (FERRY_SUBSCRIPTIONS: the stored body to the route,
// DESIGN.md's answer table) or daprformat.Format (FERRY_APP_SUBSCRIBE=dapr: a
// structured CloudEvent routed by the subscription's CEL rules, answers read
// as Dapr reads them, a DROP or 404 dead-lettered as dropped). Whatever the
// format, an event past its expiry (Dapr's ttlInSeconds) is dead-lettered as
// expired without being sent, and with Options.DeadLetterTopic every dead
// letter is also published to that topic through the outbox.
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
