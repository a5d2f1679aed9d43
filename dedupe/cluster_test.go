package dedupe_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/dedupe"
	"github.com/ferry-sidecar/ferry/internal/redistest"
)

// startCluster runs a six-node Redis Cluster (three masters, one replica
// each) and returns it.
func startCluster(t *testing.T) *redistest.Cluster {
	t.Helper()
	return redistest.StartCluster(t, redistest.ClusterOptions{})
}

// TestCluster runs the store on a ClusterClient with keys of many topics, so
// the pipelined Complete and Forget span slots on every master.
func TestCluster(t *testing.T) {
	ctx := context.Background()
	cc := startCluster(t).Client
	a := newStore(t, cc, dedupe.Options{TTL: time.Hour, Lease: time.Hour, Owner: "pod-a"})
	b := newStore(t, cc, dedupe.Options{TTL: time.Hour, Lease: time.Hour, Owner: "pod-b"})

	var keys []string
	slots := make(map[int64]bool)
	for i := range 60 {
		k := dedupe.Key("topic-"+strconv.Itoa(i), "app", "m"+strconv.Itoa(i))
		keys = append(keys, k)
		slot, err := cc.ClusterKeySlot(ctx, k).Result()
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT: %v", err)
		}
		slots[slot/5461] = true // which third of the slots: which master
	}
	if len(slots) != 3 {
		t.Fatalf("keys cover %d masters, want 3", len(slots))
	}

	for _, k := range keys {
		claim(t, a, k, dedupe.Claimed)
		claim(t, b, k, dedupe.Busy)
	}
	if err := a.Complete(ctx, keys...); err != nil {
		t.Fatalf("Complete across slots: %v", err)
	}
	for _, k := range keys {
		claim(t, b, k, dedupe.Done)
	}
	if err := b.Forget(ctx, keys...); err != nil {
		t.Fatalf("Forget across slots: %v", err)
	}
	for _, k := range keys {
		claim(t, b, k, dedupe.Claimed)
	}

	// Every master loses its script cache (a failover to a fresh replica).
	if err := cc.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if err := b.Release(ctx, k); err != nil {
			t.Fatalf("Release after SCRIPT FLUSH: %v", err)
		}
		claim(t, a, k, dedupe.Claimed)
	}
}

// TestClusterFailoverAndSlotMove runs every script and pipeline of the store
// (Claim, ClaimMany, Complete, Release, Forget) on one topic's keys while the
// topic's master is killed (its replica, without the scripts cached, takes
// over) and while the topic's slot moves to another master (MOVED and ASK).
func TestClusterFailoverAndSlotMove(t *testing.T) {
	ctx := context.Background()
	c := startCluster(t)
	a := newStore(t, c.Client, dedupe.Options{TTL: time.Hour, Lease: time.Hour, Owner: "pod-a"})
	b := newStore(t, c.Client, dedupe.Options{TTL: time.Hour, Lease: time.Hour, Owner: "pod-b"})

	const topic = "orders"
	keys := make([]string, 40)
	for i := range keys {
		keys[i] = dedupe.Key(topic, "app", "m"+strconv.Itoa(i))
	}
	// Every key of the topic, the stream's included, is in one slot.
	redistest.AssertSameSlot(t, append([]string{"ferry:{" + topic + "}:stream"}, keys...)...)

	// exercise runs each operation on the keys and checks the states.
	exercise := func(stage string) {
		t.Helper()
		states, err := a.ClaimMany(ctx, keys[:20]...)
		if err != nil {
			t.Fatalf("%s: ClaimMany: %v", stage, err)
		}
		for i, st := range states {
			if st != dedupe.Claimed {
				t.Fatalf("%s: ClaimMany state %d = %v, want claimed", stage, i, st)
			}
		}
		for _, k := range keys[20:] {
			claim(t, a, k, dedupe.Claimed)
			claim(t, b, k, dedupe.Busy)
		}
		if err := a.Release(ctx, keys[20]); err != nil {
			t.Fatalf("%s: Release: %v", stage, err)
		}
		claim(t, b, keys[20], dedupe.Claimed)
		if err := a.Complete(ctx, keys...); err != nil {
			t.Fatalf("%s: Complete: %v", stage, err)
		}
		states, err = b.ClaimMany(ctx, keys...)
		if err != nil {
			t.Fatalf("%s: ClaimMany after Complete: %v", stage, err)
		}
		for i, st := range states {
			if st != dedupe.Done {
				t.Fatalf("%s: state %d after Complete = %v, want done", stage, i, st)
			}
		}
		if err := b.Forget(ctx, keys...); err != nil {
			t.Fatalf("%s: Forget: %v", stage, err)
		}
		if err := b.Forget(ctx, keys[0]); err != nil {
			t.Fatalf("%s: Forget one: %v", stage, err)
		}
	}
	exercise("healthy")

	// kill -9 the topic's master: the promoted replica has no script cached
	// (scripts replicate as effects), so the first calls see NOSCRIPT.
	killed, promoted := c.KillMasterFor(t, keys[0])
	t.Logf("killed %s, promoted %s", killed.Addr, promoted.Addr)
	cached, err := c.NodeClient(t, promoted).ScriptExists(ctx, dedupe.ScriptHashes...).Result()
	if err != nil || cached[0] || cached[1] {
		t.Fatalf("scripts cached on the promoted replica: %v, %v; want none", cached, err)
	}
	// The client catches up with the new topology (a plain read, so that
	// the scripts' NOSCRIPT path is left to the store).
	eventually(t, 30*time.Second, "client follows the failover", func() bool {
		err := c.Client.Get(ctx, keys[0]).Err()
		return err == nil || errors.Is(err, redis.Nil)
	})
	exercise("after failover")

	// Move the topic's slot to another master, half-way first: keys already
	// migrated, and new ones, are answered with ASK; then all of it (MOVED).
	c.Restart(t, killed)
	c.WaitHealthy(t)
	var to *redistest.Server
	for _, m := range c.Masters(t) {
		if m != promoted {
			to = m
			break
		}
	}
	for _, k := range keys[:30] {
		claim(t, a, k, dedupe.Claimed)
	}
	move := c.StartSlotMove(t, redistest.Slot(keys[0]), to)
	if n := move.Migrate(t, 15); n != 15 {
		t.Fatalf("migrated %d keys, want 15", n)
	}
	for _, k := range keys {
		claim(t, a, k, dedupe.Claimed) // moved, still on the source, or new on the target
		claim(t, b, k, dedupe.Busy)
	}
	// The client's slot map still names the source: the 15 migrated keys and
	// the 10 new ones reached the target through ASK.
	slot := redistest.Slot(keys[0])
	src := c.SlotOwner(t, slot)
	for node, want := range map[*redistest.Server]int64{src: 15, to: 25} {
		if n, err := c.NodeClient(t, node).ClusterCountKeysInSlot(ctx, slot).Result(); err != nil || n != want {
			t.Fatalf("keys of slot %d on %s: %d, %v; want %d", slot, node.Addr, n, err, want)
		}
	}
	states, err := b.ClaimMany(ctx, keys...)
	if err != nil {
		t.Fatalf("ClaimMany during the move: %v", err)
	}
	for i, st := range states {
		if st != dedupe.Busy {
			t.Fatalf("ClaimMany during the move: state %d = %v, want busy", i, st)
		}
	}
	if err := a.Release(ctx, keys[39]); err != nil {
		t.Fatalf("Release during the move: %v", err)
	}
	if err := a.Complete(ctx, keys...); err != nil {
		t.Fatalf("Complete during the move: %v", err)
	}
	move.Finish(t)
	for _, k := range keys {
		claim(t, b, k, dedupe.Done) // the states moved with the slot
	}
	if err := a.Forget(ctx, keys...); err != nil {
		t.Fatalf("Forget after the move: %v", err)
	}
	exercise("after slot move")
}
