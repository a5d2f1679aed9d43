package delivery

import (
	"context"
	"time"

	"github.com/ferry-sidecar/ferry/dedupe"
	"github.com/ferry-sidecar/ferry/stream"
)

// preclaim takes the dedupe claims of freshly read deliveries in one
// pipelined round trip, so that each worker does not spend one of its own
// before the POST. Each id claimed this way is held by this replica from
// now on, exactly as attempt would hold it: a second copy of the id cannot
// ride on the same claim. Only Claimed and Done are kept; anything else
// (busy, an error) is left to attempt's own Claim. attempt uses the result
// for the first attempt only, see preclaimValid.
func (s *Subscriber) preclaim(ctx context.Context, ds []*delivery) {
	held := make([]*delivery, 0, len(ds))
	keys := make([]string, 0, len(ds))
	for _, d := range ds {
		if d.replay || !s.hold(d.msg.ID) {
			continue
		}
		held = append(held, d)
		keys = append(keys, stream.DedupeKey(s.opts.Topic, s.opts.AppID, d.msg.ID))
	}
	if len(held) == 0 {
		return
	}
	outages := s.deps.Health.Outages()
	states, _ := s.deps.Dedupe.ClaimMany(ctx, keys...) // on an error every state is Busy
	now := time.Now()
	for i, d := range held {
		if st := states[i]; st == dedupe.Claimed || st == dedupe.Done {
			d.preState, d.preAt, d.preOutages = st, now, outages
			continue
		}
		s.unhold(d.msg.ID)
	}
}

// preclaimValid reports whether a claim made at read time (at) still
// stands in for attempt's own: it exists, its lease is less than half
// spent, and Redis is up and has not been down since (it may have lost the
// claim, and a delivery must never go out while the check cannot be made).
func (s *Subscriber) preclaimValid(d *delivery, at time.Time) bool {
	return !at.IsZero() &&
		time.Since(at) < s.opts.DedupeLease/2 &&
		s.deps.Health.Up() &&
		s.deps.Health.Outages() == d.preOutages
}
