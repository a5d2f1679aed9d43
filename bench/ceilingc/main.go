// Command ceilingc is ceiling C of the benchmark: the zero-feature pipeline.
// It makes the same hops as a pair of ferry sidecars with none of the
// safety, so that ferry can be held to what the hops alone cost here.
//
//	ceilingc -mode pub -listen ADDR -redis ADDR -stream KEY
//	ceilingc -mode sub -redis ADDR -stream KEY -group G -sink URL -concurrency N
//
// pub answers every POST with 202 at once and hands the body to one
// goroutine that XADDs whatever has queued (up to 512) in one pipeline.
// sub XREADGROUPs batches (at most -window entries read and not yet
// posted), POSTs each body to the sink with N workers, and XACKs a batch
// once all of its bodies are posted. No disk, no dedupe, no
// retries: a failed POST is counted and acked anyway. Both answer GET
// /healthz with 200 on -listen once they run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

const maxBatch = 512 // entries per XADD pipeline and per XREADGROUP

func main() {
	mode := flag.String("mode", "", "pub or sub")
	listen := flag.String("listen", "127.0.0.1:0", "pub: the publish API; both: GET /healthz")
	addr := flag.String("redis", "127.0.0.1:6379", "redis-server address")
	key := flag.String("stream", "ceilingc", "stream key")
	group := flag.String("group", "ceilingc", "sub: consumer group")
	sink := flag.String("sink", "", "sub: URL every body is POSTed to")
	conc := flag.Int("concurrency", 16, "sub: POSTs in flight")
	window := flag.Int("window", 256, "sub: entries read and not yet acked, at most")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rdb := redis.NewClient(&redis.Options{Addr: *addr, PoolSize: 4})
	defer rdb.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	var err error
	switch *mode {
	case "pub":
		p := &publisher{rdb: rdb, key: *key, queue: make(chan []byte, 4096)}
		mux.HandleFunc("POST /", p.ServeHTTP)
		go p.run(ctx)
		err = serve(ctx, *listen, mux)
	case "sub":
		if *sink == "" {
			log.Fatal("ceilingc: -sink is required with -mode sub")
		}
		s := &subscriber{rdb: rdb, key: *key, group: *group, sink: *sink, conc: *conc, window: *window}
		// The group exists before /healthz answers: nothing published after is missed.
		if err := rdb.XGroupCreateMkStream(ctx, s.key, s.group, "$").Err(); err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
			log.Fatal("ceilingc: create group: ", err)
		}
		go func() { _ = serve(ctx, *listen, mux) }()
		err = s.run(ctx)
	default:
		log.Fatal("ceilingc: -mode must be pub or sub")
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Fatal("ceilingc: ", err)
	}
}

func serve(ctx context.Context, addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// publisher is the publishing half: 202 at once, XADD later.
type publisher struct {
	rdb   *redis.Client
	key   string
	queue chan []byte
}

func (p *publisher) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_, _ = io.WriteString(w, `{"id":"0190c6e2-8a3b-7cde-9f01-23456789abcd","topic":"bench"}`)
	p.queue <- body
}

// run XADDs what has queued, up to maxBatch per pipeline.
func (p *publisher) run(ctx context.Context) {
	for {
		var first []byte
		select {
		case <-ctx.Done():
			return
		case first = <-p.queue:
		}
		pipe := p.rdb.Pipeline()
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: p.key, Values: []any{"body", first}})
	more:
		for n := 1; n < maxBatch; n++ {
			select {
			case b := <-p.queue:
				pipe.XAdd(ctx, &redis.XAddArgs{Stream: p.key, Values: []any{"body", b}})
			default:
				break more
			}
		}
		if _, err := pipe.Exec(ctx); err != nil && ctx.Err() == nil {
			log.Print("ceilingc: xadd: ", err) // lost: no retries here
		}
	}
}

// subscriber is the delivering half.
type subscriber struct {
	rdb    *redis.Client
	key    string
	group  string
	sink   string
	conc   int
	window int
	failed atomic.Int64
}

// batch is one XREADGROUP's entries; the last POST of it sends it to the acker.
type batch struct {
	ids  []string
	left atomic.Int64
}

type job struct {
	b    *batch
	body string
}

func (s *subscriber) run(ctx context.Context) error {
	slots := make(chan struct{}, s.window)
	jobs := make(chan job, s.window)
	acks := make(chan *batch, s.window)
	client := &http.Client{Transport: &http.Transport{
		Proxy: nil, MaxIdleConns: s.conc, MaxIdleConnsPerHost: s.conc, DisableCompression: true,
	}}
	var wg sync.WaitGroup
	for range s.conc {
		wg.Go(func() { s.work(client, jobs, acks, slots) })
	}
	go s.ack(ctx, acks)
	defer func() { close(jobs); wg.Wait() }()
	for ctx.Err() == nil {
		slots <- struct{}{} // at least one free slot before reading
		free := 1
		for free < min(s.window, maxBatch) {
			select {
			case slots <- struct{}{}:
				free++
				continue
			default:
			}
			break
		}
		res, err := s.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: s.group, Consumer: "c", Streams: []string{s.key, ">"}, Count: int64(free), Block: time.Second,
		}).Result()
		got := 0
		if err == nil {
			for _, st := range res {
				b := &batch{}
				b.left.Store(int64(len(st.Messages)))
				for _, m := range st.Messages {
					b.ids = append(b.ids, m.ID)
				}
				for _, m := range st.Messages {
					body, _ := m.Values["body"].(string)
					jobs <- job{b: b, body: body}
				}
				got += len(st.Messages)
			}
		} else if !errors.Is(err, redis.Nil) && ctx.Err() == nil {
			log.Print("ceilingc: xreadgroup: ", err)
			time.Sleep(100 * time.Millisecond)
		}
		for range free - got {
			<-slots // give back what the read did not fill
		}
	}
	return ctx.Err()
}

// work POSTs bodies; each frees its window slot once posted, so that one
// slow POST does not hold back the next read (the XACK follows per batch).
func (s *subscriber) work(client *http.Client, jobs <-chan job, acks chan<- *batch, slots <-chan struct{}) {
	for j := range jobs {
		resp, err := client.Post(s.sink, "application/octet-stream", strings.NewReader(j.body))
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if err != nil || resp.StatusCode/100 != 2 {
			s.failed.Add(1)
		}
		<-slots
		if j.b.left.Add(-1) == 0 {
			acks <- j.b
		}
	}
}

// ack XACKs each batch once all of its bodies are posted.
func (s *subscriber) ack(ctx context.Context, acks <-chan *batch) {
	for b := range acks {
		if err := s.rdb.XAck(ctx, s.key, s.group, b.ids...).Err(); err != nil && ctx.Err() == nil {
			fmt.Fprintln(os.Stderr, "ceilingc: xack:", err)
		}
	}
}
