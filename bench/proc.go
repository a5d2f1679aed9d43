package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// env is what a run owns: the temp directory, the redis-server, the ferry
// binary, and every process started, to stop at the end.
type env struct {
	o        options
	dir      string
	ferryBin string
	// outboxDir holds the sidecars' outboxes: dir, or one made in -outbox-dir.
	outboxDir string
	// ceilingBin is ./bench/ceilingc, built like ferry.
	ceilingBin string
	redisAddr  string
	redis      *process

	mu    sync.Mutex
	procs []*process
}

func (e *env) logf(format string, args ...any) {
	if e.o.Verbose != nil {
		fmt.Fprintf(e.o.Verbose, "bench: "+format+"\n", args...)
	}
}

// setup makes the temp directory, builds ferry and starts redis-server.
func (e *env) setup(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "ferry-bench-")
	if err != nil {
		return fmt.Errorf("make temp dir: %w", err)
	}
	e.dir = dir
	e.outboxDir = dir
	if e.o.OutboxDir != "" {
		if e.outboxDir, err = os.MkdirTemp(e.o.OutboxDir, "ferry-bench-outbox-"); err != nil {
			return fmt.Errorf("make outbox dir: %w", err)
		}
	}
	if e.ferryBin = e.o.Ferry; e.ferryBin == "" {
		e.ferryBin = filepath.Join(dir, "ferry")
		e.logf("building ferry into %s", e.ferryBin)
		if err := buildFerry(ctx, e.ferryBin, e.o.CPUProf != ""); err != nil {
			return err
		}
	}
	e.ceilingBin = filepath.Join(dir, "ceilingc")
	if err := buildCeilingC(ctx, e.ceilingBin); err != nil {
		return err
	}
	if e.o.CPUProf != "" {
		if err := os.MkdirAll(e.o.CPUProf, 0o755); err != nil {
			return fmt.Errorf("make profile dir: %w", err)
		}
	}
	return e.startRedis(ctx)
}

// cleanup stops every process still running, newest first, and removes
// the temp directory.
func (e *env) cleanup() {
	e.mu.Lock()
	procs := e.procs
	e.procs = nil
	e.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].stop(10 * time.Second)
	}
	if e.outboxDir != e.dir && !e.o.KeepFiles {
		os.RemoveAll(e.outboxDir)
	}
	if e.dir != "" && !e.o.KeepFiles {
		os.RemoveAll(e.dir)
	} else if e.dir != "" {
		e.logf("kept %s", e.dir)
	}
}

// buildFerry builds ./cmd/ferry of this module without the race detector.
func buildFerry(ctx context.Context, out string, pprof bool) error {
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	args := []string{"build", "-o", out}
	if pprof {
		args = append(args, "-tags", "ferrypprof")
	}
	cmd := exec.CommandContext(ctx, goTool(), append(args, "./cmd/ferry")...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build ferry: %w\n%s", err, b)
	}
	return nil
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(os.Getenv("GOROOT"), "bin", "go")
}

func moduleRoot(ctx context.Context) (string, error) {
	b, err := exec.CommandContext(ctx, goTool(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	mod := strings.TrimSpace(string(b))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("find module root: not inside the ferry module")
	}
	return filepath.Dir(mod), nil
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// process is one child process.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// start runs name with args and env, output to a log file in the temp dir.
func (e *env) start(name, bin string, args []string, environ []string) (*process, error) {
	logPath := filepath.Join(e.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create log: %w", err)
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Env = environ
	cmd.Stdout, cmd.Stderr = f, f
	// The child dies with us even if we are killed before cleanup runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	e.mu.Lock()
	e.procs = append(e.procs, p)
	e.mu.Unlock()
	return p, nil
}

// stop sends SIGTERM, then SIGKILL after grace; it returns once the process
// has exited.
func (p *process) stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// logTail is the end of the process's log, for error messages.
func (p *process) logTail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func (e *env) startRedis(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	rdir := filepath.Join(e.dir, "redis")
	if err := os.MkdirAll(rdir, 0o755); err != nil {
		return fmt.Errorf("make redis dir: %w", err)
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return fmt.Errorf("find redis-server (make deps installs it): %w", err)
	}
	e.redisAddr = "127.0.0.1:" + strconv.Itoa(port)
	e.redis, err = e.start("redis", bin, []string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", rdir,
		"--save", "", "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no",
	}, nil)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: e.redisAddr})
	defer rdb.Close()
	return poll(ctx, 10*time.Second, "redis-server to answer PING", e.redis, func() bool {
		return rdb.Ping(ctx).Err() == nil
	})
}

// poll calls cond every 20ms until it holds, within bounds; p (optional)
// failing ends the wait early.
func poll(ctx context.Context, within time.Duration, what string, p *process, cond func() bool) error {
	deadline := time.Now().Add(within)
	for !cond() {
		if p != nil {
			select {
			case <-p.done:
				return fmt.Errorf("%s exited while waiting for %s: %v\n%s", p.name, what, p.err, p.logTail())
			default:
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", within, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// sidecar is one running ferry process.
type sidecar struct {
	*process
	pub   string // http://host:port of the publish API
	admin string // http://host:port of the admin API
	pprof string // http://host:port of pprof, when built with it
}

// startFerry runs the ferry binary with FERRY_* variables (plus the
// defaults here) and waits until /readyz answers 200.
func (e *env) startFerry(ctx context.Context, appID string, vars map[string]string) (*sidecar, error) {
	var ports [3]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	env := map[string]string{
		"FERRY_APP_ID":           appID,
		"FERRY_REDIS_URL":        "redis://" + e.redisAddr + "/0",
		"FERRY_LISTEN_ADDR":      fmt.Sprintf("127.0.0.1:%d", ports[0]),
		"FERRY_ADMIN_ADDR":       fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"FERRY_OUTBOX_DIR":       filepath.Join(e.outboxDir, appID, "outbox"),
		"FERRY_LOG_LEVEL":        "warn",
		"FERRY_LOG_FORMAT":       "text",
		"FERRY_SHUTDOWN_TIMEOUT": "5s",
		"HOSTNAME":               appID + "-0",
		"PATH":                   os.Getenv("PATH"),
	}
	s := &sidecar{pub: "http://" + env["FERRY_LISTEN_ADDR"], admin: "http://" + env["FERRY_ADMIN_ADDR"]}
	if e.o.CPUProf != "" {
		env["FERRY_PPROF_ADDR"] = fmt.Sprintf("127.0.0.1:%d", ports[2])
		s.pprof = "http://" + env["FERRY_PPROF_ADDR"]
	}
	for k, v := range vars {
		env[k] = v
	}
	var environ []string
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	p, err := e.start(appID, e.ferryBin, nil, environ)
	if err != nil {
		return nil, err
	}
	s.process = p
	client := &http.Client{Timeout: time.Second}
	err = poll(ctx, 15*time.Second, appID+" /readyz", p, func() bool {
		resp, err := client.Get(s.admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return s, err
}

// procStat is what the kernel says about a process's resources.
type procStat struct {
	PeakRSS int64   // bytes, VmHWM
	CPU     float64 // seconds of user + system time
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// readProcStat reads /proc/<pid>/status (VmHWM) and /proc/<pid>/stat
// (utime, stime).
func readProcStat(pid int) (procStat, error) {
	var ps procStat
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ps, fmt.Errorf("read proc status: %w", err)
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return ps, fmt.Errorf("parse VmHWM %q: %w", v, err)
			}
			ps.PeakRSS = kb << 10
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ps, fmt.Errorf("read proc stat: %w", err)
	}
	// The command name may hold spaces; fields after it start at "state" (field 3).
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return ps, errors.New("parse proc stat: no command name")
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return ps, errors.New("parse proc stat: too few fields")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return ps, fmt.Errorf("parse proc stat: %w", err)
	}
	ps.CPU = float64(utime+stime) / clockTicks
	if ps.PeakRSS == 0 {
		return ps, errors.New("parse proc status: no VmHWM")
	}
	return ps, nil
}
