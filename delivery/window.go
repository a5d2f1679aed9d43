package delivery

import (
	"container/heap"
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// The window: every message read and not yet acked or dead-lettered is
// tracked (at most window of them), ready for a worker, waiting in the
// scheduler for a retry, or queued behind an earlier message of its
// Ordering-Key.

func (s *Subscriber) space() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.window - len(s.tracked)
}

func (s *Subscriber) isTracked(key, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.tracked[key+" "+id]
	return ok
}

// dispatch tracks d and makes it ready, unless an earlier message of its
// Ordering-Key is still on its way: then it waits for that one.
func (s *Subscriber) dispatch(d *delivery) {
	s.mu.Lock()
	if _, dup := s.tracked[d.key()]; dup {
		if !d.preAt.IsZero() {
			delete(s.holding, d.msg.ID) // preclaim held it for this copy
		}
		s.mu.Unlock()
		return
	}
	s.tracked[d.key()] = d
	if k := d.msg.OrderingKey; k != "" {
		q := s.byKey[k]
		s.byKey[k] = append(q, d)
		if len(q) > 0 {
			s.mu.Unlock()
			return
		}
	}
	s.mu.Unlock()
	s.ready <- d // never blocks: ready holds window entries and tracked ≤ window
}

// finish forgets d (acked or dead-lettered) and releases its Ordering-Key
// to the next message of that key.
func (s *Subscriber) finish(d *delivery) {
	s.mu.Lock()
	delete(s.tracked, d.key())
	var next *delivery
	if k := d.msg.OrderingKey; k != "" {
		q := s.byKey[k]
		if len(q) > 0 && q[0] == d {
			q = q[1:]
		}
		if len(q) == 0 {
			delete(s.byKey, k)
		} else {
			s.byKey[k] = q
			next = q[0]
		}
	}
	s.mu.Unlock()
	if next != nil {
		s.ready <- next
	}
	select {
	case s.freed <- struct{}{}:
	default:
	}
}

// later makes d ready again after delay. countAttempt bumps the entry's
// delivery count in Redis first (XCLAIM), so attempts survive a restart.
func (s *Subscriber) later(d *delivery, delay time.Duration, countAttempt bool) {
	s.sched.add(d, delay, countAttempt)
}

// retryDue is the scheduler's callback for deliveries whose wait is over:
// it counts their attempts in Redis (one XCLAIM per stream) and makes them
// ready. A failed count waits again, without an attempt.
func (s *Subscriber) retryDue(ctx context.Context, due []*waiting) {
	byStream := map[string][]*waiting{}
	for _, w := range due {
		if !w.countAttempt {
			s.ready <- w.d
			continue
		}
		byStream[w.d.stream] = append(byStream[w.d.stream], w)
	}
	for key, ws := range byStream {
		ids := make([]string, len(ws))
		for i, w := range ws {
			ids[i] = w.d.msg.StreamID
		}
		err := s.rdb.XClaim(ctx, &redis.XClaimArgs{
			Stream: key, Group: s.opts.AppID, Consumer: s.opts.Consumer, MinIdle: 0, Messages: ids,
		}).Err()
		for _, w := range ws {
			if err != nil {
				if ctx.Err() == nil {
					w.d.trace.Wait(waitRedis, waitNoAttempt)
					s.later(w.d, waitNoAttempt, true)
				}
				continue
			}
			w.d.attempt++
			s.ready <- w.d
		}
	}
}

// hold marks id as being delivered by this replica; false when it already is.
func (s *Subscriber) hold(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, busy := s.holding[id]; busy {
		return false
	}
	s.holding[id] = struct{}{}
	return true
}

func (s *Subscriber) unhold(id string) {
	s.mu.Lock()
	delete(s.holding, id)
	s.mu.Unlock()
}

// waiting is a delivery waiting for its time.
type waiting struct {
	at           time.Time
	d            *delivery
	countAttempt bool
}

// scheduler holds the deliveries waiting for a retry in one goroutine (run)
// instead of a timer each, so that a stop ends every wait at once and no
// retry does I/O after shutdown began.
type scheduler struct {
	mu   sync.Mutex
	q    waitQueue
	wake chan struct{}
	now  func() time.Time
}

func newScheduler() *scheduler {
	return &scheduler{wake: make(chan struct{}, 1), now: time.Now}
}

func (sc *scheduler) add(d *delivery, delay time.Duration, countAttempt bool) {
	sc.mu.Lock()
	heap.Push(&sc.q, &waiting{at: sc.now().Add(delay), d: d, countAttempt: countAttempt})
	sc.mu.Unlock()
	select {
	case sc.wake <- struct{}{}:
	default:
	}
}

// run hands due deliveries to fire until ctx ends; what still waits then
// stays pending in Redis (redelivered after a restart or by a claim).
func (sc *scheduler) run(ctx context.Context, fire func(context.Context, []*waiting)) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		sc.mu.Lock()
		var due []*waiting
		now := sc.now()
		for sc.q.Len() > 0 && !sc.q[0].at.After(now) {
			due = append(due, heap.Pop(&sc.q).(*waiting))
		}
		next := time.Hour
		if sc.q.Len() > 0 {
			next = sc.q[0].at.Sub(now)
		}
		sc.mu.Unlock()
		if len(due) > 0 {
			fire(ctx, due)
			continue
		}
		t.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-sc.wake: // something new may be due sooner; Reset (Go ≥ 1.23) drops the old deadline
		case <-t.C:
		}
	}
}

// waitQueue is a min-heap by time.
type waitQueue []*waiting

func (q waitQueue) Len() int           { return len(q) }
func (q waitQueue) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q waitQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *waitQueue) Push(x any)        { *q = append(*q, x.(*waiting)) }
func (q *waitQueue) Pop() any {
	old := *q
	w := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return w
}
