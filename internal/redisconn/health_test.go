package redisconn

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuf is a bytes.Buffer safe for the timer's goroutine.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestHealthFoldsFlaps: a failover's up/down flapping logs one down and
// one up line, not one per transition, while OnChange sees every one.
func TestHealthFoldsFlaps(t *testing.T) {
	var buf syncBuf
	changes := 0
	h := NewHealth(slog.New(slog.NewTextHandler(&buf, nil)), func(bool) { changes++ })
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	h.Observe(nil)
	h.mu.Lock()
	h.lastLog = time.Now().Add(-HealthQuiet) // up for a while
	h.mu.Unlock()
	for range 20 {
		h.Observe(refused)
		h.Observe(nil)
	}
	h.Observe(refused) // ends down, inside the quiet time
	if changes != 42 {
		t.Fatalf("OnChange called %d times, want 42", changes)
	}
	if n := strings.Count(buf.String(), "redis down"); n != 1 {
		t.Fatalf("%d down lines during the flapping, want 1:\n%s", n, buf.String())
	}
	h.mu.Lock()
	timer := h.timer != nil
	h.mu.Unlock()
	if !timer {
		t.Fatal("no timer to log the state once the quiet time is over")
	}
	// The timer then logs the state that differs from the last line.
	h.mu.Lock()
	h.timer.Stop()
	h.timer = nil
	h.lastLog = time.Now().Add(-HealthQuiet)
	h.emit()
	h.mu.Unlock()
	if n := strings.Count(buf.String(), "redis up"); n != 1 {
		t.Fatalf("%d up lines, want 1:\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), "flaps=") {
		t.Fatalf("no flap count:\n%s", buf.String())
	}
}
