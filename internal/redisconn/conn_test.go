package redisconn

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestNewModes: what New sets in each mode, without connecting.
func TestNewModes(t *testing.T) {
	c, err := New(Options{URL: "redis://h1:7000?addr=h2:7001", Mode: Cluster, WaitTimeout: 9 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	co := c.(*redis.ClusterClient).Options()
	if co.ClusterStateReloadInterval != time.Second || co.ReadTimeout != 10*time.Second || co.MaxRedirects != 8 {
		t.Fatalf("cluster: reload %s, read timeout %s, redirects %d", co.ClusterStateReloadInterval, co.ReadTimeout, co.MaxRedirects)
	}

	// Sentinel: the URL's userinfo is the Sentinels'; Password (the file)
	// replaces the data nodes' ?password=.
	s, err := New(Options{URL: "redis://:sentinel-pw@s1:26379?master_name=m", Mode: Sentinel, Password: "data-pw"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	so := s.(*redis.Client).Options()
	if so.Password != "data-pw" || so.ReadTimeout != 5*time.Second {
		t.Fatalf("sentinel data nodes: password %q, read timeout %s", so.Password, so.ReadTimeout)
	}
}

// TestLoggerOncePerKind: go-redis's dial failure per command logs once.
func TestLoggerOncePerKind(t *testing.T) {
	var b strings.Builder
	l := NewLogger(slog.New(slog.NewTextHandler(&b, nil)))
	for range 100 {
		l.Printf(context.Background(), "redis: connection pool: failed to dial after %d attempts: %v", 5, "refused")
	}
	l.Printf(context.Background(), "sentinel: new master=%q", "m")
	if n := strings.Count(b.String(), "failed to dial"); n != 1 {
		t.Fatalf("%d dial lines, want 1:\n%s", n, b.String())
	}
	if !strings.Contains(b.String(), "new master") {
		t.Fatalf("another kind was suppressed:\n%s", b.String())
	}
}
