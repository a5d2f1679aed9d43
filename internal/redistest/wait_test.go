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

// errNotReplicated: WAIT answered fewer replicas than asked.
var errNotReplicated = errors.New("fewer replicas than asked")

// xaddWait is the prototype of the relay's replicated append: the XADDs of
// one topic and a WAIT travel in one pipeline, so on one connection (WAIT
// counts that connection's writes), to the master of the topic's slot. Any
// error means no entry counts as replicated: the caller keeps them all and
// sends them again (dedupe absorbs copies).
func xaddWait(ctx context.Context, rdb redis.UniversalClient, stream string, n, replicas int, timeout time.Duration) (acked int64, err error) {
	node, ok := rdb.(*redis.Client) // standalone, and NewFailoverClient's master
	if cc, isCluster := rdb.(*redis.ClusterClient); isCluster {
		if node, err = cc.MasterForKey(ctx, stream); err != nil {
			return 0, fmt.Errorf("find master of %s: %w", stream, err)
		}
	} else if !ok {
		return 0, fmt.Errorf("xadd and wait: unsupported client %T", rdb)
	}
	cmds, err := node.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range n {
			p.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"n", i}})
		}
		p.Do(ctx, "WAIT", replicas, timeout.Milliseconds()) // Pipeliner has no Wait method
		return nil
	})
	if err != nil { // the first failed command's error: a MOVED XADD included
		return 0, fmt.Errorf("xadd %d to %s: %w", n, stream, err)
	}
	if acked, err = cmds[n].(*redis.Cmd).Int64(); err == nil && acked < int64(replicas) {
		err = fmt.Errorf("wait for %d replicas of %s: %d: %w", replicas, stream, acked, errNotReplicated)
	}
	return acked, err
}

func TestWaitOnClusterMaster(t *testing.T) {
	ctx := context.Background()
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	for i := range 6 { // topics on every master
		stream := "ferry:{wait-" + strconv.Itoa(i) + "}:stream"
		acked, err := xaddWait(ctx, c.Client, stream, 50, 1, 2*time.Second)
		if err != nil || acked != 1 {
			t.Fatalf("xaddWait %s = %d, %v; want 1 replica", stream, acked, err)
		}
	}

	// The trap: a keyless WAIT in a ClusterClient pipeline is routed on its
	// own (a random or the first master), not with the XADDs.
	stream := "ferry:{trap}:stream"
	var wait *redis.Cmd
	_, err := c.Client.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"n", 1}})
		wait = p.Do(ctx, "WAIT", 1, 500)
		return nil
	})
	t.Logf("ClusterClient pipeline [XADD, WAIT]: err %v, WAIT = %v (counts writes of whichever connection it went to)", err, wait.Val())

	// Fewer replicas than asked: the replica of the stream's master is
	// down, WAIT times out with 0 and the batch stays unconfirmed.
	master := c.MasterFor(t, stream)
	c.Kill(t, c.ReplicaOf(t, master))
	start := time.Now()
	acked, err := xaddWait(ctx, c.Client, stream, 10, 1, 500*time.Millisecond)
	if !errors.Is(err, errNotReplicated) || acked != 0 {
		t.Fatalf("xaddWait with the replica down = %d, %v; want 0, not replicated", acked, err)
	}
	t.Logf("WAIT 1 500 with the replica down: %d after %v", acked, time.Since(start).Round(time.Millisecond))
}

func TestWaitOnSentinelPrimary(t *testing.T) {
	ctx := context.Background()
	s := redistest.StartSentinel(t, redistest.SentinelOptions{})
	for _, want := range []int{1, 2} {
		acked, err := xaddWait(ctx, s.Client, "ferry:{t}:stream", 50, want, 2*time.Second)
		if err != nil || acked < int64(want) {
			t.Fatalf("xaddWait for %d = %d, %v", want, acked, err)
		}
	}
	// A kill -9 of the primary: the failover client follows; a batch sent
	// meanwhile fails as a whole (or is confirmed by the new primary's
	// replica once the set settled).
	killed, promoted := s.KillPrimary(t)
	t.Logf("killed %s, promoted %s", killed.Addr, promoted.Addr)
	deadline := time.Now().Add(30 * time.Second)
	for {
		acked, err := xaddWait(ctx, s.Client, "ferry:{t}:stream", 10, 1, time.Second)
		if err == nil && acked == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("xaddWait after the failover = %d, %v", acked, err)
		}
		t.Logf("xaddWait after the failover: %d, %v", acked, err)
		time.Sleep(100 * time.Millisecond) // the client is catching up
	}
}

// TestWaitPipelineRedirects records what a node client's pipeline does when
// the slot has moved (MOVED) or is moving (ASK): go-redis does not follow
// redirects on a plain Client, and the WAIT's count says nothing about the
// failed XADDs.
func TestWaitPipelineRedirects(t *testing.T) {
	ctx := context.Background()
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	stream := "ferry:{moving}:stream"
	if _, err := xaddWait(ctx, c.Client, stream, 5, 1, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	old, err := c.Client.MasterForKey(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	var to *redistest.Server
	for _, m := range c.Masters(t) {
		if m.Addr != old.Options().Addr {
			to = m
			break
		}
	}
	pipe := func(stream string) ([]redis.Cmder, error) {
		return old.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"n", 1}})
			p.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"n", 2}})
			p.Do(ctx, "WAIT", 1, 500)
			return nil
		})
	}

	// Half-way: the existing stream is still served by the source; a new
	// stream of the same slot is not there, so the source answers ASK.
	move := c.StartSlotMove(t, redistest.Slot(stream), to)
	newStream := "ferry:{moving}:dlq:app" // same slot, no key yet
	cmds, err := pipe(newStream)
	if !redis.HasErrorPrefix(err, "ASK") {
		t.Fatalf("pipeline to a new key of a migrating slot: %v, want ASK", err)
	}
	t.Logf("migrating slot, new key: err %v; XADD errs %v / %v; WAIT = %v, %v", err, cmds[0].Err(), cmds[1].Err(), cmds[2].(*redis.Cmd).Val(), cmds[2].Err())
	move.Finish(t)

	cmds, err = pipe(stream)
	if !redis.HasErrorPrefix(err, "MOVED") || !redis.HasErrorPrefix(cmds[1].Err(), "MOVED") {
		t.Fatalf("pipeline to the old master after the move: %v, %v; want MOVED", err, cmds[1].Err())
	}
	w, werr := cmds[2].(*redis.Cmd).Int64()
	t.Logf("moved slot: err %v; WAIT = %d, %v (not a sign the XADDs landed)", err, w, werr)
	if n, err := c.NodeClient(t, to).XLen(ctx, stream).Result(); err != nil || n != 5 {
		t.Fatalf("XLEN on the new master = %d, %v; want the 5 entries written before", n, err)
	}
	// The prototype, which asks MasterForKey afresh, recovers once the
	// ClusterClient reloaded its map (MOVED triggers a reload).
	deadline := time.Now().Add(30 * time.Second)
	for {
		_ = c.Client.Get(ctx, stream).Err() // WRONGTYPE or MOVED: makes the client reload
		acked, err := xaddWait(ctx, c.Client, stream, 5, 1, 2*time.Second)
		if err == nil && acked == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("xaddWait after the move = %d, %v", acked, err)
		}
		time.Sleep(50 * time.Millisecond) // the client reloads its slot map
	}
}

// TestWaitPipelineReadTimeout: a pipeline reads with the client's
// ReadTimeout, not the WAIT's timeout plus a margin as a lone Wait does. A
// WAIT longer than ReadTimeout times out the read, and go-redis then retries
// the whole pipeline, sending the XADDs again.
func TestWaitPipelineReadTimeout(t *testing.T) {
	ctx := context.Background()
	s := redistest.StartSentinel(t, redistest.SentinelOptions{})
	p := s.Primary(t)
	c := redis.NewClient(&redis.Options{Addr: p.Addr, ReadTimeout: 300 * time.Millisecond, MaxRetries: 2})
	defer c.Close()
	_, err := c.Pipelined(ctx, func(pp redis.Pipeliner) error {
		pp.XAdd(ctx, &redis.XAddArgs{Stream: "s", Values: []any{"n", 1}})
		pp.Do(ctx, "WAIT", 3, 1000) // 3 replicas: never, so the full second
		return nil
	})
	n, xerr := c.XLen(ctx, "s").Result()
	t.Logf("ReadTimeout 300ms, WAIT 3 1000: err %v; XLEN %d, %v (1 XADD sent per attempt)", err, n, xerr)
	if err == nil {
		t.Fatalf("pipeline with WAIT beyond ReadTimeout: no error")
	}
}

// confirmedLoss appends one entry at a time with xaddWait for replicas,
// runs failover after 300 ms, goes on for 3 s, and after the set settled
// returns how many entries WAIT confirmed and how many of those are gone.
func confirmedLoss(t *testing.T, s *redistest.Sentinel, stream string, replicas int, failover func()) (confirmed, lost int) {
	t.Helper()
	ctx := context.Background()
	var ids []string
	start := time.Now()
	triggered := false
	for time.Since(start) < 3*time.Second {
		if !triggered && time.Since(start) > 300*time.Millisecond {
			failover()
			triggered = true
		}
		node := s.Client
		var add *redis.StringCmd
		cmds, err := node.Pipelined(ctx, func(p redis.Pipeliner) error {
			add = p.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"n", 1}})
			p.Do(ctx, "WAIT", replicas, 200)
			return nil
		})
		if err == nil {
			if n, _ := cmds[1].(*redis.Cmd).Int64(); n >= int64(replicas) {
				ids = append(ids, add.Val())
			}
		}
		time.Sleep(2 * time.Millisecond) // the probe's write rate
	}
	s.Primary(t)
	s.WaitHealthy(t) // the Sentinels demote the old primary: its orphaned writes go
	for _, id := range ids {
		got, err := s.Client.XRange(ctx, stream, id, id).Result()
		if err != nil {
			t.Fatalf("XRANGE: %v", err)
		}
		if len(got) == 0 {
			lost++
		}
	}
	return len(ids), lost
}

// TestWaitThroughSentinelFailover measures how many WAIT-confirmed entries a
// SENTINEL FAILOVER loses (the old primary stays up and writable until the
// Sentinels demote it), for WAIT 1 and WAIT 2 on a primary with 2 replicas.
func TestWaitThroughSentinelFailover(t *testing.T) {
	s := redistest.StartSentinel(t, redistest.SentinelOptions{})
	failover := func() {
		if _, err := s.NodeClient(t, s.Sentinels[0]).Do(context.Background(), "SENTINEL", "FAILOVER", s.MasterName).Result(); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []int{1, 2} {
		confirmed, lost := confirmedLoss(t, s, "ferry:{w"+strconv.Itoa(r)+"}:stream", r, failover)
		t.Logf("SENTINEL FAILOVER, WAIT %d: %d confirmed, %d of them lost", r, confirmed, lost)
		if r == 2 && lost > 0 {
			t.Errorf("WAIT for every replica: %d confirmed entries lost", lost)
		}
	}
	kill := func() { s.Kill(t, s.Primary(t)) }
	confirmed, lost := confirmedLoss(t, s, "ferry:{k1}:stream", 1, kill)
	t.Logf("kill -9 primary, WAIT 1: %d confirmed, %d of them lost", confirmed, lost)
	if lost > 0 {
		t.Errorf("kill -9 with WAIT 1: %d confirmed entries lost", lost)
	}
}
