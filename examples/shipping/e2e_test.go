package main

// End to end: the ferry binary (built from this repository) with a real
// redis-server, the shipping app's Dapr SDK service, plain-HTTP publishes
// the way Dapr's docs show them with curl, and the CloudEvents SDK as
// publisher and receiver on ferry's native API.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/ferry-sidecar/ferry/internal/redistest"
	"github.com/ferry-sidecar/ferry/stream"
)

// ferryBin is the ferry binary TestMain builds.
var ferryBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ferry-shipping-e2e")
	if err != nil {
		log.Fatal(err)
	}
	ferryBin = filepath.Join(dir, "ferry")
	build := exec.Command("go", "build", "-o", ferryBin, "./cmd/ferry")
	build.Dir = filepath.Join("..", "..") // ferry's own module
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "build ferry: %v\n", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// ferryProc is one running ferry process.
type ferryProc struct {
	cmd        *exec.Cmd
	pub, admin string // base URLs
	logs       *lockedBuffer
	exited     chan struct{}
	exitErr    error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func freeAddr(t *testing.T) string {
	return "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
}

// startFerry runs the binary with env (plus loopback addresses, a temp
// outbox and fast retries) and stops it with SIGTERM at cleanup.
func startFerry(t *testing.T, env map[string]string) *ferryProc {
	t.Helper()
	p := &ferryProc{logs: &lockedBuffer{}, exited: make(chan struct{})}
	base := map[string]string{
		"FERRY_LISTEN_ADDR": freeAddr(t), "FERRY_ADMIN_ADDR": freeAddr(t),
		"FERRY_OUTBOX_DIR": t.TempDir(), "FERRY_RETRY_INITIAL_INTERVAL": "20ms", "FERRY_RETRY_MAX_INTERVAL": "200ms",
		"FERRY_SHUTDOWN_TIMEOUT": "5s", "FERRY_LOG_LEVEL": "debug", "HOSTNAME": env["FERRY_APP_ID"] + "-0",
	}
	for k, v := range env {
		base[k] = v
	}
	p.pub, p.admin = "http://"+base["FERRY_LISTEN_ADDR"], "http://"+base["FERRY_ADMIN_ADDR"]
	p.cmd = exec.Command(ferryBin)
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range base {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start ferry: %v", err)
	}
	go func() { p.exitErr = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
			t.Error("ferry did not stop within 20s of SIGTERM")
		}
		if t.Failed() {
			t.Logf("ferry %s logs:\n%s", env["FERRY_APP_ID"], p.logs.String())
		}
	})
	return p
}

// waitReady waits for /readyz 200, failing early if ferry exits.
func (p *ferryProc) waitReady(t *testing.T, within time.Duration) {
	t.Helper()
	waitUntil(t, within, "ferry ready", func() bool {
		select {
		case <-p.exited:
			t.Fatalf("ferry exited: %v\n%s", p.exitErr, p.logs.String())
		default:
		}
		resp, err := http.Get(p.admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// metric reads one sample of ferry's /metrics whose labels include all of labels.
func (p *ferryProc) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get(p.admin + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
next:
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(line, l) {
				continue next
			}
		}
		f, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		return f
	}
	return 0
}

func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// curl is what Dapr's docs show: curl -X POST .../v1.0/publish/pubsub/topic
// -H "Content-Type: application/json" -d '{…}'.
func curl(t *testing.T, url, contentType, body string) {
	t.Helper()
	resp, err := http.Post(url, contentType, strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusNoContent || len(b) != 0 {
		t.Fatalf("POST %s: %d %s, want 204 and no body", url, resp.StatusCode, b)
	}
}

// The shipping app, unchanged, under ferry: ferry reads its /dapr/subscribe
// while it boots, delivers orders through the routing rule and the retry
// the handler asks for, dead-letters a refused order (and publishes it to
// the deadLetterTopic, which the app also reads), and hands rawPayload
// invoices over raw; the app's own publishes go through ferry to Redis.
func TestShippingAppUnderFerry(t *testing.T) {
	srv := redistest.StartServer(t)
	appAddr := freeAddr(t)
	f := startFerry(t, map[string]string{
		"FERRY_APP_ID": "shipping", "FERRY_REDIS_URL": srv.URL(),
		"FERRY_APP_SUBSCRIBE": "dapr", "FERRY_APP_URL": "http://" + appAddr,
	})
	// The app starts after ferry: ferry waits for its /dapr/subscribe.
	a := newApp(config{DaprEndpoint: f.pub, PubsubName: "pubsub", Log: log.New(testWriter{t}, "shipping: ", 0)})
	svc, err := a.service(appAddr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Start() }()
	t.Cleanup(func() {
		_ = svc.GracefulStop()
		<-done
	})
	f.waitReady(t, 60*time.Second)

	curl(t, f.pub+"/v1.0/publish/pubsub/orders", "application/json", `{"id":"o-1","customer":"ada","amount_cents":1250}`)
	curl(t, f.pub+"/v1.0/publish/pubsub/orders", "application/json", `{"id":"o-2","customer":"bob","amount_cents":250000}`)
	curl(t, f.pub+"/v1.0/publish/pubsub/orders", "application/json", `{"customer":"nobody"}`)
	curl(t, f.pub+"/v1.0/publish/pubsub/invoices?metadata.rawPayload=true", "text/plain", "INV-9;o-1;1250")

	snapshot := func() (shipped, dead, invoices []Seen) {
		a.mu.Lock()
		defer a.mu.Unlock()
		return append([]Seen{}, a.shipped...), append([]Seen{}, a.dead...), append([]Seen{}, a.invoices...)
	}
	waitUntil(t, 60*time.Second, "2 shipments, 1 dead order, 1 invoice", func() bool {
		s, d, i := snapshot()
		return len(s) == 2 && len(d) == 1 && len(i) == 1
	})
	shipped, dead, invoices := snapshot()
	routes := map[string]string{}
	for _, s := range shipped {
		var o Order
		_ = json.Unmarshal(s.Data, &o)
		routes[o.ID] = s.Route
	}
	if routes["o-1"] != routeOrders || routes["o-2"] != routeLargeOrders {
		t.Fatalf("routes by order: %v", routes)
	}
	a.mu.Lock()
	tries := a.attempts["o-1"] + a.attempts["o-2"]
	a.mu.Unlock()
	if tries != 4 {
		t.Fatalf("handler ran %d times for 2 orders, want 4 (each retried once)", tries)
	}
	if !strings.Contains(string(dead[0].Data), "nobody") || dead[0].Topic != topicOrdersDead {
		t.Fatalf("dead-letter topic delivery %+v", dead[0])
	}
	if invoices[0].Raw != "INV-9;o-1;1250" {
		t.Fatalf("raw invoice %q", invoices[0].Raw)
	}
	if got := f.metric(t, "ferry_deadletters_total", `subscription="orders"`, `reason="dropped"`); got != 1 {
		t.Fatalf("dropped dead letters: %v", got)
	}
	if got := f.metric(t, "ferry_delivery_attempts_total", `subscription="orders"`, `result="retry"`); got != 2 {
		t.Fatalf("retried attempts: %v, want 2", got)
	}
	rdb := srv.Client(t)
	waitUntil(t, 30*time.Second, "2 shipments in Redis", func() bool {
		n, err := rdb.XLen(context.Background(), stream.Key(topicShipments)).Result()
		return err == nil && n == 2
	})
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// The CloudEvents SDK publishes to ferry's native API in binary, structured
// and batched mode; an SDK receiver behind ferry reads every delivery.
func TestCloudEventsSDKThroughFerry(t *testing.T) {
	srv := redistest.StartServer(t)
	port := redistest.FreePort(t)
	p, err := cehttp.New(cehttp.WithPort(port), cehttp.WithPath("/events"))
	if err != nil {
		t.Fatal(err)
	}
	receiver, err := cloudevents.NewClient(p)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	got := map[string]cloudevents.Event{}
	ctx, cancel := context.WithCancel(context.Background())
	recvDone := make(chan error, 1)
	go func() {
		recvDone <- receiver.StartReceiver(ctx, func(ev cloudevents.Event) {
			mu.Lock()
			got[ev.ID()] = ev
			mu.Unlock()
		})
	}()
	t.Cleanup(func() { cancel(); <-recvDone })

	f := startFerry(t, map[string]string{
		"FERRY_APP_ID": "ce-app", "FERRY_REDIS_URL": srv.URL(),
		"FERRY_SUBSCRIPTIONS": "ce-events=/events", "FERRY_APP_URL": "http://127.0.0.1:" + strconv.Itoa(port),
	})
	f.waitReady(t, 30*time.Second)
	target := f.pub + "/v1/publish/ce-events"
	sender, err := cloudevents.NewClientHTTP(cloudevents.WithTarget(target))
	if err != nil {
		t.Fatal(err)
	}
	send := func(ctx context.Context, ev cloudevents.Event) {
		t.Helper()
		res := sender.Send(ctx, ev)
		var hr *cehttp.Result
		if !cloudevents.IsACK(res) || !errors.As(res, &hr) || hr.StatusCode != http.StatusAccepted {
			t.Fatalf("send %s: %v", ev.ID(), res)
		}
	}
	send(context.Background(), sdkEvent(t, "binary-1"))
	send(binding.WithForceStructured(context.Background()), sdkEvent(t, "structured-1"))
	batch := []cloudevents.Event{sdkEvent(t, "batch-1"), sdkEvent(t, "batch-2"), sdkEvent(t, "batch-3")}
	req, err := cehttp.NewHTTPRequestFromEvents(context.Background(), target, batch)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || string(body) != `{"ids":["batch-1","batch-2","batch-3"],"topic":"ce-events"}`+"\n" {
		t.Fatalf("batch: %d %s", resp.StatusCode, body)
	}

	waitUntil(t, 30*time.Second, "5 events at the SDK receiver", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 5
	})
	mu.Lock()
	defer mu.Unlock()
	for _, id := range []string{"binary-1", "structured-1", "batch-1", "batch-2", "batch-3"} {
		ev, ok := got[id]
		want := sdkEvent(t, id)
		if !ok || ev.Source() != want.Source() || ev.Type() != want.Type() || ev.Subject() != "o1" ||
			ev.Extensions()["tenant"] != "acme" || !ev.Time().Equal(want.Time()) || !bytes.Equal(compact(t, ev.Data()), compact(t, want.Data())) {
			t.Fatalf("event %s as received: %v", id, ev)
		}
	}
}

func compact(t *testing.T, b []byte) []byte {
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		t.Fatalf("data %q: %v", b, err)
	}
	return out.Bytes()
}
