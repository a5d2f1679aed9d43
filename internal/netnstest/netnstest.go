package netnstest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// namePrefix starts every namespace this package makes; the rest is the
// test process's pid and a random tag, so stale ones can be told apart.
const namePrefix = "ferrytest-"

// NS is one network namespace with a veth pair to the host.
type NS struct {
	// Name is the namespace's name (ip netns).
	Name string
	// HostIP is the host end of the veth pair: bind a server here.
	HostIP netip.Addr
	// NSIP is the namespace end: requests from the namespace come from it.
	NSIP netip.Addr
	// HostLink and NSLink are the names of the two veth ends.
	HostLink, NSLink string
}

// New makes a namespace with a veth pair on a free private /30, both ends
// up, and removes it when t ends. It fails t where that cannot be done.
func New(t testing.TB) *NS {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("netnstest: the ip command is missing (install iproute2): %v", err)
	}
	sweep(t)
	var lastErr error
	for range 8 {
		n, err := create(t)
		if err == nil {
			return n
		}
		lastErr = err
	}
	t.Fatalf("netnstest: make a network namespace: %v", lastErr)
	return nil
}

// create makes one attempt with a random name and subnet; the cleanup of
// whatever it made is registered before it is made.
func create(t testing.TB) (*NS, error) {
	tag := fmt.Sprintf("%06x", rand.Uint32()&0xffffff)
	subnet, err := freeSubnet()
	if err != nil {
		return nil, err
	}
	host := subnet.Addr().Next()
	n := &NS{
		Name:     namePrefix + strconv.Itoa(os.Getpid()) + "-" + tag,
		HostIP:   host,
		NSIP:     host.Next(),
		HostLink: "fth" + tag, // at most 15 bytes, as the kernel wants
		NSLink:   "ftn" + tag,
	}
	if err := ip("netns", "add", n.Name); err != nil {
		return nil, err
	}
	t.Cleanup(n.remove)
	steps := [][]string{
		{"link", "add", n.HostLink, "type", "veth", "peer", "name", n.NSLink, "netns", n.Name},
		{"addr", "add", n.HostIP.String() + "/30", "dev", n.HostLink},
		{"link", "set", n.HostLink, "up"},
		{"-n", n.Name, "addr", "add", n.NSIP.String() + "/30", "dev", n.NSLink},
		{"-n", n.Name, "link", "set", n.NSLink, "up"},
		{"-n", n.Name, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			n.remove()
			return nil, err
		}
	}
	// The host end answers only once it is up on both sides (no DAD for
	// IPv4, but the link may take a moment): wait until the route exists.
	if err := n.waitReachable(10 * time.Second); err != nil {
		n.remove()
		return nil, err
	}
	return n, nil
}

// waitReachable dials the host end from the namespace until the kernel
// answers (a refused connection is an answer: the path works).
func (n *NS) waitReachable(within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := n.DialContext(ctx, "tcp", netip.AddrPortFrom(n.HostIP, 9).String())
		cancel()
		if err == nil {
			c.Close()
			return nil
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("reach %s from namespace %s: %w", n.HostIP, n.Name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// remove deletes the namespace (which destroys the veth pair) and the host
// end in case it outlived it. Errors are ignored: it may be gone already.
func (n *NS) remove() {
	_ = ip("netns", "del", n.Name)
	_ = ip("link", "del", n.HostLink)
}

// DialContext opens a connection from inside the namespace: the socket is
// made on an OS thread that joined the namespace and is never given back
// to other goroutines (it ends with the dialing goroutine), so nothing
// else ever runs in the namespace. The connection is then used as any other.
func (n *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with this goroutine
		f, err := os.Open(filepath.Join("/run/netns", n.Name))
		if err != nil {
			done <- result{err: fmt.Errorf("open namespace %s: %w", n.Name, err)}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- result{err: fmt.Errorf("join namespace %s: %w", n.Name, err)}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		done <- result{c, err}
	}()
	r := <-done
	return r.c, r.err
}

// Client returns an HTTP client whose requests leave from the namespace
// (from NSIP). It keeps no idle connections and ignores proxy variables.
func (n *NS) Client() *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy:             nil,
			DialContext:       n.DialContext,
			DisableKeepAlives: true,
		},
	}
}

// Command returns cmd to run inside the namespace (ip netns exec), for a
// program that must make its own connections from there.
func (n *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// freeSubnet picks a random /30 in 10.200.0.0/16 that no interface of the
// host has an address in.
func freeSubnet() (netip.Prefix, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("list addresses: %w", err)
	}
	for range 64 {
		k := rand.IntN(1 << 14) // 16384 /30s in the /16
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(k >> 6), byte(k&63) << 2}), 30)
		used := false
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP); ok && p.Contains(ip.Unmap()) {
					used = true
				}
			}
		}
		if !used {
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("no free /30 in 10.200.0.0/16")
}

// sweep removes namespaces this package made in processes that no longer
// exist (a test binary killed before its cleanup).
func sweep(t testing.TB) {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return // none yet
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), namePrefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		if err := ip("netns", "del", e.Name()); err == nil {
			t.Logf("netnstest: removed %s left by process %d", e.Name(), pid)
		}
	}
}

// ip runs the ip command; its output is in the error.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
