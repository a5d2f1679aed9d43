// Package otlptest is an OpenTelemetry collector for tests: an OTLP/HTTP
// receiver on a loopback port that decodes what an exporter really sends
// (POST /v1/traces, protobuf ExportTraceServiceRequest, gzip when the
// exporter compresses) and keeps the spans for assertions.
//
// It answers like a collector (200 with an empty ExportTraceServiceResponse;
// 415 for anything but protobuf, 400 for a body that does not decode, and
// remembers those errors so a test can fail on them). Spans are flattened
// into [Span] values with hex ids and plain Go attribute values, so tests
// compare strings and numbers, not protobuf messages.
//
// Waits are bounded: [Receiver.WaitSpans] fails the test after its timeout
// with what it has received so far.
package otlptest
