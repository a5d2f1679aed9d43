package retry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
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
		{"refused", 0, &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, Error},
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

// post does one real delivery-like request and classifies it.
func post(t *testing.T, c *http.Client, url string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second) // bound the test
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Logf("transport error: %v", err)
		return Classify(0, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return Classify(resp.StatusCode, nil)
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
			if got := post(t, srv.Client(), srv.URL); got != tt.want {
				t.Errorf("status %d: got %q, want %q", tt.status, got, tt.want)
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
		if got := post(t, &http.Client{}, "http://"+addr+"/"); got != Error {
			t.Errorf("got %q, want %q", got, Error)
		}
	})

	t.Run("connection reset", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
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
				_, _ = c.Read(make([]byte, 1024))
				_ = c.(*net.TCPConn).SetLinger(0) // close with RST
				c.Close()
			}
		}()
		if got := post(t, &http.Client{}, "http://"+ln.Addr().String()+"/"); got != Error {
			t.Errorf("got %q, want %q", got, Error)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		release := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			select { // hang until the client gives up or the test ends
			case <-r.Context().Done():
			case <-release:
			}
		}))
		defer srv.Close()
		defer close(release) // runs before srv.Close
		c := srv.Client()
		c.Timeout = 50 * time.Millisecond // FERRY_DELIVERY_TIMEOUT
		if got := post(t, c, srv.URL); got != Timeout {
			t.Errorf("client timeout: got %q, want %q", got, Timeout)
		}

		// The same through a context deadline instead of Client.Timeout.
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, nil)
		resp, err := srv.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		if got := Classify(0, err); got != Timeout {
			t.Errorf("context deadline: got %q (%v), want %q", got, err, Timeout)
		}
	})
}

func TestResultFailure(t *testing.T) {
	want := map[Result]bool{Success: false, Poison: false, Retry: true, Timeout: true, Error: true}
	for r, w := range want {
		if got := r.Failure(); got != w {
			t.Errorf("%q.Failure() = %v, want %v", r, got, w)
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
