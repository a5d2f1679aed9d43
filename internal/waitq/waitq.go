// Package waitq holds items until their time, in one goroutine (Run)
// instead of a timer each, so that a stop ends every wait at once and
// nothing fires after it.
package waitq

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// Queue holds items of type T until their time. Add may be called from
// any goroutine; Run hands due items over from one.
type Queue[T any] struct {
	mu   sync.Mutex
	q    entries[T]
	wake chan struct{}
	now  func() time.Time
}

// New returns an empty queue.
func New[T any]() *Queue[T] {
	return &Queue[T]{wake: make(chan struct{}, 1), now: time.Now}
}

// Add makes item due after delay.
func (w *Queue[T]) Add(item T, delay time.Duration) {
	w.mu.Lock()
	heap.Push(&w.q, entry[T]{at: w.now().Add(delay), item: item})
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Len is the number of items waiting.
func (w *Queue[T]) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.q.Len()
}

// Run hands due items to fire, in time order, until ctx ends; what still
// waits then stays in the queue. It returns nil.
func (w *Queue[T]) Run(ctx context.Context, fire func(context.Context, []T)) error {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		w.mu.Lock()
		var due []T
		now := w.now()
		for w.q.Len() > 0 && !w.q[0].at.After(now) {
			due = append(due, heap.Pop(&w.q).(entry[T]).item)
		}
		next := time.Hour
		if w.q.Len() > 0 {
			next = w.q[0].at.Sub(now)
		}
		w.mu.Unlock()
		if len(due) > 0 {
			fire(ctx, due)
			continue
		}
		t.Reset(next)
		select {
		case <-ctx.Done():
			return nil
		case <-w.wake: // something new may be due sooner; Reset (Go ≥ 1.23) drops the old deadline
		case <-t.C:
		}
	}
}

type entry[T any] struct {
	at   time.Time
	item T
}

// entries is a min-heap by time.
type entries[T any] []entry[T]

func (q entries[T]) Len() int           { return len(q) }
func (q entries[T]) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q entries[T]) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *entries[T]) Push(x any)        { *q = append(*q, x.(entry[T])) }
func (q *entries[T]) Pop() any {
	old := *q
	e := old[len(old)-1]
	var zero entry[T]
	old[len(old)-1] = zero
	*q = old[:len(old)-1]
	return e
}
