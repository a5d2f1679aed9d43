// Command demo is ferry's quickstart (`make demo`): it runs redis-server, two
// ferry sidecars and two sample apps (examples/orders and examples/billing)
// on 127.0.0.1, has the orders app publish orders, waits until billing has
// answered every order with an invoice that reached the orders app, prints a
// summary, stops everything with SIGTERM and checks the sidecars exit 0.
//
// Every process runs in its own process group, so Ctrl-C reaches only the
// demo, which then stops its children in order.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	o := options{Out: os.Stdout}
	flag.IntVar(&o.Orders, "orders", 10, "number of orders to publish")
	flag.DurationVar(&o.Wait, "wait", 60*time.Second, "how long to wait for every invoice to arrive")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "demo: FAILED: %v\n", err)
		os.Exit(1)
	}
}
