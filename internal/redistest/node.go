package redistest

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Auth is how the nodes of a multi-node topology (StartCluster,
// StartSentinel) protect themselves; the zero value is no password, plain TCP.
type Auth struct {
	// Username, when set with Password, is an ACL user with every permission;
	// the default user is then switched off, so only this user gets in.
	Username string
	// Password is the nodes' requirepass (or the ACL user's password);
	// replicas authenticate to their primary with it (masteruser/masterauth).
	Password string
	// TLS, when set, makes every node listen on TLS only, with replication
	// (and the cluster bus) over TLS too. Make it with NewTLSFiles(t, "127.0.0.1").
	TLS *TLSFiles
}

// args returns the redis-server arguments for a data node.
func (a Auth) args() []string {
	var args []string
	switch {
	case a.Password == "":
	case a.Username == "":
		args = append(args, "--requirepass", a.Password, "--masterauth", a.Password)
	default:
		args = append(args,
			"--user", a.Username, "on", ">"+a.Password, "~*", "&*", "+@all",
			"--user", "default", "off",
			"--masteruser", a.Username, "--masterauth", a.Password)
	}
	if a.TLS != nil {
		args = append(args, "--tls-replication", "yes")
	}
	return args
}

// cliArgs returns the redis-cli arguments that connect with a, and its
// environment (the password goes in REDISCLI_AUTH, not on a command line).
func (a Auth) cliArgs() (args, env []string) {
	env = os.Environ()
	if a.Password != "" {
		env = append(env, "REDISCLI_AUTH="+a.Password)
		if a.Username != "" {
			args = append(args, "--user", a.Username)
		}
	}
	if a.TLS != nil {
		args = append(args, "--tls", "--cacert", a.TLS.CAFile, "--cert", a.TLS.ClientCertFile, "--key", a.TLS.ClientKeyFile)
	}
	return args, env
}

// tlsConfig is the client TLS configuration, nil for plain TCP.
func (a Auth) tlsConfig(t testing.TB) *tls.Config {
	t.Helper()
	if a.TLS == nil {
		return nil
	}
	return a.TLS.ClientConfig(t, "")
}

// userinfo is the URL userinfo for a (nil without a password).
func (a Auth) userinfo() *url.Userinfo {
	if a.Password == "" {
		return nil
	}
	return url.UserPassword(a.Username, a.Password)
}

// scheme is "rediss" with TLS, else "redis".
func (a Auth) scheme() string {
	if a.TLS != nil {
		return "rediss"
	}
	return "redis"
}

// startNode runs one redis-server with a's protection and extra arguments.
func startNode(t testing.TB, a Auth, args ...string) *Server {
	t.Helper()
	// A master waits repl-diskless-sync-delay (5 s) for more replicas
	// before a full sync: no waiting in tests.
	args = append(append(a.args(), "--repl-diskless-sync-delay", "0"), args...)
	if a.TLS != nil {
		return StartTLSServer(t, a.TLS, args...)
	}
	return StartServer(t, args...)
}

// nodeClient is a client for one node with a's credentials, for the
// caller to close; cfg is a.tlsConfig's result.
func (a Auth) nodeClient(addr string, cfg *tls.Config) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr: addr, Username: a.Username, Password: a.Password, TLSConfig: cfg,
		MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second,
	})
}

// running reports whether the server's process is up (not stopped or killed).
func (s *Server) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// redisCLI runs redis-cli with a's connection arguments and args, for at most
// a minute, and returns its combined output.
func redisCLI(t testing.TB, a Auth, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Fatalf("redis-cli not found in PATH (apt-get install -y redis-tools): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, env := a.cliArgs()
	cmd := exec.CommandContext(ctx, "redis-cli", append(conn, args...)...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("redis-cli %s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}

// waitFor polls cond every 50 ms until it returns nil or within passes; then
// it fails the test with what and cond's last error. With REDISTEST_VERBOSE
// set in the environment it logs every failed poll (where a wait spends its time).
func waitFor(t testing.TB, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if os.Getenv("REDISTEST_VERBOSE") != "" {
			t.Logf("%s %s: %v", time.Now().Format("05.000"), what, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, within, err)
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not synchronisation
	}
}

// infoField returns one "name:value" field of an INFO reply.
func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}
