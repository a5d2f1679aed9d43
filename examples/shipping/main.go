// Command shipping is the third example app: a service written for Dapr,
// with the Dapr Go SDK's HTTP service, that runs next to ferry unchanged
// (ferry with FERRY_APP_SUBSCRIBE=dapr answers its /dapr/subscribe and its
// publishes to /v1.0/publish/…).
//
// It subscribes to orders (a routing rule sends large orders to their own
// route; a dead-letter topic takes the orders it refuses), ships each order
// by publishing shipment.created on topic shipments, and reads billing's
// invoices raw (metadata rawPayload=true). Its order handler asks for a retry
// the first time it sees an order ("warehouse busy"), so every order shows
// Dapr's retry path.
//
// Environment: PORT (default 8083; the app listens on 127.0.0.1:$PORT),
// DAPR_HTTP_PORT (default 3500; the sidecar's HTTP API on 127.0.0.1, under
// ferry its FERRY_LISTEN_ADDR port) or DAPR_HTTP_ENDPOINT (a full base URL,
// wins when set), PUBSUB_NAME (default pubsub).
package main

import (
	"context"
	"errors"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	port := envOr("PORT", "8083")
	endpoint := os.Getenv("DAPR_HTTP_ENDPOINT")
	if endpoint == "" {
		endpoint = "http://127.0.0.1:" + envOr("DAPR_HTTP_PORT", "3500")
	}
	a := newApp(config{DaprEndpoint: endpoint, PubsubName: envOr("PUBSUB_NAME", "pubsub"), Log: log.Default()})
	svc, err := a.service("127.0.0.1:" + port)
	if err != nil {
		log.Fatalf("shipping: %v", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		_ = svc.GracefulStop()
	}()
	log.Printf("shipping: listening on 127.0.0.1:%s, sidecar %s", port, endpoint)
	if err := svc.Start(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("shipping: %v", err)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
