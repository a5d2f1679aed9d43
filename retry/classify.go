package retry

import (
	"context"
	"errors"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Result is the outcome of one delivery attempt. Its value is the `result`
// label of ferry_delivery_attempts_total.
type Result string

// The outcomes of a delivery attempt, one per row of DESIGN.md's
// "Delivery to the app" table.
const (
	// Success: the app answered 2xx. Ack the message.
	Success Result = "success"
	// Retry: the app answered 408, 429, 5xx, or something that is neither
	// 2xx nor 4xx (1xx, 3xx). Try again after a delay.
	Retry Result = "retry"
	// Timeout: the request was sent and no answer came in time. Try again
	// after a delay.
	Timeout Result = "timeout"
	// Error: the request was sent and the connection broke (reset, EOF)
	// without an answer, or another transport failure after it was sent.
	// Try again after a delay.
	Error Result = "error"
	// Unreachable: the app is not there. The connection was refused, the
	// name did not resolve, the dial failed, or the connection broke
	// before the request was written. The app cannot have seen the
	// request: pause the subscription and spend no attempt.
	Unreachable Result = "unreachable"
	// Poison: the app answered 4xx other than 408 and 429; retrying cannot
	// help. Dead-letter at once.
	Poison Result = "poison"
)

// Failure reports whether r counts as a failure for the circuit breaker:
// Retry, Timeout, Error and Unreachable do; Success and Poison mean the app
// answered.
func (r Result) Failure() bool {
	switch r {
	case Retry, Timeout, Error, Unreachable:
		return true
	}
	return false
}

// SpendsAttempt reports whether an attempt that ended with r counts
// towards FERRY_RETRY_MAX_ATTEMPTS: every result but Unreachable, because
// only then did the app (possibly) see the request.
func (r Result) SpendsAttempt() bool { return r != Unreachable }

// Classify maps one attempt to a Result when nothing is known about how far
// the request got (see [Attempt.Classify] for when it is). err is the
// transport error of the HTTP call; when it is not nil, status is ignored:
//
//   - a failed dial (connection refused, no route, a dial timeout) or a DNS
//     failure is Unreachable: the request cannot have been sent;
//   - a timeout (context.DeadlineExceeded, or a net.Error whose Timeout()
//     is true, which covers http.Client.Timeout and os.ErrDeadlineExceeded)
//     is Timeout;
//   - anything else is Error, including a reset or EOF, which may have
//     come after the app read the request.
//
// Otherwise 2xx is Success; 408, 429 and 5xx are Retry; any other 4xx is
// Poison; anything else (1xx, 3xx, out of range) is Retry.
func Classify(status int, err error) Result {
	return ClassifySent(status, err, true)
}

// ClassifySent is [Classify] for an attempt whose request was known to be
// written to the connection (sent true) or known not to be (sent false).
// A transport error of a request that was not sent is Unreachable, whatever
// it is (reset, EOF, a connection closed while idle, a timeout before the
// request was written, a TLS handshake failure): the app cannot have seen
// it. Only context.Canceled stays Error, since it is the caller giving up
// (shutdown), not the app; the caller checks its own context first.
func ClassifySent(status int, err error, sent bool) Result {
	if err == nil {
		return classifyStatus(status)
	}
	if errors.Is(err, context.Canceled) {
		return Error
	}
	if notSent(err) || !sent {
		return Unreachable
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return Timeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return Timeout
	}
	return Error
}

// notSent reports whether err proves that no request reached the app: a
// refused connection, a failed name lookup, or any failed dial.
func notSent(err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func classifyStatus(status int) Result {
	switch {
	case status >= 200 && status <= 299:
		return Success
	case status == http.StatusRequestTimeout, status == http.StatusTooManyRequests:
		return Retry
	case status >= 400 && status <= 499:
		return Poison
	}
	return Retry
}

// maxDuration stands in for a Retry-After too large for a time.Duration;
// Policy.Delay caps it at Max anyway.
const maxDuration = time.Duration(math.MaxInt64)

// ParseRetryAfter parses a Retry-After header value (RFC 9110 §10.2.3):
// delta-seconds ("120") or an HTTP-date ("Wed, 21 Oct 2015 07:28:00 GMT",
// and the obsolete forms http.ParseTime accepts), relative to now.
//
// ok is false for an empty or malformed value (including a negative or
// fractional number), which the caller treats as no Retry-After. A date at or
// before now is valid and gives 0, true: the server says "now". A number too
// large for a time.Duration gives the largest Duration.
func ParseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if isDigits(v) {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n > uint64(maxDuration/time.Second) {
			return maxDuration, true // only a range error is possible here
		}
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
