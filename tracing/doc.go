// Package tracing makes ferry a participant in its users' OpenTelemetry
// traces: it builds the tracer from OpenTelemetry's standard variables and
// gives publish, relay and delivery one small helper each, shaped so that
// with tracing off they cost a nil check.
//
// # Configuration
//
// Only the OTEL_* variables, read by the SDK and the OTLP/HTTP exporter
// themselves: OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
// (without one, tracing is off), OTEL_EXPORTER_OTLP_PROTOCOL (http/protobuf by
// default, http/json; grpc is refused), _HEADERS, _COMPRESSION, _TIMEOUT, the
// TLS files, OTEL_TRACES_SAMPLER and _ARG (default parentbased_always_on),
// OTEL_SERVICE_NAME (default: [Settings.ServiceName], FERRY_APP_ID),
// OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_*, the span limits, OTEL_SDK_DISABLED and
// OTEL_TRACES_EXPORTER (otlp or none). [New] checks every one of them first,
// because the SDK only logs a bad value and carries on with its default; an
// invalid one is a [*VarError] naming the variable.
//
// # Off
//
// With no endpoint, [New] creates no exporter, no provider and no goroutine,
// and every helper returns at once without allocating (the tests hold each to
// 0 allocs with testing.AllocsPerRun; BenchmarkEventOff runs a whole event).
// A nil *Tracer is off too.
//
// # Spans of one event
//
//	app A ─ POST /v1/publish/orders (traceparent P)
//	  └─ publish orders   SERVER    ferry A; its context is stored with the event
//	       ├─ send orders  PRODUCER ferry A's relay, later; links to every publish span of its batch
//	       └─ process orders CONSUMER ferry B, per consumer group, first attempt to ack or dead letter
//	            ├─ POST /orders CLIENT attempt 1 → 503   (event "retry" on process: delay)
//	            └─ POST /orders CLIENT attempt 2 → 200   app B's spans hang under this one
//
// Names and attributes follow the messaging semantic conventions (semconv
// v1.43.0, the version the SDK v1.47.0 uses): messaging.system "ferry" (the
// conventions list nothing for Redis Streams, and the system the app talks to
// is ferry), messaging.destination.name, messaging.message.id,
// messaging.consumer.group.name, messaging.operation.type create / send /
// process, plus ferry.attempt, ferry.result, ferry.dedupe.hit and
// ferry.deadletter.reason. No bodies, tokens or URLs with credentials.
//
// # The stored context
//
// An event keeps the app's traceparent in "h:Traceparent" unchanged (it is a
// carried header) and ferry's publish span in a field of its own,
// stream.FieldTraceparent ("tp"). The subscriber's process span hangs under "tp",
// or under the app's traceparent when the publisher traced nothing. The
// tracestate is the app's: the publish span inherits it. With tracing on, the
// app receiving a delivery gets the attempt span as its traceparent; with
// tracing off it gets the publisher's, as carried.
//
// # Caveats
//
//   - A relay batch makes one send span per topic; it is the child of the
//     first sampled message's publish span (so that trace shows the time in
//     the outbox) and links to all of them, up to OTEL_SPAN_LINK_COUNT_LIMIT
//     (128); the other messages reach it through the link.
//   - Export failures are logged at most once per 30 s, with a count of the
//     ones left out. A full batch queue (OTEL_BSP_MAX_QUEUE_SIZE) drops spans,
//     never blocks ferry.
//   - Exemplars are exposed only in the OpenMetrics format
//     (promhttp.HandlerOpts{EnableOpenMetrics: true}).
//   - Only W3C Trace Context is propagated; OTEL_PROPAGATORS is not read.
package tracing
