package stream

import "strings"

// Stream entry fields. Carried headers are stored as HeaderField + canonical name.
const (
	FieldID          = "id"   // message id: Idempotency-Key or a UUIDv7
	FieldSource      = "src"  // publisher's app id
	FieldPublishedAt = "pub"  // RFC 3339 (nanoseconds), UTC
	FieldContentType = "ct"   // Content-Type
	FieldBody        = "body" // the body, last
	HeaderField      = "h:"   // prefix of a carried header's field
)

// FieldTraceparent is ferry's publish span as a W3C traceparent, stored
// when the publishing ferry traces (package tracing). The app's own
// traceparent stays in "h:Traceparent", unchanged.
const FieldTraceparent = "tp"

// Headers of the publish request and of deliveries.
const (
	HeaderIdempotencyKey = "Idempotency-Key"
	HeaderOrderingKey    = "Ordering-Key"
	HeaderMessageID      = "Ferry-Message-Id"
	HeaderTopic          = "Ferry-Topic"
	HeaderAttempt        = "Ferry-Attempt"
	HeaderPublishedAt    = "Ferry-Published-At"
	HeaderReplay         = "Ferry-Replay"
)

// Carried reports whether a publish request header (in canonical form)
// travels to subscribers: the keys, the trace context and every Ce-* header.
func Carried(name string) bool {
	switch name {
	case HeaderIdempotencyKey, HeaderOrderingKey, "Traceparent", "Tracestate":
		return true
	}
	return strings.HasPrefix(name, "Ce-")
}
