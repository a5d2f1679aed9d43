package retry

import (
	"context"
	"errors"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
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
	// Timeout: no answer in time. Try again after a delay.
	Timeout Result = "timeout"
	// Error: no answer at all (refused, reset, EOF, DNS, TLS…). Try again.
	Error Result = "error"
	// Poison: the app answered 4xx other than 408 and 429; retrying cannot
	// help. Dead-letter at once.
	Poison Result = "poison"
)

// Failure reports whether r counts as a failure for the circuit breaker:
// Retry, Timeout and Error do; Success and Poison mean the app answered.
func (r Result) Failure() bool {
	switch r {
	case Retry, Timeout, Error:
		return true
	}
	return false
}

// Classify maps one attempt to a Result. err is the transport error of the
// HTTP call; when it is not nil, status is ignored: a timeout
// (context.DeadlineExceeded, or a net.Error whose Timeout() is true, which
// covers http.Client.Timeout and os.ErrDeadlineExceeded) is Timeout, anything
// else is Error. Otherwise 2xx is Success; 408, 429 and 5xx are Retry; any
// other 4xx is Poison; anything else (1xx, 3xx, out of range) is Retry.
func Classify(status int, err error) Result {
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return Timeout
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return Timeout
		}
		return Error
	}
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
