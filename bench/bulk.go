package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// bulkEntries is how many events one bulk publish carries.
const bulkEntries = 100

// ferryBulkPublish: the real binary loaded with Dapr bulk publishes of
// bulkEntries events of BodySize bytes (one request, one fsync for all of
// them) by a quarter of the clients (each request is 100 times larger);
// the figure is events/s, compared with single publishes.
func ferryBulkPublish(ctx context.Context, e *env, res *results) error {
	sc, err := e.startFerry(ctx, "bench-bulk", nil)
	if err != nil {
		return err
	}
	defer sc.stop(10 * time.Second)
	prof := e.profile(ctx, sc, "bulk", e.o.Warmup+e.o.Duration)
	client := newClient(e.o.Clients)
	defer client.CloseIdleConnections()
	url := sc.pub + "/v1.0-alpha1/publish/bulk/pubsub/bench-bulk"
	body, err := bulkBody(e.o.BodySize)
	if err != nil {
		return err
	}
	n, lat, took, err := closedLoop(ctx, max(1, e.o.Clients/4), e.o.Warmup, e.o.Duration, func(ctx context.Context) error {
		return post(ctx, client, url, body, http.StatusNoContent)
	})
	if err != nil {
		return fmt.Errorf("%w\n%s", err, sc.logTail())
	}
	ps, err := readProcStat(sc.cmd.Process.Pid)
	if err != nil {
		return err
	}
	if err := prof.wait(); err != nil {
		return err
	}
	res.Bulk = rateRow{Rate: float64(n*bulkEntries) / took.Seconds(), P50: percentile(lat, 0.50), P99: percentile(lat, 0.99), N: n * bulkEntries}
	// CPU per event, warm-up included as for the single publishes: the
	// figure a loaded machine does not distort.
	m, err := scrape(ctx, sc.admin)
	if err != nil {
		return err
	}
	accepted := m.sum("ferry_publish_requests_total", `code="204"`) * bulkEntries
	res.Procs = append(res.Procs, procRow{Name: "ferry bulk publish: sidecar", PeakRSS: ps.PeakRSS, CPU: ps.CPU, Events: int(accepted)})
	return nil
}

// bulkBody is one bulk request: bulkEntries text/plain events of size bytes.
func bulkBody(size int) ([]byte, error) {
	type entry struct {
		EntryID     string `json:"entryId"`
		Event       string `json:"event"`
		ContentType string `json:"contentType"`
	}
	entries := make([]entry, bulkEntries)
	data := strings.Repeat("x", size)
	for i := range entries {
		entries[i] = entry{EntryID: strconv.Itoa(i), Event: data, ContentType: "text/plain"}
	}
	return json.Marshal(entries)
}
