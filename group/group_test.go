package group

import (
	"context"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/internal/redistest"
	"github.com/ferry-sidecar/ferry/stream"
)

// A group's whole life against a real Redis: created twice without error,
// figures, a dead letter added, listed and redriven into its own stream
// with the dl:* fields stripped, and a replay whose mark survives into a
// second Group value (a restart).
func TestGroupLifecycle(t *testing.T) {
	rdb := redistest.Start(t)
	ctx := context.Background()
	g := New(rdb, "orders", "billing")
	redistest.AssertSameSlot(t, g.StreamKey, g.RedriveKey, g.DeadLetterKey, stream.ReplayKey("orders", "billing"))
	for range 2 {
		if err := g.Ensure(ctx, false); err != nil {
			t.Fatalf("ensure: %v", err)
		}
	}
	var ids []string
	for i := range 3 {
		id, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: g.StreamKey, Values: map[string]any{stream.FieldID: "m" + strconv.Itoa(i)}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if _, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "billing", Consumer: "c", Streams: []string{g.StreamKey, ">"}, Count: 10}).Result(); err != nil {
		t.Fatal(err)
	}
	st, err := g.Refresh(ctx)
	if err != nil || st.Pending != 3 || st.Lag != 3 || st.LastDelivered != ids[2] || g.Status() != st {
		t.Fatalf("status %+v, %v", st, err)
	}

	if err := g.AddDeadLetter(ctx, map[string]any{stream.FieldID: "m0", "body": "x"}, Failure{Reason: "poison", Status: 422, Attempts: 1, StreamID: ids[0]}); err != nil {
		t.Fatal(err)
	}
	dls, err := g.ListDeadLetters(ctx, 10)
	if err != nil || len(dls) != 1 || dls[0].MessageID != "m0" || dls[0].Reason != "poison" || dls[0].Status != 422 || dls[0].Attempts != 1 {
		t.Fatalf("dead letters %+v, %v", dls, err)
	}
	var forgot []string
	n, err := g.Redrive(ctx, func(_ context.Context, id string) error { forgot = append(forgot, id); return nil })
	if err != nil || n != 1 || len(forgot) != 1 || forgot[0] != "m0" {
		t.Fatalf("redrive: %d %v %v", n, forgot, err)
	}
	moved, _ := rdb.XRange(ctx, g.RedriveKey, "-", "+").Result()
	if len(moved) != 1 || moved[0].Values["body"] != "x" || moved[0].Values["dl:reason"] != nil {
		t.Fatalf("redrive stream %v", moved)
	}
	if left, _ := rdb.XLen(ctx, g.DeadLetterKey).Result(); left != 0 {
		t.Fatalf("%d dead letters left after redrive", left)
	}

	if err := g.Replay(ctx, ids[1], false); err != nil {
		t.Fatal(err)
	}
	restarted := New(rdb, "orders", "billing")
	if err := restarted.LoadReplayMark(ctx); err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if !restarted.IsReplay(id) {
			t.Errorf("entry %d not a replay after the restart", i)
		}
	}
	if restarted.IsReplay(stream.NextID(ids[2])) {
		t.Error("an entry after the mark is a replay")
	}
}
