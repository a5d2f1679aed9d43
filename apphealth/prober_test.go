package apphealth

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// app is a health endpoint whose status the test switches; it counts the
// probes it answered with each status since the last switch.
type app struct {
	status atomic.Int32
	mu     sync.Mutex
	served map[int]int
}

func newApp(t *testing.T, status int) (*app, *httptest.Server) {
	a := &app{served: map[int]int{}}
	a.status.Store(int32(status))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		code := int(a.status.Load())
		a.mu.Lock()
		a.served[code]++
		a.mu.Unlock()
		w.WriteHeader(code)
	}))
	t.Cleanup(srv.Close)
	return a, srv
}

func (a *app) set(status int) {
	a.mu.Lock()
	a.served = map[int]int{}
	a.status.Store(int32(status))
	a.mu.Unlock()
}

func (a *app) count(status int) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.served[status]
}

// changes collects OnChange calls and checks that they never overlap.
type changes struct {
	t       *testing.T
	ch      chan bool
	running atomic.Bool
}

func newChanges(t *testing.T) *changes { return &changes{t: t, ch: make(chan bool, 100)} }

func (c *changes) onChange(healthy bool) {
	if !c.running.CompareAndSwap(false, true) {
		c.t.Error("OnChange called concurrently with itself")
	}
	c.ch <- healthy
	c.running.Store(false)
}

// next waits for the next transition and checks it.
func (c *changes) next(want bool, what string) {
	c.t.Helper()
	select {
	case got := <-c.ch:
		if got != want {
			c.t.Fatalf("%s: OnChange(%v), want OnChange(%v)", what, got, want)
		}
	case <-time.After(10 * time.Second):
		c.t.Fatalf("%s: no OnChange(%v) within 10s", what, want)
	}
}

// run starts p.Run and stops it (checking it returns nil) with the test.
func run(t *testing.T, p *Prober) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5s of its context ending")
		}
	})
}

func TestHealthPath(t *testing.T) {
	a, srv := newApp(t, http.StatusOK)
	c := newChanges(t)
	p, err := New(Config{URL: srv.URL, Path: "/healthz", Interval: 100 * time.Millisecond, Timeout: 90 * time.Millisecond, Threshold: 3, OnChange: c.onChange})
	if err != nil {
		t.Fatal(err)
	}
	if p.Healthy() || p.Value() != 0 {
		t.Fatalf("healthy %v (value %v) before any probe, want unhealthy until one passes", p.Healthy(), p.Value())
	}
	run(t, p)
	c.next(true, "first probe passes")
	if !p.Healthy() || p.Value() != 1 {
		t.Fatalf("healthy %v (value %v), want healthy", p.Healthy(), p.Value())
	}

	a.set(http.StatusServiceUnavailable)
	c.next(false, "503s")
	if n := a.count(http.StatusServiceUnavailable); n < 3 {
		t.Errorf("unhealthy after %d failed probes, want the threshold, 3", n)
	}
	if p.Healthy() || p.Value() != 0 {
		t.Fatalf("healthy %v (value %v) after 503s, want unhealthy", p.Healthy(), p.Value())
	}

	a.set(http.StatusOK)
	c.next(true, "200 again")
	if n := a.count(http.StatusOK); n != 1 {
		t.Errorf("healthy after %d passing probes, want at once, after 1", n)
	}
}

// TestBelowThresholdStaysHealthy: failures that never reach the threshold in
// a row change nothing.
func TestBelowThresholdStaysHealthy(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if n.Add(1)%3 == 0 { // 2 failures, 1 success, ...
			return
		}
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer srv.Close()
	c := newChanges(t)
	p, err := New(Config{URL: srv.URL, Path: "/healthz", Interval: 100 * time.Millisecond, Timeout: 90 * time.Millisecond, Threshold: 3, OnChange: c.onChange})
	if err != nil {
		t.Fatal(err)
	}
	run(t, p)
	c.next(true, "the first success")
	deadline := time.Now().Add(10 * time.Second)
	for n.Load() < 15 {
		select {
		case h := <-c.ch:
			t.Fatalf("OnChange(%v) after %d probes, never 3 failures in a row (unless a probe timed out on a loaded machine)", h, n.Load())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d probes in 10s", n.Load())
		}
	}
}

// TestHealthPathClosedConnectionsAndTimeout: an app that accepts and closes,
// then one that never answers, both fail probes; WaitHealthy returns once a
// probe passes.
func TestHealthPathClosedConnectionsAndTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	var mode atomic.Int32 // 0 close, 1 hang, 2 answer 200
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			switch mode.Load() {
			case 0:
				c.Close()
			case 1:
				go func() { // read and never answer; the probe's timeout ends it
					buf := make([]byte, 1024)
					for {
						if _, err := c.Read(buf); err != nil {
							c.Close()
							return
						}
					}
				}()
			default:
				go func() {
					buf := make([]byte, 1024)
					_, _ = c.Read(buf)
					_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
					c.Close()
				}()
			}
		}
	}()
	defer ln.Close()
	c := newChanges(t)
	p, err := New(Config{URL: "http://" + addr, Path: "/healthz", Interval: 40 * time.Millisecond, Timeout: 20 * time.Millisecond, Threshold: 2, OnChange: c.onChange})
	if err != nil {
		t.Fatal(err)
	}
	run(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	if err := p.WaitHealthy(ctx); err != context.DeadlineExceeded {
		t.Fatalf("WaitHealthy while connections are closed: %v, want the deadline", err)
	}
	cancel()
	mode.Store(1)
	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	if err := p.WaitHealthy(ctx); err != context.DeadlineExceeded {
		t.Fatalf("WaitHealthy while probes time out: %v, want the deadline", err)
	}
	cancel()
	mode.Store(2)
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitHealthy(ctx); err != nil {
		t.Fatalf("WaitHealthy once the app answers: %v", err)
	}
	c.next(true, "answers")
}

func TestDialMode(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	var accepted atomic.Int32
	serve := func(ln net.Listener) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}
	go serve(ln)
	c := newChanges(t)
	p, err := New(Config{URL: "http://" + addr, Interval: 20 * time.Millisecond, OnChange: c.onChange})
	if err != nil {
		t.Fatal(err)
	}
	if !p.Healthy() || p.Value() != 1 {
		t.Fatalf("healthy %v (value %v) at start without a path, want healthy", p.Healthy(), p.Value())
	}
	run(t, p)

	// A stale report with the app there: unhealthy at once, healthy again
	// after one dial.
	p.Unreachable()
	if p.Healthy() {
		t.Fatal("healthy right after Unreachable")
	}
	c.next(false, "Unreachable")
	c.next(true, "the dial succeeds")
	for i := 0; accepted.Load() == 0 && i < 500; i++ { // the accept loop counts after the dial returned
		time.Sleep(10 * time.Millisecond)
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("%d dials, want 1", n)
	}

	ln.Close() // the app goes away
	p.Unreachable()
	c.next(false, "Unreachable with the app gone")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	if err := p.WaitHealthy(ctx); err != context.DeadlineExceeded {
		t.Fatalf("WaitHealthy with nothing listening: %v, want the deadline", err)
	}
	cancel()
	if c := len(c.ch); c != 0 {
		t.Fatalf("%d transitions while nothing listened", c)
	}
	var ln2 net.Listener
	for i := 0; ln2 == nil; i++ { // the same port, as an app restarting
		if ln2, err = net.Listen("tcp", addr); err != nil {
			if i == 100 {
				t.Fatalf("listen again on %s: %v", addr, err)
			}
			ln2 = nil
			time.Sleep(10 * time.Millisecond)
		}
	}
	defer ln2.Close()
	up := time.Now()
	go serve(ln2)
	c.next(true, "the app is back")
	t.Logf("healthy %s after the app listened again (interval 20ms)", time.Since(up).Round(time.Millisecond))
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		cfg  Config
		want string // "" for valid
	}{
		{Config{URL: "http://127.0.0.1:8080"}, ""},
		{Config{URL: "https://app", Path: "/healthz", Interval: 2 * time.Second, Timeout: time.Second, Threshold: 1}, ""},
		{Config{URL: ""}, "URL"},
		{Config{URL: "unix:///x"}, "URL"},
		{Config{URL: "http://"}, "URL"},
		{Config{URL: "http://app", Path: "healthz"}, "Path"},
		{Config{URL: "http://app", Interval: -1}, "Interval"},
		{Config{URL: "http://app", Timeout: -1}, "Timeout"},
		{Config{URL: "http://app", Threshold: -1}, "Threshold"},
		{Config{URL: "http://app", Interval: time.Second, Timeout: time.Second}, "Timeout"},
		{Config{URL: "http://app", Timeout: 2 * time.Second}, "Timeout"}, // default interval 1s
	} {
		err := tt.cfg.Validate()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("Validate(%+v) = %v, want an error naming %q", tt.cfg, err, tt.want)
		}
		if _, nerr := New(tt.cfg); (nerr == nil) != (err == nil) {
			t.Errorf("New(%+v) = %v, Validate = %v", tt.cfg, nerr, err)
		}
	}
}

func TestDialAddr(t *testing.T) {
	for in, want := range map[string]string{
		"http://app":            "app:80",
		"https://app":           "app:443",
		"http://127.0.0.1:8080": "127.0.0.1:8080",
		"http://[::1]:9/base":   "[::1]:9",
	} {
		if got, err := dialAddr(in); err != nil || got != want {
			t.Errorf("dialAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
