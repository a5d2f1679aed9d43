package waitq

import (
	"context"
	"testing"
	"time"
)

// Items are handed over in time order, each once, not before their time,
// and a stop ends every wait at once.
func TestRunFiresInTimeOrder(t *testing.T) {
	q := New[string]()
	start := time.Now()
	q.Add("c", 60*time.Millisecond)
	q.Add("a", 0)
	q.Add("b", 30*time.Millisecond)

	got := make(chan string, 3)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = q.Run(ctx, func(_ context.Context, due []string) {
			for _, s := range due {
				got <- s
			}
		})
	}()
	for _, w := range []struct {
		item  string
		after time.Duration
	}{{"a", 0}, {"b", 30 * time.Millisecond}, {"c", 60 * time.Millisecond}} {
		select {
		case g := <-got:
			if g != w.item {
				t.Fatalf("fired %s, want %s", g, w.item)
			}
			if el := time.Since(start); el < w.after {
				t.Fatalf("%s fired after %s, before its %s", w.item, el, w.after)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s never fired", w.item)
		}
	}
	q.Add("late", time.Hour)
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return when its context ended")
	}
	select {
	case g := <-got:
		t.Fatalf("%s fired after the stop", g)
	default:
	}
	if q.Len() != 1 {
		t.Fatalf("%d waiting after the stop, want the late one", q.Len())
	}
}
