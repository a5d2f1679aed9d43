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
	o.Timeout = 90 * time.Second // the build of ferry is most of it
	ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
	defer cancel()
	res, err := run(ctx, o)
	if err != nil {
		t.Fatalf("run: %v", err)
	}

	for name, r := range map[string]rateRow{"ceiling A": res.A, "ceiling B": res.B, "ferry publish": res.Publish, "ferry end to end": res.E2E} {
		if r.Rate <= 0 || r.N <= 0 {
			t.Errorf("%s: rate %v over %d operations, want both positive", name, r.Rate, r.N)
		}
	}
	for name, r := range map[string]rateRow{"ceiling A": res.A, "ferry publish": res.Publish, "ferry end to end": res.E2E} {
		if r.P50 <= 0 || r.P99 < r.P50 {
			t.Errorf("%s: p50 %s, p99 %s; want 0 < p50 <= p99", name, r.P50, r.P99)
		}
	}
	if res.E2E.N != o.Events {
		t.Errorf("end to end measured %d events, want %d", res.E2E.N, o.Events)
	}
	if res.PerFsync < 1 {
		t.Errorf("events per fsync = %v, want at least 1", res.PerFsync)
	}
	if res.RatioA() <= 0 || res.RatioB() <= 0 {
		t.Errorf("ratios to the ceilings: %v of A, %v of B; want positive", res.RatioA(), res.RatioB())
	}
	if len(res.Procs) != 4 {
		t.Fatalf("%d sidecar rows, want 4 (publish, bulk publish, end-to-end publisher and subscriber)", len(res.Procs))
	}
	if bulk == nil || bulk.N <= 0 {
		t.Errorf("bulk publish measured nothing: %+v", bulk)
	}
	for _, p := range res.Procs {
		// A Go process with an HTTP server and a Redis client is never under 1 MiB.
		if p.Stat.PeakRSS < 1<<20 || p.Stat.CPU <= 0 || p.CPUPer10k() <= 0 {
			t.Errorf("%s: peak RSS %d B, CPU %v s (%v s per 10k events); want all positive", p.Name, p.Stat.PeakRSS, p.Stat.CPU, p.CPUPer10k())
		}
	}

	var b strings.Builder
	res.WriteTable(&b)
	table := b.String()
	for _, row := range []string{rowA, rowB, rowPublish, rowE2E, rowBulk, res.Procs[0].Name, res.Procs[1].Name, res.Procs[2].Name, res.Procs[3].Name} {
		if !strings.Contains(table, "| "+row) {
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

func TestPercentileAndFormatting(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	if got := percentile(d, 0.5); got != 51*time.Millisecond && got != 50*time.Millisecond {
		t.Errorf("p50 of 1..100 ms = %s", got)
	}
	if got := percentile(d, 0.99); got != 99*time.Millisecond && got != 100*time.Millisecond {
		t.Errorf("p99 of 1..100 ms = %s", got)
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("p50 of nothing = %s, want 0", got)
	}
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.4: "1,234,567"} {
		if got := group(in); got != want {
			t.Errorf("group(%v) = %q, want %q", in, got, want)
		}
	}
}
