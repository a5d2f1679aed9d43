// Package cloudevent owns ferry's CloudEvents 1.0 structured JSON format:
// parsing and validating one event (application/cloudevents+json) or a batch
// (application/cloudevents-batch+json), and building the envelopes Dapr
// builds, so that an app written for Dapr reads what ferry delivers.
//
// # What it promises
//
//   - [Parse] and [ParseBatch] accept only a JSON object (an array of them)
//     with the required attributes id, source, type (non-empty strings) and
//     specversion "1.0"; every error is a [*FieldError] that names the
//     attribute and, in a batch, the index of the event.
//   - [Decode] is the lenient reading Dapr applies to a body published with
//     Content-Type application/cloudevents+json: any JSON object passes.
//   - [NewDaprEnvelope] wraps a publish exactly as Dapr 1.18 does
//     (dapr/dapr pkg/runtime/pubsub/cloudevents.go NewCloudEvent, and
//     dapr/components-contrib pubsub/envelope.go NewCloudEventsEnvelope,
//     FromCloudEvent and ApplyMetadata); [ForDelivery] builds the structured
//     event a Dapr-style subscriber receives, including the rawPayload form
//     (components-contrib FromRawPayload).
//   - Numbers keep their JSON text ([encoding/json.Number]), so large
//     integers survive a round trip, as in Dapr's unmarshalPrecise.
//
// # Differences from Dapr, on purpose
//
//   - time and expiration are written in UTC (Dapr writes the local zone).
//   - traceparent, traceid and tracestate are left out when empty (Dapr writes
//     empty strings when it has no span).
//   - The rawPayload wrapper's id is ferry's message id, stable across
//     redeliveries (Dapr makes a new random UUID per delivery).
//   - An invalid ttl is an error ([TTL]); Dapr ignores it silently.
//
// # Caveats
//
// Extension attribute names are not checked against the spec's [a-z0-9]
// rule: Dapr does not check them either, and refusing them would refuse
// events that Dapr accepts.
package cloudevent
