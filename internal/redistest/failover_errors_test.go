package redistest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/internal/redistest"
)

// errClass names the kind of a Redis error, the way a relay or health hook
// would classify it.
func errClass(err error) string {
	var nerr net.Error
	for _, p := range []string{"MOVED", "ASK", "READONLY", "CLUSTERDOWN", "LOADING", "TRYAGAIN", "MASTERDOWN", "NOREPLICAS"} {
		if redis.HasErrorPrefix(err, p) {
			return p
		}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "context deadline"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "EOF"
	case errors.As(err, &nerr) && nerr.Timeout():
		return "i/o timeout"
	}
	return "other: " + err.Error()
}

// observation is what a probe writing to one stream saw around a failover.
type observation struct {
	classes   map[string]int // error class → count
	failing   time.Duration  // from the kill to the last failed write
	recovered bool           // writes succeeded for a second in a row
	acked     int64          // XADDs that succeeded, before and after the kill
}

// observe appends to one stream every 5 ms for 300 ms, runs kill, and goes
// on for at least atLeast, then until writes have succeeded for a second in
// a row or within passes.
func observe(t *testing.T, rdb redis.UniversalClient, stream string, kill func(), atLeast, within time.Duration) observation {
	t.Helper()
	o := observation{classes: make(map[string]int)}
	xadd := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"n", 1}}).Err()
		if err == nil {
			o.acked++
		}
		return err
	}
	for start := time.Now(); time.Since(start) < 300*time.Millisecond; {
		if err := xadd(); err != nil {
			t.Fatalf("XADD before the kill: %v", err)
		}
		time.Sleep(5 * time.Millisecond) // the probe's write rate
	}
	kill()
	start := time.Now()
	var firstOK time.Time
	for time.Since(start) < within {
		err := xadd()
		now := time.Now()
		switch {
		case err != nil:
			o.classes[errClass(err)]++
			o.failing = now.Sub(start)
			firstOK = time.Time{}
		case firstOK.IsZero():
			firstOK = now
		case now.Sub(firstOK) > time.Second && now.Sub(start) > atLeast:
			o.recovered = true
			return o
		}
		time.Sleep(5 * time.Millisecond) // the probe's write rate
	}
	return o
}

// lost compares the acknowledged XADDs with the stream's length.
func (o observation) lost(t *testing.T, rdb redis.UniversalClient, stream string) int64 {
	t.Helper()
	n, err := rdb.XLen(context.Background(), stream).Result()
	if err != nil {
		t.Fatalf("XLEN: %v", err)
	}
	return o.acked - n
}

func (o observation) String() string {
	var s []string
	for k, v := range o.classes {
		s = append(s, fmt.Sprintf("%s×%d", k, v))
	}
	sort.Strings(s)
	return fmt.Sprintf("recovered %v, writes failed for %v, %d acked: %s",
		o.recovered, o.failing.Round(time.Millisecond), o.acked, strings.Join(s, ", "))
}

// TestObserveClusterFailoverErrors kills the master of a busy stream and
// records what go-redis returns until writes succeed again, and how many
// acknowledged writes the failover lost (no WAIT): with the slot map
// reloaded every second (redistest's client) and with go-redis defaults.
func TestObserveClusterFailoverErrors(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	stream := "ferry:{busy}:stream"
	first := c.MasterFor(t, stream)
	o := observe(t, c.Client, stream, func() { c.Kill(t, first) }, 0, 30*time.Second)
	c.WaitHealthy(t)
	t.Logf("cluster, reload 1s, kill -9 master: %v; lost %d", o, o.lost(t, c.Client, stream))
	if !o.recovered {
		t.Fatalf("cluster writes did not recover within 30 s")
	}

	// Another master's topic while a master dies: with
	// cluster-require-full-coverage (the default) every node refuses
	// commands while a slot is uncovered.
	c.Restart(t, first)
	c.WaitHealthy(t)
	other := ""
	for i := 0; other == ""; i++ {
		if k := "ferry:{other-" + strconv.Itoa(i) + "}:stream"; c.MasterFor(t, k) != c.MasterFor(t, stream) {
			other = k
		}
	}
	victim := c.MasterFor(t, stream)
	o = observe(t, c.Client, other, func() { c.Kill(t, victim) }, 3*time.Second, 30*time.Second)
	c.WaitHealthy(t)
	t.Logf("cluster, kill -9 the master of ANOTHER topic: %v; lost %d", o, o.lost(t, c.Client, other))

	def := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	defer def.Close()
	stream = "ferry:{busy2}:stream"
	o = observe(t, def, stream, func() { c.Kill(t, c.MasterFor(t, stream)) }, 0, 8*time.Second)
	t.Logf("cluster, go-redis default reload (60s), kill -9 master, 8 s watched: %v", o)
}

// TestObserveSentinelFailoverErrors is the same through Sentinel, for a kill
// -9 of the primary and for SENTINEL FAILOVER (the old primary stays up and
// writable until the Sentinels demote it).
func TestObserveSentinelFailoverErrors(t *testing.T) {
	s := redistest.StartSentinel(t, redistest.SentinelOptions{})
	stream := "ferry:{busy}:stream"
	o := observe(t, s.Client, stream, func() { s.Kill(t, s.Primary(t)) }, 0, 30*time.Second)
	s.WaitHealthy(t)
	t.Logf("sentinel, kill -9 primary: %v; lost %d", o, o.lost(t, s.Client, stream))
	if !o.recovered {
		t.Fatalf("sentinel writes did not recover within 30 s")
	}
	stream = "ferry:{busy2}:stream"
	o = observe(t, s.Client, stream, func() {
		if _, err := s.NodeClient(t, s.Sentinels[0]).Do(context.Background(), "SENTINEL", "FAILOVER", s.MasterName).Result(); err != nil {
			t.Fatal(err)
		}
	}, 3*time.Second, 30*time.Second)
	s.Primary(t) // agreed
	s.WaitHealthy(t)
	t.Logf("sentinel, SENTINEL FAILOVER (old primary left up): %v; lost %d", o, o.lost(t, s.Client, stream))
	if !o.recovered {
		t.Fatalf("sentinel writes did not recover within 30 s")
	}
}
