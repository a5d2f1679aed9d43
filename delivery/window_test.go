package delivery

import (
	"testing"

	"github.com/ferry-sidecar/ferry/stream"
)

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
