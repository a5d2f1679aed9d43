// Package kubetest renders ferry's kustomizations under deploy/kubernetes with
// the kustomize API itself (sigs.k8s.io/kustomize/api/krusty) and checks
// every object they produce; it holds no code that ferry runs.
//
// It is a module of its own so that the kustomize and Kubernetes API
// dependencies stay out of ferry's go.mod. The tests render
//
//   - kubernetes/base: the example app, Redis, the Secret, PodMonitor and
//     PrometheusRule;
//   - kubernetes/components/ferry applied to plain Deployments
//     (testdata/plain): the sidecar lands on the opted-in one only and
//     leaves everything else as it was;
//   - kubernetes/overlays/example: base plus component;
//   - kubernetes/keda: the ScaledObject and its TriggerAuthentication;
//
// decode every object strictly (unknown or duplicate fields fail) into its
// k8s.io/api type, or for custom resources into a local struct of the fields
// their operators read, and check the sidecar field by field. Environment
// variable names are checked against the contract, ../shared/DESIGN.md
// beside the repository; the tests fail, not skip, without it.
//
// Run: cd deploy/kubetest && go test -count=1 ./... (make test does).
package kubetest
