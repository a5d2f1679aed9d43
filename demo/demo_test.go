package main

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer collects the demo's output; processes write to it concurrently.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDemo runs the whole quickstart with real binaries (redis-server, two
// ferry sidecars, the two example apps) and checks that every order reached
// billing exactly once, every invoice came back to the orders app exactly
// once, the duplicate publish was suppressed by dedupe, and both sidecars
// exited 0 on SIGTERM.
func TestDemo(t *testing.T) {
	const n = 5
	// The budget covers building ferry and the apps from a cold cache
	// (about 30s on 2 cores); the demo itself waits at most 45s.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // the Dapr SDK app builds too
	defer cancel()
	var out syncBuffer
	var res result
	start := time.Now()
	err := run(ctx, options{Orders: n, Wait: 45 * time.Second, Out: &out, Result: &res})
	if err != nil || t.Failed() {
		t.Logf("demo output:\n%s", out.String())
	}
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	t.Logf("demo took %s", time.Since(start).Round(time.Millisecond))

	var wantOrders, wantInvoices []string
	for i := 1; i <= n; i++ {
		wantOrders = append(wantOrders, fmt.Sprintf("ord-%04d", i))
		wantInvoices = append(wantInvoices, fmt.Sprintf("inv-ord-%04d", i))
	}
	if res.Published != n || !res.DuplicateOK {
		t.Errorf("published %d orders (duplicate accepted: %v), want %d and true", res.Published, res.DuplicateOK, n)
	}
	if got := sorted(res.BilledOrders); !slices.Equal(got, wantOrders) {
		t.Errorf("billing handled %v, want each of %v exactly once", got, wantOrders)
	}
	if got := sorted(res.Invoices); !slices.Equal(got, wantInvoices) {
		t.Errorf("orders app received invoices %v, want each of %v exactly once", got, wantInvoices)
	}
	if got := sorted(res.Shipped); !slices.Equal(got, wantOrders) {
		t.Errorf("the Dapr app shipped %v, want each of %v exactly once", got, wantOrders)
	}
	if res.DedupeHits != 1 {
		t.Errorf("billing dedupe hits = %v, want 1 (the duplicate publish)", res.DedupeHits)
	}
	for _, name := range []string{"ferry-orders", "ferry-billing", "ferry-shipping"} {
		if code, ok := res.SidecarExit[name]; !ok || code != 0 {
			t.Errorf("%s exit code = %d (recorded: %v), want 0", name, code, ok)
		}
	}
	if !strings.Contains(out.String(), "ferry-billing | ") || !strings.Contains(out.String(), "orders        | received invoice msg=inv-ord-0001 attempt=1") {
		t.Errorf("output lacks the prefixed process lines:\n%s", out.String())
	}
}

// TestDemoWithoutRedis checks that a missing redis-server fails at once with
// a message that says how to install it.
func TestDemoWithoutRedis(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	err := run(t.Context(), options{Orders: 1})
	if err == nil || !strings.Contains(err.Error(), "run make deps") {
		t.Fatalf("run without redis-server: err = %v, want one that says to run make deps", err)
	}
}

func TestDemoRejectsNoOrders(t *testing.T) {
	if err := run(t.Context(), options{Orders: 0}); err == nil {
		t.Fatal("run with 0 orders succeeded, want an error")
	}
}

func sorted(ids []string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}
