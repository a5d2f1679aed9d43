package redistest_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/internal/redistest"
)

func TestSlot(t *testing.T) {
	for key, want := range map[string]int{
		"123456789":             0x31C3, // the CRC16/XMODEM check value
		"foo":                   12182,
		"{user1000}.following":  redistest.Slot("user1000"),
		"{}x":                   redistest.Slot("{}x"),
		"a{b}c{d}":              redistest.Slot("b"),
		"ferry:{orders}:stream": redistest.Slot("orders"),
	} {
		if got := redistest.Slot(key); got != want {
			t.Errorf("Slot(%q) = %d, want %d", key, got, want)
		}
	}
	if redistest.Slot("{}x") == redistest.Slot("") {
		t.Errorf("an empty hash tag must hash the whole key")
	}
}

func TestAssertSameSlot(t *testing.T) {
	ft := &fakeT{TB: t}
	redistest.AssertSameSlot(ft, "ferry:{a}:stream", "ferry:{a}:dlq:x", "ferry:{a}:dedupe:x:1")
	if ft.failed {
		t.Fatal("keys of one topic reported in different slots")
	}
	redistest.AssertSameSlot(ft, "ferry:{a}:stream", "ferry:{b}:stream")
	if !ft.failed {
		t.Fatal("keys of two topics not reported")
	}
}

// fakeT records Errorf instead of failing the test.
type fakeT struct {
	testing.TB
	failed bool
}

func (f *fakeT) Errorf(string, ...any) { f.failed = true }
func (f *fakeT) Helper()               {}

// setWaited writes key and waits until a replica has it, so a kill of the
// master cannot lose it.
func setWaited(t *testing.T, c *redistest.Cluster, key, val string) {
	t.Helper()
	ctx := context.Background()
	m, err := c.Client.MasterForKey(ctx, key)
	if err != nil {
		t.Fatalf("MasterForKey: %v", err)
	}
	var wait *redis.Cmd
	if _, err := m.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, key, val, 0)
		wait = p.Do(ctx, "WAIT", 1, 5000) // Pipeliner has no Wait method
		return nil
	}); err != nil {
		t.Fatalf("SET+WAIT %s: %v", key, err)
	}
	if n, err := wait.Int64(); err != nil || n != 1 {
		t.Fatalf("WAIT after SET %s = %d replicas, %v; want 1", key, n, err)
	}
}

func getEventually(t *testing.T, rdb redis.Cmdable, key, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		got, err := rdb.Get(ctx, key).Result()
		cancel()
		if err == nil && got == want {
			return
		}
		if err == nil || errors.Is(err, redis.Nil) || time.Now().After(deadline) {
			t.Fatalf("GET %s = %q, %v; want %q", key, got, err, want)
		}
		time.Sleep(50 * time.Millisecond) // the client is catching up with a failover
	}
}

func TestCluster(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	t.Logf("cluster started in %v", time.Since(start).Round(time.Millisecond))

	if n := len(c.Masters(t)); n != 3 {
		t.Fatalf("%d masters, want 3", n)
	}
	// Keys of many topics land on all three masters; the helper and go-redis
	// agree on who serves each, and Slot agrees with CLUSTER KEYSLOT.
	owners := make(map[string]int)
	for i := range 30 {
		key := "ferry:{topic-" + strconv.Itoa(i) + "}:stream"
		slot, err := c.Client.ClusterKeySlot(ctx, key).Result()
		if err != nil || int(slot) != redistest.Slot(key) {
			t.Fatalf("CLUSTER KEYSLOT %s = %d, %v; Slot = %d", key, slot, err, redistest.Slot(key))
		}
		m, err := c.Client.MasterForKey(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if want := c.MasterFor(t, key).Addr; m.Options().Addr != want {
			t.Fatalf("MasterForKey(%s) = %s, MasterFor = %s", key, m.Options().Addr, want)
		}
		owners[m.Options().Addr]++
		if err := c.Client.Set(ctx, key, "v"+strconv.Itoa(i), 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if len(owners) != 3 {
		t.Fatalf("30 topics spread over %v, want 3 masters", owners)
	}

	key := "ferry:{busy}:stream"
	setWaited(t, c, key, "before")

	// kill -9 the master: its replica takes over, the client follows.
	killStart := time.Now()
	killed, promoted := c.KillMasterFor(t, key)
	t.Logf("kill -9 %s: %s promoted, cluster healthy in %v", killed.Addr, promoted.Addr, time.Since(killStart).Round(time.Millisecond))
	getEventually(t, c.Client, key, "before")
	if err := c.Client.Set(ctx, key, "after-kill", 0).Err(); err != nil {
		t.Fatalf("SET after failover: %v", err)
	}

	// The killed node comes back as a replica of the promoted one.
	c.Restart(t, killed)
	c.WaitHealthy(t)
	if r := c.ReplicaOf(t, promoted); r != killed {
		t.Fatalf("replica of %s is %v, want the restarted %s", promoted.Addr, r, killed.Addr)
	}

	// A coordinated failover gives the slot back.
	failStart := time.Now()
	c.Failover(t, killed)
	t.Logf("CLUSTER FAILOVER in %v", time.Since(failStart).Round(time.Millisecond))
	if m := c.MasterFor(t, key); m != killed {
		t.Fatalf("after CLUSTER FAILOVER %s serves the key, want %s", m.Addr, killed.Addr)
	}
	getEventually(t, c.Client, key, "after-kill")

	// Move the key's slot to another master; the client follows MOVED.
	var other *redistest.Server
	for _, m := range c.Masters(t) {
		if m != killed {
			other = m
		}
	}
	moveStart := time.Now()
	c.MoveSlot(t, redistest.Slot(key), other)
	t.Logf("MoveSlot in %v", time.Since(moveStart).Round(time.Millisecond))
	if m := c.MasterFor(t, key); m != other {
		t.Fatalf("after MoveSlot %s serves the key, want %s", m.Addr, other.Addr)
	}
	getEventually(t, c.Client, key, "after-kill")
	if n, err := c.NodeClient(t, other).Exists(ctx, key).Result(); err != nil || n != 1 {
		t.Fatalf("key on its new master: EXISTS = %d, %v", n, err)
	}

	// redis-cli reshard moves slots between masters.
	reshardStart := time.Now()
	c.Reshard(t, other, killed, 10)
	t.Logf("Reshard 10 slots in %v", time.Since(reshardStart).Round(time.Millisecond))
	for i := range 30 {
		getEventually(t, c.Client, "ferry:{topic-"+strconv.Itoa(i)+"}:stream", "v"+strconv.Itoa(i))
	}
}

func TestClusterURL(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterOptions{Auth: redistest.Auth{Username: "ferry", Password: "s3cret"}})
	opts, err := redis.ParseClusterURL(c.URL())
	if err != nil {
		t.Fatalf("ParseClusterURL(%s): %v", c.URL(), err)
	}
	if len(opts.Addrs) != 3 || opts.Username != "ferry" || opts.Password != "s3cret" {
		t.Fatalf("ParseClusterURL(%s) = addrs %v user %q", c.URL(), opts.Addrs, opts.Username)
	}
	cc := redis.NewClusterClient(opts)
	defer cc.Close()
	ctx := context.Background()
	for i := range 10 {
		k := fmt.Sprintf("k{%d}", i)
		if err := cc.Set(ctx, k, i, 0).Err(); err != nil {
			t.Fatalf("SET through the URL's client: %v", err)
		}
	}
	// The default user is off: no password, no entry.
	plain := redis.NewClient(&redis.Options{Addr: c.Nodes[0].Addr})
	defer plain.Close()
	if err := plain.Ping(ctx).Err(); !redis.HasErrorPrefix(err, "NOAUTH") {
		t.Fatalf("PING without credentials: %v, want NOAUTH", err)
	}
	killed, promoted := c.KillMasterFor(t, "k{1}")
	t.Logf("with ACL: killed %s, promoted %s", killed.Addr, promoted.Addr)
}
