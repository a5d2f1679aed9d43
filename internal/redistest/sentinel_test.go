package redistest_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/internal/redistest"
)

func TestSentinel(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	s := redistest.StartSentinel(t, redistest.SentinelOptions{})
	t.Logf("Sentinel set started in %v", time.Since(start).Round(time.Millisecond))

	first := s.Primary(t)
	if first != s.Data[0] {
		t.Fatalf("primary %s, want the first data node %s", first.Addr, s.Data[0].Addr)
	}
	if err := s.Client.Set(ctx, "k", "before", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Client.Wait(ctx, 2, 5*time.Second).Result(); err != nil || n != 2 {
		t.Fatalf("WAIT 2 = %d, %v", n, err)
	}

	killStart := time.Now()
	killed, promoted := s.KillPrimary(t)
	t.Logf("kill -9 %s: %s promoted, set healthy in %v", killed.Addr, promoted.Addr, time.Since(killStart).Round(time.Millisecond))
	if killed != first || promoted == first {
		t.Fatalf("killed %s, promoted %s", killed.Addr, promoted.Addr)
	}
	getEventually(t, s.Client, "k", "before")
	if err := s.Client.Set(ctx, "k", "after-kill", 0).Err(); err != nil {
		t.Fatalf("SET after failover: %v", err)
	}

	// The old primary comes back as a replica.
	restartStart := time.Now()
	s.Restart(t, killed)
	s.WaitHealthy(t)
	t.Logf("old primary restarted and in sync in %v", time.Since(restartStart).Round(time.Millisecond))

	failStart := time.Now()
	old, next := s.Failover(t)
	t.Logf("SENTINEL FAILOVER %s → %s in %v", old.Addr, next.Addr, time.Since(failStart).Round(time.Millisecond))
	if old != promoted || next == promoted {
		t.Fatalf("failover from %s to %s", old.Addr, next.Addr)
	}
	getEventually(t, s.Client, "k", "after-kill")
	if err := s.Client.Set(ctx, "k", "after-failover", 0).Err(); err != nil {
		t.Fatalf("SET after SENTINEL FAILOVER: %v", err)
	}
}

func TestSentinelURL(t *testing.T) {
	ctx := context.Background()
	s := redistest.StartSentinel(t, redistest.SentinelOptions{
		Auth:             redistest.Auth{Username: "ferry", Password: "data-pass"},
		SentinelPassword: "sentinel-pass",
		MasterName:       "orders",
	})
	opts, err := redis.ParseFailoverURL(s.URL())
	if err != nil {
		t.Fatalf("ParseFailoverURL(%s): %v", s.URL(), err)
	}
	if len(opts.SentinelAddrs) != 3 || opts.MasterName != "orders" || opts.Username != "ferry" ||
		opts.Password != "data-pass" || opts.SentinelPassword != "sentinel-pass" {
		t.Fatalf("ParseFailoverURL(%s) = %+v", s.URL(), opts)
	}
	c := redis.NewFailoverClient(opts)
	defer c.Close()
	for i := range 10 {
		if err := c.Set(ctx, "k"+strconv.Itoa(i), i, 0).Err(); err != nil {
			t.Fatalf("SET through the URL's client: %v", err)
		}
	}
	plain := redis.NewClient(&redis.Options{Addr: s.Primary(t).Addr})
	defer plain.Close()
	if err := plain.Ping(ctx).Err(); !redis.HasErrorPrefix(err, "NOAUTH") {
		t.Fatalf("PING without credentials: %v, want NOAUTH", err)
	}
	killed, promoted := s.KillPrimary(t)
	t.Logf("with ACL: killed %s, promoted %s", killed.Addr, promoted.Addr)
	getEventually(t, c, "k9", "9")
}
