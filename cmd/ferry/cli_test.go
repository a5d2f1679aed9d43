package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-sidecar/ferry/internal/redistest"
)

// cliResult is one run of a ferry subcommand.
type cliResult struct {
	code           int
	stdout, stderr string
}

// ferryCLI runs the binary with args and only the variables in env (and
// PATH), as `kubectl exec … -- ferry …` would in the sidecar's container.
func ferryCLI(t *testing.T, env map[string]string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, ferryBin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	_ = cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("ferry %s: no exit within 30s", strings.Join(args, " "))
	}
	r := cliResult{code: cmd.ProcessState.ExitCode(), stdout: out.String(), stderr: errOut.String()}
	t.Logf("$ ferry %s  (exit %d)\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

// want fails the test unless r exited with code and its output on the
// named stream contains every string of subs.
func (r cliResult) want(t *testing.T, code int, stream string, subs ...string) {
	t.Helper()
	out := r.stdout
	if stream == "stderr" {
		out = r.stderr
	}
	if r.code != code {
		t.Errorf("exit %d, want %d; stdout %q stderr %q", r.code, code, r.stdout, r.stderr)
	}
	for _, s := range subs {
		if !strings.Contains(out, s) {
			t.Errorf("%s %q lacks %q", stream, out, s)
		}
	}
	if code != 0 && strings.Count(strings.TrimRight(r.stderr, "\n"), "\n") != 0 {
		t.Errorf("failure reason is not one line: %q", r.stderr)
	}
}

// cliApp answers 422 to bodies starting with "poison" until fixed, 200
// otherwise, and counts replayed deliveries per message id.
type cliApp struct {
	fixed    atomic.Bool
	mu       sync.Mutex
	ok       map[string]int
	replayed map[string]int
}

func (a *cliApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	if strings.HasPrefix(string(b), "poison") && !a.fixed.Load() {
		w.WriteHeader(http.StatusUnprocessableEntity)
		return
	}
	a.mu.Lock()
	id := r.Header.Get("Ferry-Message-Id")
	a.ok[id]++
	if r.Header.Get("Ferry-Replay") == "true" {
		a.replayed[id]++
	}
	a.mu.Unlock()
}

func (a *cliApp) counts(id string) (ok, replayed int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ok[id], a.replayed[id]
}

// TestCLIAgainstARunningSidecar runs every subcommand of the binary against
// a live sidecar with real Redis and an app that dead-letters (422): the
// tables, --json, replay from a time and from an id, redrive, and the
// failures (unknown topic, wrong or missing token, unreachable, Redis
// down, bad usage) with their exit codes.
func TestCLIAgainstARunningSidecar(t *testing.T) {
	srv := redistest.StartServer(t)
	app := &cliApp{ok: map[string]int{}, replayed: map[string]int{}}
	appSrv := httptest.NewServer(app)
	defer appSrv.Close()
	const token = "admin-s3cret"
	env := ferryEnv(t, "billing", srv.URL())
	env["FERRY_APP_URL"] = appSrv.URL
	env["FERRY_SUBSCRIPTIONS"] = "orders=/events/orders"
	env["FERRY_API_TOKEN"] = token // the admin token falls back to it
	p := startFerry(t, env)
	cliEnv := map[string]string{"FERRY_ADMIN_ADDR": env["FERRY_ADMIN_ADDR"], "FERRY_ADMIN_TOKEN": token}

	before := time.Now().Add(-time.Second).UTC()
	auth := map[string]string{"Authorization": "Bearer " + token}
	for _, ev := range []string{"ok-1", "poison-1", "poison-2"} {
		auth["Idempotency-Key"] = ev
		if code, body := p.publish("orders", ev, auth); code != 202 {
			t.Fatalf("publish %s: %d %s", ev, code, body)
		}
	}
	waitUntil(t, 20*time.Second, "two dead letters and one delivery", func() bool {
		ok, _ := app.counts("ok-1")
		return ok == 1 && scrapeMetric(t, p, "ferry_deadletters_total", map[string]string{"subscription": "orders", "reason": "poison"}) == 2
	})

	waitUntil(t, 20*time.Second, "the outbox relayed", func() bool {
		return scrapeMetric(t, p, "ferry_outbox_pending_records", nil) == 0
	})
	t.Run("status", func(t *testing.T) {
		r := ferryCLI(t, cliEnv, "status")
		r.want(t, 0, "stdout", "APP ID  billing", "REDIS   up", "OUTBOX  0 records, 0 B",
			"TOPIC   ROUTE           BREAKER  PENDING  LAG", "orders  /events/orders  closed   0        0")
		r = ferryCLI(t, cliEnv, "status", "--json")
		r.want(t, 0, "stdout")
		var st struct {
			AppID         string                   `json:"app_id"`
			Redis         struct{ Up bool }        `json:"redis"`
			Subscriptions []map[string]interface{} `json:"subscriptions"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.AppID != "billing" || !st.Redis.Up ||
			len(st.Subscriptions) != 1 || st.Subscriptions[0]["topic"] != "orders" || st.Subscriptions[0]["breaker"] != "closed" {
			t.Errorf("status --json = %+v, %v", st, err)
		}
	})

	t.Run("deadletters", func(t *testing.T) {
		// The two were delivered concurrently: either may have failed first.
		rows := func(out string) map[string]string {
			m := map[string]string{}
			for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
				f := strings.Fields(line)
				m[f[0]] = strings.Join(append(f[1:4:4], f[5:]...), " ") // all but FAILED AT
			}
			return m
		}
		r := ferryCLI(t, cliEnv, "deadletters", "orders")
		r.want(t, 0, "stdout", "MESSAGE ID  REASON  STATUS  ATTEMPTS  FAILED AT")
		if got := rows(r.stdout); len(got) != 2 || got["poison-1"] != "poison 422 1 -" || got["poison-2"] != "poison 422 1 -" {
			t.Errorf("rows = %q", got)
		}
		r = ferryCLI(t, cliEnv, "deadletters", "--limit", "1", "orders") // flags before or after TOPIC
		r.want(t, 0, "stdout", "MESSAGE ID")
		if got := rows(r.stdout); len(got) != 1 {
			t.Errorf("--limit 1 listed %q", got)
		}
		r = ferryCLI(t, cliEnv, "deadletters", "orders", "--json", "--limit=5")
		r.want(t, 0, "stdout")
		var body struct {
			DeadLetters []struct {
				MessageID string `json:"message_id"`
				Reason    string `json:"reason"`
				Status    int    `json:"status"`
				Attempts  int    `json:"attempts"`
			} `json:"deadletters"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &body); err != nil || len(body.DeadLetters) != 2 {
			t.Fatalf("deadletters --json = %+v, %v", body, err)
		}
		for _, d := range body.DeadLetters {
			if !strings.HasPrefix(d.MessageID, "poison-") || d.Reason != "poison" || d.Status != 422 || d.Attempts != 1 {
				t.Errorf("dead letter %+v", d)
			}
		}
		ferryCLI(t, cliEnv, "deadletters", "orders", "--limit", "5000").want(t, 1, "stderr", "ferry: bad request: limit must be a whole number from 1 to 1000")
	})

	t.Run("redrive", func(t *testing.T) {
		app.fixed.Store(true)
		ferryCLI(t, cliEnv, "redrive", "orders").want(t, 0, "stdout", "redriven 2 dead letters of topic orders")
		waitUntil(t, 20*time.Second, "redriven letters delivered", func() bool {
			a, _ := app.counts("poison-1")
			b, _ := app.counts("poison-2")
			return a == 1 && b == 1
		})
		r := ferryCLI(t, cliEnv, "deadletters", "orders")
		r.want(t, 0, "stderr", "no dead letters for topic orders")
		if r.stdout != "" {
			t.Errorf("empty list printed %q", r.stdout)
		}
		r = ferryCLI(t, cliEnv, "redrive", "orders", "--json")
		r.want(t, 0, "stdout", `"redriven": 0`)
	})

	t.Run("replay", func(t *testing.T) {
		r := ferryCLI(t, cliEnv, "replay", "orders", "--from", before.Format(time.RFC3339Nano))
		r.want(t, 0, "stdout", fmt.Sprintf("replaying topic orders from stream id %d-0", before.UnixMilli()))
		waitUntil(t, 20*time.Second, "all three replayed", func() bool {
			_, a := app.counts("ok-1")
			_, b := app.counts("poison-1")
			_, c := app.counts("poison-2")
			return a == 1 && b == 1 && c == 1
		})
		// From the id of the last entry: only poison-2 again.
		last, err := srv.Client(t).XRevRangeN(context.Background(), ordersStream, "+", "-", 1).Result()
		if err != nil || len(last) != 1 {
			t.Fatalf("last entry: %v %v", last, err)
		}
		r = ferryCLI(t, cliEnv, "replay", "--json", "orders", "--from", last[0].ID)
		r.want(t, 0, "stdout", `"replayed_from": "`+last[0].ID+`"`)
		waitUntil(t, 20*time.Second, "poison-2 replayed again", func() bool {
			_, c := app.counts("poison-2")
			return c == 2
		})
		if _, a := app.counts("ok-1"); a != 1 {
			t.Errorf("ok-1 replayed %d times, want 1 (replay from an id later than it)", a)
		}
		ferryCLI(t, cliEnv, "replay", "orders", "--from", "yesterday").want(t, 1, "stderr", "ferry: bad request: ")
	})

	t.Run("failures", func(t *testing.T) {
		ferryCLI(t, cliEnv, "deadletters", "nosuch").want(t, 1, "stderr", `ferry: unknown topic: this app (billing) does not subscribe to topic "nosuch"`)
		ferryCLI(t, cliEnv, "redrive", "nosuch").want(t, 1, "stderr", "ferry: unknown topic: ")
		ferryCLI(t, cliEnv, "replay", "nosuch", "--from", "0-0").want(t, 1, "stderr", "ferry: unknown topic: ")

		wrong := map[string]string{"FERRY_ADMIN_ADDR": env["FERRY_ADMIN_ADDR"], "FERRY_ADMIN_TOKEN": "wrong"}
		r := ferryCLI(t, wrong, "status")
		r.want(t, 1, "stderr", "ferry: unauthorized: the admin API refused the token from FERRY_ADMIN_TOKEN")
		if strings.Contains(r.stderr, "wrong") {
			t.Errorf("token in the message: %q", r.stderr)
		}
		none := map[string]string{"FERRY_ADMIN_ADDR": env["FERRY_ADMIN_ADDR"]}
		ferryCLI(t, none, "status").want(t, 1, "stderr", "ferry: unauthorized: set FERRY_ADMIN_TOKEN")

		free := fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(t))
		ferryCLI(t, map[string]string{"FERRY_ADMIN_ADDR": free}, "status").want(t, 1, "stderr",
			"ferry: cannot reach the admin API at "+free+": connection refused")

		for _, args := range [][]string{{"deadletters"}, {"redrive"}, {"replay", "orders"}, {"status", "extra"},
			{"deadletters", "a", "b"}, {"deadletters", "orders", "--limit", "many"}, {"frobnicate"}, {"status", "--color"}} {
			ferryCLI(t, cliEnv, args...).want(t, 2, "stderr", "run `ferry help`")
		}
		both := map[string]string{"FERRY_ADMIN_TOKEN": "a", "FERRY_ADMIN_TOKEN_FILE": "/nonexistent"}
		ferryCLI(t, both, "status").want(t, 2, "stderr", "FERRY_ADMIN_TOKEN_FILE")
	})

	t.Run("environment", func(t *testing.T) {
		// A token file with a trailing newline (a mounted Secret), the
		// publish token as fallback, and listen-style addresses.
		file := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, port, _ := strings.Cut(env["FERRY_ADMIN_ADDR"], ":")
		for _, e := range []map[string]string{
			{"FERRY_ADMIN_ADDR": ":" + port, "FERRY_ADMIN_TOKEN_FILE": file},
			{"FERRY_ADMIN_ADDR": "0.0.0.0:" + port, "FERRY_API_TOKEN": token},
			{"FERRY_ADMIN_ADDR": ":" + port, "FERRY_API_TOKEN_FILE": file},
		} {
			ferryCLI(t, e, "status").want(t, 0, "stdout", "APP ID  billing")
		}
	})

	t.Run("version and help", func(t *testing.T) {
		ferryCLI(t, nil, "version").want(t, 0, "stdout", "ferry ")
		ferryCLI(t, nil, "-version").want(t, 0, "stderr", "ferry ")
		ferryCLI(t, nil, "--version").want(t, 0, "stderr", "ferry ")
		r := ferryCLI(t, nil, "help")
		r.want(t, 0, "stdout", "ferry status", "ferry deadletters TOPIC [--limit N]", "ferry redrive TOPIC", "ferry replay TOPIC --from TIME|ID", "FERRY_ADMIN_TOKEN")
		ferryCLI(t, nil, "deadletters", "-h").want(t, 0, "stdout", "Usage:")
	})

	t.Run("redis down", func(t *testing.T) {
		srv.Stop(t)
		waitUntil(t, 20*time.Second, "ferry sees Redis down", func() bool {
			return scrapeMetric(t, p, "ferry_redis_up", nil) == 0
		})
		r := ferryCLI(t, cliEnv, "status")
		r.want(t, 0, "stdout", "REDIS   down")
		ferryCLI(t, cliEnv, "deadletters", "orders").want(t, 1, "stderr", "ferry: the sidecar cannot do it now (503): Redis did not answer; try again")
		if m := regexp.MustCompile(`retry after \d+s`).FindString(r.stderr + ferryCLI(t, cliEnv, "redrive", "orders").stderr); m == "" {
			t.Errorf("no Retry-After in the 503 message")
		}
	})
}
