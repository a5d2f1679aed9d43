// Package deploy holds ferry's deployment artifacts and the tests that keep
// them honest; it has no code that ferry itself runs.
//
//   - grafana/ferry.json: the Grafana dashboard.
//   - prometheus/alerts.yaml: alert rules with runbooks, and alerts_test.yaml,
//     their promtool unit tests.
//   - kubernetes/: kustomize: components/ferry adds ferry as a native
//     sidecar to any opted-in Deployment; base/ is the example app with its
//     Secret, PodMonitor, PrometheusRule and a Redis configured for ferry's
//     guarantee; overlays/example applies both; keda/ autoscales the example
//     subscriber on its consumer-group lag. Their tests are in kubetest/, a
//     module of its own (the kustomize API is a heavy dependency).
//
// The tests fail when the dashboard or an alert names a metric that ferry does
// not export, when promtool rejects the rules or their unit tests, when the
// manifests name an environment variable ferry does not read, and when the
// binary built the Dockerfile's way is not statically linked. promtool must be
// installed (apt-get install -y prometheus); the tests do not skip without it.
package deploy
