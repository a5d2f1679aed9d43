package sidecar

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/internal/redistest"
)

const (
	tlsUser     = "ferry"
	tlsPassword = "tls-pass-5f3a9c"
)

// startTLSRedis runs a TLS-only redis-server whose only enabled user is
// tlsUser:tlsPassword, and returns it with a client logged in as that user.
func startTLSRedis(t *testing.T, files *redistest.TLSFiles, serverName string, args ...string) (*redistest.Server, *redis.Client) {
	t.Helper()
	srv := redistest.StartTLSServer(t, files, args...)
	ctx := context.Background()
	setup := redis.NewClient(&redis.Options{Addr: srv.Addr, TLSConfig: files.ClientConfig(t, serverName)})
	defer setup.Close()
	if err := setup.Do(ctx, "ACL", "SETUSER", tlsUser, "on", ">"+tlsPassword, "~*", "&*", "+@all").Err(); err != nil {
		t.Fatalf("acl setuser: %v", err)
	}
	if err := setup.Do(ctx, "ACL", "SETUSER", "default", "off").Err(); err != nil {
		t.Fatalf("acl setuser default off: %v", err)
	}
	return srv, srv.TLSClient(t, files.ClientConfig(t, serverName), tlsUser, tlsPassword)
}

// tlsNode is one sidecar that publishes to and subscribes to "orders".
func tlsNode(t *testing.T, srv *redistest.Server, a *app, extra map[string]string) *node {
	env := baseEnv(t, "billing", srv.TLSURL(tlsUser+":"+tlsPassword))
	env["FERRY_APP_URL"] = a.srv.URL
	env["FERRY_SUBSCRIPTIONS"] = "orders=/events/orders"
	env["FERRY_SHUTDOWN_TIMEOUT"] = "1s" // nodes that cannot reach Redis keep their records
	for k, v := range extra {
		env[k] = v
	}
	return startNode(t, env)
}

func TestRedisTLSEndToEnd(t *testing.T) {
	files := redistest.NewTLSFiles(t, "127.0.0.1", "localhost")
	srv, rdb := startTLSRedis(t, files, "")
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("ping as %s over TLS: %v", tlsUser, err)
	}
	a := newApp(t, nil)
	n := tlsNode(t, srv, a, map[string]string{"FERRY_REDIS_CA_FILE": files.CAFile})
	mustPublish(t, n, "orders", "over-tls", nil)
	got := a.next(t, 10*time.Second)
	if got.Body != "over-tls" {
		t.Fatalf("delivered %q", got.Body)
	}
	if up := n.metric("ferry_redis_up", nil); up != 1 {
		t.Fatalf("ferry_redis_up = %v, want 1", up)
	}
	if l, err := rdb.XLen(context.Background(), streamKey("orders")).Result(); err != nil || l != 1 {
		t.Fatalf("stream length %d (%v), want 1", l, err)
	}
	// The connection really is TLS and authenticated as the ACL user.
	clients, err := rdb.ClientList(context.Background()).Result()
	if err != nil || !strings.Contains(clients, "user="+tlsUser) {
		t.Fatalf("client list %q: %v", clients, err)
	}
}

// assertCannotConnect publishes (accepted into the outbox), waits until the
// relay reports its failure, and checks that nothing reached Redis or the app.
func assertCannotConnect(t *testing.T, n *node, a *app, rdb *redis.Client, wantErr string) {
	t.Helper()
	mustPublish(t, n, "orders", "must-not-arrive", nil)
	waitFor(t, 10*time.Second, "the relay to report a failed connection", func() bool {
		return strings.Contains(n.logs.String(), `"msg":"relay to redis"`)
	})
	logs := n.logs.String()
	if !strings.Contains(logs, wantErr) {
		t.Errorf("logs do not say %q:\n%s", wantErr, logs)
	}
	if up := n.metric("ferry_redis_up", nil); up != 0 {
		t.Errorf("ferry_redis_up = %v, want 0", up)
	}
	if l, err := rdb.Exists(context.Background(), streamKey("orders")).Result(); err != nil || l != 0 {
		t.Errorf("stream exists = %d (%v): ferry reached Redis", l, err)
	}
	if got := a.all(); len(got) != 0 {
		t.Errorf("app got %d deliveries", len(got))
	}
	if st := n.sc.outbox.Stats(); st.PendingRecords != 1 {
		t.Errorf("outbox pending %d, want the event kept", st.PendingRecords)
	}
}

func TestRedisTLSVerifiesTheServer(t *testing.T) {
	t.Run("certificate for another name", func(t *testing.T) {
		files := redistest.NewTLSFiles(t, "127.0.0.2", "redis.example.internal")
		srv, rdb := startTLSRedis(t, files, "redis.example.internal")
		a := newApp(t, nil)
		n := tlsNode(t, srv, a, map[string]string{"FERRY_REDIS_CA_FILE": files.CAFile})
		assertCannotConnect(t, n, a, rdb, "not 127.0.0.1")
	})
	t.Run("no CA file", func(t *testing.T) {
		files := redistest.NewTLSFiles(t, "127.0.0.1")
		srv, rdb := startTLSRedis(t, files, "")
		a := newApp(t, nil)
		n := tlsNode(t, srv, a, nil)
		assertCannotConnect(t, n, a, rdb, "unknown authority")
	})
}

func TestRedisTLSClientCertificate(t *testing.T) {
	files := redistest.NewTLSFiles(t, "127.0.0.1")
	srv, rdb := startTLSRedis(t, files, "", "--tls-auth-clients", "yes")

	a := newApp(t, nil)
	without := tlsNode(t, srv, a, map[string]string{"FERRY_REDIS_CA_FILE": files.CAFile})
	assertCannotConnect(t, without, a, rdb, "certificate required")
	if err := without.stop(); err == nil {
		t.Fatalf("stop without Redis: want an undrained error, got nil")
	}

	b := newApp(t, nil)
	with := tlsNode(t, srv, b, map[string]string{
		"FERRY_REDIS_CA_FILE":   files.CAFile,
		"FERRY_REDIS_CERT_FILE": files.ClientCertFile,
		"FERRY_REDIS_KEY_FILE":  files.ClientKeyFile,
	})
	mustPublish(t, with, "orders", "with-client-cert", nil)
	got := b.next(t, 10*time.Second)
	if got.Body != "with-client-cert" {
		t.Fatalf("delivered %q", got.Body)
	}
	if up := with.metric("ferry_redis_up", nil); up != 1 {
		t.Fatalf("ferry_redis_up = %v, want 1", up)
	}
}
