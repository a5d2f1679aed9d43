package delivery

import (
	"context"
	"testing"
	"time"

	"github.com/ferry-sidecar/ferry/stream"
)

// The scheduler hands deliveries over in time order, each once, not before
// its time, and a stop ends every wait at once.
func TestSchedulerFiresInTimeOrder(t *testing.T) {
	sc := newScheduler()
	mk := func(id string) *delivery { return &delivery{msg: &stream.Message{ID: id}} }
	start := time.Now()
	sc.add(mk("c"), 60*time.Millisecond, true)
	sc.add(mk("a"), 0, false)
	sc.add(mk("b"), 30*time.Millisecond, false)

	got := make(chan *waiting, 3)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc.run(ctx, func(_ context.Context, due []*waiting) {
			for _, w := range due {
				got <- w
			}
		})
	}()
	want := []struct {
		id    string
		after time.Duration
		count bool
	}{{"a", 0, false}, {"b", 30 * time.Millisecond, false}, {"c", 60 * time.Millisecond, true}}
	for _, w := range want {
		select {
		case g := <-got:
			if g.d.msg.ID != w.id || g.countAttempt != w.count {
				t.Fatalf("fired %s (count %v), want %s (count %v)", g.d.msg.ID, g.countAttempt, w.id, w.count)
			}
			if el := time.Since(start); el < w.after {
				t.Fatalf("%s fired after %s, before its %s", w.id, el, w.after)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s never fired", w.id)
		}
	}
	sc.add(mk("late"), time.Hour, false)
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return when its context ended")
	}
	select {
	case g := <-got:
		t.Fatalf("%s fired after the stop", g.d.msg.ID)
	default:
	}
}

// Ordering keys: the second message of a key waits for the first to
// finish; other keys and keyless messages are ready at once.
func TestDispatchHoldsBackItsKeyOnly(t *testing.T) {
	s := &Subscriber{window: 16, ready: make(chan *delivery, 16), freed: make(chan struct{}, 1),
		tracked: map[string]*delivery{}, byKey: map[string][]*delivery{}, holding: map[string]struct{}{}}
	mk := func(id, key string) *delivery {
		return &delivery{msg: &stream.Message{ID: id, StreamID: id, OrderingKey: key}, stream: "s"}
	}
	a1, a2, b1, n := mk("1-0", "a"), mk("2-0", "a"), mk("3-0", "b"), mk("4-0", "")
	for _, d := range []*delivery{a1, a2, b1, n} {
		s.dispatch(d)
	}
	ready := func() []string {
		var ids []string
		for {
			select {
			case d := <-s.ready:
				ids = append(ids, d.msg.ID)
			default:
				return ids
			}
		}
	}
	if got := ready(); len(got) != 3 || got[0] != "1-0" || got[1] != "3-0" || got[2] != "4-0" {
		t.Fatalf("ready %v, want 1-0 3-0 4-0 (2-0 waits for 1-0)", got)
	}
	s.finish(a1)
	if got := ready(); len(got) != 1 || got[0] != "2-0" {
		t.Fatalf("after 1-0 finished: ready %v, want 2-0", got)
	}
	if s.space() != 13 {
		t.Fatalf("space %d, want 13 (3 still tracked)", s.space())
	}
}
