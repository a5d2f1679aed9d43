package retry

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Defaults used for zero fields of a Policy; they match the defaults of
// FERRY_RETRY_INITIAL_INTERVAL, FERRY_RETRY_MAX_INTERVAL and
// FERRY_RETRY_MAX_ATTEMPTS.
const (
	DefaultInitial     = 200 * time.Millisecond
	DefaultMax         = 30 * time.Second
	DefaultMaxAttempts = 10
)

// Policy is an exponential backoff (×2 per attempt) with full jitter, capped
// at Max, giving up after MaxAttempts attempts. The zero value is usable.
//
// Initial is the ceiling of the first delay. If Initial is 0, 200ms is used.
//
// Max caps every delay, including one asked for by Retry-After.
// If Max is 0, 30s is used.
//
// MaxAttempts is the number of attempts, the first one included, before
// giving up. If MaxAttempts is 0, 10 is used.
//
// Rand returns a uniform number in [0, 1) and must be safe for concurrent use
// if the Policy is shared; it exists so tests can pin the jitter.
// If Rand is nil, math/rand/v2's Float64 is used.
type Policy struct {
	Initial     time.Duration
	Max         time.Duration
	MaxAttempts int
	Rand        func() float64
}

// Validate reports the first invalid field: a negative Initial, Max or
// MaxAttempts, or an Initial above Max once defaults are applied. The error
// names the Go field; the caller maps it to its own configuration name.
func (p Policy) Validate() error {
	switch {
	case p.Initial < 0:
		return fmt.Errorf("retry policy: Initial %v is negative", p.Initial)
	case p.Max < 0:
		return fmt.Errorf("retry policy: Max %v is negative", p.Max)
	case p.MaxAttempts < 0:
		return fmt.Errorf("retry policy: MaxAttempts %d is negative", p.MaxAttempts)
	}
	initial, maxd := p.Initial, p.Max
	if initial == 0 {
		initial = DefaultInitial
	}
	if maxd == 0 {
		maxd = DefaultMax
	}
	if initial > maxd {
		return fmt.Errorf("retry policy: Initial %v is above Max %v", initial, maxd)
	}
	return nil
}

// norm applies defaults; invalid fields behave as zero values so that the
// arithmetic below can trust its inputs.
func (p Policy) norm() Policy {
	if p.Initial <= 0 {
		p.Initial = DefaultInitial
	}
	if p.Max <= 0 {
		p.Max = DefaultMax
	}
	if p.Initial > p.Max {
		p.Initial = p.Max
	}
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = DefaultMaxAttempts
	}
	if p.Rand == nil {
		p.Rand = rand.Float64
	}
	return p
}

// ceiling is min(Max, Initial·2^(attempt-1)) without overflow.
func (p Policy) ceiling(attempt int) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	shift := uint(attempt - 1)
	// Initial ≤ Max, so once Initial·2^shift would pass Max, Max is the answer;
	// testing against Max>>shift never overflows.
	if shift >= 63 || p.Initial > p.Max>>shift {
		return p.Max
	}
	return p.Initial << shift
}

// Backoff is the delay after failed attempt n (1-based; n < 1 counts as 1):
// a uniform random duration in [0, min(Max, Initial·2^(n-1))).
// Huge attempt numbers simply give a delay below Max.
func (p Policy) Backoff(attempt int) time.Duration {
	p = p.norm()
	ceil := p.ceiling(attempt)
	r := p.Rand()
	switch {
	case !(r > 0): // also NaN from a broken Rand
		return 0
	case r >= 1:
		return ceil
	}
	d := time.Duration(r * float64(ceil))
	if d < 0 || d > ceil { // float rounding near MaxInt64
		return ceil
	}
	return d
}

// Delay is the wait after failed attempt n: Backoff(n), unless retryAfter
// (the app's Retry-After, 0 when absent) is longer. The result never exceeds
// Max. A negative retryAfter is ignored.
func (p Policy) Delay(attempt int, retryAfter time.Duration) time.Duration {
	d := p.Backoff(attempt)
	d = max(d, retryAfter)
	return min(d, p.norm().Max)
}

// Exhausted reports whether no attempt may follow failed attempt n, that is
// n >= MaxAttempts. The message is then dead-lettered with reason exhausted.
func (p Policy) Exhausted(attempt int) bool {
	return attempt >= p.norm().MaxAttempts
}
