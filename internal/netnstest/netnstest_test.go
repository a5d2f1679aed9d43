package netnstest

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestRequestFromTheNamespace: a server bound to the host end sees a
// request sent with the NS's client come from the namespace end, not
// from loopback; the host's loopback is out of the namespace's reach; at
// cleanup the namespace and the host end are gone.
func TestRequestFromTheNamespace(t *testing.T) {
	var ns *NS
	t.Run("inside", func(t *testing.T) {
		ns = New(t)
		if !ns.HostIP.Is4() || !netip.MustParsePrefix("10.200.0.0/16").Contains(ns.HostIP) || ns.NSIP != ns.HostIP.Next() {
			t.Fatalf("addresses %s and %s, want .1 and .2 of a /30 in 10.200.0.0/16", ns.HostIP, ns.NSIP)
		}
		ln, err := net.Listen("tcp", netip.AddrPortFrom(ns.HostIP, 0).String())
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, r.RemoteAddr)
		}))
		srv.Listener.Close()
		srv.Listener = ln
		srv.Start()
		defer srv.Close()

		resp, err := ns.Client().Get(srv.URL)
		if err != nil {
			t.Fatalf("GET from the namespace: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		from, err := netip.ParseAddrPort(string(body))
		if err != nil {
			t.Fatalf("server saw %q: %v", body, err)
		}
		if from.Addr() != ns.NSIP || from.Addr().IsLoopback() {
			t.Errorf("server saw the request from %s, want %s (the namespace end)", from.Addr(), ns.NSIP)
		}

		// The same client cannot reach the host's loopback: it is really
		// somewhere else.
		lo := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		defer lo.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, lo.URL, nil)
		if resp, err := ns.Client().Do(req); err == nil {
			resp.Body.Close()
			t.Errorf("the namespace reached the host's loopback server %s", lo.URL)
		}

		// A plain client from the host still works, from the host end.
		resp, err = http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if from, _ := netip.ParseAddrPort(string(body)); from.Addr() == ns.NSIP {
			t.Errorf("a request from the host came from the namespace: the namespace leaked into the process")
		}

		out, err := ns.Command("ip", "-o", "-4", "addr", "show", "dev", ns.NSLink).CombinedOutput()
		if err != nil || !strings.Contains(string(out), ns.NSIP.String()+"/30") {
			t.Errorf("ip addr in the namespace: %v\n%s", err, out)
		}
	})
	if _, err := os.Stat("/run/netns/" + ns.Name); !os.IsNotExist(err) {
		t.Errorf("namespace %s still there after cleanup (%v)", ns.Name, err)
	}
	if err := exec.Command("ip", "link", "show", ns.HostLink).Run(); err == nil {
		t.Errorf("host link %s still there after cleanup", ns.HostLink)
	}
}

// TestTwoNamespacesAtOnce: tests may run side by side; each gets its own
// names and subnet.
func TestTwoNamespacesAtOnce(t *testing.T) {
	a, b := New(t), New(t)
	if a.Name == b.Name || a.HostLink == b.HostLink || a.HostIP == b.HostIP {
		t.Fatalf("two namespaces share a name or subnet: %+v %+v", a, b)
	}
	ln, err := net.Listen("tcp", netip.AddrPortFrom(a.HostIP, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, c.RemoteAddr().String())
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(c)
	c.Close()
	if from, _ := netip.ParseAddrPort(string(got)); from.Addr() != a.NSIP {
		t.Errorf("from a's namespace the server saw %q, want %s", got, a.NSIP)
	}
}
