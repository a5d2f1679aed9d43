package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/retry"
)

// newClient is a keep-alive HTTP client for n concurrent callers.
func newClient(n int) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:               nil,
			MaxIdleConns:        n,
			MaxIdleConnsPerHost: n,
			IdleConnTimeout:     time.Minute,
			DisableCompression:  true,
		},
		Timeout: 30 * time.Second,
	}
}

// post sends body and expects the status want; it drains the answer so the
// connection is reused.
func post(ctx context.Context, c *http.Client, url string, body []byte, want int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("POST %s: status %d, want %d: %s", url, resp.StatusCode, want, b)
	}
	return nil
}

// closedLoop runs clients callers of fn back to back for warmup+measure and
// returns the calls completed in the measured part, their latencies, and
// its length. The first error stops every caller.
func closedLoop(ctx context.Context, clients int, warmup, measure time.Duration, fn func(context.Context) error) (n int, lat []time.Duration, took time.Duration, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	start := time.Now()
	from, until := start.Add(warmup), start.Add(warmup+measure)
	per := make([][]time.Duration, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, 4096)
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(until) {
					break
				}
				if err := fn(ctx); err != nil {
					cancel(err)
					break
				}
				if t1 := time.Now(); !t0.Before(from) && !t1.After(until) {
					mine = append(mine, t1.Sub(t0))
				}
			}
			per[i] = mine
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return 0, nil, 0, err
	}
	for _, p := range per {
		lat = append(lat, p...)
	}
	return len(lat), lat, measure, nil
}

// ceilingA: a bare net/http handler that reads a 1 KiB body and answers
// 202 with a small JSON body, loaded like ferry's publish API.
func ceilingA(ctx context.Context, e *env, res *results) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	pool := sync.Pool{New: func() any { return new(bytes.Buffer) }}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := pool.Get().(*bytes.Buffer)
		buf.Reset()
		_, err := buf.ReadFrom(r.Body)
		pool.Put(buf)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, `{"id":"0190c6e2-8a3b-7cde-9f01-23456789abcd","topic":"bench"}`)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	client := newClient(e.o.Clients)
	defer client.CloseIdleConnections()
	url := "http://" + ln.Addr().String() + "/v1/publish/bench"
	body := bytes.Repeat([]byte("x"), e.o.BodySize)
	n, lat, took, err := closedLoop(ctx, e.o.Clients, e.o.Warmup, e.o.Duration, func(ctx context.Context) error {
		return post(ctx, client, url, body, http.StatusAccepted)
	})
	if err != nil {
		return err
	}
	res.A = rateRow{Rate: float64(n) / took.Seconds(), P50: percentile(lat, 0.50), P99: percentile(lat, 0.99), N: n}
	return nil
}

// ceilingB: one go-redis producer XADDs 1 KiB entries in pipelines while
// one consumer reads them with XREADGROUP and XACKs each batch; the rate is
// entries consumed per second from the first XADD to the last XACK.
func ceilingB(ctx context.Context, e *env, res *results) error {
	const (
		stream = "bench:ceiling-b"
		group  = "bench"
		batch  = 256
	)
	rdb := redis.NewClient(&redis.Options{Addr: e.redisAddr, PoolSize: 4})
	defer rdb.Close()
	if err := rdb.Del(ctx, stream).Err(); err != nil {
		return fmt.Errorf("delete stream: %w", err)
	}
	if err := rdb.XGroupCreateMkStream(ctx, stream, group, "0").Err(); err != nil {
		return fmt.Errorf("create group: %w", err)
	}
	defer rdb.Del(context.Background(), stream)
	n := e.o.CeilingB
	val := bytes.Repeat([]byte("x"), e.o.BodySize)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	start := time.Now()
	go func() {
		for sent := 0; sent < n && ctx.Err() == nil; {
			pipe := rdb.Pipeline()
			for i := 0; i < batch && sent < n; i++ {
				pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"body", val}})
				sent++
			}
			if _, err := pipe.Exec(ctx); err != nil {
				cancel(fmt.Errorf("xadd: %w", err))
				return
			}
		}
	}()
	got := 0
	deadline := time.Now().Add(max(time.Minute, time.Duration(n)*100*time.Microsecond))
	for got < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("consumed %d of %d entries before the deadline", got, n)
		}
		xs, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: group, Consumer: "c", Streams: []string{stream, ">"}, Count: batch, Block: 100 * time.Millisecond,
		}).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			if c := context.Cause(ctx); c != nil {
				return c
			}
			return fmt.Errorf("xreadgroup: %w", err)
		}
		var ids []string
		for _, x := range xs {
			for _, m := range x.Messages {
				ids = append(ids, m.ID)
			}
		}
		if err := rdb.XAck(ctx, stream, group, ids...).Err(); err != nil {
			return fmt.Errorf("xack: %w", err)
		}
		got += len(ids)
	}
	took := time.Since(start)
	res.B = rateRow{Rate: float64(got) / took.Seconds(), N: got}
	return nil
}

// ceilingCPublish: ceiling C's publishing process alone (202 at once, then
// pipelined XADDs), loaded like ferry's publish API.
func ceilingCPublish(ctx context.Context, e *env, res *results) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p, err := e.start("ceilingc-publish", e.ceilingBin, []string{"-mode", "pub", "-listen", addr, "-redis", e.redisAddr, "-stream", "bench:ceiling-c-publish"}, nil)
	if err != nil {
		return err
	}
	defer p.stop(10 * time.Second)
	if err := waitHealthy(ctx, p, "http://"+addr); err != nil {
		return err
	}
	client := newClient(e.o.Clients)
	defer client.CloseIdleConnections()
	url := "http://" + addr + "/v1/publish/bench"
	body := bytes.Repeat([]byte("x"), e.o.BodySize)
	n, lat, took, err := closedLoop(ctx, e.o.Clients, e.o.Warmup, e.o.Duration, func(ctx context.Context) error {
		return post(ctx, client, url, body, http.StatusAccepted)
	})
	if err != nil {
		return fmt.Errorf("%w\n%s", err, p.logTail())
	}
	res.CPublish = rateRow{Rate: float64(n) / took.Seconds(), P50: percentile(lat, 0.50), P99: percentile(lat, 0.99), N: n}
	return nil
}

// ferryPublish: the real binary with its outbox on local disk and Redis up
// (the relay runs), loaded by 64 keep-alive clients.
func ferryPublish(ctx context.Context, e *env, res *results) error {
	sc, err := e.startFerry(ctx, "bench-pub", nil)
	if err != nil {
		return err
	}
	defer sc.stop(10 * time.Second)
	prof := e.profile(ctx, sc, "publish", e.o.Warmup+e.o.Duration)
	client := newClient(e.o.Clients)
	defer client.CloseIdleConnections()
	url := sc.pub + "/v1/publish/bench-publish"
	body := bytes.Repeat([]byte("x"), e.o.BodySize)
	n, lat, took, err := closedLoop(ctx, e.o.Clients, e.o.Warmup, e.o.Duration, func(ctx context.Context) error {
		return post(ctx, client, url, body, http.StatusAccepted)
	})
	if err != nil {
		return fmt.Errorf("%w\n%s", err, sc.logTail())
	}
	// The syncs counter is refreshed every second: wait past one refresh
	// after the last publish, then read both totals (warm-up included).
	if !retry.Sleep(ctx, 1200*time.Millisecond) {
		return ctx.Err()
	}
	m, err := scrape(ctx, sc.admin)
	if err != nil {
		return err
	}
	accepted := m.sum("ferry_publish_requests_total", `code="202"`)
	syncs := m.sum("ferry_outbox_syncs_total", "")
	ps, err := readProcStat(sc.cmd.Process.Pid)
	if err != nil {
		return err
	}
	if err := prof.wait(); err != nil {
		return err
	}
	if syncs <= 0 || accepted <= 0 {
		return fmt.Errorf("metrics: %v accepted publishes, %v outbox syncs", accepted, syncs)
	}
	res.Publish = rateRow{Rate: float64(n) / took.Seconds(), P50: percentile(lat, 0.50), P99: percentile(lat, 0.99), N: n}
	res.PerFsync = accepted / syncs
	res.Procs = append(res.Procs, procRow{Name: "ferry publish: sidecar", PeakRSS: ps.PeakRSS, CPU: ps.CPU, Events: int(accepted)})
	return nil
}

// metrics is a scraped /metrics page.
type metrics []string

func scrape(ctx context.Context, admin string) (metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, admin+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	var m metrics
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line := sc.Text(); line != "" && line[0] != '#' {
			m = append(m, line)
		}
	}
	return m, sc.Err()
}

// sum adds the samples of name whose labels contain match.
func (m metrics) sum(name, match string) float64 {
	var total float64
	for _, line := range m {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || rest[0] != ' ' && rest[0] != '{' {
			continue
		}
		labels, value := "", rest
		if rest[0] == '{' {
			end := strings.LastIndexByte(rest, '}')
			labels, value = rest[:end+1], rest[end+1:]
		}
		if !strings.Contains(labels, match) {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
			total += v
		}
	}
	return total
}

// profiler fetches one CPU profile of a sidecar built with -tags ferrypprof.
type profiler struct{ done chan error }

func (p *profiler) wait() error {
	if p == nil {
		return nil
	}
	return <-p.done
}

// profile starts a CPU profile of d; nil when profiles are off.
func (e *env) profile(ctx context.Context, sc *sidecar, name string, d time.Duration) *profiler {
	return e.pprof(ctx, sc, "profile", name+".pprof", d)
}

// pprof fetches /debug/pprof/<kind> (profile, trace) of d into file; nil
// when profiles are off.
func (e *env) pprof(ctx context.Context, sc *sidecar, kind, file string, d time.Duration) *profiler {
	if sc == nil || sc.pprof == "" {
		return nil
	}
	p := &profiler{done: make(chan error, 1)}
	go func() {
		secs := max(1, int(d.Round(time.Second)/time.Second))
		url := fmt.Sprintf("%s/debug/pprof/%s?seconds=%d", sc.pprof, kind, secs)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			p.done <- err
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			p.done <- fmt.Errorf("%s %s: %w", kind, file, err)
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("%s %s: status %d", kind, file, resp.StatusCode)
		}
		if err == nil {
			path := filepath.Join(e.o.CPUProf, file)
			err = os.WriteFile(path, b, 0o644)
			e.logf("wrote %s", path)
		}
		p.done <- err
	}()
	return p
}

// histogram is one Prometheus histogram's cumulative buckets, sum and count.
type histogram struct {
	le    []float64 // upper bounds, ascending, +Inf last
	cum   []float64
	sum   float64
	count float64
}

// hist reads histogram name (no labels besides le) from m.
func (m metrics) hist(name string) histogram {
	var h histogram
	for _, line := range m {
		rest, ok := strings.CutPrefix(line, name+`_bucket{le="`)
		if !ok {
			continue
		}
		bound, value, ok := strings.Cut(rest, `"} `)
		if !ok {
			continue
		}
		le, err1 := strconv.ParseFloat(bound, 64)
		v, err2 := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err1 == nil && err2 == nil {
			h.le, h.cum = append(h.le, le), append(h.cum, v)
		}
	}
	h.sum, h.count = m.sum(name+"_sum", ""), m.sum(name+"_count", "")
	return h
}

// since is what h observed after earlier (same buckets).
func (h histogram) since(earlier histogram) histogram {
	d := histogram{le: h.le, cum: slices.Clone(h.cum), sum: h.sum - earlier.sum, count: h.count - earlier.count}
	for i := range d.cum {
		if i < len(earlier.cum) {
			d.cum[i] -= earlier.cum[i]
		}
	}
	return d
}

// quantile interpolates the q-quantile linearly within its bucket, as
// Prometheus's histogram_quantile does; 0 when h is empty.
func (h histogram) quantile(q float64) time.Duration {
	if h.count <= 0 || len(h.cum) == 0 {
		return 0
	}
	rank := q * h.count
	lower, below := 0.0, 0.0
	for i, c := range h.cum {
		if c >= rank {
			if math.IsInf(h.le[i], 1) {
				return time.Duration(lower * float64(time.Second))
			}
			frac := 0.0
			if c > below {
				frac = (rank - below) / (c - below)
			}
			return time.Duration((lower + frac*(h.le[i]-lower)) * float64(time.Second))
		}
		lower, below = h.le[i], c
	}
	return time.Duration(lower * float64(time.Second))
}

// mean is sum / count.
func (h histogram) mean() time.Duration {
	if h.count <= 0 {
		return 0
	}
	return time.Duration(h.sum / h.count * float64(time.Second))
}
