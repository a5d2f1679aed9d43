package group

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

// Failure says why a message is dead-lettered.
type Failure struct {
	Reason   string // poison, exhausted, expired, dropped
	Status   int    // the app's last status; 0: no answer
	Err      string // the last error, redacted
	Attempts int
	StreamID string // the entry's id in the stream it was read from
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

// AddDeadLetter adds a message (its stream fields) to the group's
// dead-letter stream with f's dl:* fields; the caller acks it afterwards,
// so a crash in between duplicates the dead letter, never loses it.
func (g *Group) AddDeadLetter(ctx context.Context, fields map[string]any, f Failure) error {
	vals := make([]any, 0, 2*len(fields)+12)
	for k, v := range fields {
		vals = append(vals, k, v)
	}
	vals = append(vals,
		dlReason, f.Reason,
		dlStatus, strconv.Itoa(f.Status),
		dlError, f.Err,
		dlAttempts, strconv.Itoa(f.Attempts),
		dlFailedAt, time.Now().UTC().Format(time.RFC3339Nano),
		dlStreamID, f.StreamID,
	)
	return g.rdb.XAdd(ctx, &redis.XAddArgs{Stream: g.DeadLetterKey, Values: vals}).Err()
}

// ListDeadLetters lists up to limit dead letters, oldest first.
func (g *Group) ListDeadLetters(ctx context.Context, limit int64) ([]DeadLetter, error) {
	msgs, err := g.rdb.XRangeN(ctx, g.DeadLetterKey, "-", "+", limit).Result()
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

// Redrive moves every dead letter back into delivery for this group only
// (its redrive stream), calling forget with each message id first (the
// caller clears its dedupe entry). It returns how many it moved.
func (g *Group) Redrive(ctx context.Context, forget func(ctx context.Context, msgID string) error) (int, error) {
	n := 0
	for range 10000 { // bounded: 10000 pages of 100
		msgs, err := g.rdb.XRangeN(ctx, g.DeadLetterKey, "-", "+", 100).Result()
		if err != nil {
			return n, err
		}
		if len(msgs) == 0 {
			return n, nil
		}
		for _, m := range msgs {
			if id, _ := m.Values[stream.FieldID].(string); id != "" {
				if err := forget(ctx, id); err != nil {
					return n, err
				}
			}
			moved, err := redriveScript.Run(ctx, g.rdb, []string{g.DeadLetterKey, g.RedriveKey}, m.ID).Int()
			if err != nil {
				return n, err
			}
			n += moved
		}
	}
	return n, nil
}
