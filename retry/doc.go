// Package retry is ferry's delivery retry policy: it classifies the outcome of
// one HTTP delivery attempt and computes how long to wait before the next.
//
// It is pure policy. It does no I/O, starts no goroutines, keeps no state and
// imports only the standard library, so the sidecar owns every timer and every
// decision to act on a [Result].
//
// # What it guarantees
//
// [Classify] maps an attempt to exactly one [Result], whose string value is
// the `result` label of ferry_delivery_attempts_total (see DESIGN.md,
// "Delivery to the app"). [Result.Failure] is what the circuit breaker counts
// as a failure: retry, timeout and error; success and poison mean the app
// answered and count as successes.
//
// [Policy.Backoff] is exponential (×2 per attempt) with full jitter: a uniform
// delay in [0, min(Max, Initial·2^(n-1))). It never overflows, whatever the
// attempt number. [Policy.Delay] lets a server's Retry-After win when it is
// longer, and never returns more than Max. All methods are safe for concurrent
// use as long as Policy.Rand is.
//
// # Caveats
//
// Full jitter may return a delay of (almost) zero: the expected delay is half
// the exponential ceiling, and spreading retries evenly is the point.
//
// Retry-After is capped at Max (FERRY_RETRY_MAX_INTERVAL): an app asking for
// a longer pause is retried sooner than it asked, by design of the contract.
//
// Classify cannot tell the app failing from ferry giving up: an error caused
// by ferry's own context being cancelled (shutdown) is classified [Error].
// Callers check their context before classifying when that matters.
//
// A Policy with invalid fields (see [Policy.Validate]) is not rejected by the
// other methods: each invalid field behaves as its zero value (the default).
package retry
