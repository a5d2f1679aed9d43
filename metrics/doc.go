// Package metrics owns ferry's Prometheus families: every ferry_* name of
// DESIGN.md is registered here, on the registry main hands in, and nowhere
// else.
//
// # Guarantees
//
//   - Every family is exported from the start: gauges at their current
//     value, counters at 0 for every label value known at start.
//   - Label values are bounded: subscriptions come from configuration, the
//     publish topic label is bounded by TopicLabels, never a message id.
//   - The outbox families read the outbox's own Stats at scrape time: no
//     copying, no drift.
package metrics
