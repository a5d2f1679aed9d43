// Package breaker owns ferry's per-subscription circuit breakers, built on
// sony/gobreaker v2's two-step breaker: [Set.Allow] before a delivery, then
// the returned done func once the app's answer has been classified.
//
// # What it guarantees
//
// A [Set] holds one breaker per name (ferry uses the subscribed topic),
// created on first use; names are independent and the Set is safe for
// concurrent use.
//
// A breaker starts closed. While closed it counts reported outcomes over a
// rolling Window (ten buckets), so successes from before an outage age out
// instead of masking it. It trips to open when at least MinRequests outcomes
// were reported in the window and failures/outcomes >= FailureRatio, or
// (when Settings.ConsecutiveFailures is set) after that many failures in a
// row, however many successes the window holds. Open, it
// refuses every Allow with [ErrOpen] for OpenTimeout, then turns half-open and
// lets HalfOpenProbes requests through: when all of them succeed it closes,
// the first failure opens it again. Half-open with every probe handed out,
// Allow refuses with ErrOpen too.
//
// Settings.OnStateChange sees every transition of a breaker exactly once, in
// order, never concurrently with itself for the same name, and never while
// the breaker's lock is held, so it may call back into the Set (to read
// [Set.State] for a gauge, say).
//
// [Set.OpenUntil] and [Set.Wait] let a caller that got ErrOpen sleep until
// the breaker may let a request through, instead of polling Allow.
//
// Outside news cuts the open period short. [Set.Reset] (and [Set.ResetAll])
// closes a breaker at once with fresh counts, for when a health probe says
// the app is back. [Set.Trial] turns an open breaker half-open at once, for
// when the app only seems back (its port accepts connections): its probes
// decide, and a failed one opens it for a full OpenTimeout. Both are seen by
// OnStateChange and wake every Wait.
//
// # Caveats
//
// gobreaker reads the wall clock itself; time cannot be injected, so tests
// use short timeouts. The open → half-open transition happens lazily, on the
// first Allow, State, OpenUntil or Wait after OpenTimeout; OnStateChange (and
// a gauge fed by it) reports it only then. Something that polls State, like a
// status endpoint, or a caller blocked in Wait, makes it timely.
//
// OnStateChange runs synchronously on some goroutine that is calling into the
// Set for that name (not necessarily the one whose request caused the
// transition): keep it short.
//
// The done func must be called exactly once per successful Allow; further
// calls are ignored. A probe whose done is never called keeps a half-open
// breaker refusing forever. An outcome reported after the breaker changed
// state since its Allow is ignored: it belongs to an older period.
//
// Outcomes count when reported, not when allowed: requests still in flight
// are not in the ratio. Outcomes of requests allowed before a Reset or
// Trial are ignored: gobreaker has no public reset, so both replace the
// gobreaker behind the name (a Trial's half-open is kept by this package in
// front of a fresh, closed one).
package breaker
