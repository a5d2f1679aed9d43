// Package adminclient calls a running ferry's admin API (FERRY_ADMIN_ADDR)
// for the `ferry status`, `ferry deadletters`, `ferry redrive` and
// `ferry replay` subcommands, so that an operator can reach it from inside
// a distroless container that has no shell or curl.
//
// It owns: finding the admin API and its token from the same environment
// the sidecar reads (FromEnv), one bounded HTTP call per operation (every
// call has a timeout), and turning every failure into an *Error whose
// message is one line a human can act on ("cannot reach the admin API at
// 127.0.0.1:7401: connection refused", "unauthorized: set
// FERRY_ADMIN_TOKEN", the problem+json detail of a 400 or 404).
//
// It promises: every successful call returns the body exactly as the
// sidecar sent it (for --json) next to its decoded form (for tables);
// tokens never appear in an error. It imports nothing else of ferry's.
package adminclient
