package sidecar

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/dedupe"
)

// Dead-letter entry fields added to the original ones.
const (
	dlReason   = "dl:reason"
	dlStatus   = "dl:status"
	dlError    = "dl:error"
	dlAttempts = "dl:attempts"
	dlFailedAt = "dl:failed_at"
	dlStreamID = "dl:stream_id"
)

// deadLetter parks d in this group's dead-letter stream, then acks it: a
// crash in between duplicates the dead letter, never loses the message.
func (s *subscriber) deadLetter(ctx context.Context, d *delivery, reason string) {
	vals := make([]any, 0, 2*len(d.msg.Fields)+12)
	for k, v := range d.msg.Fields {
		vals = append(vals, k, v)
	}
	attempts := min(d.attempt, s.sc.cfg.RetryMaxAttempts)
	vals = append(vals,
		dlReason, reason,
		dlStatus, strconv.Itoa(d.lastStatus),
		dlError, d.lastErr,
		dlAttempts, strconv.Itoa(attempts),
		dlFailedAt, time.Now().UTC().Format(time.RFC3339Nano),
		dlStreamID, d.msg.StreamID,
	)
	if err := s.sc.rdb.XAdd(ctx, &redis.XAddArgs{Stream: s.dlq, Values: vals}).Err(); err != nil {
		s.log.Warn("dead-letter", "msg_id", d.msg.ID, "err", redactErr(err))
		s.later(d, waitNoAttempt, false)
		return
	}
	s.sc.metrics.DeadLetters.WithLabelValues(s.sub.Topic, reason).Inc()
	s.log.Error("dead-lettered", "msg_id", d.msg.ID, "app_id", s.group, "reason", reason,
		"attempt", attempts, "status", d.lastStatus, "err", d.lastErr)
	s.ack(ctx, d)
}

// DeadLetter is one entry of GET /v1/deadletters/{topic}.
type DeadLetter struct {
	MessageID string `json:"message_id"`
	Reason    string `json:"reason"`
	Status    int    `json:"status"`
	Error     string `json:"error"`
	Attempts  int    `json:"attempts"`
	FailedAt  string `json:"failed_at"`
}

// deadLetters lists up to limit dead letters, oldest first.
func (s *subscriber) deadLetters(ctx context.Context, limit int64) ([]DeadLetter, error) {
	msgs, err := s.sc.rdb.XRangeN(ctx, s.dlq, "-", "+", limit).Result()
	if err != nil {
		return nil, err
	}
	out := make([]DeadLetter, 0, len(msgs))
	for _, m := range msgs {
		str := func(k string) string { v, _ := m.Values[k].(string); return v }
		status, _ := strconv.Atoi(str(dlStatus))
		attempts, _ := strconv.Atoi(str(dlAttempts))
		out = append(out, DeadLetter{
			MessageID: str(fieldID), Reason: str(dlReason), Status: status,
			Error: str(dlError), Attempts: attempts, FailedAt: str(dlFailedAt),
		})
	}
	return out, nil
}

// redriveScript moves one dead letter to this group's redrive stream,
// stripped of its dead-letter fields, atomically: both keys share the
// topic's hash slot. KEYS: dlq, redrive. ARGV: entry id.
var redriveScript = redis.NewScript(`
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #e == 0 then return 0 end
local f = e[1][2]
local out = {}
for i = 1, #f, 2 do
  if string.sub(f[i], 1, 3) ~= 'dl:' then
    out[#out+1] = f[i]; out[#out+1] = f[i+1]
  end
end
redis.call('XADD', KEYS[2], '*', unpack(out))
redis.call('XDEL', KEYS[1], ARGV[1])
return 1`)

// redriveAll puts every dead letter of this group back into delivery for
// this group only, with fresh attempts and its dedupe entry cleared.
func (s *subscriber) redriveAll(ctx context.Context) (int, error) {
	n := 0
	for range 10000 { // bounded: 10000 pages of 100
		msgs, err := s.sc.rdb.XRangeN(ctx, s.dlq, "-", "+", 100).Result()
		if err != nil {
			return n, err
		}
		if len(msgs) == 0 {
			return n, nil
		}
		for _, m := range msgs {
			id, _ := m.Values[fieldID].(string)
			if id != "" {
				if err := s.sc.dedupe.Forget(ctx, dedupe.Key(s.sub.Topic, s.sc.cfg.AppID, id)); err != nil {
					return n, err
				}
			}
			moved, err := redriveScript.Run(ctx, s.sc.rdb, []string{s.dlq, s.redrive}, m.ID).Int()
			if err != nil {
				return n, err
			}
			n += moved
		}
	}
	return n, nil
}
