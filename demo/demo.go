package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// options configure one run of the demo.
type options struct {
	// Orders is how many distinct orders the orders app publishes (at least 1).
	Orders int
	// Wait bounds the wait for every invoice to reach the orders app; 0 means 60s.
	Wait time.Duration
	// Out receives every process's output, prefixed with its name, and the summary.
	Out io.Writer
	// Result, when not nil, is filled in with what the run observed.
	Result *result
}

// result is what a run observed.
type result struct {
	Published    int            // distinct orders the orders app published (ferry answered 202)
	DuplicateOK  bool           // the second publish of the first order got 202 too
	BilledOrders []string       // order ids billing handled (answered 2xx), in arrival order
	Invoices     []string       // invoice ids the orders app received, in arrival order
	DedupeHits   float64        // billing's ferry_dedupe_hits_total{subscription="orders"}
	Shipped      []string       // order ids the shipping app (a Dapr app) shipped
	SidecarExit  map[string]int // exit code of each sidecar after SIGTERM
}

const (
	sidecarBudget = 10 * time.Second // FERRY_SHUTDOWN_TIMEOUT of the demo's sidecars
	readyWithin   = 20 * time.Second
)

var httpClient = &http.Client{Timeout: 5 * time.Second}

// run executes the whole demo and returns nil only when every order reached
// billing once, every invoice reached the orders app once, the duplicate
// publish was deduplicated, and both sidecars exited 0 after SIGTERM.
// Every process it starts is stopped before it returns, also when ctx ends.
//
// It is long on purpose: it is the quickstart's script (build, start Redis,
// the apps and their sidecars, publish, wait, summarise, stop), read top to
// bottom like the README, and its steps share the processes it must stop.
func run(ctx context.Context, o options) (err error) {
	if o.Orders < 1 {
		return fmt.Errorf("-orders must be at least 1, got %d", o.Orders)
	}
	if o.Wait <= 0 {
		o.Wait = 60 * time.Second
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	res := o.Result
	if res == nil {
		res = &result{}
	}
	res.SidecarExit = map[string]int{}
	c := &console{out: o.Out}

	redisBin, err := exec.LookPath("redis-server")
	if err != nil {
		return errors.New("redis-server not found in PATH: run make deps (it installs redis-server with apt)")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return errors.New("go not found in PATH: the demo builds ferry and the example apps with it")
	}
	tmp, err := os.MkdirTemp("", "ferry-demo-")
	if err != nil {
		return fmt.Errorf("create temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)

	c.printf("building ferry and the example apps into %s", tmp)
	bins, err := build(ctx, goBin, tmp, map[string]string{
		"ferry":   "github.com/ferry-sidecar/ferry/cmd/ferry",
		"orders":  "github.com/ferry-sidecar/ferry/examples/orders",
		"billing": "github.com/ferry-sidecar/ferry/examples/billing",
	})
	if err != nil {
		return err
	}
	if bins["shipping"], err = buildShipping(ctx, goBin, tmp); err != nil {
		return err
	}

	ports, err := freePorts(10)
	if err != nil {
		return err
	}
	addr := func(i int) string { return "127.0.0.1:" + strconv.Itoa(ports[i]) }
	redisAddr, ordersApp, billingApp := addr(0), addr(1), addr(2)
	ordersPub, ordersAdmin, billingPub, billingAdmin := addr(3), addr(4), addr(5), addr(6)
	shippingApp, shippingPub, shippingAdmin := addr(7), addr(8), addr(9)

	// On any failure or Ctrl-C, stop children newest first: the sidecars
	// drain while Redis and the apps still run. On success the sidecars
	// were already stopped and their exit codes checked.
	var procs []*proc
	defer func() {
		for i := len(procs) - 1; i >= 0; i-- {
			p := procs[i]
			if p.exited() {
				continue
			}
			if _, clean := p.stop(sidecarBudget + 2*time.Second); !clean {
				c.printf("%s did not stop on SIGTERM: killed", p.name)
			}
		}
	}()
	startProc := func(name, bin string, args, env []string) (*proc, error) {
		p, err := start(c, name, bin, args, append(env, "PATH="+os.Getenv("PATH")))
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
		return p, nil
	}

	// Redis, persisted as DESIGN.md advises (appendfsync always), in the temp dir.
	redisDir := filepath.Join(tmp, "redis")
	if err := os.Mkdir(redisDir, 0o755); err != nil {
		return fmt.Errorf("create redis dir: %w", err)
	}
	_, redisPort, _ := net.SplitHostPort(redisAddr)
	redisProc, err := startProc("redis", redisBin, []string{
		"--port", redisPort, "--bind", "127.0.0.1", "--dir", redisDir,
		"--save", "", "--appendonly", "yes", "--appendfsync", "always",
		"--maxmemory-policy", "noeviction", "--protected-mode", "no",
		"--daemonize", "no", "--loglevel", "warning", "--logfile", "",
	}, nil)
	if err != nil {
		return err
	}
	if err := waitFor(ctx, procs, readyWithin, "redis-server to answer PING", func() bool { return redisPing(redisAddr) }); err != nil {
		return err
	}
	c.printf("redis-server is up on %s", redisAddr)

	// The apps: each knows only its port and its sidecar's URL.
	ordersProc, err := startProc("orders", bins["orders"], nil, []string{"PORT=" + strconv.Itoa(ports[1]), "FERRY_URL=http://" + ordersPub})
	if err != nil {
		return err
	}
	billingProc, err := startProc("billing", bins["billing"], nil, []string{"PORT=" + strconv.Itoa(ports[2]), "FERRY_URL=http://" + billingPub})
	if err != nil {
		return err
	}
	// The Dapr app, unchanged: Dapr's own variable names it the sidecar port.
	shippingProc, err := startProc("shipping", bins["shipping"], nil, []string{"PORT=" + strconv.Itoa(ports[7]), "DAPR_HTTP_PORT=" + strconv.Itoa(ports[8])})
	if err != nil {
		return err
	}

	// One sidecar per app.
	sidecarEnv := func(appID, pub, admin, appAddr, subs string) []string {
		return []string{
			"FERRY_APP_ID=" + appID,
			"FERRY_REDIS_URL=redis://" + redisAddr + "/0",
			"FERRY_LISTEN_ADDR=" + pub,
			"FERRY_ADMIN_ADDR=" + admin,
			"FERRY_APP_URL=http://" + appAddr,
			"FERRY_SUBSCRIPTIONS=" + subs,
			"FERRY_OUTBOX_DIR=" + filepath.Join(tmp, appID+"-outbox"),
			"FERRY_LOG_FORMAT=text",
			"FERRY_SHUTDOWN_TIMEOUT=" + sidecarBudget.String(),
			"HOSTNAME=" + appID + "-0",
		}
	}
	ferryOrders, err := startProc("ferry-orders", bins["ferry"], nil, sidecarEnv("orders", ordersPub, ordersAdmin, ordersApp, "invoices=/events/invoices"))
	if err != nil {
		return err
	}
	ferryBilling, err := startProc("ferry-billing", bins["ferry"], nil, sidecarEnv("billing", billingPub, billingAdmin, billingApp, "orders=/events/orders"))
	if err != nil {
		return err
	}
	ferryShipping, err := startProc("ferry-shipping", bins["ferry"], nil,
		append(sidecarEnv("shipping", shippingPub, shippingAdmin, shippingApp, ""), "FERRY_APP_SUBSCRIBE=dapr",
			// The app answers RETRY to the first delivery of every order on
			// purpose (to show Dapr's retry): a burst of them must not open
			// the breaker for FERRY_BREAKER_OPEN_TIMEOUT.
			"FERRY_BREAKER_CONSECUTIVE_FAILURES=1000", "FERRY_BREAKER_MIN_REQUESTS=1000"))
	if err != nil {
		return err
	}
	for _, u := range []string{
		"http://" + ordersApp + "/healthz", "http://" + billingApp + "/healthz", "http://" + shippingApp + "/healthz",
		"http://" + ordersAdmin + "/readyz", "http://" + billingAdmin + "/readyz", "http://" + shippingAdmin + "/readyz",
	} {
		if err := waitFor(ctx, procs, readyWithin, u+" to answer 200", func() bool { return getOK(u) }); err != nil {
			return err
		}
	}
	c.printf("all up: orders app %s (sidecar %s), billing app %s (sidecar %s)", ordersApp, ordersPub, billingApp, billingPub)

	// Publish through the orders app, then publish the first order again
	// with the same Idempotency-Key, as an app retrying after a timeout would.
	orderIDs := make([]string, o.Orders)
	for i := range orderIDs {
		orderIDs[i] = fmt.Sprintf("ord-%04d", i+1)
		order := fmt.Sprintf(`{"id":%q,"customer":"cust-%d","amount_cents":%d}`, orderIDs[i], i%3+1, 1000+250*i)
		if code, body, err := post(ctx, "http://"+ordersApp+"/orders", order); err != nil || code != http.StatusAccepted {
			return fmt.Errorf("publish order %s: %d %s %v", orderIDs[i], code, body, err)
		}
		res.Published++
	}
	dup := fmt.Sprintf(`{"id":%q,"customer":"cust-1","amount_cents":1000}`, orderIDs[0])
	c.printf("publishing order %s a second time with the same Idempotency-Key", orderIDs[0])
	if code, body, err := post(ctx, "http://"+ordersApp+"/orders", dup); err != nil || code != http.StatusAccepted {
		return fmt.Errorf("publish duplicate order %s: %d %s %v", orderIDs[0], code, body, err)
	}
	res.DuplicateOK = true

	// Wait until every invoice is back at the orders app and billing's
	// sidecar has suppressed the duplicate.
	wantInvoices := make([]string, len(orderIDs))
	for i, id := range orderIDs {
		wantInvoices[i] = "inv-" + id
	}
	c.printf("waiting up to %s for %d invoices to reach the orders app", o.Wait, len(wantInvoices))
	var mu sync.Mutex
	complete := func() bool {
		inv, err1 := invoicesAt(ordersApp)
		billed, err2 := billedAt(billingApp)
		hits, err3 := metricValue(billingAdmin, `ferry_dedupe_hits_total{subscription="orders"}`)
		shipped, err4 := shippedAt(shippingApp)
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
			return false
		}
		mu.Lock()
		res.Invoices, res.BilledOrders, res.DedupeHits, res.Shipped = inv, billed, hits, shipped
		mu.Unlock()
		return containsAll(inv, wantInvoices) && containsAll(billed, orderIDs) && hits >= 1 && containsAll(shipped, orderIDs)
	}
	waitErr := waitFor(ctx, procs, o.Wait, "every invoice and the dedupe hit", complete)
	if errors.Is(waitErr, context.Canceled) || errors.Is(waitErr, context.DeadlineExceeded) {
		return waitErr
	}

	// Summary.
	c.printf("──── summary ────")
	c.printf("orders published:             %d (+1 duplicate publish of %s, answered 202: %v)", res.Published, orderIDs[0], res.DuplicateOK)
	c.printf("orders delivered to billing:  %d (distinct %d)", len(res.BilledOrders), len(distinct(res.BilledOrders)))
	c.printf("invoices delivered to orders: %d (distinct %d)", len(res.Invoices), len(distinct(res.Invoices)))
	c.printf("dedupe hits at billing:       %v (ferry_dedupe_hits_total{subscription=\"orders\"})", res.DedupeHits)
	c.printf("orders shipped (Dapr app):    %d (distinct %d)", len(res.Shipped), len(distinct(res.Shipped)))
	for _, s := range []struct{ name, admin string }{{"ferry-orders", ordersAdmin}, {"ferry-billing", billingAdmin}, {"ferry-shipping", shippingAdmin}} {
		st, err := getBody("http://" + s.admin + "/v1/status")
		if err != nil {
			st = "unavailable: " + err.Error()
		}
		c.printf("%s /v1/status: %s", s.name, strings.TrimSpace(st))
	}

	var problems []string
	if waitErr != nil {
		problems = append(problems, waitErr.Error())
	}
	if missing := missingFrom(res.BilledOrders, orderIDs); len(missing) > 0 {
		problems = append(problems, "orders never handled by billing: "+strings.Join(missing, ", "))
	}
	if missing := missingFrom(res.Invoices, wantInvoices); len(missing) > 0 {
		problems = append(problems, "invoices never received by the orders app: "+strings.Join(missing, ", "))
	}
	if d := duplicates(res.BilledOrders); len(d) > 0 {
		problems = append(problems, "orders handled by billing more than once: "+strings.Join(d, ", "))
	}
	if d := duplicates(res.Invoices); len(d) > 0 {
		problems = append(problems, "invoices received more than once: "+strings.Join(d, ", "))
	}
	if missing := missingFrom(res.Shipped, orderIDs); len(missing) > 0 {
		problems = append(problems, "orders never shipped by the Dapr app: "+strings.Join(missing, ", "))
	}
	if d := duplicates(res.Shipped); len(d) > 0 {
		problems = append(problems, "orders shipped more than once: "+strings.Join(d, ", "))
	}
	if res.DedupeHits < 1 {
		problems = append(problems, "the duplicate publish was not counted as a dedupe hit")
	}

	// Stop the sidecars (they drain their outboxes to Redis), then the apps
	// and Redis.
	c.printf("stopping: SIGTERM to the sidecars")
	var wg sync.WaitGroup
	for _, p := range []*proc{ferryOrders, ferryBilling, ferryShipping} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _ := p.stop(sidecarBudget + 5*time.Second)
			mu.Lock()
			res.SidecarExit[p.name] = code
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, name := range []string{"ferry-orders", "ferry-billing", "ferry-shipping"} {
		c.printf("%s exited with %d", name, res.SidecarExit[name])
		if res.SidecarExit[name] != 0 {
			problems = append(problems, fmt.Sprintf("%s exited with %d after SIGTERM, want 0", name, res.SidecarExit[name]))
		}
	}
	for _, p := range []*proc{ordersProc, billingProc, shippingProc, redisProc} {
		if code, clean := p.stop(5 * time.Second); !clean || code != 0 {
			c.printf("%s exited with %d", p.name, code)
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	c.printf("OK: %d orders → billing → %d invoices back at orders; every order shipped by the Dapr app under ferry; duplicate suppressed; sidecars exited 0", len(orderIDs), len(wantInvoices))
	return nil
}

// build compiles each package into dir, in parallel, and returns the binaries by name.
func build(ctx context.Context, goBin, dir string, pkgs map[string]string) (map[string]string, error) {
	bins := map[string]string{}
	errs := make(chan error, len(pkgs))
	var wg sync.WaitGroup
	for name, pkg := range pkgs {
		bin := filepath.Join(dir, name)
		bins[name] = bin
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, goBin, "build", "-o", bin, pkg).CombinedOutput()
			if err != nil {
				errs <- fmt.Errorf("build %s: %w\n%s", pkg, err, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return bins, errors.Join(all...)
}

// waitFor polls cond every 100ms until it holds, within passes, ctx ends, or
// one of procs exits (which means something went wrong).
func waitFor(ctx context.Context, procs []*proc, within time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(within)
	for {
		if cond() {
			return nil
		}
		for _, p := range procs {
			if p.exited() {
				return fmt.Errorf("%s exited with %d while waiting for %s", p.name, p.code, what)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", within, what)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func redisPing(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

func getOK(url string) bool {
	resp, err := httpClient.Get(url)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusOK
}

func getBody(url string) (string, error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), nil
}

func post(ctx context.Context, url, body string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, strings.TrimSpace(string(b)), nil
}

// invoicesAt returns the invoice ids the orders app has received.
func invoicesAt(app string) ([]string, error) {
	body, err := getBody("http://" + app + "/invoices")
	if err != nil {
		return nil, err
	}
	var v struct {
		Invoices []struct {
			Body struct {
				ID string `json:"id"`
			} `json:"body"`
		} `json:"invoices"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		return nil, fmt.Errorf("decode invoices: %w", err)
	}
	ids := make([]string, 0, len(v.Invoices))
	for _, inv := range v.Invoices {
		ids = append(ids, inv.Body.ID)
	}
	return ids, nil
}

// billedAt returns the order ids the billing app has handled.
func billedAt(app string) ([]string, error) {
	body, err := getBody("http://" + app + "/orders")
	if err != nil {
		return nil, err
	}
	var v struct {
		Orders []struct {
			OrderID string `json:"order_id"`
		} `json:"orders"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		return nil, fmt.Errorf("decode orders: %w", err)
	}
	ids := make([]string, 0, len(v.Orders))
	for _, o := range v.Orders {
		ids = append(ids, o.OrderID)
	}
	return ids, nil
}

// metricValue reads one sample, named with its labels exactly as the
// Prometheus text format prints them, from a sidecar's /metrics.
func metricValue(admin, series string) (float64, error) {
	body, err := getBody("http://" + admin + "/metrics")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(body) {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
	}
	return 0, fmt.Errorf("metric %s not found", series)
}

func containsAll(have, want []string) bool { return len(missingFrom(have, want)) == 0 }

func missingFrom(have, want []string) []string {
	var missing []string
	for _, w := range want {
		if !slices.Contains(have, w) {
			missing = append(missing, w)
		}
	}
	return missing
}

func distinct(ids []string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return slices.Compact(out)
}

func duplicates(ids []string) []string {
	seen := map[string]int{}
	var dups []string
	for _, id := range ids {
		if seen[id]++; seen[id] == 2 {
			dups = append(dups, id)
		}
	}
	return dups
}
