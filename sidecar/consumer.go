package sidecar

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/ferry-sidecar/ferry/breaker"
	"github.com/ferry-sidecar/ferry/dedupe"
	"github.com/ferry-sidecar/ferry/retry"
)

const (
	readBlock     = time.Second // XREADGROUP BLOCK: also bounds how long a stop takes to be seen
	minWindow     = 256         // messages a subscription tracks at once (in flight, waiting, queued by key)
	claimBatch    = 100
	waitNoAttempt = 500 * time.Millisecond // retry delay for waits that use no attempt (Redis down, busy claim)
)

// delivery is one message on its way to the app.
type delivery struct {
	msg        *message
	stream     string // the stream it was read from: the topic's, or this group's redrive stream
	attempt    int    // 1-based number of the next attempt (the entry's delivery count)
	replay     bool
	lastStatus int
	lastErr    string
	delivered  bool // the app answered 2xx: only the dedupe completion and the ack remain
	// preState is the dedupe state claimed at read time, valid when preAt
	// is set; the id is then held already (preclaim.go).
	preState   dedupe.State
	preAt      time.Time
	preOutages uint64 // Redis outages seen when it was claimed
}

func (d *delivery) key() string { return d.stream + " " + d.msg.StreamID }

// subscriber consumes one topic for this app: its consumer group, its
// bulkhead of workers, its breaker and rate limiter.
type subscriber struct {
	sc       *Sidecar
	sub      Subscription
	log      *slog.Logger
	stream   string
	redrive  string
	dlq      string
	group    string
	consumer string
	limiter  *rate.Limiter
	window   int

	ready    chan *delivery
	freed    chan struct{}
	settling chan settleReq // deliveries the app took, for the settler

	mu      sync.Mutex
	tracked map[string]*delivery   // by delivery.key
	byKey   map[string][]*delivery // Ordering-Key ⇒ its queue; the head is the one being delivered
	timers  map[*time.Timer]struct{}
	stopped bool
	// holding: message ids this replica has claimed in the dedupe store and
	// not yet completed or released. The dedupe owner is the replica, so
	// a second copy of an id (a re-publish, a relay re-send) read by this
	// replica would claim it again; it waits here instead.
	holding map[string]struct{}

	replayUntil      atomic.Pointer[string] // entries up to this id are replays
	retentionBlocked bool                   // only refreshStatus touches it
	status           atomic.Pointer[subStatus]
}

// subStatus is what /v1/status reports of a subscription.
type subStatus struct {
	LastDelivered string
	Pending       int64
	Lag           int64
}

func newSubscriber(sc *Sidecar, sub Subscription) *subscriber {
	s := &subscriber{
		sc:       sc,
		sub:      sub,
		log:      sc.log.With("topic", sub.Topic),
		stream:   streamKey(sub.Topic),
		redrive:  redriveKey(sub.Topic, sc.cfg.AppID),
		dlq:      deadLetterKey(sub.Topic, sc.cfg.AppID),
		group:    sc.cfg.AppID,
		consumer: sc.cfg.Consumer,
		window:   max(minWindow, 16*sc.cfg.DeliveryConcurrency),
		freed:    make(chan struct{}, 1),
		tracked:  map[string]*delivery{},
		byKey:    map[string][]*delivery{},
		timers:   map[*time.Timer]struct{}{},
		holding:  map[string]struct{}{},
	}
	s.ready = make(chan *delivery, s.window)
	s.settling = make(chan settleReq, s.window)
	if sc.cfg.DeliveryRate > 0 {
		s.limiter = rate.NewLimiter(rate.Limit(sc.cfg.DeliveryRate), burst(sc.cfg.DeliveryRate, sc.cfg.DeliveryBurst))
	}
	s.status.Store(&subStatus{})
	return s
}

// Run reads and delivers until ctx ends, then lets in-flight deliveries
// finish until hard ends; what is not acked stays pending in Redis.
func (s *subscriber) Run(ctx, hard context.Context) error {
	var workers sync.WaitGroup
	for range s.sc.cfg.DeliveryConcurrency {
		workers.Add(1)
		go func() {
			defer workers.Done()
			s.work(ctx, hard)
		}()
	}
	settled := make(chan struct{})
	go func() {
		defer close(settled)
		s.settler(hard)
	}()
	go s.refreshStatus(ctx)
	s.read(ctx)
	s.mu.Lock()
	s.stopped = true
	for t := range s.timers {
		t.Stop()
	}
	s.mu.Unlock()
	workers.Wait()
	close(s.settling) // the workers were its only senders
	<-settled
	return nil
}

// work delivers ready messages until ctx ends.
func (s *subscriber) work(ctx, hard context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case d := <-s.ready:
			if ctx.Err() != nil {
				return // stopping: d stays pending in Redis
			}
			s.deliver(hard, d)
		}
	}
}

func (s *subscriber) read(ctx context.Context) {
	failures := 0
	backoff := func(err error) bool {
		failures++
		if failures == 1 || failures%50 == 0 {
			s.log.Warn("consumer read", "failures", failures, "err", redactErr(err))
		}
		return sleepCtx(ctx, s.sc.redisBackoff.Delay(min(failures, 20), 0))
	}
	for ctx.Err() == nil {
		if err := s.ensureGroup(ctx); err != nil {
			if !backoff(err) {
				return
			}
			continue
		}
		break
	}
	s.loadReplayMark(ctx)
	pendingDone := false
	lastClaim := time.Time{}
	for ctx.Err() == nil {
		if s.sc.breakers.State(s.sub.Topic) == breaker.Open {
			_ = s.sc.breakers.Wait(ctx, s.sub.Topic) // open: read nothing new, spend no attempts
			continue
		}
		space := s.space()
		if space <= 0 {
			select {
			case <-ctx.Done():
				return
			case <-s.freed:
			}
			continue
		}
		var err error
		switch {
		case !pendingDone:
			pendingDone, err = s.recoverPending(ctx, min(space, claimBatch))
		case time.Since(lastClaim) >= s.claimInterval():
			lastClaim = time.Now()
			err = s.claimIdle(ctx, min(space, claimBatch))
		default:
			err = s.readNew(ctx, space)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if redis.HasErrorPrefix(err, "NOGROUP") {
				_ = s.ensureGroup(ctx) // the stream or group was deleted: make it again
			}
			if !backoff(err) {
				return
			}
			continue
		}
		failures = 0
	}
}

func (s *subscriber) claimInterval() time.Duration {
	return max(time.Second, s.sc.cfg.ClaimIdle/2)
}

func (s *subscriber) space() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.window - len(s.tracked)
}

// ensureGroup creates this app's consumer group on the topic stream and on its
// redrive stream; an existing group is fine.
func (s *subscriber) ensureGroup(ctx context.Context) error {
	start := "0"
	if s.sc.cfg.SubscribeFrom == "latest" {
		start = "$"
	}
	for _, stream := range []string{s.stream, s.redrive} {
		err := s.sc.rdb.XGroupCreateMkStream(ctx, stream, s.group, start).Err()
		if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
			return err
		}
		start = "0" // the redrive stream holds only this group's entries
	}
	return nil
}

// readNew reads entries never delivered to this group.
func (s *subscriber) readNew(ctx context.Context, count int) error {
	res, err := s.sc.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group:    s.group,
		Consumer: s.consumer,
		Streams:  []string{s.stream, s.redrive, ">", ">"},
		Count:    int64(count),
		Block:    readBlock,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		return err
	}
	var ds []*delivery
	for _, st := range res {
		for _, xm := range st.Messages {
			ds = append(ds, s.newDelivery(st.Stream, xm, 1))
		}
	}
	s.preclaim(ctx, ds)
	for _, d := range ds {
		s.dispatch(ctx, d)
	}
	return nil
}

// recoverPending takes back this consumer's own pending entries (after a
// restart), oldest first; attempts continue from their delivery counts.
func (s *subscriber) recoverPending(ctx context.Context, count int) (done bool, err error) {
	done = true
	for _, stream := range []string{s.stream, s.redrive} {
		pend, err := s.sc.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
			Stream: stream, Group: s.group, Consumer: s.consumer, Start: "-", End: "+", Count: int64(count),
		}).Result()
		if err != nil {
			return false, err
		}
		var fresh []redis.XPendingExt
		for _, p := range pend {
			if !s.isTracked(stream, p.ID) {
				fresh = append(fresh, p)
			}
		}
		if len(fresh) == 0 {
			continue
		}
		done = false
		if err := s.claim(ctx, stream, fresh); err != nil {
			return false, err
		}
	}
	return done, nil
}

// claimIdle takes over entries that other consumers left pending longer
// than FERRY_CLAIM_IDLE (a replica that died).
func (s *subscriber) claimIdle(ctx context.Context, count int) error {
	for _, stream := range []string{s.stream, s.redrive} {
		pend, err := s.sc.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
			Stream: stream, Group: s.group, Idle: s.sc.cfg.ClaimIdle, Start: "-", End: "+", Count: int64(count),
		}).Result()
		if err != nil {
			return err
		}
		var idle []redis.XPendingExt
		for _, p := range pend {
			if !s.isTracked(stream, p.ID) {
				idle = append(idle, p)
			}
		}
		if len(idle) == 0 {
			continue
		}
		if err := s.claim(ctx, stream, idle); err != nil {
			return err
		}
	}
	return nil
}

// claim XCLAIMs pending entries to this consumer (which counts a delivery)
// and dispatches them with attempt = previous count + 1.
func (s *subscriber) claim(ctx context.Context, stream string, pend []redis.XPendingExt) error {
	ids := make([]string, len(pend))
	counts := make(map[string]int64, len(pend))
	for i, p := range pend {
		ids[i] = p.ID
		counts[p.ID] = p.RetryCount
	}
	msgs, err := s.sc.rdb.XClaim(ctx, &redis.XClaimArgs{
		Stream: stream, Group: s.group, Consumer: s.consumer, MinIdle: 0, Messages: ids,
	}).Result()
	if err != nil {
		return err
	}
	got := make(map[string]bool, len(msgs))
	for _, xm := range msgs {
		got[xm.ID] = true
		if len(xm.Values) == 0 {
			continue
		}
		s.dispatch(ctx, s.newDelivery(stream, xm, int(counts[xm.ID])+1))
	}
	// Entries trimmed from the stream are dropped from the PEL by XCLAIM;
	// say so, since they can no longer be delivered.
	for _, id := range ids {
		if !got[id] {
			s.log.Error("pending entry no longer in stream", "stream_id", id, "app_id", s.group)
		}
	}
	return nil
}

func (s *subscriber) newDelivery(stream string, xm redis.XMessage, attempt int) *delivery {
	d := &delivery{msg: parseMessage(xm.ID, xm.Values), stream: stream, attempt: attempt}
	if stream == s.stream {
		if until := s.replayUntil.Load(); until != nil && streamIDLessEq(xm.ID, *until) {
			d.replay = true
		}
	}
	return d
}

func (s *subscriber) isTracked(stream, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.tracked[stream+" "+id]
	return ok
}

// dispatch tracks d and makes it ready, unless an earlier message of its
// Ordering-Key is still on its way: then it waits for that one.
func (s *subscriber) dispatch(ctx context.Context, d *delivery) {
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
func (s *subscriber) finish(d *delivery) {
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
func (s *subscriber) later(d *delivery, delay time.Duration, countAttempt bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return // stays pending in Redis; redelivered after a restart or by a claim
	}
	var t *time.Timer
	t = time.AfterFunc(delay, func() {
		s.mu.Lock()
		delete(s.timers, t)
		stopped := s.stopped
		s.mu.Unlock()
		if stopped {
			return
		}
		if countAttempt {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := s.sc.rdb.XClaim(ctx, &redis.XClaimArgs{
				Stream: d.stream, Group: s.group, Consumer: s.consumer, MinIdle: 0, Messages: []string{d.msg.StreamID},
			}).Err()
			cancel()
			if err != nil {
				s.later(d, waitNoAttempt, true)
				return
			}
			d.attempt++
		}
		s.ready <- d
	})
	s.timers[t] = struct{}{}
}

// deliver runs one attempt of d: dedupe claim, rate limit, breaker, POST,
// then ack, retry later, or dead-letter.
func (s *subscriber) deliver(ctx context.Context, d *delivery) {
	cfg := s.sc.cfg
	if d.attempt > cfg.RetryMaxAttempts {
		// A restart found the attempts already spent: a crash loop must not retry forever.
		if d.lastErr == "" {
			d.lastErr = "attempts exhausted before a restart"
		}
		s.deadLetter(ctx, d, "exhausted")
		return
	}
	dkey := dedupe.Key(s.sub.Topic, cfg.AppID, d.msg.ID)
	if d.delivered {
		s.settle(ctx, d, dkey) // never POST again what the app already has
		return
	}
	if !d.replay {
		pre, preAt := d.preState, d.preAt
		d.preAt = time.Time{} // a claim made at read time serves the first attempt only
		if preAt.IsZero() && !s.hold(d.msg.ID) {
			s.later(d, waitNoAttempt, false) // another copy of this id is on its way here
			return
		}
		defer func() {
			if !d.delivered {
				s.unhold(d.msg.ID)
			}
		}()
		st, err := pre, error(nil)
		if !s.preclaimValid(d, preAt) {
			st, err = s.sc.dedupe.Claim(ctx, dkey)
		}
		switch {
		case err != nil:
			s.later(d, waitNoAttempt, false) // never deliver without the check
			return
		case st == dedupe.Done:
			if s.ack(ctx, d) {
				s.sc.metrics.DedupeHits.WithLabelValues(s.sub.Topic).Inc()
				s.log.Debug("duplicate acked without delivery", "msg_id", d.msg.ID)
			}
			return
		case st == dedupe.Busy:
			s.later(d, waitNoAttempt, false)
			return
		}
	}
	release := func() {
		if !d.replay {
			if err := s.sc.dedupe.Release(ctx, dkey); err != nil {
				s.log.Warn("release dedupe claim", "msg_id", d.msg.ID, "err", redactErr(err))
			}
		}
	}
	if s.limiter != nil {
		if r := s.limiter.Reserve(); r.Delay() > 0 {
			s.sc.metrics.Throttled.WithLabelValues("delivery").Inc()
			if !sleepCtx(ctx, r.Delay()) {
				r.Cancel()
				release()
				return
			}
		}
	}
	done, err := s.sc.breakers.Allow(s.sub.Topic)
	if err != nil {
		release()
		s.later(d, waitNoAttempt, false) // refused by the breaker: no attempt used
		return
	}
	start := time.Now()
	status, retryAfter, perr := s.sc.post(ctx, s.sub, d)
	result := retry.Classify(status, perr)
	done(!result.Failure())
	s.sc.metrics.DeliveryAttempts.WithLabelValues(s.sub.Topic, string(result)).Inc()
	s.sc.metrics.DeliveryDuration.WithLabelValues(s.sub.Topic).Observe(time.Since(start).Seconds())
	d.lastStatus = status
	d.lastErr = ""
	if perr != nil {
		d.lastErr = redactErr(perr)
	}
	switch result {
	case retry.Success:
		d.delivered = true
		s.settle(ctx, d, dkey)
	case retry.Poison:
		release()
		s.deadLetter(ctx, d, "poison")
	default:
		release()
		if ctx.Err() != nil {
			return // shutting down: the entry stays pending
		}
		if s.sc.retryPolicy.Exhausted(d.attempt) {
			s.deadLetter(ctx, d, "exhausted")
			return
		}
		delay := s.sc.retryPolicy.Delay(d.attempt, retryAfter)
		s.log.Debug("delivery retry", "msg_id", d.msg.ID, "attempt", d.attempt, "result", string(result), "delay", delay)
		s.later(d, delay, true)
	}
}

// settle records a delivery the app answered 2xx: done in the dedupe store,
// then acked. While Redis fails it retries these two steps only, so a Redis
// outage never makes ferry deliver a message twice; only a crash before the
// completion does (the window DESIGN.md states).
//
// The settler does it for many deliveries at once (settle.go); the worker
// is free for the next message as soon as the app has answered.
func (s *subscriber) settle(_ context.Context, d *delivery, dkey string) {
	s.settling <- settleReq{d: d, dkey: dkey} // never blocks for long: it holds window entries and tracked ≤ window
}

// hold marks id as being delivered by this replica; false when it already is.
func (s *subscriber) hold(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, busy := s.holding[id]; busy {
		return false
	}
	s.holding[id] = struct{}{}
	return true
}

func (s *subscriber) unhold(id string) {
	s.mu.Lock()
	delete(s.holding, id)
	s.mu.Unlock()
}

// ack XACKs d (and deletes it from the private redrive stream) and
// finishes it. A failed ack leaves it pending: it is retried later and the
// dedupe store absorbs the repeat.
func (s *subscriber) ack(ctx context.Context, d *delivery) bool {
	pipe := s.sc.rdb.Pipeline()
	pipe.XAck(ctx, d.stream, s.group, d.msg.StreamID)
	if d.stream == s.redrive {
		pipe.XDel(ctx, d.stream, d.msg.StreamID)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		s.log.Warn("ack", "msg_id", d.msg.ID, "err", redactErr(err))
		s.later(d, waitNoAttempt, false)
		return false
	}
	s.finish(d)
	return true
}

// streamIDLessEq compares two stream ids "ms-seq".
func streamIDLessEq(a, b string) bool {
	am, as, _ := strings.Cut(a, "-")
	bm, bs, _ := strings.Cut(b, "-")
	if len(am) != len(bm) {
		return len(am) < len(bm)
	}
	if am != bm {
		return am < bm
	}
	if len(as) != len(bs) {
		return len(as) < len(bs)
	}
	return as <= bs
}
