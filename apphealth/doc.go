// Package apphealth watches whether the app behind ferry is there and
// ready, so that delivery can pause instead of spending attempts on an app
// that is down, and resume the moment it is back (DESIGN.md, "Delivery to
// the app", FERRY_APP_HEALTH_*; the ferry_app_healthy gauge).
//
// A [Prober] runs in one of two modes, chosen by Config.Path:
//
//   - With a health path (FERRY_APP_HEALTH_PATH), it GETs {URL}{Path} every
//     Interval, each probe bounded by Timeout (below Interval). A 2xx passes,
//     anything else (another status, no answer) fails. After Threshold
//     failed probes in a row the app is unhealthy; the first passing probe
//     makes it healthy again at once. It starts unhealthy, like a readiness
//     probe, and probes as soon as it runs.
//   - Without one, it starts healthy and does nothing until delivery reports
//     that the app could not be reached ([Prober.Unreachable]); then it is
//     unhealthy and dials the app's host and port (a TCP connect) at once and
//     every Interval until a connection succeeds, which makes it healthy.
//
// In both modes Unreachable makes the app unhealthy at once and probes at
// once: delivery knows before any probe does.
//
// # What it guarantees
//
// [Prober.Healthy] and [Prober.Value] (1 or 0, the gauge) read the current
// state without blocking. Config.OnChange is called on every transition, in
// order, on the goroutine that runs [Prober.Run], never concurrently with
// itself, and only when the state differs from the last one it was told,
// except that an Unreachable is always told (false, then true once a probe
// passes), even when a probe passed before Run got to report it.
// [Prober.WaitHealthy] blocks until the app is healthy, waking on the
// transition. Run owns its goroutine and every timer; it returns nil when
// its context ends and starts no goroutine that outlives it.
//
// # Caveats
//
// A TCP connect proves that something accepts connections, not that the
// app answers: an app in a crash loop that accepts and closes passes the
// dial probe. Delivery's circuit breaker, not this package, keeps such an
// app from using up messages' attempts; set a health path to pause on it.
//
// Time is the wall clock (time.NewTimer); tests use short intervals and
// wait for OnChange instead of sleeping.
package apphealth
