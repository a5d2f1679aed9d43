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
	"unicode/utf8"
)

// rateRow is a throughput with, where measured, latency percentiles.
type rateRow struct {
	Rate     float64 // per second
	P50, P99 time.Duration
	N        int // operations measured
}

// procRow is one process's resources over a phase.
type procRow struct {
	Name    string
	PeakRSS int64   // bytes, at the end of the phase
	CPU     float64 // seconds used during the phase
	Events  int     // events it handled in the phase
}

// CPUPerEvent is the CPU time per event.
func (p procRow) CPUPerEvent() time.Duration {
	if p.Events == 0 {
		return 0
	}
	return time.Duration(p.CPU / float64(p.Events) * float64(time.Second))
}

// results are the figures of one run.
type results struct {
	opts       options
	A, B       rateRow
	CPublish   rateRow // ceiling C's publishing process alone
	Publish    rateRow
	PerFsync   float64 // accepted publishes per outbox fsync
	Bulk       rateRow // bulk publish, 100 events per request (bulk.go); zero until measured
	E2E, CE2E  rateRow
	Duplicates int
	Procs      []procRow
	// CPU per event end to end: [0] publishing side, [1] delivering side.
	FerryCPU, CCPU [2]time.Duration
	Latency        []latencyRow
	KeepUp         *keepUpResult
	Machine        string
}

// RatioA is ferry's durable publish rate over ceiling A.
func (r *results) RatioA() float64 { return r.Publish.Rate / r.A.Rate }

// RatioCPublish is ferry's durable publish rate over ceiling C's.
func (r *results) RatioCPublish() float64 { return r.Publish.Rate / r.CPublish.Rate }

// RatioB is ferry's end-to-end rate over ceiling B.
func (r *results) RatioB() float64 { return r.E2E.Rate / r.B.Rate }

// RatioC is ferry's end-to-end rate over ceiling C's.
func (r *results) RatioC() float64 { return r.E2E.Rate / r.CE2E.Rate }

// Row labels; the test checks each one is printed.
const (
	rowA        = "ceiling A: bare net/http POST"
	rowB        = "ceiling B: go-redis XADD + XREADGROUP/XACK"
	rowCPublish = "ceiling C publish: 202, then pipelined XADD"
	rowCE2E     = "ceiling C end to end"
	rowPublish  = "ferry publish (durable)"
	rowBulk     = "ferry bulk publish 100×1KiB"
	rowE2E      = "ferry end to end"
	rowCPU      = "ferry CPU per event: publishing / delivering side"
)

// ratio formats a/b as "N.N×"; "?" when b is 0.
func ratio(a, b float64) string {
	if b == 0 {
		return "?"
	}
	return strconv.FormatFloat(a/b, 'f', 1, 64) + "×"
}

func usPair(d [2]time.Duration) string { return us(d[0]) + " / " + us(d[1]) }

func us(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Microsecond), 'f', 0, 64) + " µs"
}

// WriteTable prints the tables of the run, in Markdown.
func (r *results) WriteTable(w io.Writer) {
	o := r.opts
	fmt.Fprintf(w, "%s\n", r.Machine)
	fmt.Fprintf(w, "body %d B, %d keep-alive clients, timed phases %s after %s warm-up, %s events end to end (at most %s in flight), delivery concurrency %d\n\n",
		o.BodySize, o.Clients, o.Duration, o.Warmup, group(float64(o.Events)), group(float64(o.Window)), ferryConcurrency)
	bulk, bulkX := "not measured", ""
	if r.Bulk.N > 0 {
		bulk, bulkX = group(r.Bulk.Rate)+" events/s", ratio(r.Bulk.Rate, r.Publish.Rate)+" single"
	}
	rows := [][]string{
		{"measurement", "throughput", "p50", "p99", "vs ceiling", "events/fsync", "peak RSS", "CPU per event"},
		{rowA, group(r.A.Rate) + " req/s", ms(r.A.P50), ms(r.A.P99), "", "", "", ""},
		{rowB, group(r.B.Rate) + " entries/s", "", "", "", "", "", ""},
		{rowCPublish, group(r.CPublish.Rate) + " events/s", ms(r.CPublish.P50), ms(r.CPublish.P99), "", "", "", ""},
		{rowCE2E, group(r.CE2E.Rate) + " events/s", ms(r.CE2E.P50), ms(r.CE2E.P99), "", "", "", usPair(r.CCPU)},
		{rowPublish, group(r.Publish.Rate) + " events/s", ms(r.Publish.P50), ms(r.Publish.P99),
			pct(r.RatioA()) + " of A, " + pct(r.RatioCPublish()) + " of C", strconv.FormatFloat(r.PerFsync, 'f', 1, 64), "", ""},
		{rowBulk, bulk, ms(r.Bulk.P50), ms(r.Bulk.P99), bulkX, "", "", ""},
		{rowE2E, group(r.E2E.Rate) + " events/s", ms(r.E2E.P50), ms(r.E2E.P99), pct(r.RatioC()) + " of C", "", "", ""},
		{rowCPU, "", "", "", ratio(float64(r.FerryCPU[0]), float64(r.CCPU[0])) + " / " + ratio(float64(r.FerryCPU[1]), float64(r.CCPU[1])) + " C", "", "", usPair(r.FerryCPU)},
	}
	for _, p := range r.Procs {
		rows = append(rows, []string{p.Name, "", "", "", "", "", mb(p.PeakRSS), us(p.CPUPerEvent())})
	}
	writeMarkdown(w, rows)
	fmt.Fprintf(w, "\nend to end: p50/p99 from the publisher's send to the sink's receipt; %d duplicate deliveries\n", r.Duplicates)
	r.writeLatency(w)
	r.writeKeepUp(w)
}

// writeLatency prints the steady-load table and the stage breakdown.
func (r *results) writeLatency(w io.Writer) {
	if len(r.Latency) == 0 {
		return
	}
	fmt.Fprintf(w, "\nsteady load, paced, %s per rate:\n\n", r.opts.LatencyDuration)
	rows := [][]string{{"steady load", "publish p50", "publish p99", "end to end p50", "end to end p99", "vs C (p50)", "load late p99", "CPU per event"}}
	cP50 := map[float64]time.Duration{}
	for _, l := range r.Latency {
		if l.System == systemC {
			cP50[l.Rate] = l.E2E[0]
		}
	}
	for _, l := range r.Latency {
		vs := ""
		if c := cP50[l.Rate]; l.System != systemC && c > 0 {
			vs = ratio(float64(l.E2E[0]), float64(c))
		}
		cpu := ""
		if len(l.Procs) == 2 {
			cpu = usPair([2]time.Duration{l.Procs[0].CPUPerEvent(), l.Procs[1].CPUPerEvent()})
		}
		rows = append(rows, []string{fmt.Sprintf("%s at %s/s", l.System, group(l.Rate)),
			ms(l.Pub[0]), ms(l.Pub[1]), ms(l.E2E[0]), ms(l.E2E[1]), vs, ms(l.LateP99), cpu})
	}
	writeMarkdown(w, rows)
	fmt.Fprintln(w)
	writeMarkdown(w, stageRows(r.Latency))
	for _, l := range r.Latency {
		if l.ServerPublish[1] > 0 {
			fmt.Fprintf(w, "%s at %s/s, inside the publishing sidecar (ferry_publish_duration_seconds: request read → 202 written, fsync included): p50 ≈ %s, mean %s\n",
				l.System, group(l.Rate), ms(l.ServerPublish[0]), ms(l.ServerPublish[1]))
		}
	}
}

// stageRows is the breakdown table: one row per stage, one column per
// system and rate; a stage a system does not have is empty.
func stageRows(ls []latencyRow) [][]string {
	head := []string{"median of each stage"}
	var names []string
	cells := map[string][]string{}
	for i, l := range ls {
		head = append(head, fmt.Sprintf("%s %s/s", l.System, group(l.Rate)))
		for _, st := range l.Stages {
			if _, ok := cells[st.Name]; !ok {
				names = append(names, st.Name)
				cells[st.Name] = make([]string, len(ls))
			}
			cells[st.Name][i] = ms(st.P50)
		}
	}
	slices.SortStableFunc(names, func(a, b string) int { return stageOrder(a) - stageOrder(b) })
	rows := [][]string{head}
	for _, n := range names {
		rows = append(rows, append([]string{n}, cells[n]...))
	}
	return rows
}

func stageOrder(name string) int {
	for i, sd := range stageDefs {
		if sd.name == name {
			return i
		}
	}
	return len(stageDefs)
}

// writeKeepUp prints the keep-up phase.
func (r *results) writeKeepUp(w io.Writer) {
	k := r.KeepUp
	if k == nil {
		return
	}
	drain := "not within 2 min"
	if k.Drain >= 0 {
		drain = strconv.FormatFloat(k.Drain.Seconds(), 'f', 1, 64) + " s"
	}
	fmt.Fprintf(w, "\nkeep-up: ferry published at its full rate for %s with delivery running: %s events/s published, %s events/s delivered meanwhile\n",
		k.Duration.Round(100*time.Millisecond), group(k.PublishRate), group(k.DeliverRate))
	fmt.Fprintf(w, "lag, group (XINFO lag + pending) / whole pipe (published − delivered): max %s / %s, at the stop %s / %s; back to 0 %s after the stop; %d duplicate deliveries\n",
		group(float64(k.MaxGroupLag)), group(float64(k.MaxBacklog)), group(float64(k.AtStop.GroupLag)), group(float64(k.AtStop.Backlog)), drain, k.Dups)
	fmt.Fprintf(w, "whole-pipe lag over time:%s\n", lagTimeline(k.Samples, 12))
}

// lagTimeline is about n evenly spaced samples (and the last) as " 5s:1,234".
func lagTimeline(samples []lagSample, n int) string {
	var b strings.Builder
	every := max(1, len(samples)/max(1, n))
	for i, s := range samples {
		if i%every == 0 || i == len(samples)-1 {
			fmt.Fprintf(&b, " %.1fs:%s", s.At.Seconds(), group(float64(s.Backlog)))
		}
	}
	return b.String()
}

// writeMarkdown prints rows as a Markdown table, the first row the head;
// the first column is left-aligned, the others right-aligned.
func writeMarkdown(w io.Writer, rows [][]string) {
	widths := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, c := range row {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	line := func(row []string) {
		var b strings.Builder
		b.WriteString("|")
		for i, c := range row {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c))
			if i == 0 {
				b.WriteString(" " + c + pad + " |")
			} else {
				b.WriteString(" " + pad + c + " |")
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
