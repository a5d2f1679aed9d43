package redistest_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/internal/redistest"
)

// TestClusterTLS runs a cluster on TLS only (client, replication and bus)
// with an ACL user, and fails a master over.
func TestClusterTLS(t *testing.T) {
	ctx := context.Background()
	files := redistest.NewTLSFiles(t, "127.0.0.1")
	start := time.Now()
	c := redistest.StartCluster(t, redistest.ClusterOptions{Auth: redistest.Auth{Username: "ferry", Password: "pw", TLS: files}})
	t.Logf("TLS cluster started in %v", time.Since(start).Round(time.Millisecond))
	opts, err := redis.ParseClusterURL(c.URL())
	if err != nil || opts.TLSConfig == nil {
		t.Fatalf("ParseClusterURL(%s): %+v, %v", c.URL(), opts, err)
	}
	opts.TLSConfig = files.ClientConfig(t, "")
	cc := redis.NewClusterClient(opts)
	defer cc.Close()
	if err := cc.Set(ctx, "ferry:{t}:stream", "x", 0).Err(); err != nil {
		t.Fatalf("SET over TLS: %v", err)
	}
	setWaited(t, c, "ferry:{t}:stream", "y")
	c.KillMasterFor(t, "ferry:{t}:stream")
	getEventually(t, c.Client, "ferry:{t}:stream", "y")
}

// TestSentinelTLS runs a Sentinel set on TLS only with passwords on the data
// nodes and the Sentinels, and fails the primary over.
func TestSentinelTLS(t *testing.T) {
	ctx := context.Background()
	files := redistest.NewTLSFiles(t, "127.0.0.1")
	start := time.Now()
	s := redistest.StartSentinel(t, redistest.SentinelOptions{
		Auth:             redistest.Auth{Password: "pw", TLS: files},
		SentinelPassword: "spw",
	})
	t.Logf("TLS Sentinel set started in %v", time.Since(start).Round(time.Millisecond))
	opts, err := redis.ParseFailoverURL(s.URL())
	if err != nil || opts.TLSConfig == nil {
		t.Fatalf("ParseFailoverURL(%s): %+v, %v", s.URL(), opts, err)
	}
	opts.TLSConfig = files.ClientConfig(t, "")
	fc := redis.NewFailoverClient(opts)
	defer fc.Close()
	if err := fc.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET over TLS: %v", err)
	}
	if n, err := fc.Wait(ctx, 2, 5*time.Second).Result(); err != nil || n != 2 {
		t.Fatalf("WAIT 2 = %d, %v", n, err)
	}
	s.KillPrimary(t)
	getEventually(t, fc, "k", "v")
}
