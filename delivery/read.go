package delivery

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/breaker"
	"github.com/ferry-sidecar/ferry/dedupe"
	"github.com/ferry-sidecar/ferry/internal/redisconn"
	"github.com/ferry-sidecar/ferry/retry"
	"github.com/ferry-sidecar/ferry/stream"
	"github.com/ferry-sidecar/ferry/tracing"
)

// delivery is one message on its way to the app.
type delivery struct {
	msg        *stream.Message
	stream     string // the stream it was read from: the topic's, or this group's redrive stream
	attempt    int    // 1-based number of the next attempt (the entry's delivery count)
	replay     bool
	lastStatus int
	lastErr    string
	delivered  bool // the app answered 2xx: only the dedupe completion and the ack remain
	parked     bool // in the dead-letter stream: only the ack remains
	holdsSlot  bool // holds a settle slot: sent, or answered and not yet completed
	// preState is the dedupe state claimed at read time, valid when preAt
	// is set; the id is then held already (preclaim.go).
	preState   dedupe.State
	preAt      time.Time
	preOutages uint64 // Redis outages seen when it was claimed
	// trace is the process span (trace.go); try the attempt span in
	// flight. Zero values with tracing off.
	trace      tracing.Process
	try        tracing.Attempt
	lastResult retry.Result // the last attempt's, "" before the first
}

func (d *delivery) key() string { return d.stream + " " + d.msg.StreamID }

// read is the reader: it makes the group, takes back this consumer's own
// pending entries, then reads new ones, and every claim interval takes
// over entries other consumers left idle. It stops reading while the
// breaker is open or the window is full.
//
// One loop on purpose: the phase (own pending, claims, new entries) and
// the failure count are its state.
func (s *Subscriber) read(ctx context.Context) {
	failures := 0
	backoff := func(err error) bool {
		failures++
		if failures == 1 || failures%50 == 0 {
			s.log.Warn("consumer read", "failures", failures, "err", redisconn.RedactErr(err))
		}
		return retry.Sleep(ctx, redisconn.Backoff.Delay(min(failures, 20), 0))
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
	ownDone := false
	lastClaim := time.Time{}
	for ctx.Err() == nil {
		if !s.appHealthy() {
			_ = s.deps.App.WaitHealthy(ctx) // the app is away: read nothing new, spend no attempts
			continue
		}
		if s.deps.Breakers.State(s.opts.Topic) == breaker.Open {
			_ = s.deps.Breakers.Wait(ctx, s.opts.Topic) // open: read nothing new, spend no attempts
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
		case !ownDone:
			var n int
			n, err = s.claimPending(ctx, s.opts.Consumer, 0, min(space, claimBatch))
			ownDone = err == nil && n == 0
		case time.Since(lastClaim) >= s.claimInterval():
			lastClaim = time.Now()
			_, err = s.claimPending(ctx, "", s.opts.ClaimIdle, min(space, claimBatch))
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

func (s *Subscriber) claimInterval() time.Duration {
	return max(time.Second, s.opts.ClaimIdle/2)
}

// ensureGroup creates this app's consumer group on the topic stream and on
// its redrive stream; an existing group is fine.
func (s *Subscriber) ensureGroup(ctx context.Context) error {
	start := "0"
	if s.opts.FromLatest {
		start = "$"
	}
	for _, key := range []string{s.stream, s.redrive} {
		err := s.rdb.XGroupCreateMkStream(ctx, key, s.opts.AppID, start).Err()
		if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
			return err
		}
		start = "0" // the redrive stream holds only this group's entries
	}
	return nil
}

// readNew reads entries never delivered to this group.
func (s *Subscriber) readNew(ctx context.Context, count int) error {
	res, err := s.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group:    s.opts.AppID,
		Consumer: s.opts.Consumer,
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
		s.dispatch(d)
	}
	return nil
}

// claimPending takes over pending entries, oldest first, of consumer ("":
// any consumer) idle at least idle, and dispatches them with attempt =
// their delivery count + 1. With this replica's own name and no idle time
// it takes back what it had before a restart. It returns how many
// untracked entries it found.
func (s *Subscriber) claimPending(ctx context.Context, consumer string, idle time.Duration, count int) (int, error) {
	found := 0
	for _, key := range []string{s.stream, s.redrive} {
		pend, err := s.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
			Stream: key, Group: s.opts.AppID, Consumer: consumer, Idle: idle, Start: "-", End: "+", Count: int64(count),
		}).Result()
		if err != nil {
			return found, err
		}
		var fresh []redis.XPendingExt
		for _, p := range pend {
			if !s.isTracked(key, p.ID) {
				fresh = append(fresh, p)
			}
		}
		if len(fresh) == 0 {
			continue
		}
		found += len(fresh)
		if err := s.claim(ctx, key, fresh); err != nil {
			return found, err
		}
	}
	return found, nil
}

// claim XCLAIMs pending entries to this consumer (which counts a delivery)
// and dispatches them with attempt = previous count + 1.
func (s *Subscriber) claim(ctx context.Context, key string, pend []redis.XPendingExt) error {
	ids := make([]string, len(pend))
	counts := make(map[string]int64, len(pend))
	for i, p := range pend {
		ids[i] = p.ID
		counts[p.ID] = p.RetryCount
	}
	msgs, err := s.rdb.XClaim(ctx, &redis.XClaimArgs{
		Stream: key, Group: s.opts.AppID, Consumer: s.opts.Consumer, MinIdle: 0, Messages: ids,
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
		s.dispatch(s.newDelivery(key, xm, int(counts[xm.ID])+1))
	}
	// Entries trimmed from the stream are dropped from the PEL by XCLAIM;
	// say so, since they can no longer be delivered.
	for _, id := range ids {
		if !got[id] {
			s.log.Error("pending entry no longer in stream", "stream_id", id, "app_id", s.opts.AppID)
		}
	}
	return nil
}

func (s *Subscriber) newDelivery(key string, xm redis.XMessage, attempt int) *delivery {
	d := &delivery{msg: stream.ParseMessage(xm.ID, xm.Values), stream: key, attempt: attempt}
	if key == s.stream {
		if until := s.replayUntil.Load(); until != nil && stream.IDLessEq(xm.ID, *until) {
			d.replay = true
		}
	}
	d.trace = s.startProcess(d)
	return d
}
