// Package retry is ferry's delivery retry policy: it classifies the outcome of
// one HTTP delivery attempt and computes how long to wait before the next.
//
// It is pure policy. It does no I/O, starts no goroutines, keeps no state
// (beyond what [Observe] records about one request) and imports only the
// standard library, so the sidecar owns every timer and every decision to act
// on a [Result].
//
// # What it guarantees
//
// [Classify] maps an attempt to exactly one [Result], whose string value is
// the `result` label of ferry_delivery_attempts_total (see DESIGN.md,
// "Delivery to the app"). [Result.Failure] is what the circuit breaker counts
// as a failure: retry, timeout, error and unreachable; success and poison
// mean the app answered and count as successes. [Result.SpendsAttempt] is
// false for unreachable only: the app is not there, the subscription pauses,
// and the message keeps its attempt count.
//
// Unreachable means the app cannot have seen the request: the connection
// was refused, the name did not resolve, the dial failed, or (known only to
// an [Attempt] from [Observe]) the connection broke or timed out before the
// whole request was written. A reset, EOF or timeout after the request was
// written is error or timeout and spends an attempt, because the app may
// have read the request and died of it: a message that crashes the app must
// still end in the dead letters.
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
// A written request is not proof that the app read it: an app that accepts
// connections and closes them at once (a crash loop) yields unreachable or
// error depending on who wins the race, about half and half on loopback. The
// circuit breaker's consecutive-failure rule, not this package, keeps such
// an app from exhausting messages.
//
// Without an Attempt, [Classify] assumes the request was written: a reset is
// error. Use [Observe] for deliveries.
//
// Classify cannot tell the app failing from ferry giving up: an error caused
// by ferry's own context being cancelled (shutdown) is classified [Error].
// Callers check their context before classifying when that matters.
//
// A Policy with invalid fields (see [Policy.Validate]) is not rejected by the
// other methods: each invalid field behaves as its zero value (the default).
package retry
