package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestQuickRun runs every phase with small numbers against the real binary
// and a real redis-server, and checks that the table has every row with
// positive figures. It asserts nothing about speed: CI machines vary.
func TestQuickRun(t *testing.T) {
	o := defaultOptions()
	o.quick()
	o.Events = 2_000
	o.CeilingB = 2_000
	o.Duration = 500 * time.Millisecond
	o.Warmup = 100 * time.Millisecond
	o.Clients = 16
	o.Window = 256
	o.LatencyDuration = time.Second
	o.Rates = []float64{500}
	o.KeepUp = time.Second
	o.Timeout = 3 * time.Minute // the builds are most of it
	ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
	defer cancel()
	res, err := run(ctx, o)
	if err != nil {
		t.Fatalf("run: %v", err)
	}

	rates := map[string]rateRow{"ceiling A": res.A, "ceiling B": res.B, "ceiling C publish": res.CPublish,
		"ceiling C end to end": res.CE2E, "ferry publish": res.Publish, "ferry end to end": res.E2E}
	for name, r := range rates {
		if r.Rate <= 0 || r.N <= 0 {
			t.Errorf("%s: rate %v over %d operations, want both positive", name, r.Rate, r.N)
		}
		if name != "ceiling B" && (r.P50 <= 0 || r.P99 < r.P50) {
			t.Errorf("%s: p50 %s, p99 %s; want 0 < p50 <= p99", name, r.P50, r.P99)
		}
	}
	if res.E2E.N != o.Events || res.CE2E.N != o.Events {
		t.Errorf("end to end measured %d (ferry) and %d (C) events, want %d", res.E2E.N, res.CE2E.N, o.Events)
	}
	if res.PerFsync < 1 {
		t.Errorf("events per fsync = %v, want at least 1", res.PerFsync)
	}
	if res.RatioA() <= 0 || res.RatioB() <= 0 || res.RatioC() <= 0 || res.RatioCPublish() <= 0 {
		t.Errorf("ratios: %v of A, %v of B, %v of C, publish %v of C; want positive", res.RatioA(), res.RatioB(), res.RatioC(), res.RatioCPublish())
	}
	if len(res.Procs) != 6 {
		t.Fatalf("%d process rows, want 6 (publish sidecar, bulk publish sidecar, C's two processes, ferry's two sidecars)", len(res.Procs))
	}
	if res.Bulk.N <= 0 {
		t.Errorf("bulk publish measured nothing: %+v", res.Bulk)
	}
	for _, p := range res.Procs {
		// A Go process with an HTTP server and a Redis client is never under 1 MiB.
		if p.PeakRSS < 1<<20 || p.CPU < 0 || p.Events <= 0 {
			t.Errorf("%s: peak RSS %d B, CPU %v s over %d events; want RSS ≥ 1 MiB, CPU ≥ 0, events > 0", p.Name, p.PeakRSS, p.CPU, p.Events)
		}
	}
	if len(res.Latency) != 2 {
		t.Fatalf("%d steady-load rows, want 2 (C and ferry at 500/s)", len(res.Latency))
	}
	for _, l := range res.Latency {
		if l.Sent != 500 || l.Pub[0] <= 0 || l.E2E[0] <= 0 || l.E2E[1] < l.E2E[0] || l.Dups != 0 {
			t.Errorf("%s at %v/s: sent %d, publish p50 %s, end to end %s/%s, %d dups", l.System, l.Rate, l.Sent, l.Pub[0], l.E2E[0], l.E2E[1], l.Dups)
		}
		if l.Observed != int(l.Sent) {
			t.Errorf("%s: the observer saw %d of %d events in Redis", l.System, l.Observed, l.Sent)
		}
		want := 4 // send → 202, → readable, readable → delivered, end to end
		if l.System == "ferry" {
			want = len(stageDefs)
		}
		if len(l.Stages) != want {
			t.Errorf("%s: %d stages, want %d: %+v", l.System, len(l.Stages), want, l.Stages)
		}
	}
	k := res.KeepUp
	if k == nil || k.Published <= 0 || k.Drain < 0 || len(k.Samples) == 0 || k.Samples[len(k.Samples)-1].Backlog != 0 {
		t.Errorf("keep-up: %+v; want events published and the lag back to 0", k)
	}

	var b strings.Builder
	res.WriteTable(&b)
	table := b.String()
	for _, row := range []string{rowA, rowB, rowCPublish, rowCE2E, rowPublish, rowBulk, rowE2E, rowCPU, res.Procs[0].Name, res.Procs[5].Name,
		"ferry at 500/s", "ceiling C at 500/s", "median of each stage", "keep-up:"} {
		if !strings.Contains(table, row) {
			t.Errorf("table has no row %q:\n%s", row, table)
		}
	}
	if strings.Contains(table, "NaN") || strings.Contains(table, "Inf") {
		t.Errorf("table holds a NaN or Inf:\n%s", table)
	}
	t.Logf("\n%s", table)
}

func TestReadProcStatOfThisProcess(t *testing.T) {
	ps, err := readProcStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if ps.PeakRSS < 1<<20 {
		t.Errorf("peak RSS %d B, want at least 1 MiB", ps.PeakRSS)
	}
	if ps.CPU < 0 {
		t.Errorf("CPU %v s, want not negative", ps.CPU)
	}
}
