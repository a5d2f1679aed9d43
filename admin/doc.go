// Package admin serves the admin API: health, readiness, metrics, status,
// dead letters, replay and redrive, over small interfaces of the parts it
// reports on.
//
// # Guarantees
//
//   - /healthz, /readyz and /metrics are always open (probes, scrapes).
//   - /v1/* needs the admin token when one is set; without one it answers
//     loopback callers only (403 remote-admin-needs-token otherwise), so
//     no one on the pod network can replay or redrive by default.
//   - No answer contains a message body, a token or a password.
package admin
