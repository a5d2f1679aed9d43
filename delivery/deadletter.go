package delivery

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/stream"
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

// addDeadLetter adds d to this group's dead-letter stream, counts and logs it; the
// caller then acks it. A crash in between duplicates the dead letter,
// never loses the message.
func (s *Subscriber) addDeadLetter(ctx context.Context, d *delivery, reason string) error {
	vals := make([]any, 0, 2*len(d.msg.Fields)+12)
	for k, v := range d.msg.Fields {
		vals = append(vals, k, v)
	}
	attempts := d.attempt
	if max := s.deps.Retry.MaxAttempts; max > 0 {
		attempts = min(attempts, max)
	}
	vals = append(vals,
		dlReason, reason,
		dlStatus, strconv.Itoa(d.lastStatus),
		dlError, d.lastErr,
		dlAttempts, strconv.Itoa(attempts),
		dlFailedAt, time.Now().UTC().Format(time.RFC3339Nano),
		dlStreamID, d.msg.StreamID,
	)
	if err := s.rdb.XAdd(ctx, &redis.XAddArgs{Stream: s.dlq, Values: vals}).Err(); err != nil {
		return err
	}
	s.m.DeadLetters.WithLabelValues(s.opts.Topic, reason).Inc()
	s.log.Error("dead-lettered", "msg_id", d.msg.ID, "app_id", s.opts.AppID, "reason", reason,
		"attempt", attempts, "status", d.lastStatus, "err", d.lastErr, "", traceValue{d})
	return nil
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

// DeadLetters lists up to limit of this group's dead letters, oldest first.
func (s *Subscriber) DeadLetters(ctx context.Context, limit int64) ([]DeadLetter, error) {
	msgs, err := s.rdb.XRangeN(ctx, s.dlq, "-", "+", limit).Result()
	if err != nil {
		return nil, err
	}
	out := make([]DeadLetter, 0, len(msgs))
	for _, m := range msgs {
		str := func(k string) string { v, _ := m.Values[k].(string); return v }
		status, _ := strconv.Atoi(str(dlStatus))
		attempts, _ := strconv.Atoi(str(dlAttempts))
		out = append(out, DeadLetter{
			MessageID: str(stream.FieldID), Reason: str(dlReason), Status: status,
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

// Redrive puts every dead letter of this group back into delivery for
// this group only, with fresh attempts and its dedupe entry cleared.
func (s *Subscriber) Redrive(ctx context.Context) (int, error) {
	n := 0
	for range 10000 { // bounded: 10000 pages of 100
		msgs, err := s.rdb.XRangeN(ctx, s.dlq, "-", "+", 100).Result()
		if err != nil {
			return n, err
		}
		if len(msgs) == 0 {
			return n, nil
		}
		for _, m := range msgs {
			if id, _ := m.Values[stream.FieldID].(string); id != "" {
				if err := s.deps.Dedupe.Forget(ctx, stream.DedupeKey(s.opts.Topic, s.opts.AppID, id)); err != nil {
					return n, err
				}
			}
			moved, err := redriveScript.Run(ctx, s.rdb, []string{s.dlq, s.redrive}, m.ID).Int()
			if err != nil {
				return n, err
			}
			n += moved
		}
	}
	return n, nil
}
