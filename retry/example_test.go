package retry_test

import (
	"fmt"
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

	// Backoff doubles per attempt until Max.
	for _, n := range []int{1, 2, 3, 10, 1000} {
		fmt.Print(p.Backoff(n), " ")
	}
	fmt.Println()
	// Output:
	// retry true 5s false
	// poison false
	// 100ms 200ms 400ms 15s 15s
}
