package daprsub

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

const oneSub = `[{"pubsubname":"pubsub","topic":"orders","route":"/orders"}]`

func fastConfig(url string) FetchConfig {
	return FetchConfig{AppURL: url, Parse: opts, Wait: 30 * time.Second, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}
}

func TestFetchRetriesWhileBooting(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/dapr/subscribe" {
			t.Errorf("request %s %s", r.Method, r.URL.Path)
		}
		if got := r.Header.Get("Authorization"); got != "Bearer app-secret" {
			t.Errorf("Authorization = %q", got)
		}
		if calls.Add(1) <= 2 {
			http.Error(w, "booting", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte(oneSub))
	}))
	defer srv.Close()
	cfg := fastConfig(srv.URL + "/")
	cfg.Token = "app-secret"
	subs, err := Fetch(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(subs) != 1 || subs[0].Topic != "orders" || calls.Load() != 3 {
		t.Fatalf("subs = %+v after %d calls", subs, calls.Load())
	}
}

// signalHandler is a slog handler that reports every record on a channel.
type signalHandler struct{ ch chan<- struct{} }

func (h signalHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h signalHandler) Handle(context.Context, slog.Record) error {
	select {
	case h.ch <- struct{}{}:
	default:
	}
	return nil
}
func (h signalHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h signalHandler) WithGroup(string) slog.Handler      { return h }

func TestFetchWaitsForTheAppToListen(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: connection refused

	failed := make(chan struct{}, 1)
	cfg := fastConfig("http://" + addr)
	cfg.Logger = slog.New(signalHandler{failed})
	type result struct {
		subs []Subscription
		err  error
	}
	done := make(chan result, 1)
	go func() {
		subs, err := Fetch(context.Background(), cfg)
		done <- result{subs, err}
	}()
	select {
	case <-failed:
	case r := <-done:
		t.Fatalf("Fetch returned before the app listened: %+v", r)
	case <-time.After(20 * time.Second):
		t.Fatal("no failed attempt logged")
	}
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(oneSub)) })}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	select {
	case r := <-done:
		if r.err != nil || len(r.subs) != 1 {
			t.Fatalf("Fetch = %+v", r)
		}
	case <-time.After(25 * time.Second):
		t.Fatal("Fetch did not return after the app started")
	}
}

func TestFetchFinalAnswers(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		check  func(t *testing.T, subs []Subscription, err error)
	}{
		{"404 is no subscriptions", 404, "not found", func(t *testing.T, subs []Subscription, err error) {
			if err != nil || subs != nil {
				t.Fatalf("= %v, %v", subs, err)
			}
		}},
		{"malformed is final", 200, `{"topic":"x"}`, func(t *testing.T, subs []Subscription, err error) {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v", err)
			}
		}},
		{"too long", 200, `[` + string(make([]byte, 2048)) + `]`, func(t *testing.T, subs []Subscription, err error) {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			}))
			defer srv.Close()
			cfg := fastConfig(srv.URL)
			cfg.MaxBody = 1024
			subs, err := Fetch(context.Background(), cfg)
			tt.check(t, subs, err)
			if calls.Load() != 1 {
				t.Fatalf("%d calls, want 1", calls.Load())
			}
		})
	}
}

func TestFetchGivesUp(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer srv.Close()
	cfg := fastConfig(srv.URL)
	cfg.Wait = 300 * time.Millisecond
	start := time.Now()
	_, err := Fetch(context.Background(), cfg)
	if !errors.Is(err, ErrAppNotReady) {
		t.Fatalf("err = %v", err)
	}
	if calls.Load() < 2 {
		t.Fatalf("only %d calls", calls.Load())
	}
	if el := time.Since(start); el > 20*time.Second {
		t.Fatalf("took %v", el)
	}

	// A cancelled context ends the wait with the context's error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	cfg.Wait = time.Hour
	if _, err := Fetch(ctx, cfg); !errors.Is(err, context.Canceled) || errors.Is(err, ErrAppNotReady) {
		t.Fatalf("cancelled: err = %v", err)
	}
}
