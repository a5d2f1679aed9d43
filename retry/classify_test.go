package retry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestClassify(t *testing.T) {
	tests := []struct {
		name   string
		status int
		err    error
		want   Result
	}{
		{"200", 200, nil, Success},
		{"201", 201, nil, Success},
		{"204", 204, nil, Success},
		{"299", 299, nil, Success},
		{"408", 408, nil, Retry},
		{"429", 429, nil, Retry},
		{"500", 500, nil, Retry},
		{"502", 502, nil, Retry},
		{"503", 503, nil, Retry},
		{"599", 599, nil, Retry},
		{"400", 400, nil, Poison},
		{"401", 401, nil, Poison},
		{"404", 404, nil, Poison},
		{"409", 409, nil, Poison},
		{"413", 413, nil, Poison},
		{"422", 422, nil, Poison},
		{"499", 499, nil, Poison},
		{"100", 100, nil, Retry},
		{"301", 301, nil, Retry},
		{"304", 304, nil, Retry},
		{"0 without error", 0, nil, Retry},
		{"600", 600, nil, Retry},
		{"deadline", 0, context.DeadlineExceeded, Timeout},
		{"wrapped deadline", 0, fmt.Errorf("post: %w", context.DeadlineExceeded), Timeout},
		{"os deadline", 0, os.ErrDeadlineExceeded, Timeout},
		{"net.Error timeout", 0, &net.OpError{Op: "read", Err: timeoutErr{}}, Timeout},
		{"refused", 0, &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, Unreachable},
		{"refused, wrapped", 0, fmt.Errorf("post: %w", os.NewSyscallError("connect", syscall.ECONNREFUSED)), Unreachable},
		{"no route", 0, &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}, Unreachable},
		{"dial timeout", 0, &net.OpError{Op: "dial", Err: timeoutErr{}}, Unreachable},
		{"DNS", 0, &net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: "app.invalid", IsNotFound: true}}, Unreachable},
		{"DNS timeout", 0, &net.DNSError{Err: "timeout", Name: "app", IsTimeout: true}, Unreachable},
		{"reset", 0, &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, Error},
		{"EOF", 0, io.EOF, Error},
		{"unexpected EOF", 0, io.ErrUnexpectedEOF, Error},
		{"canceled", 0, context.Canceled, Error},
		{"error wins over status", 200, errors.New("boom"), Error},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Classify(tt.status, tt.err); got != tt.want {
				t.Errorf("Classify(%d, %v) = %q, want %q", tt.status, tt.err, got, tt.want)
			}
		})
	}
}

func TestClassifySent(t *testing.T) {
	reset := &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	refused := &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	tests := []struct {
		name   string
		status int
		err    error
		sent   bool
		want   Result
	}{
		{"200 sent", 200, nil, true, Success},
		{"200 not sent (answered early)", 200, nil, false, Success},
		{"503 not sent", 503, nil, false, Retry},
		{"422", 422, nil, true, Poison},
		{"reset after sending", 0, reset, true, Error},
		{"reset before sending", 0, reset, false, Unreachable},
		{"EOF after sending", 0, io.EOF, true, Error},
		{"EOF before sending", 0, io.EOF, false, Unreachable},
		{"closed idle before sending", 0, errors.New("http: server closed idle connection"), false, Unreachable},
		{"timeout after sending", 0, context.DeadlineExceeded, true, Timeout},
		{"timeout before sending", 0, context.DeadlineExceeded, false, Unreachable},
		{"refused", 0, refused, true, Unreachable},
		{"canceled before sending", 0, context.Canceled, false, Error},
		{"canceled after sending", 0, fmt.Errorf("post: %w", context.Canceled), true, Error},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ClassifySent(tt.status, tt.err, tt.sent); got != tt.want {
				t.Errorf("ClassifySent(%d, %v, %v) = %q, want %q", tt.status, tt.err, tt.sent, got, tt.want)
			}
		})
	}
}

// post does one real delivery-like request, observed, and classifies it.
func post(t *testing.T, c *http.Client, url string, body io.Reader) (Result, *Attempt) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second) // bound the test
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req, att := Observe(req)
	resp, err := c.Do(req)
	if err != nil {
		t.Logf("transport error: %v (connected %v, sent %v)", err, att.Connected(), att.Sent())
		return att.Classify(0, err), att
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return att.Classify(resp.StatusCode, nil), att
}

// serveRaw accepts connections on a new loopback listener and hands each to
// handle; the listener closes with the test.
func serveRaw(t *testing.T, handle func(c *net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			handle(c.(*net.TCPConn))
		}
	}()
	return "http://" + ln.Addr().String() + "/"
}

// readRequest reads from c until the end of a request's header and body
// (the tests' bodies are short and end with "END").
func readRequest(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got []byte
	buf := make([]byte, 4096)
	for !bytes.HasSuffix(got, []byte("END")) {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return
		}
	}
}

func TestClassifyRealTransport(t *testing.T) {
	t.Run("status", func(t *testing.T) {
		for _, tt := range []struct {
			status int
			want   Result
		}{{200, Success}, {429, Retry}, {503, Retry}, {400, Poison}} {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(tt.status)
			}))
			if got, att := post(t, srv.Client(), srv.URL, strings.NewReader("END")); got != tt.want || !att.Sent() || !att.Connected() {
				t.Errorf("status %d: got %q (sent %v, connected %v), want %q, sent and connected", tt.status, got, att.Sent(), att.Connected(), tt.want)
			}
			srv.Close()
		}
	})

	t.Run("connection refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close() // nothing listens on addr any more
		got, att := post(t, &http.Client{}, "http://"+addr+"/", strings.NewReader("END"))
		if got != Unreachable || att.Connected() || att.Sent() {
			t.Errorf("got %q (connected %v, sent %v), want %q, neither", got, att.Connected(), att.Sent(), Unreachable)
		}
	})

	t.Run("DNS failure", func(t *testing.T) {
		// .invalid never resolves (RFC 6761); the answer comes from the
		// resolver or from the local stub, never from the network at large.
		got, _ := post(t, &http.Client{}, "http://ferry-app.invalid/", strings.NewReader("END"))
		if got != Unreachable {
			t.Errorf("got %q, want %q", got, Unreachable)
		}
	})

	t.Run("reads the request then resets", func(t *testing.T) {
		url := serveRaw(t, func(c *net.TCPConn) {
			readRequest(c)
			_ = c.SetLinger(0) // close with RST
			c.Close()
		})
		for range 20 {
			if got, att := post(t, &http.Client{}, url, strings.NewReader("END")); got != Error || !att.Sent() {
				t.Fatalf("got %q (sent %v), want %q: the app read the request", got, att.Sent(), Error)
			}
		}
	})

	t.Run("reads the request then closes", func(t *testing.T) {
		url := serveRaw(t, func(c *net.TCPConn) {
			readRequest(c)
			c.Close() // FIN: the client reads EOF
		})
		if got, _ := post(t, &http.Client{}, url, strings.NewReader("END")); got != Error {
			t.Errorf("got %q, want %q: the app read the request", got, Error)
		}
	})

	t.Run("closes before the request is written", func(t *testing.T) {
		// The body is held back until the app has closed the connection, so
		// the request is never completely written.
		closed := make(chan struct{}, 1)
		url := serveRaw(t, func(c *net.TCPConn) {
			_ = c.SetLinger(0)
			c.Close()
			select {
			case closed <- struct{}{}:
			default:
			}
		})
		body := &gatedReader{gate: closed, data: []byte("END")}
		got, att := post(t, &http.Client{}, url, body)
		if got != Unreachable || att.Sent() {
			t.Errorf("got %q (sent %v), want %q, not sent", got, att.Sent(), Unreachable)
		}
	})

	t.Run("accepts and closes at once", func(t *testing.T) {
		// A crash-looping app. The race between ferry writing the request and
		// the app closing decides: not written ⇒ unreachable, written (the
		// app may have read it, ferry cannot tell) ⇒ error. Never anything
		// else, and never a mismatch with Sent.
		url := serveRaw(t, func(c *net.TCPConn) { c.Close() })
		c := &http.Client{}
		seen := map[Result]int{}
		for range 50 {
			got, att := post(t, c, url, strings.NewReader("END"))
			seen[got]++
			if want := map[bool]Result{false: Unreachable, true: Error}[att.Sent()]; got != want {
				t.Fatalf("got %q with sent %v, want %q", got, att.Sent(), want)
			}
		}
		t.Logf("accept-and-close outcomes over 50 requests: %v", seen)
	})

	t.Run("timeout", func(t *testing.T) {
		release := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			select { // hang until the client gives up or the test ends
			case <-r.Context().Done():
			case <-release:
			}
		}))
		defer srv.Close()
		defer close(release) // runs before srv.Close
		c := srv.Client()
		c.Timeout = 50 * time.Millisecond // FERRY_DELIVERY_TIMEOUT
		if got, _ := post(t, c, srv.URL, strings.NewReader("END")); got != Timeout {
			t.Errorf("client timeout: got %q, want %q", got, Timeout)
		}

		// The same through a context deadline instead of Client.Timeout.
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, strings.NewReader("END"))
		req, att := Observe(req)
		resp, err := srv.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		if got := att.Classify(0, err); got != Timeout {
			t.Errorf("context deadline: got %q (%v), want %q", got, err, Timeout)
		}
	})

	t.Run("timeout before the request is written", func(t *testing.T) {
		// The app accepts but never reads; the body outgrows the socket
		// buffers, so the write blocks until the deadline.
		held := make(chan net.Conn, 4)
		url := serveRaw(t, func(c *net.TCPConn) { held <- c }) // held open, never read
		t.Cleanup(func() {
			for len(held) > 0 {
				(<-held).Close()
			}
		})
		c := &http.Client{Timeout: 300 * time.Millisecond}
		big := bytes.Repeat([]byte("x"), 64<<20)
		got, att := post(t, c, url, bytes.NewReader(big))
		if got != Unreachable || att.Sent() || !att.Connected() {
			t.Errorf("got %q (sent %v, connected %v), want %q, connected, not sent", got, att.Sent(), att.Connected(), Unreachable)
		}
	})
}

// gatedReader returns data once gate has a value, then EOF.
type gatedReader struct {
	gate <-chan struct{}
	data []byte
}

func (r *gatedReader) Read(p []byte) (int, error) {
	if r.gate != nil {
		<-r.gate
		time.Sleep(50 * time.Millisecond) // let the app's close reach the client
		r.gate = nil
	}
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestResultFailure(t *testing.T) {
	want := map[Result]bool{Success: false, Poison: false, Retry: true, Timeout: true, Error: true, Unreachable: true}
	for r, w := range want {
		if got := r.Failure(); got != w {
			t.Errorf("%q.Failure() = %v, want %v", r, got, w)
		}
		if got := r.SpendsAttempt(); got != (r != Unreachable) {
			t.Errorf("%q.SpendsAttempt() = %v", r, got)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 25, 7, 28, 0, 0, time.UTC)
	tests := []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{"0", 0, true},
		{"1", time.Second, true},
		{"120", 2 * time.Minute, true},
		{" 7 ", 7 * time.Second, true},
		{"99999999999999999999", maxDuration, true},
		{"9223372037", maxDuration, true},                         // one above MaxInt64 ns in seconds
		{"Wed, 25 Nov 2026 07:28:30 GMT", 30 * time.Second, true}, // IMF-fixdate
		{"Wednesday, 25-Nov-26 07:29:00 GMT", time.Minute, true},  // RFC 850
		{"Wed Nov 25 07:28:05 2026", 5 * time.Second, true},       // asctime
		{"Wed, 25 Nov 2026 07:28:00 GMT", 0, true},                // now
		{"Wed, 25 Nov 2026 07:00:00 GMT", 0, true},                // past ⇒ retry now
		{"Sun, 06 Nov 1994 08:49:37 GMT", 0, true},                // long past
		{"", 0, false},
		{"   ", 0, false},
		{"-5", 0, false},
		{"1.5", 0, false},
		{"+3", 0, false},
		{"soon", 0, false},
		{"Wed, 25 Nov 2026 07:28:30", 0, false}, // no zone
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := ParseRetryAfter(tt.in, now)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func BenchmarkClassify(b *testing.B) {
	errs := []error{nil, context.DeadlineExceeded, io.EOF}
	statuses := []int{200, 503, 404, 429}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		_ = Classify(statuses[i%len(statuses)], errs[i%len(errs)])
	}
}
