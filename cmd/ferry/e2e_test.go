package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-sidecar/ferry/internal/redistest"
)

// ferryBin is the ferry binary built once for the end-to-end tests.
var ferryBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ferry-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ferryBin = filepath.Join(dir, "ferry")
	build := exec.Command("go", "build", "-race", "-o", ferryBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build ferry:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is one ferry process under test.
type proc struct {
	t     *testing.T
	cmd   *exec.Cmd
	env   map[string]string
	pub   string
	admin string
	logMu sync.Mutex
	log   strings.Builder
	done  chan struct{}
	code  int
}

// ferryEnv returns a working environment for one ferry process on free ports.
func ferryEnv(t *testing.T, appID, redisURL string) map[string]string {
	return map[string]string{
		"FERRY_APP_ID":                 appID,
		"FERRY_REDIS_URL":              redisURL,
		"FERRY_LISTEN_ADDR":            fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(t)),
		"FERRY_ADMIN_ADDR":             fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(t)),
		"FERRY_OUTBOX_DIR":             filepath.Join(t.TempDir(), "outbox"),
		"FERRY_RETRY_INITIAL_INTERVAL": "10ms",
		"FERRY_RETRY_MAX_INTERVAL":     "100ms",
		"FERRY_SHUTDOWN_TIMEOUT":       "5s",
		"HOSTNAME":                     appID + "-0",
	}
}

// startFerry runs the binary with env and waits until /readyz answers 200.
func startFerry(t *testing.T, env map[string]string) *proc {
	t.Helper()
	p := &proc{t: t, env: env, pub: "http://" + env["FERRY_LISTEN_ADDR"], admin: "http://" + env["FERRY_ADMIN_ADDR"], done: make(chan struct{})}
	p.cmd = exec.Command(ferryBin)
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Env = append(p.cmd.Env, "PATH="+os.Getenv("PATH"))
	stderr, _ := p.cmd.StderrPipe()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start ferry: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.logMu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.logMu.Unlock()
		}
		_ = p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("ferry %s log:\n%s", env["FERRY_APP_ID"], p.logs())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(p.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		select {
		case <-p.done:
			t.Fatalf("ferry exited with %d before ready:\n%s", p.code, p.logs())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("ferry not ready within 20s:\n%s", p.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *proc) logs() string {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return p.log.String()
}

// kill sends SIGKILL and waits for the exit.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// term sends SIGTERM and returns the exit code.
func (p *proc) term(within time.Duration) int {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.code
	case <-time.After(within):
		p.t.Fatalf("ferry did not exit within %s of SIGTERM", within)
		return -1
	}
}

func (p *proc) publish(topic, body string, hdr map[string]string) (int, string) {
	req, _ := http.NewRequest("POST", p.pub+"/v1/publish/"+topic, strings.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (p *proc) status(t *testing.T) map[string]any {
	t.Helper()
	resp, err := http.Get(p.admin + "/v1/status")
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	defer resp.Body.Close()
	var st map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("status body: %v", err)
	}
	return st
}

// runFerry runs the binary to completion with env and returns its exit code and output.
func runFerry(t *testing.T, env map[string]string, within time.Duration) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	cmd := exec.CommandContext(ctx, ferryBin)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, _ := cmd.CombinedOutput()
	return cmd.ProcessState.ExitCode(), string(out)
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
