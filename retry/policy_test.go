package retry

import (
	"math"
	"strings"
	"testing"
	"time"
)

const almostOne = 0.9999999999999999 // largest float64 below 1

func fixed(r float64) func() float64 { return func() float64 { return r } }

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		p       Policy
		wantErr string // field named in the error; "" ⇒ valid
	}{
		{"zero", Policy{}, ""},
		{"explicit", Policy{Initial: time.Second, Max: time.Minute, MaxAttempts: 3}, ""},
		{"initial equals max", Policy{Initial: time.Second, Max: time.Second}, ""},
		{"negative initial", Policy{Initial: -1}, "Initial"},
		{"negative max", Policy{Max: -1}, "Max"},
		{"negative attempts", Policy{MaxAttempts: -1}, "MaxAttempts"},
		{"initial above max", Policy{Initial: time.Minute, Max: time.Second}, "Initial"},
		{"initial above default max", Policy{Initial: time.Minute}, "Initial"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate() = %v, want an error naming %s", err, tt.wantErr)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	p := Policy{Initial: 100 * time.Millisecond, Max: 10 * time.Second}
	ceilings := []struct {
		attempt int
		ceil    time.Duration
	}{
		{-3, 100 * time.Millisecond}, // below 1 counts as 1
		{0, 100 * time.Millisecond},
		{1, 100 * time.Millisecond},
		{2, 200 * time.Millisecond},
		{3, 400 * time.Millisecond},
		{7, 6400 * time.Millisecond},
		{8, 10 * time.Second}, // 12.8s capped
		{30, 10 * time.Second},
		{62, 10 * time.Second},
		{63, 10 * time.Second},
		{64, 10 * time.Second},
		{1000, 10 * time.Second},
		{math.MaxInt, 10 * time.Second},
	}
	for _, c := range ceilings {
		p.Rand = fixed(0)
		if got := p.Backoff(c.attempt); got != 0 {
			t.Errorf("attempt %d, rand 0: got %v, want 0", c.attempt, got)
		}
		p.Rand = fixed(almostOne)
		got := p.Backoff(c.attempt)
		if got >= c.ceil || got < c.ceil-time.Microsecond {
			t.Errorf("attempt %d, rand≈1: got %v, want just below %v", c.attempt, got, c.ceil)
		}
		p.Rand = fixed(0.5)
		if got, want := p.Backoff(c.attempt), c.ceil/2; got != want {
			t.Errorf("attempt %d, rand 0.5: got %v, want %v", c.attempt, got, want)
		}
	}
}

func TestBackoffExtremes(t *testing.T) {
	huge := Policy{Initial: time.Nanosecond, Max: time.Duration(math.MaxInt64), Rand: fixed(almostOne)}
	for _, n := range []int{1, 2, 62, 63, 64, 65, math.MaxInt} {
		if got := huge.Backoff(n); got < 0 {
			t.Errorf("Max=MaxInt64, attempt %d: negative %v", n, got)
		}
	}
	if got := huge.Backoff(64); got < time.Duration(math.MaxInt64/2) {
		t.Errorf("Max=MaxInt64, attempt 64: got %v, want near MaxInt64", got)
	}

	// A broken Rand is clamped rather than trusted.
	p := Policy{}
	for _, r := range []float64{-1, math.NaN(), 1, 2, math.Inf(1)} {
		p.Rand = fixed(r)
		if got := p.Backoff(1); got < 0 || got > DefaultInitial {
			t.Errorf("rand %v: got %v, want within [0, %v]", r, got, DefaultInitial)
		}
	}

	// Defaults, and the real generator stays in range.
	var zero Policy
	for n := 1; n <= 20; n++ {
		ceil := min(DefaultInitial<<(n-1), DefaultMax)
		if got := zero.Backoff(n); got < 0 || got >= ceil {
			t.Errorf("default policy attempt %d: %v outside [0, %v)", n, got, ceil)
		}
	}
}

func TestDelay(t *testing.T) {
	p := Policy{Initial: time.Second, Max: 30 * time.Second, Rand: fixed(0.5)}
	tests := []struct {
		name       string
		attempt    int
		retryAfter time.Duration
		want       time.Duration
	}{
		{"no retry-after", 3, 0, 2 * time.Second},                // 0.5 · 4s
		{"retry-after shorter", 3, time.Second, 2 * time.Second}, // backoff wins
		{"retry-after longer", 3, 10 * time.Second, 10 * time.Second},
		{"retry-after at cap", 3, 30 * time.Second, 30 * time.Second},
		{"retry-after over cap", 3, time.Hour, 30 * time.Second},
		{"retry-after max duration", 3, maxDuration, 30 * time.Second},
		{"negative retry-after ignored", 3, -time.Hour, 2 * time.Second},
		{"huge attempt", math.MaxInt, 0, 15 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := p.Delay(tt.attempt, tt.retryAfter); got != tt.want {
				t.Errorf("Delay(%d, %v) = %v, want %v", tt.attempt, tt.retryAfter, got, tt.want)
			}
		})
	}
}

func TestExhausted(t *testing.T) {
	tests := []struct {
		max, attempt int
		want         bool
	}{
		{0, 9, false}, {0, 10, true}, // default 10
		{1, 1, true},
		{3, 2, false}, {3, 3, true}, {3, 4, true},
	}
	for _, tt := range tests {
		if got := (Policy{MaxAttempts: tt.max}).Exhausted(tt.attempt); got != tt.want {
			t.Errorf("MaxAttempts %d: Exhausted(%d) = %v, want %v", tt.max, tt.attempt, got, tt.want)
		}
	}
}
