package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-sidecar/ferry/internal/redistest"
)

// TestPublishDuringDrainAnswers503: after SIGTERM, while the relay is still
// draining the outbox (Redis is down, so it cannot finish), the publish
// listener stays open and answers 503 shutting-down with Retry-After, not
// a refused connection; the admin listener keeps serving /healthz and
// /metrics, and /readyz answers 503, until exit.
func TestPublishDuringDrainAnswers503(t *testing.T) {
	srv := redistest.StartServer(t)
	env := ferryEnv(t, "orders-svc", srv.URL())
	env["FERRY_SHUTDOWN_TIMEOUT"] = "4s"
	pub := startFerry(t, env)
	srv.Stop(t)
	mustPublishKey(t, pub, "kept-1") // stays in the outbox: the drain has work it cannot finish
	sigterm := time.Now()
	if err := pub.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 3*time.Second, "/readyz 503 after SIGTERM", func() bool {
		resp, err := http.Get(pub.admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})

	req, _ := http.NewRequest(http.MethodPost, pub.pub+"/v1/publish/orders", strings.NewReader("late"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("publish during the drain: %v (want a 503 answer, not a refused connection)", err)
	}
	var p struct{ Type string }
	_ = json.NewDecoder(resp.Body).Decode(&p)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || p.Type != "urn:ferry:problem:shutting-down" ||
		resp.Header.Get("Retry-After") == "" || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("publish during the drain: %d %q Retry-After %q", resp.StatusCode, p.Type, resp.Header.Get("Retry-After"))
	}
	for _, path := range []string{"/healthz", "/metrics"} {
		resp, err := http.Get(pub.admin + path)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("%s during the drain: %v %v", path, err, resp)
			continue
		}
		resp.Body.Close()
	}
	select {
	case <-pub.done:
	case <-time.After(15 * time.Second):
		t.Fatal("no exit within 15s of SIGTERM")
	}
	if pub.code != 1 {
		t.Errorf("exit %d with a record left, want 1", pub.code)
	}
	if took := time.Since(sigterm); took < 3*time.Second {
		t.Errorf("exited %s after SIGTERM: the drain did not wait out its 4s budget", took)
	}
}
