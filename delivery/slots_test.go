package delivery

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/group"
	"github.com/ferry-sidecar/ferry/internal/redistest"
	"github.com/ferry-sidecar/ferry/retention"
	"github.com/ferry-sidecar/ferry/stream"
)

// slotTopics have names a hash tag must cope with; on a cluster they land
// on different masters.
var slotTopics = []string{"orders", "a.b-c_d", "x", "T0", "payments.v2", "9"}

// TestTopicKeysShareASlot: every key of one topic (stream, dead letters,
// redrive, replay, dedupe) hashes to one slot, so each multi-key operation
// on them (the dedupe and redrive scripts, XREADGROUP over stream and
// redrive, the ack pipeline) can run on a Redis Cluster.
func TestTopicKeysShareASlot(t *testing.T) {
	for _, topic := range slotTopics {
		keys := []string{
			stream.Key(topic), stream.DeadLetterKey(topic, "billing"), stream.RedriveKey(topic, "billing"),
			stream.ReplayKey(topic, "billing"), stream.DedupeKey(topic, "billing", "id-1"),
			stream.DedupeKey(topic, "other-app", "{weird}id"),
		}
		redistest.AssertSameSlot(t, keys...)
	}
	if redistest.Slot(stream.Key("orders")) == redistest.Slot(stream.Key("payments.v2")) {
		t.Fatal("two topics share a slot by construction: the hash tag is not the topic")
	}
}

// TestMultiKeyOperationsOnACluster runs each of delivery's and retention's
// multi-key operations against a real cluster, for topics on every master:
// XREADGROUP over [stream, redrive] (one command, two keys), the redrive
// script (dlq, redrive), the ack pipeline, park's XCLAIM through Do (routed
// by its first key), and retention's count script. A CROSSSLOT, or a
// command routed to a node that does not own the key (MOVED past the
// redirect limit), fails the test.
func TestMultiKeyOperationsOnACluster(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	ctx := context.Background()
	var rdb redis.UniversalClient = c.Client
	masters := map[string]bool{}
	for _, topic := range slotTopics {
		masters[c.MasterFor(t, stream.Key(topic)).Addr] = true
		st, dlq, rd := stream.Key(topic), stream.DeadLetterKey(topic, "g"), stream.RedriveKey(topic, "g")
		for range 3 {
			must(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: st, Values: []any{stream.FieldID, "m"}}).Err())
		}
		must(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: dlq, Values: []any{stream.FieldID, "d", "dl:reason", "poison"}}).Err())
		for _, k := range []string{st, rd} {
			must(t, rdb.XGroupCreateMkStream(ctx, k, "g", "0").Err())
		}
		moved, err := group.New(rdb, topic, "g").Redrive(ctx, func(context.Context, string) error { return nil }) // the redrive script
		if err != nil || moved != 1 {
			t.Fatalf("%s: redrive script = %d, %v", topic, moved, err)
		}
		res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c1",
			Streams: []string{st, rd, ">", ">"}, Count: 10, Block: 100 * time.Millisecond}).Result()
		must(t, err)
		if len(res) != 2 || len(res[0].Messages) != 3 || len(res[1].Messages) != 1 {
			t.Fatalf("%s: XREADGROUP over stream and redrive = %v", topic, res)
		}
		first := res[0].Messages[0].ID
		must(t, rdb.Do(ctx, "XCLAIM", st, "g", "c2", 0, first, "RETRYCOUNT", 0, "JUSTID").Err())
		_, err = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.XAck(ctx, st, "g", res[0].Messages[1].ID, res[0].Messages[2].ID)
			p.XAck(ctx, rd, "g", res[1].Messages[0].ID)
			return nil
		})
		must(t, err)
		pend, err := rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: st, Group: "g", Start: "-", End: "+", Count: 10}).Result()
		must(t, err)
		if len(pend) != 1 || pend[0].Consumer != "c2" || pend[0].RetryCount != 0 {
			t.Fatalf("%s: after XCLAIM and XACK pending = %+v", topic, pend)
		}
		tr := retention.New(rdb, retention.Options{MaxLen: 1})
		if _, err := tr.Trim(ctx, topic, "g"); err != nil { // runs the count script: the group still needs entries
			t.Fatalf("%s: trim: %v", topic, err)
		}
		if n, _ := rdb.XLen(ctx, st).Result(); n != 3 {
			t.Fatalf("%s: trim left %d entries, want 3 (one pending)", topic, n)
		}
	}
	if len(masters) != 3 {
		t.Fatalf("the topics cover %d masters, want 3", len(masters))
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
