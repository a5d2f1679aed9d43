// Package publish serves the app-facing publish API: it validates a
// request, encodes the event record (stream.Event), hands it to an
// Appender (the outbox) and answers only once the Appender says it is
// durable.
//
// # Guarantees
//
//   - 202 means the record is durable; every other answer means nothing
//     was accepted, and carries an RFC 9457 problem (with Retry-After on
//     429 and 503).
//   - A topic outside FERRY_PUBLISH_TOPICS is refused (403) before anything
//     is written.
//   - The topic label of ferry_publish_requests_total is bounded.
package publish
