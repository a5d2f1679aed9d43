package breaker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// State is a breaker's state. The values are those of the
// ferry_breaker_state gauge.
type State int

// The states of a breaker.
const (
	Closed   State = 0 // requests flow; outcomes are counted
	HalfOpen State = 1 // a few probe requests test the app
	Open     State = 2 // requests are refused
)

// String returns "closed", "half-open" or "open", the values of the
// `breaker` field of /v1/status.
func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case HalfOpen:
		return "half-open"
	case Open:
		return "open"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

func fromGobreaker(s gobreaker.State) State {
	switch s {
	case gobreaker.StateHalfOpen:
		return HalfOpen
	case gobreaker.StateOpen:
		return Open
	}
	return Closed
}

// Defaults used for zero fields of Settings; the first three match
// FERRY_BREAKER_FAILURE_RATIO, FERRY_BREAKER_MIN_REQUESTS and
// FERRY_BREAKER_OPEN_TIMEOUT.
const (
	DefaultFailureRatio   = 0.5
	DefaultMinRequests    = 20
	DefaultOpenTimeout    = 30 * time.Second
	DefaultHalfOpenProbes = 1
	DefaultWindow         = 60 * time.Second
	// DefaultConsecutiveFailures is the default of
	// FERRY_BREAKER_CONSECUTIVE_FAILURES. It is not applied to a zero
	// Settings.ConsecutiveFailures, which turns the rule off.
	DefaultConsecutiveFailures = 5
)

// windowBuckets is how finely the closed-state window rolls: outcomes age
// out one tenth of Window at a time.
const windowBuckets = 10

// Settings configures every breaker of a Set.
//
// FailureRatio trips a closed breaker when at least MinRequests outcomes
// were reported within Window and failures/outcomes >= FailureRatio. It must
// be in (0, 1]. If FailureRatio is 0, 0.5 is used.
//
// MinRequests is the number of outcomes needed before the ratio is trusted.
// If MinRequests is 0, 20 is used.
//
// OpenTimeout is how long a breaker stays open before it turns half-open.
// If OpenTimeout is 0, 30s is used.
//
// HalfOpenProbes is the number of requests let through while half-open; all
// must succeed to close the breaker. If HalfOpenProbes is 0, 1 is used.
//
// Window is the span of the rolling window over which a closed breaker
// counts outcomes. If Window is 0, 60s is used.
//
// ConsecutiveFailures also trips a closed breaker after this many failures
// in a row, whatever the window holds: after a busy minute the window is
// full of successes and the ratio alone reacts late to an app that just
// went away. If ConsecutiveFailures is 0, only the ratio trips (ferry's
// configuration defaults it to DefaultConsecutiveFailures).
//
// OnStateChange, if not nil, is called on every transition with the name of
// the breaker (see the package documentation for how it is called).
type Settings struct {
	FailureRatio   float64
	MinRequests    uint32
	OpenTimeout    time.Duration
	HalfOpenProbes uint32
	Window         time.Duration

	ConsecutiveFailures uint32

	OnStateChange func(name string, from, to State)
}

// Validate reports the first invalid field: a FailureRatio outside (0, 1]
// (0 itself means the default) or a negative OpenTimeout or Window. The error
// names the Go field; the caller maps it to its own configuration name.
// New does not fail on invalid Settings: each invalid field behaves as its
// zero value.
func (s Settings) Validate() error {
	switch {
	case math.IsNaN(s.FailureRatio) || s.FailureRatio < 0 || s.FailureRatio > 1:
		return fmt.Errorf("breaker settings: FailureRatio %v is outside (0, 1]", s.FailureRatio)
	case s.OpenTimeout < 0:
		return fmt.Errorf("breaker settings: OpenTimeout %v is negative", s.OpenTimeout)
	case s.Window < 0:
		return fmt.Errorf("breaker settings: Window %v is negative", s.Window)
	}
	return nil
}

func (s Settings) norm() Settings {
	if !(s.FailureRatio > 0 && s.FailureRatio <= 1) {
		s.FailureRatio = DefaultFailureRatio
	}
	if s.MinRequests == 0 {
		s.MinRequests = DefaultMinRequests
	}
	if s.OpenTimeout <= 0 {
		s.OpenTimeout = DefaultOpenTimeout
	}
	if s.HalfOpenProbes == 0 {
		s.HalfOpenProbes = DefaultHalfOpenProbes
	}
	if s.Window <= 0 {
		s.Window = DefaultWindow
	}
	return s
}

// ErrOpen is returned by Allow when the breaker refuses a request: it is
// open, or half-open with all of its probes handed out. Allow returns this
// very value, unwrapped.
var ErrOpen = errors.New("circuit breaker open")

// errFailure is what a failed outcome reports to gobreaker; only its being
// non-nil matters.
var errFailure = errors.New("delivery failed")

// Set is a collection of independent breakers, one per name, created on
// first use with the Set's Settings. It is safe for concurrent use.
type Set struct {
	st Settings

	mu sync.RWMutex
	m  map[string]*breaker
}

// New returns an empty Set whose breakers use s. Invalid fields of s (see
// Settings.Validate) behave as their zero values.
func New(s Settings) *Set {
	return &Set{st: s.norm(), m: make(map[string]*breaker)}
}

// Allow asks the breaker called name whether a request may proceed. If it
// may, done must be called exactly once with the outcome (false for what
// counts as a failure: retry, timeout, error, unreachable); later calls are
// ignored. If it may not, err is ErrOpen and the request does not count.
func (s *Set) Allow(name string) (done func(success bool), err error) {
	b := s.breaker(name)
	b.mu.Lock()
	if tr := b.trial; tr != nil {
		defer b.mu.Unlock()
		if tr.failed || tr.left == 0 {
			return nil, ErrOpen
		}
		tr.left--
		return b.trialDone(tr), nil
	}
	cb := b.cb
	b.mu.Unlock()
	report, err := cb.Allow()
	b.flush()
	if err != nil {
		if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
			return nil, ErrOpen
		}
		return nil, fmt.Errorf("breaker %q: %w", name, err) // gobreaker has no other error today
	}
	var called atomic.Bool
	return func(success bool) {
		if !called.CompareAndSwap(false, true) {
			return
		}
		if success {
			report(nil)
		} else {
			report(errFailure)
		}
		b.flush()
	}, nil
}

// State returns the state of the breaker called name; a name never used is
// Closed (and is not created).
func (s *Set) State(name string) State {
	b := s.lookup(name)
	if b == nil {
		return Closed
	}
	st, _ := b.state()
	return st
}

// OpenUntil returns when the breaker called name turns half-open, if it is
// open now; otherwise the zero Time. The transition happens on the first
// call into the Set for that name after that instant, so a caller that got
// ErrOpen can sleep until then and call Allow again. See also Wait.
func (s *Set) OpenUntil(name string) time.Time {
	b := s.lookup(name)
	if b == nil {
		return time.Time{}
	}
	if st, _ := b.state(); st != Open {
		return time.Time{}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.openUntil
}

// Wait blocks until the breaker called name may let a request through:
// it is closed, or half-open with a probe left. It returns ctx.Err() if ctx
// ends first. It sleeps while the breaker is open and, half-open with every
// probe handed out, until a probe's outcome changes the state; it never
// spins. Reset and Trial wake it at once. Allow may still refuse afterwards
// if other callers got there first.
func (s *Set) Wait(ctx context.Context, name string) error {
	b := s.lookup(name)
	if b == nil {
		return nil
	}
	for {
		b.mu.Lock()
		changed := b.changed // taken before reading the state: no transition is missed
		b.mu.Unlock()

		st, probe := b.state()
		var timer *time.Timer
		var expired <-chan time.Time
		switch st {
		case Closed:
			return nil
		case HalfOpen:
			if probe {
				return nil
			}
		case Open:
			b.mu.Lock()
			d := time.Until(b.openUntil)
			b.mu.Unlock()
			// gobreaker turns half-open strictly after its own expiry, which
			// openUntil may equal: never wait less than a millisecond.
			timer = time.NewTimer(max(d, time.Millisecond))
			expired = timer.C
		}
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return ctx.Err()
		case <-changed:
		case <-expired:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// Reset closes the breaker called name at once, with fresh counts, whatever
// its state: the app is known to be back (a health probe passed). Outcomes
// still to be reported for requests allowed before the reset are ignored.
// OnStateChange sees the transition (none if it was closed already) and
// Wait returns. It reports whether the breaker was open or half-open; a
// name never used is left alone.
func (s *Set) Reset(name string) bool {
	b := s.lookup(name)
	if b == nil {
		return false
	}
	st, _ := b.state() // lazy transitions first, so that from is right
	b.mu.Lock()
	b.renew()
	b.setLocked(Closed)
	b.mu.Unlock()
	b.flush()
	return st != Closed
}

// ResetAll resets every breaker of the Set (see Reset).
func (s *Set) ResetAll() {
	for _, name := range s.names() {
		s.Reset(name)
	}
}

// Trial turns an open breaker called name half-open at once, without
// waiting for OpenTimeout: the app seems to be back (its port accepts
// connections again) but has not proven it. HalfOpenProbes requests are let
// through; when all succeed the breaker closes, the first failure opens it
// again for a full OpenTimeout. Trial reports whether it did anything: a
// breaker that is closed or already half-open, or a name never used, is
// left alone.
func (s *Set) Trial(name string) bool {
	b := s.lookup(name)
	if b == nil {
		return false
	}
	if st, _ := b.state(); st != Open {
		return false
	}
	b.mu.Lock()
	if b.last != Open { // changed since: leave it to the newer news
		b.mu.Unlock()
		return false
	}
	b.renew()
	b.trial = &trial{left: b.probes}
	b.setLocked(HalfOpen)
	b.mu.Unlock()
	b.flush()
	return true
}

func (s *Set) names() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	names := make([]string, 0, len(s.m))
	for name := range s.m {
		names = append(names, name)
	}
	return names
}

func (s *Set) lookup(name string) *breaker {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.m[name]
}

func (s *Set) breaker(name string) *breaker {
	if b := s.lookup(name); b != nil {
		return b
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.m[name]; b != nil {
		return b
	}
	b := newBreaker(name, s.st)
	s.m[name] = b
	return b
}

type transition struct{ from, to State }

// trial is a half-open period started by Set.Trial, kept in front of a
// fresh (closed) gobreaker, since gobreaker cannot be put half-open.
type trial struct {
	left   uint32 // probes still to hand out
	ok     uint32 // probes that succeeded
	failed bool   // a probe failed: the breaker is being opened
}

// breaker is one gobreaker plus what gobreaker does not offer: the open
// deadline, a channel closed on every transition, OnStateChange calls made
// outside gobreaker's lock, and Reset and Trial, which replace the gobreaker
// (it has no public reset) and ignore what the old one still says.
type breaker struct {
	name   string
	st     Settings
	probes uint32
	notify func(name string, from, to State)
	trip   atomic.Bool // makes ReadyToTrip true: opens a fresh gobreaker after a failed trial

	mu        sync.Mutex    // guards the fields below; never held while calling into a gobreaker
	changed   chan struct{} // closed and replaced on every recorded state change
	cb        *gobreaker.TwoStepCircuitBreaker[struct{}]
	gen       uint64 // generation of cb; callbacks of older ones are ignored
	last      State  // the state last recorded, the from of the next transition
	trial     *trial
	openUntil time.Time
	pending   []transition

	notifying sync.Mutex // held by the one goroutine delivering pending transitions
}

func newBreaker(name string, st Settings) *breaker {
	b := &breaker{
		name:    name,
		st:      st,
		probes:  st.HalfOpenProbes,
		notify:  st.OnStateChange,
		changed: make(chan struct{}),
	}
	b.renew()
	return b
}

// renew replaces the gobreaker by a fresh, closed one and ends any trial.
// Called with b.mu held (or before b is shared).
func (b *breaker) renew() {
	b.gen++
	gen := b.gen
	st := b.st
	minReq, ratio, consecutive := uint64(st.MinRequests), st.FailureRatio, st.ConsecutiveFailures
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:         b.name,
		MaxRequests:  st.HalfOpenProbes,
		Interval:     st.Window,
		BucketPeriod: st.Window / windowBuckets,
		Timeout:      st.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			if b.trip.Load() {
				return true
			}
			if consecutive > 0 && c.ConsecutiveFailures >= consecutive {
				return true
			}
			// Counts.Requests includes requests still in flight; the ratio
			// is over reported outcomes only.
			n := uint64(c.TotalSuccesses) + uint64(c.TotalFailures)
			return n >= minReq && float64(c.TotalFailures) >= ratio*float64(n)
		},
		OnStateChange: func(_ string, _, to gobreaker.State) { b.onStateChange(gen, to) },
	})
	b.trial = nil
}

// state returns the current state (running gobreaker's lazy open → half-open
// transition) and whether a request may be let through in half-open.
func (b *breaker) state() (st State, probe bool) {
	b.mu.Lock()
	if tr := b.trial; tr != nil {
		probe = !tr.failed && tr.left > 0
		b.mu.Unlock()
		return HalfOpen, probe
	}
	cb := b.cb
	b.mu.Unlock()
	st = fromGobreaker(cb.State())
	if st == HalfOpen {
		probe = cb.Counts().Requests < b.probes
	}
	b.flush()
	return st, probe
}

// trialDone is the done func of a probe handed out by a trial.
func (b *breaker) trialDone(tr *trial) func(success bool) {
	var called atomic.Bool
	return func(success bool) {
		if !called.CompareAndSwap(false, true) {
			return
		}
		b.mu.Lock()
		if b.trial != tr || tr.failed {
			b.mu.Unlock()
			return // reset since, or another probe already failed
		}
		if success {
			tr.ok++
			if tr.ok >= b.probes {
				b.trial = nil // the fresh gobreaker behind it is closed
				b.setLocked(Closed)
			}
			b.mu.Unlock()
			b.flush()
			return
		}
		tr.failed = true
		cb := b.cb
		b.mu.Unlock()
		// Open the fresh gobreaker, so that OpenTimeout and its half-open
		// probing apply as after any trip.
		b.trip.Store(true)
		if report, err := cb.Allow(); err == nil {
			report(errFailure)
		}
		b.trip.Store(false)
		b.mu.Lock()
		if b.trial == tr {
			b.trial = nil
			if b.last != Open { // the gobreaker was replaced meanwhile: record it anyway
				b.setLocked(Open)
			}
		}
		b.mu.Unlock()
		b.flush()
	}
}

// onStateChange runs under gobreaker's lock: record, don't call out.
func (b *breaker) onStateChange(gen uint64, to gobreaker.State) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if gen != b.gen {
		return // a replaced gobreaker
	}
	b.setLocked(fromGobreaker(to))
}

// setLocked records a transition to to. Called with b.mu held.
func (b *breaker) setLocked(to State) {
	now := time.Now() // not before gobreaker's own now: openUntil is never early
	if to == Open {
		b.openUntil = now.Add(b.st.OpenTimeout)
	} else {
		b.openUntil = time.Time{}
	}
	close(b.changed)
	b.changed = make(chan struct{})
	if to == b.last {
		return
	}
	if b.notify != nil {
		b.pending = append(b.pending, transition{b.last, to})
	}
	b.last = to
}

// flush delivers pending transitions to OnStateChange, in order and one at
// a time. If another goroutine is delivering (or OnStateChange itself called
// into the Set), it leaves the work to that one, which re-checks after it
// lets go, so no transition is stranded.
func (b *breaker) flush() {
	if b.notify == nil {
		return
	}
	for b.hasPending() {
		if !b.notifying.TryLock() {
			return
		}
		b.deliver()
	}
}

func (b *breaker) hasPending() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending) > 0
}

func (b *breaker) deliver() {
	defer b.notifying.Unlock()
	for {
		b.mu.Lock()
		batch := b.pending
		b.pending = nil
		b.mu.Unlock()
		if len(batch) == 0 {
			return
		}
		for _, t := range batch {
			b.notify(b.name, t.from, t.to)
		}
	}
}
