package delivery

import (
	"context"
	"fmt"

	"github.com/ferry-sidecar/ferry/group"
	"github.com/ferry-sidecar/ferry/stream"
)

// DeadLetter is one entry of GET /v1/deadletters/{topic}.
type DeadLetter = group.DeadLetter

// addDeadLetter adds d to this group's dead-letter stream (and, with a
// dead-letter topic, publishes it there first), counts and logs it; the
// caller then acks it. A crash in between duplicates the dead letter,
// never loses the message.
func (s *Subscriber) addDeadLetter(ctx context.Context, d *delivery, reason string) error {
	attempts := d.attempt
	if max := s.deps.Retry.MaxAttempts; max > 0 {
		attempts = min(attempts, max)
	}
	if err := s.publishDeadLetter(ctx, d); err != nil {
		return err
	}
	f := group.Failure{Reason: reason, Status: d.lastStatus, Err: d.lastErr, Attempts: attempts, StreamID: d.msg.StreamID}
	if err := s.g.AddDeadLetter(ctx, d.msg.Fields, f); err != nil {
		return err
	}
	s.m.DeadLetters.WithLabelValues(s.opts.Topic, reason).Inc()
	s.log.Error("dead-lettered", "msg_id", d.msg.ID, "app_id", s.opts.AppID, "reason", reason,
		"attempt", attempts, "status", d.lastStatus, "err", d.lastErr, "", traceValue{d})
	return nil
}

// DeadLetters lists up to limit of this group's dead letters, oldest first.
func (s *Subscriber) DeadLetters(ctx context.Context, limit int64) ([]DeadLetter, error) {
	return s.g.ListDeadLetters(ctx, limit)
}

// Redrive puts every dead letter of this group back into delivery for
// this group only, with fresh attempts and its dedupe entry cleared.
func (s *Subscriber) Redrive(ctx context.Context) (int, error) {
	return s.g.Redrive(ctx, func(ctx context.Context, id string) error {
		return s.deps.Dedupe.Forget(ctx, stream.DedupeKey(s.opts.Topic, s.opts.AppID, id))
	})
}

// publishDeadLetter publishes d, as it was stored, to
// Options.DeadLetterTopic through the outbox (a no-op without one). It runs
// before the dead letter is recorded: a crash or a failure in between
// publishes it again with the same message id, which the dead-letter
// topic's subscribers dedupe.
func (s *Subscriber) publishDeadLetter(ctx context.Context, d *delivery) error {
	if s.opts.DeadLetterTopic == "" || s.deps.Outbox == nil {
		return nil
	}
	fields := make([]string, 0, 2*len(d.msg.Fields))
	for k, v := range d.msg.Fields {
		str, _ := v.(string)
		switch k {
		case stream.FieldPublishedAt, stream.FieldBody, stream.FieldExpiresAt:
			continue // the relay stamps a new publish time; a dead letter does not expire
		}
		fields = append(fields, k, str)
	}
	if _, ok := d.msg.Fields[stream.FieldID]; !ok {
		fields = append(fields, stream.FieldID, d.msg.ID)
	}
	rec := stream.AppendEvent(nil, &stream.Event{Topic: s.opts.DeadLetterTopic, Fields: fields, Body: []byte(d.msg.Body)})
	if err := s.deps.Outbox.Append(ctx, rec); err != nil {
		return fmt.Errorf("publish dead letter to %s: %w", s.opts.DeadLetterTopic, err)
	}
	return nil
}
