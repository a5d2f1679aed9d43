package retry_test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/ferry-sidecar/ferry/retry"
)

func Example() {
	p := retry.Policy{
		Initial:     200 * time.Millisecond,
		Max:         30 * time.Second,
		MaxAttempts: 10,
		Rand:        func() float64 { return 0.5 }, // pinned for the example
	}
	now := time.Date(2026, 11, 25, 7, 28, 0, 0, time.UTC)

	// The app answered 503 with Retry-After: 5 on the third attempt.
	res := retry.Classify(503, nil)
	ra, _ := retry.ParseRetryAfter("5", now)
	fmt.Println(res, res.Failure(), p.Delay(3, ra), p.Exhausted(3))

	// The app answered 422: retrying cannot help.
	res = retry.Classify(422, nil)
	fmt.Println(res, res.Failure())

	// Nothing listened on the app's port: no attempt is spent.
	res = retry.Classify(0, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)})
	fmt.Println(res, res.Failure(), res.SpendsAttempt())

	// Backoff doubles per attempt until Max.
	for _, n := range []int{1, 2, 3, 10, 1000} {
		fmt.Print(p.Backoff(n), " ")
	}
	fmt.Println()
	// Output:
	// retry true 5s false
	// poison false
	// unreachable true false
	// 100ms 200ms 400ms 15s 15s
}

// ExampleObserve classifies a real request with what the transport did: a
// connection refused before anything was written is unreachable.
func ExampleObserve() {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close() // the app is gone

	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/events", strings.NewReader("{}"))
	req, att := retry.Observe(req)
	resp, err := http.DefaultClient.Do(req)
	status := 0
	if err == nil {
		status = resp.StatusCode
		resp.Body.Close()
	}
	fmt.Println(att.Classify(status, err), att.Connected(), att.Sent())
	// Output: unreachable false false
}
