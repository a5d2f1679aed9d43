// Package redistest runs real Redis for tests, on free loopback ports, in the
// test's temporary directories, stopped (SIGKILL) when the test ends:
//
//   - Start / StartServer / StartTLSServer: one redis-server;
//   - StartCluster: a six-node Redis Cluster (three masters, one replica each),
//     with kill -9, restart, CLUSTER FAILOVER, slot moves (MIGRATE, with a
//     half-way state for ASK) and redis-cli reshard;
//   - StartSentinel: a primary, two replicas and three Sentinels, with kill -9,
//     restart and SENTINEL FAILOVER.
//
// The topologies take an Auth (password, ACL user, TLS). Every wait is bounded
// and fails the test with what it was waiting for; REDISTEST_VERBOSE=1 logs
// each unmet poll. Slot and AssertSameSlot check keys against Redis Cluster's
// hash slots without a server.
//
// A missing redis-server or redis-cli binary fails the test: CI must not pass
// silently.
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is one running redis-server process owned by a test.
type Server struct {
	// Addr is host:port on 127.0.0.1.
	Addr string
	// Dir is the server's working directory (its RDB/AOF files live here).
	Dir string

	args       []string
	conf       string                                      // a config file, the first argument; "" for none
	listenArgs []string                                    // nil: --port on Addr
	dial       func(ctx context.Context) (net.Conn, error) // the readiness probe's dial; nil: plain TCP
	mu         sync.Mutex
	cmd        *exec.Cmd
	done       chan struct{}
}

// Start runs a redis-server and returns a client for it; both are closed when
// the test ends.
func Start(t testing.TB) *redis.Client {
	t.Helper()
	return StartServer(t).Client(t)
}

// StartServer runs a redis-server with extra command-line arguments (for
// example "--requirepass", "secret") and waits until it answers PING.
func StartServer(t testing.TB, args ...string) *Server {
	t.Helper()
	s := newServer(t, args)
	s.launch(t)
	return s
}

// newServer returns a server on a free port in a new temporary directory,
// not started.
func newServer(t testing.TB, args []string) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server not found in PATH (apt-get install -y redis-server): %v", err)
	}
	return &Server{Addr: "127.0.0.1:" + strconv.Itoa(FreePort(t)), Dir: t.TempDir(), args: args}
}

// launch starts s and stops it when the test ends.
func (s *Server) launch(t testing.TB) {
	t.Helper()
	s.start(t)
	t.Cleanup(func() { s.Stop(t) })
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (s *Server) start(t testing.TB) {
	t.Helper()
	_, port, _ := net.SplitHostPort(s.Addr)
	listen := s.listenArgs
	if listen == nil {
		listen = []string{"--port", port}
	}
	args := append(append(listen,
		"--bind", "127.0.0.1",
		"--dir", s.Dir,
		"--save", "",
		"--appendonly", "no",
		"--protected-mode", "no",
		"--daemonize", "no",
		"--logfile", filepath.Join(s.Dir, "redis.log"),
	), s.args...)
	if s.conf != "" {
		args = append([]string{s.conf}, args...)
	}
	cmd := exec.Command("redis-server", args...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	if err := s.waitReady(done); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
		s.Stop(t)
		t.Fatalf("redis-server on %s: %v\n%s", s.Addr, err, log)
	}
}

func (s *Server) waitReady(done <-chan struct{}) error {
	dial := s.dial
	if dial == nil {
		dial = func(ctx context.Context) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", s.Addr)
		}
	}
	return waitPing(done, dial)
}

// waitPing dials until the server answers PING (or NOAUTH, which a
// password-protected server answers: it is up all the same), for at most 10 s.
func waitPing(done <-chan struct{}, dial func(ctx context.Context) (net.Conn, error)) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("exited before answering PING")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := dial(ctx)
		cancel()
		if err == nil {
			_ = conn.SetDeadline(time.Now().Add(time.Second))
			_, _ = conn.Write([]byte("PING\r\n"))
			buf := make([]byte, 64)
			n, _ := conn.Read(buf)
			conn.Close()
			if n > 0 {
				return nil
			}
		}
		select {
		case <-done:
			return fmt.Errorf("exited before answering PING")
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("no answer to PING within 10s")
}

// Client returns a go-redis client for the server, closed when the test ends.
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	t.Cleanup(func() { c.Close() })
	return c
}

// URL returns the redis:// URL of the server.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// Stop kills the server (SIGKILL) and waits for it to exit. Stopping a stopped
// server does nothing.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Errorf("redis-server on %s did not exit after SIGKILL", s.Addr)
	}
}

// Restart starts a stopped server again on the same address and directory.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop(t)
	s.start(t)
}

// Ping reports whether the server answers within a second.
func (s *Server) Ping(ctx context.Context) error {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return c.Ping(ctx).Err()
}
