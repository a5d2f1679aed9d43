package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// rateRow is a throughput with, where measured, latency percentiles.
type rateRow struct {
	Rate     float64 // per second
	P50, P99 time.Duration
	N        int // operations measured
}

// procRow is one sidecar's resources over a phase.
type procRow struct {
	Name   string
	Stat   procStat
	Events int // events it handled, for CPU per 10,000
}

// CPUPer10k is CPU seconds per 10,000 events.
func (p procRow) CPUPer10k() float64 {
	if p.Events == 0 {
		return 0
	}
	return p.Stat.CPU / float64(p.Events) * 10_000
}

// results are the figures of one run.
type results struct {
	opts       options
	A, B       rateRow
	Publish    rateRow
	PerFsync   float64 // accepted publishes per outbox fsync
	E2E        rateRow
	Duplicates int // deliveries of an event the sink had already seen
	Procs      []procRow
	Machine    string
}

// RatioA is ferry's durable publish rate over ceiling A.
func (r *results) RatioA() float64 { return r.Publish.Rate / r.A.Rate }

// RatioB is ferry's end-to-end rate over ceiling B.
func (r *results) RatioB() float64 { return r.E2E.Rate / r.B.Rate }

// Row labels; the test checks each one is printed.
const (
	rowA       = "ceiling A: bare net/http POST"
	rowB       = "ceiling B: go-redis XADD + XREADGROUP/XACK"
	rowPublish = "ferry publish (durable)"
	rowE2E     = "ferry end to end"
)

// WriteTable prints the one table of the run, in Markdown.
func (r *results) WriteTable(w io.Writer) {
	o := r.opts
	fmt.Fprintf(w, "%s\n", r.Machine)
	fmt.Fprintf(w, "body %d B, %d keep-alive clients, timed phases %s after %s warm-up, %s events end to end (at most %s in flight)\n\n",
		o.BodySize, o.Clients, o.Duration, o.Warmup, group(float64(o.Events)), group(float64(o.Window)))
	rows := [][]string{
		{"measurement", "throughput", "p50", "p99", "vs ceiling", "events/fsync", "peak RSS", "CPU s / 10k events"},
		{rowA, group(r.A.Rate) + " req/s", ms(r.A.P50), ms(r.A.P99), "", "", "", ""},
		{rowB, group(r.B.Rate) + " entries/s", "", "", "", "", "", ""},
		{rowPublish, group(r.Publish.Rate) + " events/s", ms(r.Publish.P50), ms(r.Publish.P99), pct(r.RatioA()) + " of A", strconv.FormatFloat(r.PerFsync, 'f', 1, 64), "", ""},
		{rowE2E, group(r.E2E.Rate) + " events/s", ms(r.E2E.P50), ms(r.E2E.P99), pct(r.RatioB()) + " of B", "", "", ""},
	}
	rows = append(rows, r.bulkRows()...)
	for _, p := range r.Procs {
		rows = append(rows, []string{p.Name, "", "", "", "", "", mb(p.Stat.PeakRSS), strconv.FormatFloat(p.CPUPer10k(), 'f', 2, 64)})
	}
	widths := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, c := range row {
			widths[i] = max(widths[i], len(c))
		}
	}
	line := func(row []string) {
		var b strings.Builder
		b.WriteString("|")
		for i, c := range row {
			if i == 0 {
				fmt.Fprintf(&b, " %-*s |", widths[i], c)
			} else {
				fmt.Fprintf(&b, " %*s |", widths[i], c)
			}
		}
		fmt.Fprintln(w, b.String())
	}
	line(rows[0])
	sep := make([]string, len(widths))
	for i, n := range widths {
		if i == 0 {
			sep[i] = strings.Repeat("-", n)
		} else {
			sep[i] = strings.Repeat("-", n-1) + ":"
		}
	}
	line(sep)
	for _, row := range rows[1:] {
		line(row)
	}
	fmt.Fprintf(w, "\nend to end: p50/p99 from the publisher's send to the sink's receipt; %d duplicate deliveries\n", r.Duplicates)
}

func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(q*float64(len(s)-1) + 0.5)
	return s[min(i, len(s)-1)]
}

// group formats a rate as an integer with thousands separators.
func group(v float64) string {
	s := strconv.FormatInt(int64(v+0.5), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64) + " ms"
}

func pct(r float64) string { return strconv.FormatFloat(100*r, 'f', 0, 64) + "%" }

func mb(b int64) string { return strconv.FormatFloat(float64(b)/(1<<20), 'f', 1, 64) + " MiB" }

// machine describes where the run happened.
func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if line, _, ok := strings.Cut(string(b), "\n"); ok {
			f := strings.Fields(line)
			if len(f) >= 2 {
				if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil {
					mem = fmt.Sprintf(", %.1f GiB RAM", float64(kb)/(1<<20))
				}
			}
		}
	}
	kernel := ""
	if b, err := exec.Command("uname", "-r").Output(); err == nil {
		kernel = ", Linux " + strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("machine: %d CPUs (%s)%s%s, %s", runtime.NumCPU(), cpu, mem, kernel, runtime.Version())
}
