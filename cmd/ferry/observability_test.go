package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-sidecar/ferry/internal/redistest"
)

// The dashboard and the alert rules of deploy/ against a real Prometheus
// scraping two live sidecars (issue 17): every expression of every panel
// must return data, and the alerts that the traffic provokes must fire.

const (
	dashboardPath = "../../deploy/grafana/ferry.json"
	alertsPath    = "../../deploy/prometheus/alerts.yaml"
	// rateInterval stands for Grafana's $__rate_interval: at least four
	// scrape intervals of 1 s.
	rateInterval = "10s"
	// dashRange stands for $__range: longer than the test.
	dashRange = "5m"
)

// notExportedYet lists metrics a panel may use before ferry exports them;
// their panels are allowed to be empty. Keep it empty once they are wired.
var notExportedYet = map[string]string{
	// e.g. "ferry_app_healthy": "wired by issue N",
}

// zeroAllowed lists panels whose series are expected to stay at 0 in this
// test (nothing in it provokes them); they must still return series.
var zeroAllowed = map[string]string{
	"Outbox corruptions":                          "needs a torn segment at start (crash_test covers it)",
	"Retention blocked":                           "needs a group lagging past FERRY_STREAM_MAX_LEN",
	"Outbox disk full":                            "needs a full volume (diskfull_test covers it on a tmpfs)",
	"Replicas confirmed per relayed batch (WAIT)": "needs FERRY_REDIS_WAIT_REPLICAS and replicas (the HA tests cover it)",
	"Completions waiting to be written (redelivered after a crash)": "a completion waits one Redis round trip: a 1 s scrape rarely catches one unless Redis is slow (crashbound_test covers the bound)",
}

// obsApp answers orders deliveries 200, except bodies "poison…" (422) and
// "flaky…" (503 on the first attempt); every payments delivery gets 500.
type obsApp struct {
	mu   sync.Mutex
	seen map[string]int // 2xx answers by message id
}

func (a *obsApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	body := string(b)
	switch {
	case r.URL.Path == "/events/payments":
		w.WriteHeader(http.StatusInternalServerError)
	case strings.HasPrefix(body, "poison"):
		w.WriteHeader(http.StatusUnprocessableEntity)
	case strings.HasPrefix(body, "flaky") && r.Header.Get("Ferry-Attempt") == "1":
		w.WriteHeader(http.StatusServiceUnavailable)
	default:
		a.mu.Lock()
		a.seen[r.Header.Get("Ferry-Message-Id")]++
		a.mu.Unlock()
	}
}

func (a *obsApp) delivered(id string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seen[id]
}

// prom is a Prometheus server run by the test.
type prom struct {
	base string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
}

// startPrometheus runs /usr/bin/prometheus on a free loopback port with a
// 1 s scrape and evaluation interval, scraping targets (admin address →
// labels) and loading rulesFile.
func startPrometheus(t *testing.T, targets map[string]map[string]string, rulesFile string) *prom {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus not found (Debian package prometheus; `make deps` installs it): %v", err)
	}
	dir := t.TempDir()
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\nrule_files:\n  - %q\nscrape_configs:\n  - job_name: ferry\n    static_configs:\n", rulesFile)
	addrs := make([]string, 0, len(targets))
	for a := range targets {
		addrs = append(addrs, a)
	}
	sort.Strings(addrs)
	for _, a := range addrs {
		fmt.Fprintf(&cfg, "      - targets: [%q]\n        labels:\n", a)
		for k, v := range targets[a] {
			fmt.Fprintf(&cfg, "          %s: %q\n", k, v)
		}
	}
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(t))
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	p := &prom{base: "http://" + addr, log: logf, done: make(chan struct{})}
	p.cmd = exec.Command(bin, "--config.file="+cfgFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--storage.tsdb.retention.time=1h", "--log.level=warn")
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("prometheus log:\n%s\nconfig:\n%s", b, cfg.String())
		}
		logf.Close()
	})
	waitUntil(t, 30*time.Second, "prometheus ready", func() bool {
		select {
		case <-p.done:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("prometheus exited:\n%s", b)
		default:
		}
		resp, err := http.Get(p.base + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return p
}

// get calls a Prometheus API path and decodes its data into out.
func (p *prom) get(t *testing.T, path string, q url.Values, out any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", p.base+path+"?"+q.Encode(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("prometheus %s: %v", path, err)
	}
	defer resp.Body.Close()
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil || env.Status != "success" {
		t.Fatalf("prometheus %s %v: %d %s %v", path, q, resp.StatusCode, env.Error, err)
	}
	if err := json.Unmarshal(env.Data, out); err != nil {
		t.Fatalf("prometheus %s data: %v", path, err)
	}
}

// series is one series of a query result: its labels and its values
// (one for an instant query).
type series struct {
	Metric map[string]string `json:"metric"`
	Value  []any             `json:"value"`
	Values [][]any           `json:"values"`
}

func (s series) samples() []float64 {
	pts := s.Values
	if s.Value != nil {
		pts = [][]any{s.Value}
	}
	out := make([]float64, 0, len(pts))
	for _, p := range pts {
		f, _ := strconv.ParseFloat(p[1].(string), 64)
		out = append(out, f)
	}
	return out
}

func (p *prom) query(t *testing.T, expr string) []series {
	t.Helper()
	var d struct{ Result []series }
	p.get(t, "/api/v1/query", url.Values{"query": {expr}}, &d)
	return d.Result
}

func (p *prom) queryRange(t *testing.T, expr string, from, to time.Time) []series {
	t.Helper()
	var d struct{ Result []series }
	p.get(t, "/api/v1/query_range", url.Values{"query": {expr}, "start": {strconv.FormatInt(from.Unix(), 10)},
		"end": {strconv.FormatInt(to.Unix()+1, 10)}, "step": {"1"}}, &d)
	return d.Result
}

// firing returns the names of the alerts firing now, with their count.
func (p *prom) firing(t *testing.T) map[string]int {
	t.Helper()
	var d struct {
		Alerts []struct {
			Labels map[string]string `json:"labels"`
			State  string            `json:"state"`
		} `json:"alerts"`
	}
	p.get(t, "/api/v1/alerts", nil, &d)
	out := map[string]int{}
	for _, a := range d.Alerts {
		if a.State == "firing" {
			out[a.Labels["alertname"]]++
		}
	}
	return out
}

// value is a sample of one series selected by labels, or NaN.
func (p *prom) value(t *testing.T, expr string) float64 {
	t.Helper()
	r := p.query(t, expr)
	if len(r) == 0 {
		return math.NaN()
	}
	return r[0].samples()[0]
}

// dashboard is the part of deploy/grafana/ferry.json the test reads.
type dashboard struct {
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name     string `json:"name"`
			Type     string `json:"type"`
			AllValue string `json:"allValue"`
			Query    any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID      int     `json:"id"`
	Type    string  `json:"type"`
	Title   string  `json:"title"`
	Panels  []panel `json:"panels"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
		Hide  bool   `json:"hide"`
	} `json:"targets"`
}

// labelValuesQuery parses label_values(selector, label).
var labelValuesQuery = regexp.MustCompile(`^label_values\((.*),\s*(\w+)\)$`)

// TestDashboardAndAlertsAgainstPrometheus runs Prometheus against a
// publisher and a subscriber while traffic flows with retries, dead
// letters, a dedupe hit, 429s, a breaker opening and a Redis outage; then
// every panel expression of the dashboard must return data and the
// FerryRedisDown, FerryBreakerOpen and FerryDeadLettersIncreasing alerts
// must fire.
func TestDashboardAndAlertsAgainstPrometheus(t *testing.T) {
	begin := time.Now()
	var dash dashboard
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	// The rules with every `for:` shortened to 1s.
	rules, err := os.ReadFile(alertsPath)
	if err != nil {
		t.Fatal(err)
	}
	forLine := regexp.MustCompile(`(?m)^(\s+for:\s*)\S+\s*$`)
	if len(forLine.FindAll(rules, -1)) == 0 {
		t.Fatalf("no for: in %s", alertsPath)
	}
	rulesFile := filepath.Join(t.TempDir(), "alerts.yaml")
	if err := os.WriteFile(rulesFile, forLine.ReplaceAll(rules, []byte("${1}1s")), 0o600); err != nil {
		t.Fatal(err)
	}

	// Redis with an append-only file, so that a restart keeps the streams.
	srv := redistest.StartServer(t, "--appendonly", "yes", "--appendfsync", "always")
	app := &obsApp{seen: map[string]int{}}
	appSrv := httptest.NewServer(app)
	defer appSrv.Close()

	pubEnv := ferryEnv(t, "orders-svc", srv.URL())
	pubEnv["FERRY_PUBLISH_RATE"] = "50" // the steady traffic is 20/s
	pubEnv["FERRY_PUBLISH_BURST"] = "20"
	subEnv := ferryEnv(t, "billing", srv.URL())
	subEnv["FERRY_APP_URL"] = appSrv.URL
	subEnv["FERRY_SUBSCRIPTIONS"] = "orders=/events/orders,payments=/events/payments"
	subEnv["FERRY_BREAKER_MIN_REQUESTS"] = "3"
	subEnv["FERRY_BREAKER_OPEN_TIMEOUT"] = "10m"
	pub, sub := startFerry(t, pubEnv), startFerry(t, subEnv)
	pr := startPrometheus(t, map[string]map[string]string{
		pubEnv["FERRY_ADMIN_ADDR"]: {"namespace": "promtest", "app": "orders-svc", "pod": "orders-svc-0"},
		subEnv["FERRY_ADMIN_ADDR"]: {"namespace": "promtest", "app": "billing", "pod": "billing-0"},
	}, rulesFile)
	// Counters must be scraped at 0 before they move, or increase() and
	// rate() see no change (as for a pod whose first scrape comes late).
	waitUntil(t, 30*time.Second, "both sidecars scraped", func() bool {
		return pr.value(t, `count(up{job="ferry"} == 1)`) == 2 &&
			pr.value(t, `count(ferry_deadletters_total{namespace="promtest"})`) >= 4 &&
			pr.value(t, `count(ferry_publish_duration_seconds_count{namespace="promtest"})`) == 2
	})
	t.Logf("started redis, app, 2 sidecars, prometheus, first scrape in %s", time.Since(begin).Round(time.Millisecond))

	// Steady traffic for the rate panels, until the end of the test.
	stop := make(chan struct{})
	var sent, refused atomic.Int64
	var lastAccepted atomic.Value // the key of the latest 202
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			body, key := "event", fmt.Sprintf("steady-%d", i)
			switch i % 10 {
			case 5:
				body = "flaky" // a 503, then a success: retries
			case 7:
				// A recurring client error (400). A one-off burst would not
				// do: its {topic,code} series is born at its final value,
				// and rate() sees no increase (see the report of issue 17).
				key = "bad key"
			}
			if code, _ := pub.publish("orders", body, map[string]string{"Idempotency-Key": key}); code == 202 {
				lastAccepted.Store(key)
				sent.Add(1)
			} else {
				refused.Add(1)
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	mustPublish := func(topic, body, key string) {
		t.Helper()
		code, resp := pub.publish(topic, body, map[string]string{"Idempotency-Key": key})
		for i := 0; code == 429 && i < 50; i++ { // over FERRY_PUBLISH_RATE: as a client would, retry
			time.Sleep(100 * time.Millisecond)
			code, resp = pub.publish(topic, body, map[string]string{"Idempotency-Key": key})
		}
		if code != 202 {
			t.Fatalf("publish %s/%s: %d %s", topic, key, code, resp)
		}
	}
	// Dead letters (422).
	for i := range 3 {
		mustPublish("orders", "poison", fmt.Sprintf("poison-%d", i))
	}
	// A dedupe hit: the same Idempotency-Key again once it was delivered.
	mustPublish("orders", "event", "dup")
	waitUntil(t, 20*time.Second, "dup delivered", func() bool { return app.delivered("dup") == 1 })
	mustPublish("orders", "event", "dup")
	// The app failing hard for payments: the breaker opens.
	for i := range 6 {
		mustPublish("payments", "charge", fmt.Sprintf("pay-%d", i))
	}
	// A burst over FERRY_PUBLISH_RATE (429).
	var burst sync.WaitGroup
	var throttled atomic.Int64
	for i := range 60 {
		burst.Add(1)
		go func() {
			defer burst.Done()
			if code, _ := pub.publish("orders", "event", map[string]string{"Idempotency-Key": fmt.Sprintf("burst-%d", i)}); code == 429 {
				throttled.Add(1)
			}
		}()
	}
	burst.Wait()
	if throttled.Load() == 0 {
		t.Errorf("a burst of 60 over FERRY_PUBLISH_RATE=50/burst 20 got no 429")
	}
	waitUntil(t, 30*time.Second, "dedupe hit, dead letters and the payments breaker open", func() bool {
		return scrapeMetric(t, sub, "ferry_dedupe_hits_total", map[string]string{"subscription": "orders"}) >= 1 &&
			scrapeMetric(t, sub, "ferry_deadletters_total", map[string]string{"subscription": "orders", "reason": "poison"}) == 3 &&
			scrapeMetric(t, sub, "ferry_breaker_state", map[string]string{"subscription": "payments"}) == 2
	})
	t.Logf("traffic phase done at %s", time.Since(begin).Round(time.Millisecond))

	// Redis outage: until Prometheus fires FerryRedisDown; the other two
	// alerts must be firing at the same time.
	srv.Stop(t)
	want := []string{"FerryRedisDown", "FerryBreakerOpen", "FerryDeadLettersIncreasing"}
	var alerts map[string]int
	lastSeen := ""
	defer func() {
		if t.Failed() {
			t.Logf("last seen: %s", lastSeen)
		}
	}()
	waitUntil(t, 45*time.Second, "alerts "+strings.Join(want, ", ")+" firing", func() bool {
		alerts = pr.firing(t)
		lastSeen = fmt.Sprintf("firing %v; redis_up %v; publisher outbox %v", alerts,
			pr.query(t, `ferry_redis_up`), pr.value(t, `max(ferry_outbox_pending_records{app="orders-svc"})`))
		for _, a := range want {
			if alerts[a] == 0 {
				return false
			}
		}
		return pr.value(t, `max(ferry_outbox_pending_records{app="orders-svc"})`) > 0
	})
	t.Logf("alerts firing at %s during the outage: %v", time.Since(begin).Round(time.Millisecond), alerts)
	srv.Restart(t)
	waitUntil(t, 30*time.Second, "Redis back for both sidecars and the outbox relayed", func() bool {
		return pr.value(t, `min(ferry_redis_up{namespace="promtest"})`) == 1 &&
			scrapeMetric(t, pub, "ferry_outbox_pending_records", nil) == 0 &&
			pr.value(t, `max(ferry_outbox_pending_records{app="orders-svc"})`) == 0
	})
	// A few more seconds of healthy traffic inside the rate window.
	after := sent.Load()
	waitUntil(t, 30*time.Second, "healthy publishes after the outage", func() bool { return sent.Load() > after+40 })
	key := lastAccepted.Load().(string)
	waitUntil(t, 30*time.Second, key+" delivered", func() bool { return app.delivered(key) > 0 })
	t.Logf("outage over at %s; %d steady publishes, %d refused", time.Since(begin).Round(time.Millisecond), sent.Load(), refused.Load())

	// The rules all evaluate without error.
	var rg struct {
		Groups []struct {
			Rules []struct {
				Name      string `json:"name"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"rules"`
		} `json:"groups"`
	}
	pr.get(t, "/api/v1/rules", nil, &rg)
	nrules := 0
	for _, g := range rg.Groups {
		for _, r := range g.Rules {
			nrules++
			if r.Health != "ok" {
				t.Errorf("rule %s: health %s %s", r.Name, r.Health, r.LastError)
			}
		}
	}
	if nrules == 0 {
		t.Errorf("prometheus loaded no rules from %s", alertsPath)
	}
	// Every metric an alert reads is there (a rule over a missing metric
	// is healthy and silent forever).
	for _, m := range regexp.MustCompile(`\bferry_[a-z_]+\b`).FindAllString(string(rules), -1) {
		if _, exempt := missingMetric(m); !exempt && len(pr.query(t, `count({__name__="`+m+`"})`)) == 0 {
			t.Errorf("%s reads %s, which no sidecar exports", alertsPath, m)
		}
	}

	// The dashboard variables, from their own queries, as Grafana would.
	vars := map[string]string{}
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(string)
		if m, ok := v.Query.(map[string]any); ok {
			q, _ = m["query"].(string)
		}
		m := labelValuesQuery.FindStringSubmatch(q)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, q)
			continue
		}
		var values []string
		pr.get(t, "/api/v1/label/"+m[2]+"/values", url.Values{"match[]": {substitute(m[1], vars)}}, &values)
		t.Logf("variable $%s = %v  (%s)", v.Name, values, q)
		if len(values) == 0 {
			t.Errorf("variable %s: %q returns no values", v.Name, q)
			continue
		}
		vars[v.Name] = "(" + strings.Join(values, "|") + ")" // every value selected
	}

	// Every expression of every panel.
	end := time.Now()
	var report []string
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			for _, tg := range p.Targets {
				if tg.Hide || tg.Expr == "" {
					continue
				}
				expr := substitute(tg.Expr, vars)
				if strings.Contains(expr, "$") {
					t.Errorf("panel %q %s: unknown variable left in %s", p.Title, tg.RefID, expr)
					continue
				}
				now := pr.query(t, expr)
				overRange := pr.queryRange(t, expr, begin, end)
				valued, nonzero := 0, false
				for _, s := range overRange {
					for _, f := range s.samples() {
						if !math.IsNaN(f) {
							valued++
							nonzero = nonzero || f != 0
						}
					}
				}
				line := fmt.Sprintf("%-46s %s  series now %d, over the test %d (%d samples)", fmt.Sprintf("%d %q", p.ID, p.Title), tg.RefID, len(now), len(overRange), valued)
				report = append(report, line)
				why, exempt := missingMetric(expr)
				switch {
				case exempt && (len(now) == 0 || valued == 0):
					report[len(report)-1] += "  (no data: " + why + ")"
				case len(now) == 0:
					t.Errorf("panel %q %s: no data now for %s", p.Title, tg.RefID, expr)
				case valued == 0:
					t.Errorf("panel %q %s: only NaN over the test for %s", p.Title, tg.RefID, expr)
				case !nonzero && zeroAllowed[p.Title] == "":
					t.Errorf("panel %q %s: only zeros over the test for %s", p.Title, tg.RefID, expr)
				}
			}
		}
	}
	walk(dash.Panels)
	alertNames := make([]string, 0, len(alerts))
	for a, n := range alerts {
		alertNames = append(alertNames, fmt.Sprintf("%s (%d series)", a, n))
	}
	slices.Sort(alertNames)
	t.Logf("panels (expression: series at the end, series over the test):\n%s\nalerts firing during the outage: %s\ntotal %s",
		strings.Join(report, "\n"), strings.Join(alertNames, ", "), time.Since(begin).Round(time.Millisecond))
}

// substitute replaces the dashboard's variables in expr: the template
// variables by vars (a regex of every value), Grafana's built-ins by
// intervals that fit a 1 s scrape.
func substitute(expr string, vars map[string]string) string {
	pairs := []string{"$__rate_interval", rateInterval, "${__rate_interval}", rateInterval,
		"$__range", dashRange, "${__range}", dashRange, "$__interval", "2s", "${__interval}", "2s"}
	names := make([]string, 0, len(vars))
	for n := range vars {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return len(names[i]) > len(names[j]) }) // $topic before $t
	for _, n := range names {
		pairs = append(pairs, "${"+n+"}", vars[n], "$"+n, vars[n])
	}
	return strings.NewReplacer(pairs...).Replace(expr)
}

// missingMetric reports whether expr uses a metric listed in notExportedYet.
func missingMetric(expr string) (string, bool) {
	for name, why := range notExportedYet {
		if strings.Contains(expr, name) {
			return name + " " + why, true
		}
	}
	return "", false
}
