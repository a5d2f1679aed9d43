// Package publish serves the app-facing publish APIs: it validates a
// request, encodes the event record (stream.Event), hands it to an
// Appender (the outbox) and answers only once the Appender says it is
// durable. Three surfaces share the listener and the outbox:
//
//   - ferry's native POST /v1/publish/{topic} (publish.go), which also
//     takes a structured CloudEvent or a CloudEvents batch by Content-Type
//     (cloudevents.go);
//   - Dapr's POST /v1.0/publish/{pubsubname}/{topic} and bulk publish
//     (dapr.go): the body wrapped in a CloudEvent as Dapr wraps it, Dapr's
//     error bodies and codes.
//
// # Guarantees
//
//   - 202 (native) or 204 (Dapr) means the record is durable; every other
//     answer means nothing was accepted, and carries an RFC 9457 problem
//     (native) or Dapr's {"errorCode","message"} (with Retry-After on 429
//     and 503 on both).
//   - A batch (CloudEvents batch, Dapr bulk) is one Appender.AppendBatch:
//     one group commit for all its events, all accepted or none.
//   - A topic outside FERRY_PUBLISH_TOPICS is refused (403) before anything
//     is written.
//   - A message id taken from a CloudEvent passes the Idempotency-Key rules
//     (stream.ValidKey), or the publish is refused.
//   - The topic label of ferry_publish_requests_total is bounded.
package publish
