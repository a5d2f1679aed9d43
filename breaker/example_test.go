package breaker_test

import (
	"context"
	"fmt"
	"time"

	"github.com/ferry-sidecar/ferry/breaker"
)

func Example() {
	set := breaker.New(breaker.Settings{
		FailureRatio: 0.5,
		MinRequests:  2,
		OpenTimeout:  50 * time.Millisecond,
		OnStateChange: func(name string, from, to breaker.State) {
			fmt.Printf("%s: %s -> %s (gauge %d)\n", name, from, to, to)
		},
	})

	deliver := func(appAnswered bool) {
		done, err := set.Allow("orders")
		if err != nil {
			fmt.Println("refused:", err)
			return
		}
		done(appAnswered) // after classifying the HTTP answer
	}

	deliver(false)
	deliver(false) // 2 of 2 failed: trips
	deliver(true)  // refused, does not count

	// Sleep until a probe may go, instead of polling Allow.
	_ = set.Wait(context.Background(), "orders")
	deliver(true) // the probe succeeds
	fmt.Println(set.State("orders"))
	// Output:
	// orders: closed -> open (gauge 2)
	// refused: circuit breaker open
	// orders: open -> half-open (gauge 1)
	// orders: half-open -> closed (gauge 0)
	// closed
}
