// Package config owns ferry's FERRY_* environment variables: it parses them
// with caarlos0/env, validates what the types alone cannot, and names the
// variable in every error (never the Go field). DESIGN.md's Configuration
// table is the list; Config's tags are its only copy in code.
//
// # Guarantees
//
//   - Every error Load returns is, or joins, *VarError values whose Var is a
//     FERRY_ variable name; main exits 2 on them.
//   - Secrets (tokens, the Redis URL's password, the contents of the *_FILE
//     variables) never appear in an error.
//   - Subscriptions and publish-topic patterns are parsed once, by Load.
package config
