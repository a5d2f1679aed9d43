//go:build ha

package main

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-sidecar/ferry/internal/redistest"
	"github.com/ferry-sidecar/ferry/stream"
)

// TestReshardBusyTopic moves the slot of a busy topic to another master
// while a publisher relays into it (with and without WAIT) and a
// subscriber delivers from it: first half-way (the source answers ASK for
// the keys already moved and TRYAGAIN for XREADGROUP over a split pair),
// then to the end (MOVED). No event may be lost and none delivered twice.
func TestReshardBusyTopic(t *testing.T) {
	for _, wait := range []bool{true, false} {
		t.Run(fmt.Sprintf("wait=%v", wait), func(t *testing.T) {
			const n = 4000
			b := startBackend(t, "cluster")
			app := newCrashApp(t, 0, nil)
			pub := startFerry(t, b.env(t, "orders-svc", wait))
			env := b.env(t, "billing", wait)
			env["FERRY_APP_URL"] = app.srv.URL
			env["FERRY_SUBSCRIPTIONS"] = "orders=/orders"
			sub := startFerry(t, env)
			var accepted sync.Map
			var acceptedN, refused atomic.Int64
			published := make(chan struct{})
			go func() {
				defer close(published)
				pacedPublish([]*proc{pub}, n, 10*time.Second, &accepted, &acceptedN, &refused)
			}()
			waitUntil(t, 60*time.Second, "a quarter published", func() bool { return acceptedN.Load() >= n/4 })
			slot := redistest.Slot(stream.Key("orders"))
			from := b.cluster.SlotOwner(t, slot)
			var to *redistest.Server
			for _, m := range b.cluster.Masters(t) {
				if m != from {
					to = m
					break
				}
			}
			began := time.Now()
			move := b.cluster.StartSlotMove(t, slot, to)
			moved := 0
			for range 5 { // half-way: some keys on each side, for a while
				moved += move.Migrate(t, 20)
				time.Sleep(300 * time.Millisecond) // holds the slot split; not a synchronisation
			}
			move.Finish(t)
			took := time.Since(began)
			<-published
			total := int(acceptedN.Load())
			waitUntil(t, 90*time.Second, "every accepted event delivered", func() bool { d, _ := app.seen(); return d >= total })
			lost, dups := 0, 0
			app.mu.Lock()
			accepted.Range(func(k, _ any) bool {
				switch c := app.counts[k.(string)]; {
				case c == 0:
					lost++
				case c > 1:
					dups += c - 1
				}
				return true
			})
			app.mu.Unlock()
			owner := b.cluster.SlotOwner(t, slot)
			fmt.Printf("RESHARD wait=%v accepted=%d refused=%d delivered_distinct=%d lost=%d duplicates=%d slot=%d from=%s to=%s half_way_keys=%d move_took=%s\n",
				wait, total, refused.Load(), total-lost, lost, dups, slot, from.Addr, owner.Addr, moved, took.Round(time.Millisecond))
			if owner != to || refused.Load() != 0 || lost != 0 || dups != 0 {
				t.Fatalf("after the reshard: owner %s (want %s), %d refused, %d lost, %d duplicates", owner.Addr, to.Addr, refused.Load(), lost, dups)
			}
			for name, p := range map[string]*proc{"publisher": pub, "subscriber": sub} {
				if code := p.term(20 * time.Second); code != 0 {
					t.Errorf("%s exit %d after SIGTERM, want 0", name, code)
				}
			}
		})
	}
}

// spreadRun publishes perTopic events to each of topics through one
// publisher and times their delivery through one subscriber of all of
// them; it returns events/s from the first publish to the last delivery.
func spreadRun(t *testing.T, b *haBackend, topics []string, perTopic int) float64 {
	t.Helper()
	app := newCrashApp(t, 0, nil)
	pub := startFerry(t, b.env(t, "orders-svc", false))
	env := b.env(t, "billing", false)
	env["FERRY_APP_URL"] = app.srv.URL
	var subs []string
	for _, tp := range topics {
		subs = append(subs, tp+"=/"+tp)
	}
	env["FERRY_SUBSCRIPTIONS"] = strings.Join(subs, ",")
	startFerry(t, env)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer client.CloseIdleConnections()
	began := time.Now()
	work := make(chan string)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 16 {
		wg.Go(func() {
			for tp := range work {
				resp, err := client.Post(pub.pub+"/v1/publish/"+tp, "text/plain", strings.NewReader("x"))
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					failed.Add(1)
				}
			}
		})
	}
	for range perTopic {
		for _, tp := range topics {
			work <- tp
		}
	}
	close(work)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d publishes failed", failed.Load())
	}
	total := perTopic * len(topics)
	waitUntil(t, 120*time.Second, "all delivered", func() bool { d, _ := app.seen(); return d >= total })
	return float64(total) / time.Since(began).Seconds()
}

// pacedPublish publishes n events through pubs, spread evenly over d,
// recording each accepted id; it returns when done.
func pacedPublish(pubs []*proc, n int, d time.Duration, accepted *sync.Map, acceptedN, refused *atomic.Int64) {
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer client.CloseIdleConnections()
	work := make(chan int)
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			p := pubs[w%len(pubs)]
			for i := range work {
				id, err := publishOne(client, p, "chaos-"+strconv.Itoa(i))
				if err != nil {
					refused.Add(1)
					continue
				}
				accepted.Store(id, true)
				acceptedN.Add(1)
			}
		})
	}
	tick := time.NewTicker(d / time.Duration(n))
	for i := range n {
		work <- i
		if i%8 == 7 { // 8 per tick: the ticker cannot go much below a millisecond
			<-tick.C
		}
	}
	tick.Stop()
	close(work)
	wg.Wait()
}
