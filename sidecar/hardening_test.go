package sidecar

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestServersAreHardened(t *testing.T) {
	env := baseEnv(t, "billing", "redis://127.0.0.1:1/0")
	cfg, err := LoadConfig(env)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := New(cfg, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.outbox.Close(); sc.rdb.Close() })
	pub, admin := sc.servers()
	for name, srv := range map[string]*http.Server{"publish": pub, "admin": admin} {
		if srv.ReadHeaderTimeout <= 0 || srv.ReadHeaderTimeout > 10*time.Second {
			t.Errorf("%s ReadHeaderTimeout = %s, want (0, 10s]", name, srv.ReadHeaderTimeout)
		}
		if srv.ReadTimeout <= 0 || srv.ReadTimeout > time.Minute {
			t.Errorf("%s ReadTimeout = %s, want (0, 1m]", name, srv.ReadTimeout)
		}
		if srv.WriteTimeout <= 0 || srv.WriteTimeout > time.Minute {
			t.Errorf("%s WriteTimeout = %s, want (0, 1m]", name, srv.WriteTimeout)
		}
		if srv.IdleTimeout <= 0 || srv.IdleTimeout > 5*time.Minute {
			t.Errorf("%s IdleTimeout = %s, want (0, 5m]", name, srv.IdleTimeout)
		}
		if srv.MaxHeaderBytes <= 0 || srv.MaxHeaderBytes > 1<<20 {
			t.Errorf("%s MaxHeaderBytes = %d, want (0, 1 MiB]", name, srv.MaxHeaderBytes)
		}
		if srv.ErrorLog == nil {
			t.Errorf("%s ErrorLog is nil: net/http would write to stderr, past slog", name)
		}
	}
}

func TestOversizedRequestsAreRefused(t *testing.T) {
	env := baseEnv(t, "billing", "redis://127.0.0.1:1/0")
	env["FERRY_MAX_BODY_BYTES"] = "1024"
	env["FERRY_SHUTDOWN_TIMEOUT"] = "1s" // Redis is nowhere: the outbox cannot drain
	env["FERRY_SUBSCRIPTIONS"] = "orders=/events/orders"
	n := startNode(t, env)

	// Headers beyond MaxHeaderBytes: 431 on both APIs, before any handler runs.
	for _, u := range []string{n.pub + "/v1/publish/orders", n.admin + "/v1/status"} {
		req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader("x"))
		req.Header.Set("X-Big", strings.Repeat("a", 200<<10))
		if code, _ := do(t, req); code != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("POST %s with 200 KiB of headers: %d, want 431", u, code)
		}
	}
	before := n.sc.outbox.Stats().Appends
	if code, body := n.publish("orders", strings.Repeat("b", 1025), nil); code != http.StatusRequestEntityTooLarge {
		t.Errorf("publish 1025 bytes over a 1024 limit: %d %s, want 413", code, body)
	}
	if code, body := n.publish("orders", strings.Repeat("b", 1024), nil); code != http.StatusAccepted {
		t.Errorf("publish 1024 bytes: %d %s, want 202", code, body)
	}
	if got := n.sc.outbox.Stats().Appends - before; got != 1 {
		t.Errorf("appends %d, want 1 (the 413 must store nothing)", got)
	}
	// The replay body is capped too (4 KiB): a huge JSON string is refused.
	big := `{"from":"` + strings.Repeat("1", 8<<10) + `"}`
	req, _ := http.NewRequest(http.MethodPost, n.admin+"/v1/subscriptions/orders/replay", strings.NewReader(big))
	if code, body := do(t, req); code != http.StatusBadRequest {
		t.Errorf("replay with an 8 KiB body: %d %s, want 400", code, body)
	}
}

// TestSlowClientsDoNotStarvePublish opens 120 connections to the publish
// API and 30 to the admin API that trickle a header one byte at a time
// (slowloris). Publishes and probes must still be answered quickly, and
// the server must cut every slow connection at its ReadHeaderTimeout.
func TestSlowClientsDoNotStarvePublish(t *testing.T) {
	env := baseEnv(t, "billing", "redis://127.0.0.1:1/0")
	env["FERRY_SHUTDOWN_TIMEOUT"] = "1s" // Redis is nowhere: the outbox cannot drain
	n := startNode(t, env)
	pubSrv, _ := n.sc.servers()
	headerTimeout := pubSrv.ReadHeaderTimeout

	start := time.Now()
	hardStop := start.Add(headerTimeout + 3*time.Second) // every loop below ends by then
	type slow struct {
		closedAfter time.Duration // 0: still open at hardStop
	}
	var (
		mu    sync.Mutex
		slows []*slow
		wg    sync.WaitGroup
	)
	open := func(addr string) {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			t.Errorf("dial %s: %v", addr, err)
			return
		}
		s := &slow{}
		mu.Lock()
		slows = append(slows, s)
		mu.Unlock()
		closed := make(chan struct{})
		wg.Add(2)
		go func() { // the server closing the connection ends the read
			defer wg.Done()
			defer close(closed)
			_ = conn.SetReadDeadline(hardStop)
			_, err := io.Copy(io.Discard, conn)
			if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
				mu.Lock()
				s.closedAfter = time.Since(start)
				mu.Unlock()
			}
		}()
		go func() {
			defer wg.Done()
			defer conn.Close()
			_, _ = fmt.Fprintf(conn, "POST /v1/publish/orders HTTP/1.1\r\nHost: x\r\nX-Slow: ")
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for time.Now().Before(hardStop) {
				select {
				case <-closed:
					return
				case <-tick.C:
					if _, err := conn.Write([]byte("a")); err != nil {
						<-closed
						return
					}
				}
			}
		}()
	}
	pubAddr, adminAddr := n.sc.PublishAddr(), n.sc.AdminAddr()
	for range 120 {
		open(pubAddr)
	}
	for range 30 {
		open(adminAddr)
	}

	// While they trickle (about 2.5 s), ordinary requests are answered at once.
	client := &http.Client{Timeout: 5 * time.Second}
	var slowest time.Duration
	probes := 0
	for i := 0; time.Since(start) < 2500*time.Millisecond && i < 50; i++ {
		t0 := time.Now()
		req, _ := http.NewRequest(http.MethodPost, n.pub+"/v1/publish/orders", strings.NewReader("normal"))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("publish during slowloris: %v", err)
		}
		resp.Body.Close()
		took := time.Since(t0)
		slowest, probes = max(slowest, took), probes+1
		if resp.StatusCode != http.StatusAccepted || took > 2*time.Second {
			t.Fatalf("publish during slowloris: %d after %s, want 202 within 2s", resp.StatusCode, took)
		}
		t0 = time.Now()
		resp, err = client.Get(n.admin + "/readyz")
		if err != nil {
			t.Fatalf("readyz during slowloris: %v", err)
		}
		resp.Body.Close()
		if took := time.Since(t0); resp.StatusCode != http.StatusOK || took > 2*time.Second {
			t.Fatalf("readyz during slowloris: %d after %s, want 200 within 2s", resp.StatusCode, took)
		}
		time.Sleep(200 * time.Millisecond) // pacing between probes, not synchronisation
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(slows) != 150 {
		t.Fatalf("%d slow connections opened, want 150", len(slows))
	}
	var latest time.Duration
	for i, s := range slows {
		latest = max(latest, s.closedAfter)
		if s.closedAfter == 0 || s.closedAfter > headerTimeout+2*time.Second {
			t.Fatalf("slow connection %d: closed after %s, want the server to cut it by ReadHeaderTimeout (%s) + 2s", i, s.closedAfter, headerTimeout)
		}
	}
	t.Logf("%d publishes during slowloris, slowest %s; 150 slow connections cut by the server, the last after %s", probes, slowest, latest)
}
