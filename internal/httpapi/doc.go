// Package httpapi is the HTTP plumbing ferry's two APIs share: a router
// whose own 404 and 405 answers are RFC 9457 problems, problem+json and
// JSON answers, Retry-After, bearer-token guards and strict JSON decoding.
//
// # Guarantees
//
//   - Every error answer is application/problem+json with type, title,
//     status and detail; a 405 carries Allow, a 401 WWW-Authenticate.
//   - Tokens are compared in constant time; the Bearer scheme is matched
//     case-insensitively.
//   - DecodeStrict accepts exactly one JSON object with known, non-repeated
//     keys (compared case-folded, as encoding/json matches fields).
package httpapi
