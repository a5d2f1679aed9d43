package delivery

import (
	"context"
	"time"

	"github.com/ferry-sidecar/ferry/dedupe"
	"github.com/ferry-sidecar/ferry/internal/redisconn"
	"github.com/ferry-sidecar/ferry/retry"
	"github.com/ferry-sidecar/ferry/stream"
	"github.com/ferry-sidecar/ferry/tracing"
)

// verdict is what to do with a delivery after an attempt.
type verdict int

const (
	settle     verdict = iota // the app answered 2xx: complete in the dedupe store, then ack
	duplicate                 // already delivered (dedupe): ack without delivering
	retryLater                // the app failed: try again after delay, counting an attempt
	wait                      // not tried (busy claim, Redis, breaker): again after delay, no attempt used
	deadLetter                // add it to the dead letters with reason, then ack
	park                      // the app is not there: wait for it, no attempt used
	abandon                   // shutting down: leave it pending in Redis
)

// outcome is the result of one attempt: a verdict and its details.
type outcome struct {
	verdict verdict
	delay   time.Duration
	reason  string // deadLetter: poison, exhausted; wait: what it waits for (a span event)
}

// attempt runs one attempt of d: dedupe claim, rate limit, breaker, POST,
// and classifies what happened. It changes nothing in Redis but the dedupe
// claim (released again unless the app took the message); act does the rest.
func (s *Subscriber) attempt(ctx context.Context, d *delivery) outcome {
	if d.attempt > s.deps.Retry.MaxAttempts && s.deps.Retry.MaxAttempts > 0 {
		// A restart found the attempts already spent: a crash loop must not retry forever.
		if d.lastErr == "" {
			d.lastErr = "attempts exhausted before a restart"
		}
		return outcome{verdict: deadLetter, reason: "exhausted"}
	}
	if d.delivered || d.parked {
		return outcome{verdict: settle} // never POST again what the app already has, or what is dead-lettered
	}
	if !s.appHealthy() {
		return outcome{verdict: park}
	}
	dkey := stream.DedupeKey(s.opts.Topic, s.opts.AppID, d.msg.ID)
	if !d.replay {
		if o, claimed := s.claimDedupe(ctx, d, dkey); !claimed {
			return o
		}
	}
	o := s.post(ctx, d)
	if o.verdict != settle && !d.replay {
		s.release(ctx, d, dkey) // the app does not have it: another copy or replica may deliver it
	}
	return o
}

// post waits for the rate limiter and the breaker, POSTs d once and
// classifies the answer.
func (s *Subscriber) post(ctx context.Context, d *delivery) outcome {
	if s.limiter != nil {
		if r := s.limiter.Reserve(); r.Delay() > 0 {
			s.m.Throttled.WithLabelValues("delivery").Inc()
			d.trace.Wait(waitRateLimit, r.Delay())
			if !retry.Sleep(ctx, r.Delay()) {
				r.Cancel()
				return outcome{verdict: abandon}
			}
		}
	}
	done, err := s.deps.Breakers.Allow(s.opts.Topic)
	if err != nil {
		return outcome{verdict: wait, delay: waitNoAttempt, reason: waitBreaker} // refused by the breaker: no attempt used
	}
	if !s.takeSlot(ctx, d) {
		done(true)
		return outcome{verdict: abandon}
	}
	start := time.Now()
	d.try = d.trace.StartAttempt(s.opts.Route, d.attempt)
	status, retryAfter, result, perr := s.send(ctx, d)
	if result != retry.Success || d.replay {
		s.freeSlot(d) // nothing to complete
	}
	if ctx.Err() != nil && status == 0 {
		// Cut off by shutdown: not the app's failure, not an attempt.
		done(true)
		d.try.End(0, resultAbandoned)
		return outcome{verdict: abandon}
	}
	done(!result.Failure())
	s.m.DeliveryAttempts.WithLabelValues(s.opts.Topic, string(result)).Inc()
	d.try.Observe(s.m.DeliveryDuration.WithLabelValues(s.opts.Topic), time.Since(start).Seconds())
	d.try.End(status, string(result))
	d.lastResult = result
	d.lastStatus, d.lastErr = status, ""
	if perr != nil {
		d.lastErr = redisconn.RedactErr(perr)
	}
	switch {
	case result == retry.Success:
		d.delivered = true
		return outcome{verdict: settle}
	case !result.SpendsAttempt(): // unreachable: the app is not there, which is no fault of the message
		if s.deps.App != nil {
			s.deps.App.Unreachable()
		}
		return outcome{verdict: park}
	case result == retry.Poison:
		return outcome{verdict: deadLetter, reason: "poison"}
	case s.deps.Retry.Exhausted(d.attempt):
		return outcome{verdict: deadLetter, reason: "exhausted"}
	}
	delay := s.deps.Retry.Delay(d.attempt, retryAfter)
	s.log.Debug("delivery retry", "msg_id", d.msg.ID, "attempt", d.attempt, "result", string(result), "delay", delay, "", traceValue{d})
	return outcome{verdict: retryLater, delay: delay}
}

// release gives up d's dedupe claim and this replica's hold on its id.
func (s *Subscriber) release(ctx context.Context, d *delivery, dkey string) {
	s.unhold(d.msg.ID)
	if err := s.deps.Dedupe.Release(ctx, dkey); err != nil {
		s.log.Warn("release dedupe claim", "msg_id", d.msg.ID, "err", redisconn.RedactErr(err))
	}
}

// claimDedupe takes d's dedupe claim (or uses the one preclaim took at read
// time). claimed is false when the attempt must stop with o.
func (s *Subscriber) claimDedupe(ctx context.Context, d *delivery, dkey string) (o outcome, claimed bool) {
	pre, preAt := d.preState, d.preAt
	d.preAt = time.Time{} // a claim made at read time serves the first attempt only
	if preAt.IsZero() && !s.hold(d.msg.ID) {
		return outcome{verdict: wait, delay: waitNoAttempt, reason: waitHeld}, false // another copy of this id is on its way here
	}
	st, err := pre, error(nil)
	if !s.preclaimValid(d, preAt) {
		st, err = s.deps.Dedupe.Claim(ctx, dkey)
	}
	switch {
	case err != nil:
		s.unhold(d.msg.ID)
		return outcome{verdict: wait, delay: waitNoAttempt, reason: waitRedis}, false // never deliver without the check
	case st == dedupe.Done:
		s.unhold(d.msg.ID)
		return outcome{verdict: duplicate}, false
	case st == dedupe.Busy:
		s.unhold(d.msg.ID)
		return outcome{verdict: wait, delay: waitNoAttempt, reason: waitDedupeBusy}, false
	}
	return outcome{}, true
}

// act carries out an attempt's outcome: the one place that acks (through
// the settler), schedules retries and dead-letters.
func (s *Subscriber) act(ctx context.Context, d *delivery, o outcome) {
	switch o.verdict {
	case settle:
		s.toSettler(settleReq{d: d, complete: d.delivered && !d.replay})
	case duplicate:
		s.toSettler(settleReq{d: d, duplicate: true})
	case retryLater:
		if ctx.Err() == nil {
			d.trace.Retry(string(d.lastResult), o.delay)
			s.later(d, o.delay, true)
		}
	case wait:
		if ctx.Err() == nil {
			d.trace.Wait(o.reason, o.delay)
			s.later(d, o.delay, false)
		}
	case deadLetter:
		if err := s.addDeadLetter(ctx, d, o.reason); err != nil {
			s.log.Warn("dead-letter", "msg_id", d.msg.ID, "err", redisconn.RedactErr(err))
			if ctx.Err() == nil {
				d.trace.Wait(waitRedis, waitNoAttempt)
				s.later(d, waitNoAttempt, false)
			}
			return
		}
		d.trace.End(d.traceOutcome(tracing.Outcome{DeadLetter: o.reason}))
		d.parked = true
		s.toSettler(settleReq{d: d})
	case park:
		d.trace.Wait(waitApp, 0)
		s.park(ctx, d)
	case abandon:
	}
}

// park sets d aside until the app is back (Resume). The attempt it was
// read or retried for is given back in Redis (the entry's delivery count
// set one lower), so that neither the wait nor a restart during it spends
// one: Resume counts it again.
func (s *Subscriber) park(ctx context.Context, d *delivery) {
	if d.attempt > 0 {
		err := s.rdb.Do(ctx, "XCLAIM", d.stream, s.opts.AppID, s.opts.Consumer, 0, d.msg.StreamID,
			"RETRYCOUNT", d.attempt-1, "JUSTID").Err()
		if err != nil && ctx.Err() == nil {
			s.log.Debug("give back attempt", "msg_id", d.msg.ID, "err", redisconn.RedactErr(err))
		}
		d.attempt--
	}
	s.mu.Lock()
	s.parked = append(s.parked, d)
	s.mu.Unlock()
	if s.appHealthy() {
		s.Resume() // back already (a race with the health callback): do not wait for the next one
	}
}
