// Command bench measures ferry end to end on loopback and puts the figures
// next to three ceilings of the same machine: a bare net/http handler (A:
// what any HTTP publish API can do here), go-redis streaming 1 KiB entries
// through one stream (B: what any Redis Streams transport can do here),
// and ceiling C, a zero-feature pipeline of the same hops as a sidecar
// pair (./bench/ceilingc: 202 at once, XADD, XREADGROUP, POST, XACK; no
// disk, no dedupe, no retries). Besides throughput it measures latency at
// steady paced loads with a breakdown of ferry's stages, whether delivery
// keeps up with a full-rate publisher, and CPU per event of each process.
//
// It starts its own redis-server (no persistence) on a free 127.0.0.1 port,
// builds the ferry binary, runs every process on loopback, stops them all
// at the end (also on an error or an interrupt), and prints one table.
//
//	go run ./bench              # the full run: 200,000 events end to end
//	go run ./bench -quick       # a smoke run: 5,000 events, short phases
//	go run ./bench -cpuprofile /tmp/prof   # also CPU profiles of each sidecar
//	go run ./bench -rates 2000 -latency-duration 60s -keepup 0   # latency only
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the knobs of one run; every phase is bounded by them.
type options struct {
	Events   int           // events sent end to end
	CeilingB int           // entries streamed through Redis for ceiling B
	Duration time.Duration // measured part of each timed phase (ceiling A, ferry publish)
	Warmup   time.Duration // unmeasured start of each timed phase
	Clients  int           // concurrent keep-alive HTTP clients
	BodySize int           // bytes per event
	Window   int           // end to end: events published and not yet delivered, at most
	Timeout  time.Duration // the whole run
	// LatencyDuration is each steady paced load; Rates are its rates (events/s).
	LatencyDuration time.Duration
	Rates           []float64
	KeepUp          time.Duration // full-rate publishing with delivery running; 0 ⇒ skipped
	// Only runs just the steady loads and the keep-up (for profiling them): "pipelines".
	Only string
	// OutboxDir is where the sidecars' outboxes go (a directory is made in
	// it); empty ⇒ the run's temp directory. A tmpfs here (/dev/shm) takes
	// the disk out of the figures, to see what else the time goes to.
	OutboxDir string
	Ferry     string    // a ferry binary to use instead of building one
	CPUProf   string    // directory for CPU profiles of the sidecars; empty ⇒ none
	Verbose   io.Writer // progress lines; nil ⇒ none
	KeepFiles bool      // keep the temp directory (logs, outboxes)
}

func defaultOptions() options {
	return options{
		Events:   200_000,
		CeilingB: 200_000,
		Duration: 10 * time.Second,
		Warmup:   2 * time.Second,
		Clients:  64,
		BodySize: 1024,
		Window:   1024,
		Timeout:  10 * time.Minute,

		LatencyDuration: 20 * time.Second,
		Rates:           []float64{2000, 8000},
		KeepUp:          60 * time.Second,
	}
}

// quick shrinks o for a smoke run.
func (o *options) quick() {
	o.Events = 5_000
	o.CeilingB = 5_000
	o.Duration = time.Second
	o.Warmup = 200 * time.Millisecond
	o.Window = 1024
	o.Timeout = 3 * time.Minute
	o.LatencyDuration = 2 * time.Second
	o.KeepUp = 3 * time.Second
}

func main() {
	o := defaultOptions()
	quick := flag.Bool("quick", false, "smoke run: 5,000 events, 1s phases")
	flag.IntVar(&o.Events, "events", o.Events, "events sent end to end through two sidecars")
	flag.IntVar(&o.CeilingB, "ceiling-entries", o.CeilingB, "entries streamed through Redis for ceiling B")
	flag.DurationVar(&o.Duration, "duration", o.Duration, "measured time of ceiling A and of ferry publish")
	flag.DurationVar(&o.Warmup, "warmup", o.Warmup, "unmeasured warm-up before each timed phase")
	flag.IntVar(&o.Clients, "clients", o.Clients, "concurrent keep-alive HTTP clients")
	flag.IntVar(&o.BodySize, "size", o.BodySize, "body bytes per event (at least 32)")
	flag.IntVar(&o.Window, "window", o.Window, "end to end: most events published and not yet delivered")
	flag.DurationVar(&o.Timeout, "timeout", o.Timeout, "bound on the whole run")
	flag.DurationVar(&o.LatencyDuration, "latency-duration", o.LatencyDuration, "length of each steady paced load")
	rates := flag.String("rates", "2000,8000", "steady paced loads, events/s, comma-separated; empty ⇒ none")
	flag.DurationVar(&o.KeepUp, "keepup", o.KeepUp, "full-rate publishing with delivery running; 0 ⇒ skipped")
	flag.StringVar(&o.Only, "only", "", `"pipelines": skip the ceilings, the publish phases and end-to-end throughput (a partial table, for profiling)`)
	flag.StringVar(&o.OutboxDir, "outbox-dir", "", "put the outboxes under this directory (e.g. /dev/shm: no disk in the figures); default the temp dir")
	flag.StringVar(&o.Ferry, "ferry", "", "use this ferry binary instead of building ./cmd/ferry")
	flag.StringVar(&o.CPUProf, "cpuprofile", "", "write CPU profiles of the sidecars to this directory (builds ferry with -tags ferrypprof)")
	flag.BoolVar(&o.KeepFiles, "keep", false, "keep the temporary directory (logs, outboxes)")
	verbose := flag.Bool("v", true, "progress on stderr")
	flag.Parse()
	if *quick {
		q := defaultOptions()
		q.quick()
		// Flags given explicitly still win over -quick.
		flag.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "events":
				q.Events = o.Events
			case "ceiling-entries":
				q.CeilingB = o.CeilingB
			case "duration":
				q.Duration = o.Duration
			case "warmup":
				q.Warmup = o.Warmup
			case "window":
				q.Window = o.Window
			case "timeout":
				q.Timeout = o.Timeout
			case "latency-duration":
				q.LatencyDuration = o.LatencyDuration
			case "keepup":
				q.KeepUp = o.KeepUp
			}
		})
		o.Events, o.CeilingB, o.Duration, o.Warmup, o.Window, o.Timeout = q.Events, q.CeilingB, q.Duration, q.Warmup, q.Window, q.Timeout
		o.LatencyDuration, o.KeepUp = q.LatencyDuration, q.KeepUp
	}
	var err error
	if o.Rates, err = parseRates(*rates); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if *verbose {
		o.Verbose = os.Stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	res, err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	res.WriteTable(os.Stdout)
}

// run does every phase in order and returns the figures. Every process it
// starts is stopped before it returns.
func run(ctx context.Context, o options) (*results, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	e := &env{o: o}
	defer e.cleanup()
	if err := e.setup(ctx); err != nil {
		return nil, err
	}
	res := &results{opts: o}
	steps := []struct {
		name string
		fn   func(context.Context, *env, *results) error
	}{
		{"ceiling A: net/http", ceilingA},
		{"ceiling B: go-redis streams", ceilingB},
		{"ceiling C publish", ceilingCPublish},
		{"ferry publish", ferryPublish},
		{"ferry bulk publish", ferryBulkPublish},
		{"end to end, steady loads, keep-up", pipelines},
	}
	if o.Only == "pipelines" {
		steps = steps[len(steps)-1:]
	}
	for _, s := range steps {
		e.logf("%s ...", s.name)
		start := time.Now()
		if err := s.fn(ctx, e, res); err != nil {
			if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
				err = fmt.Errorf("%w (%w)", err, context.Cause(ctx))
			}
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		e.logf("%s done in %s", s.name, time.Since(start).Round(time.Millisecond))
	}
	res.Machine = machine()
	return res, nil
}

func (o options) validate() error {
	switch {
	case o.Events < 1, o.CeilingB < 1:
		return errors.New("validate options: -events and -ceiling-entries must be at least 1")
	case o.Clients < 1:
		return errors.New("validate options: -clients must be at least 1")
	case o.BodySize < bodyHeaderLen:
		return fmt.Errorf("validate options: -size must be at least %d", bodyHeaderLen)
	case o.Duration <= 0, o.Warmup < 0, o.Timeout <= 0:
		return errors.New("validate options: -duration and -timeout must be above 0, -warmup not negative")
	case o.Window < 1:
		return errors.New("validate options: -window must be at least 1")
	case o.Only != "" && o.Only != "pipelines":
		return errors.New(`validate options: -only takes "pipelines" or nothing`)
	case len(o.Rates) > 0 && o.LatencyDuration <= 0, o.KeepUp < 0:
		return errors.New("validate options: -latency-duration must be above 0, -keepup not negative")
	}
	return nil
}

// parseRates reads "2000,8000" (events/s); "" is none.
func parseRates(s string) ([]float64, error) {
	var rates []float64
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		r, err := strconv.ParseFloat(f, 64)
		if err != nil || r <= 0 || math.IsInf(r, 0) {
			return nil, fmt.Errorf("parse -rates: %q is not a rate above 0", f)
		}
		rates = append(rates, r)
	}
	return rates, nil
}
