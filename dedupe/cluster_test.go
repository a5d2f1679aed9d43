package dedupe_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/dedupe"
	"github.com/ferry-sidecar/ferry/internal/redistest"
)

// startCluster runs a three-master Redis Cluster (no replicas) and returns a
// ClusterClient for it.
func startCluster(t *testing.T) *redis.ClusterClient {
	t.Helper()
	ctx := context.Background()
	ranges := [][2]int{{0, 5460}, {5461, 10922}, {10923, 16383}}
	var addrs, busPorts []string
	var nodes []*redis.Client
	for _, r := range ranges {
		// An explicit bus port: the default, port+10000, may be taken or out of range.
		bus := strconv.Itoa(redistest.FreePort(t))
		srv := redistest.StartServer(t,
			"--cluster-enabled", "yes",
			"--cluster-port", bus,
			"--cluster-node-timeout", "5000")
		busPorts = append(busPorts, bus)
		c := srv.Client(t)
		if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", r[0], r[1]).Err(); err != nil {
			t.Fatalf("CLUSTER ADDSLOTSRANGE on %s: %v", srv.Addr, err)
		}
		addrs = append(addrs, srv.Addr)
		nodes = append(nodes, c)
	}
	for i, addr := range addrs[1:] {
		host, port, _ := strings.Cut(addr, ":")
		if err := nodes[0].Do(ctx, "CLUSTER", "MEET", host, port, busPorts[i+1]).Err(); err != nil {
			t.Fatalf("CLUSTER MEET %s: %v", addr, err)
		}
	}
	eventually(t, 20*time.Second, "cluster state ok on every node", func() bool {
		for _, c := range nodes {
			info, err := c.ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_known_nodes:3") {
				return false
			}
		}
		return true
	})
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { cc.Close() })
	return cc
}

// TestCluster runs the store on a ClusterClient with keys of many topics, so
// the pipelined Complete and Forget span slots on every master.
func TestCluster(t *testing.T) {
	ctx := context.Background()
	cc := startCluster(t)
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
