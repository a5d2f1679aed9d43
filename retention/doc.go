// Package retention trims topic streams to FERRY_STREAM_MAX_LEN and
// FERRY_STREAM_MAX_AGE without removing what a consumer group still needs.
//
// # Guarantees
//
//   - Never trims a group's oldest pending entry or anything after it (its
//     entries being retried and those not yet delivered).
//   - A round that cannot tell (a group's lag unknown, or too many entries
//     between its oldest pending and last delivered) trims too little,
//     never too much.
package retention
