package breaker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder collects OnStateChange calls.
type recorder struct {
	mu  sync.Mutex
	got []string
}

func (r *recorder) record(name string, from, to State) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, fmt.Sprintf("%s:%s->%s", name, from, to))
}

func (r *recorder) transitions() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

// report runs one allowed request with the given outcome.
func report(t *testing.T, s *Set, name string, success bool) {
	t.Helper()
	done, err := s.Allow(name)
	if err != nil {
		t.Fatalf("Allow(%q): %v", name, err)
	}
	done(success)
}

// waitState polls until the breaker is in want; gobreaker has no clock to
// inject, so an OpenTimeout has to elapse for real. Bounded by a deadline.
func waitState(t *testing.T, s *Set, name string, want State) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.State(name) != want {
		if time.Now().After(deadline) {
			t.Fatalf("breaker %q: state %s, want %s after 5s", name, s.State(name), want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{Closed: "closed", HalfOpen: "half-open", Open: "open", 7: "State(7)"} {
		if got := s.String(); got != want {
			t.Errorf("State(%d).String() = %q, want %q", int(s), got, want)
		}
	}
	if Closed != 0 || HalfOpen != 1 || Open != 2 {
		t.Error("State values must equal the ferry_breaker_state gauge: 0, 1, 2")
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		s       Settings
		wantErr string
	}{
		{"zero", Settings{}, ""},
		{"ratio 1", Settings{FailureRatio: 1}, ""},
		{"ratio small", Settings{FailureRatio: 0.01}, ""},
		{"ratio negative", Settings{FailureRatio: -0.1}, "FailureRatio"},
		{"ratio above 1", Settings{FailureRatio: 1.01}, "FailureRatio"},
		{"ratio NaN", Settings{FailureRatio: math.NaN()}, "FailureRatio"},
		{"open timeout negative", Settings{OpenTimeout: -time.Second}, "OpenTimeout"},
		{"window negative", Settings{Window: -time.Second}, "Window"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.s.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate() = %v, want an error naming %s", err, tt.wantErr)
			}
		})
	}
}

func TestTrip(t *testing.T) {
	tests := []struct {
		name     string
		outcomes []bool // true = success
		wantOpen bool
	}{
		{"below min requests, all failures", []bool{false, false, false}, false},
		{"at min requests, ratio reached", []bool{true, true, false, false}, true},
		{"at min requests, ratio not reached", []bool{true, true, true, false}, false},
		{"ratio reached later", []bool{true, true, true, false, false, false}, true},
		{"only successes", []bool{true, true, true, true, true, true}, false},
		{"ratio just below", []bool{true, true, true, false, false}, false}, // 2/5
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(Settings{FailureRatio: 0.5, MinRequests: 4, OpenTimeout: time.Hour})
			for _, ok := range tt.outcomes {
				report(t, s, "orders", ok)
			}
			if got := s.State("orders") == Open; got != tt.wantOpen {
				t.Fatalf("open = %v, want %v", got, tt.wantOpen)
			}
		})
	}
}

func TestInFlightNotCounted(t *testing.T) {
	s := New(Settings{FailureRatio: 0.5, MinRequests: 2, OpenTimeout: time.Hour})
	var pending []func(bool)
	for range 10 { // in flight: they must not dilute the ratio
		done, err := s.Allow("orders")
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, done)
	}
	report(t, s, "orders", false)
	report(t, s, "orders", false)
	if got := s.State("orders"); got != Open {
		t.Fatalf("state %s, want open: 2 of 2 reported outcomes failed", got)
	}
	for _, done := range pending {
		done(true) // from the closed period: ignored
	}
	if got := s.State("orders"); got != Open {
		t.Fatalf("state %s after stale successes, want open", got)
	}
}

func TestOpenRefusesThenHalfOpen(t *testing.T) {
	rec := &recorder{}
	const openTimeout = 200 * time.Millisecond // long enough that the checks below run while open
	s := New(Settings{FailureRatio: 1, MinRequests: 1, OpenTimeout: openTimeout, HalfOpenProbes: 2, OnStateChange: rec.record})

	report(t, s, "a", false)
	if got := s.State("a"); got != Open {
		t.Fatalf("state %s, want open", got)
	}
	if _, err := s.Allow("a"); err != ErrOpen {
		t.Fatalf("Allow while open: %v, want ErrOpen", err)
	}
	until := s.OpenUntil("a")
	if d := time.Until(until); d <= 0 || d > openTimeout {
		t.Fatalf("OpenUntil in %v, want within (0, %v]", d, openTimeout)
	}

	waitState(t, s, "a", HalfOpen)
	if time.Now().Before(until) {
		t.Fatalf("half-open before OpenUntil %v", until)
	}
	if !s.OpenUntil("a").IsZero() {
		t.Fatal("OpenUntil not zero while half-open")
	}
	done1, err := s.Allow("a")
	if err != nil {
		t.Fatalf("probe 1: %v", err)
	}
	done2, err := s.Allow("a")
	if err != nil {
		t.Fatalf("probe 2: %v", err)
	}
	if _, err := s.Allow("a"); !errors.Is(err, ErrOpen) {
		t.Fatalf("third request while half-open: %v, want ErrOpen", err)
	}
	done1(true)
	if got := s.State("a"); got != HalfOpen {
		t.Fatalf("after one of two probes succeeded: %s, want half-open", got)
	}
	done2(true)
	if got := s.State("a"); got != Closed {
		t.Fatalf("after both probes succeeded: %s, want closed", got)
	}
	done2(false) // extra calls are ignored
	if got := s.State("a"); got != Closed {
		t.Fatalf("after a second done call: %s, want closed", got)
	}

	want := []string{"a:closed->open", "a:open->half-open", "a:half-open->closed"}
	if got := rec.transitions(); !equal(got, want) {
		t.Fatalf("transitions %v, want %v", got, want)
	}
}

func TestHalfOpenFailureReopens(t *testing.T) {
	rec := &recorder{}
	s := New(Settings{FailureRatio: 1, MinRequests: 1, OpenTimeout: 200 * time.Millisecond, OnStateChange: rec.record})
	report(t, s, "a", false)
	waitState(t, s, "a", HalfOpen)
	report(t, s, "a", false)
	if got := s.State("a"); got != Open {
		t.Fatalf("after a failed probe: %s, want open", got)
	}
	if _, err := s.Allow("a"); err != ErrOpen {
		t.Fatalf("Allow after reopening: %v, want ErrOpen", err)
	}
	want := []string{"a:closed->open", "a:open->half-open", "a:half-open->open"}
	if got := rec.transitions(); !equal(got, want) {
		t.Fatalf("transitions %v, want %v", got, want)
	}
}

func TestNamesIndependent(t *testing.T) {
	s := New(Settings{FailureRatio: 1, MinRequests: 1, OpenTimeout: time.Hour})
	report(t, s, "a", false)
	if s.State("a") != Open || s.State("b") != Closed {
		t.Fatalf("a=%s b=%s, want open, closed", s.State("a"), s.State("b"))
	}
	report(t, s, "b", true)
	if s.State("b") != Closed {
		t.Fatalf("b=%s, want closed", s.State("b"))
	}
	if s.State("never-used") != Closed || !s.OpenUntil("never-used").IsZero() {
		t.Fatal("an unknown name must read as closed")
	}
	if err := s.Wait(context.Background(), "never-used"); err != nil {
		t.Fatal(err)
	}
}

func TestWindowForgetsOldOutcomes(t *testing.T) {
	const window = 50 * time.Millisecond
	st := Settings{FailureRatio: 0.5, MinRequests: 2, OpenTimeout: time.Hour, Window: window}

	// Within the window, 10 successes mask 2 failures.
	s := New(Settings{FailureRatio: 0.5, MinRequests: 2, OpenTimeout: time.Hour, Window: time.Hour})
	for range 10 {
		report(t, s, "a", true)
	}
	report(t, s, "a", false)
	report(t, s, "a", false)
	if got := s.State("a"); got != Closed {
		t.Fatalf("within the window: %s, want closed", got)
	}

	// Once they have aged out, they no longer do. Without a clock to inject,
	// the window has to pass for real.
	s = New(st)
	for range 10 {
		report(t, s, "a", true)
	}
	<-time.After(window + 2*window/windowBuckets)
	report(t, s, "a", false)
	report(t, s, "a", false)
	if got := s.State("a"); got != Open {
		t.Fatalf("after the window: %s, want open", got)
	}
}

func TestWait(t *testing.T) {
	s := New(Settings{FailureRatio: 1, MinRequests: 1, OpenTimeout: 30 * time.Millisecond})
	report(t, s, "a", false)

	// A context that ends first.
	long := New(Settings{FailureRatio: 1, MinRequests: 1, OpenTimeout: time.Hour})
	report(t, long, "a", false)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	if err := long.Wait(ctx, "a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with a short context: %v", err)
	}

	// Open: Wait returns once half-open.
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Wait(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if got := s.State("a"); got != HalfOpen {
		t.Fatalf("after Wait: %s, want half-open", got)
	}

	// Half-open with the probe handed out: Wait returns when the probe's
	// outcome closes the breaker.
	done, err := s.Allow("a")
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- s.Wait(ctx, "a") }()
	select {
	case err := <-waited:
		t.Fatalf("Wait returned %v while the only probe is in flight", err)
	case <-time.After(20 * time.Millisecond):
	}
	done(true)
	select {
	case err := <-waited:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("Wait did not return after the probe closed the breaker")
	}
	if got := s.State("a"); got != Closed {
		t.Fatalf("state %s, want closed", got)
	}
}

// OnStateChange may call back into the Set without deadlocking.
func TestOnStateChangeReentrant(t *testing.T) {
	var s *Set
	var seen []State
	s = New(Settings{FailureRatio: 1, MinRequests: 1, OpenTimeout: time.Hour,
		OnStateChange: func(name string, _, to State) {
			seen = append(seen, s.State(name))
			_ = s.OpenUntil(name)
			_, _ = s.Allow(name)
		}})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		done, err := s.Allow("a")
		if err == nil {
			done(false)
		}
	}()
	select {
	case <-finished:
	case <-time.After(5 * time.Second):
		t.Fatal("deadlock: OnStateChange calling into the Set")
	}
	if len(seen) != 1 || seen[0] != Open {
		t.Fatalf("callback saw %v, want [open]", seen)
	}
}

func TestConcurrent(t *testing.T) {
	var mu sync.Mutex
	last := map[string]State{}
	var bad []string
	var n int
	s := New(Settings{FailureRatio: 0.5, MinRequests: 5, OpenTimeout: time.Millisecond, HalfOpenProbes: 2, Window: 20 * time.Millisecond,
		OnStateChange: func(name string, from, to State) {
			mu.Lock()
			defer mu.Unlock()
			if from != last[name] || from == to {
				bad = append(bad, fmt.Sprintf("%s: %s->%s after %s", name, from, to, last[name]))
			}
			last[name] = to
			n++
		}})
	names := []string{"a", "b", "c", "d"}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 2000 {
				name := names[(g+i)%len(names)]
				done, err := s.Allow(name)
				if err == nil {
					done((i/200)%2 == 0) // phases of successes and of failures
				} else if err != ErrOpen {
					t.Errorf("Allow: %v", err)
					return
				}
				_ = s.State(name)
				_ = s.OpenUntil(name)
			}
		})
	}
	wg.Wait()
	// Every transition has been reported once State returns: it may cause
	// one (open → half-open) and delivers it before returning. Call it
	// without holding mu, which the callback takes.
	got := map[string]State{}
	for _, name := range names {
		got[name] = s.State(name)
	}
	mu.Lock()
	defer mu.Unlock()
	if n == 0 {
		t.Fatal("no transitions: the test exercised nothing")
	}
	t.Logf("%d transitions", n)
	if len(bad) > 0 {
		t.Fatalf("transitions out of order: %v", bad[:min(len(bad), 5)])
	}
	for _, name := range names {
		if got[name] != last[name] {
			t.Errorf("%s: state %s, last reported transition to %s", name, got[name], last[name])
		}
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestConsecutiveFailuresTripAfterBusyWindow: thousands of successes fill
// the window, so the ratio cannot trip on a few failures; five in a row do.
func TestConsecutiveFailuresTripAfterBusyWindow(t *testing.T) {
	rec := &recorder{}
	s := New(Settings{ConsecutiveFailures: 5, OpenTimeout: time.Hour, OnStateChange: rec.record})
	for range 5000 {
		report(t, s, "orders", true)
	}
	for range 4 {
		report(t, s, "orders", false)
	}
	report(t, s, "orders", true) // a success in between starts the count again
	for range 4 {
		report(t, s, "orders", false)
	}
	if st := s.State("orders"); st != Closed {
		t.Fatalf("state %s after 4 failures in a row, want closed", st)
	}
	report(t, s, "orders", false)
	if st := s.State("orders"); st != Open {
		t.Fatalf("state %s after 5 failures in a row, want open", st)
	}
	if got, want := rec.transitions(), []string{"orders:closed->open"}; !equal(got, want) {
		t.Errorf("transitions %v, want %v", got, want)
	}
}

// TestConsecutiveFailuresOff: 0 leaves only the ratio, which a busy window
// keeps closed.
func TestConsecutiveFailuresOff(t *testing.T) {
	s := New(Settings{ConsecutiveFailures: 0, OpenTimeout: time.Hour})
	for range 5000 {
		report(t, s, "orders", true)
	}
	for range 100 {
		report(t, s, "orders", false)
	}
	if st := s.State("orders"); st != Closed {
		t.Fatalf("state %s, want closed: 100 of 5100 is under the ratio", st)
	}
}

// trip opens name with failures in a row (ConsecutiveFailures must be set).
func trip(t *testing.T, s *Set, name string) {
	t.Helper()
	for s.State(name) != Open {
		report(t, s, name, false)
	}
}

func TestResetClosesAndWakesWaiters(t *testing.T) {
	rec := &recorder{}
	s := New(Settings{ConsecutiveFailures: 3, OpenTimeout: time.Hour, OnStateChange: rec.record})
	if s.Reset("never-used") {
		t.Error("Reset of a name never used reported a change")
	}
	trip(t, s, "orders")
	if _, err := s.Allow("orders"); !errors.Is(err, ErrOpen) {
		t.Fatalf("Allow on an open breaker: %v, want ErrOpen", err)
	}

	woke := make(chan error, 3)
	for range 3 {
		go func() { woke <- s.Wait(context.Background(), "orders") }()
	}
	select {
	case err := <-woke:
		t.Fatalf("Wait returned %v while open for an hour", err)
	case <-time.After(50 * time.Millisecond): // the waiters are blocked (nothing else to await)
	}
	if !s.Reset("orders") {
		t.Error("Reset of an open breaker reported no change")
	}
	for range 3 {
		select {
		case err := <-woke:
			if err != nil {
				t.Errorf("Wait after Reset: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a waiter did not wake within 5s of Reset")
		}
	}
	if st := s.State("orders"); st != Closed {
		t.Fatalf("state %s after Reset, want closed", st)
	}
	if !s.OpenUntil("orders").IsZero() {
		t.Error("OpenUntil not zero after Reset")
	}
	// Fresh counts: two more failures do not trip it (3 would).
	report(t, s, "orders", false)
	report(t, s, "orders", false)
	if st := s.State("orders"); st != Closed {
		t.Fatalf("state %s, want closed: counts start afresh after Reset", st)
	}
	if s.Reset("orders") {
		t.Error("Reset of a closed breaker reported a change")
	}
	if got, want := rec.transitions(), []string{"orders:closed->open", "orders:open->closed"}; !equal(got, want) {
		t.Errorf("transitions %v, want %v", got, want)
	}
}

// TestResetIgnoresOutcomesFromBefore: requests allowed before a Reset report
// to the replaced breaker and change nothing.
func TestResetIgnoresOutcomesFromBefore(t *testing.T) {
	s := New(Settings{ConsecutiveFailures: 2, OpenTimeout: time.Hour})
	var dones []func(bool)
	for range 5 {
		done, err := s.Allow("orders")
		if err != nil {
			t.Fatal(err)
		}
		dones = append(dones, done)
	}
	s.Reset("orders")
	for _, done := range dones {
		done(false)
	}
	if st := s.State("orders"); st != Closed {
		t.Fatalf("state %s: outcomes from before the Reset counted", st)
	}
}

func TestResetAll(t *testing.T) {
	s := New(Settings{ConsecutiveFailures: 1, OpenTimeout: time.Hour})
	for _, name := range []string{"a", "b", "c"} {
		trip(t, s, name)
	}
	s.ResetAll()
	for _, name := range []string{"a", "b", "c"} {
		if st := s.State(name); st != Closed {
			t.Errorf("%s: state %s after ResetAll, want closed", name, st)
		}
	}
}

func TestTrial(t *testing.T) {
	t.Run("success closes", func(t *testing.T) {
		rec := &recorder{}
		s := New(Settings{ConsecutiveFailures: 2, OpenTimeout: time.Hour, HalfOpenProbes: 2, OnStateChange: rec.record})
		if s.Trial("orders") {
			t.Error("Trial of a name never used reported a change")
		}
		report(t, s, "orders", true)
		if s.Trial("orders") {
			t.Error("Trial of a closed breaker reported a change")
		}
		trip(t, s, "orders")
		woke := make(chan error, 1)
		go func() { woke <- s.Wait(context.Background(), "orders") }()
		if !s.Trial("orders") {
			t.Fatal("Trial of an open breaker reported no change")
		}
		select {
		case err := <-woke:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Wait did not return within 5s of Trial")
		}
		if st := s.State("orders"); st != HalfOpen {
			t.Fatalf("state %s after Trial, want half-open", st)
		}
		if s.Trial("orders") {
			t.Error("Trial of a half-open breaker reported a change")
		}
		p1, err1 := s.Allow("orders")
		p2, err2 := s.Allow("orders")
		if _, err := s.Allow("orders"); err1 != nil || err2 != nil || !errors.Is(err, ErrOpen) {
			t.Fatalf("Allow ×3 in a trial of 2 probes: %v, %v, %v; want nil, nil, ErrOpen", err1, err2, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		if err := s.Wait(ctx, "orders"); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Wait with every probe out: %v, want the deadline", err)
		}
		cancel()
		p1(true)
		if st := s.State("orders"); st != HalfOpen {
			t.Fatalf("state %s after 1 of 2 probes succeeded, want half-open", st)
		}
		p2(true)
		if st := s.State("orders"); st != Closed {
			t.Fatalf("state %s after both probes succeeded, want closed", st)
		}
		report(t, s, "orders", false) // counts afresh: one failure of two
		if st := s.State("orders"); st != Closed {
			t.Fatalf("state %s, want closed", st)
		}
		want := []string{"orders:closed->open", "orders:open->half-open", "orders:half-open->closed"}
		if got := rec.transitions(); !equal(got, want) {
			t.Errorf("transitions %v, want %v", got, want)
		}
	})

	t.Run("failure opens for OpenTimeout", func(t *testing.T) {
		rec := &recorder{}
		const timeout = 300 * time.Millisecond
		s := New(Settings{ConsecutiveFailures: 1, OpenTimeout: timeout, OnStateChange: rec.record})
		trip(t, s, "orders")
		s.Trial("orders")
		probe, err := s.Allow("orders")
		if err != nil {
			t.Fatal(err)
		}
		before := time.Now()
		probe(false)
		if st := s.State("orders"); st != Open {
			t.Fatalf("state %s after the probe failed, want open", st)
		}
		if until := s.OpenUntil("orders"); until.Before(before.Add(timeout)) {
			t.Errorf("open until %v, want at least OpenTimeout after the failure (%v)", until, before.Add(timeout))
		}
		if _, err := s.Allow("orders"); !errors.Is(err, ErrOpen) {
			t.Fatalf("Allow after a failed trial: %v, want ErrOpen", err)
		}
		// gobreaker's own half-open follows after OpenTimeout, as after any trip.
		waitState(t, s, "orders", HalfOpen)
		report(t, s, "orders", true)
		if st := s.State("orders"); st != Closed {
			t.Fatalf("state %s, want closed", st)
		}
		want := []string{"orders:closed->open", "orders:open->half-open", "orders:half-open->open", "orders:open->half-open", "orders:half-open->closed"}
		if got := rec.transitions(); !equal(got, want) {
			t.Errorf("transitions %v, want %v", got, want)
		}
	})

	t.Run("reset ends it", func(t *testing.T) {
		s := New(Settings{ConsecutiveFailures: 1, OpenTimeout: time.Hour})
		trip(t, s, "orders")
		s.Trial("orders")
		probe, err := s.Allow("orders")
		if err != nil {
			t.Fatal(err)
		}
		s.Reset("orders")
		probe(false) // belongs to the trial that the Reset ended
		if st := s.State("orders"); st != Closed {
			t.Fatalf("state %s, want closed", st)
		}
	})
}

// TestResetAndTrialConcurrent runs Reset and Trial against deliveries; the
// race detector and the transition sequence (each from is the previous to)
// are the checks.
func TestResetAndTrialConcurrent(t *testing.T) {
	rec := &recorder{}
	s := New(Settings{ConsecutiveFailures: 3, OpenTimeout: 5 * time.Millisecond, OnStateChange: rec.record})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if done, err := s.Allow("orders"); err == nil {
					done((i+w)%3 == 0)
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 300 {
			if i%2 == 0 {
				s.Trial("orders")
			} else {
				s.Reset("orders")
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	wg.Wait()
	close(stop)
	final := s.State("orders").String() // runs a lazy transition before the check below
	prev := "closed"
	for _, tr := range rec.transitions() {
		from, to, _ := strings.Cut(strings.TrimPrefix(tr, "orders:"), "->")
		if from != prev || from == to {
			t.Fatalf("transition %s after state %s", tr, prev)
		}
		prev = to
	}
	if final != prev {
		t.Errorf("state %s, last transition to %s", final, prev)
	}
}
