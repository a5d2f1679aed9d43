package main

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Body layout of a bench event: the send time (nanoseconds since the run's
// epoch, monotonic), the sequence number and the phase number, then
// padding. The sink ignores events of another phase (a late duplicate of
// an earlier one).
const bodyHeaderLen = 37 // "%020d %010d %04d " = 20 + 1 + 10 + 1 + 4 + 1

// eventBody makes the body of event seq of phase, sent at sent.
func eventBody(size int, sent time.Duration, seq int64, phase int) []byte {
	body := make([]byte, size)
	copy(body, fmt.Appendf(nil, "%020d %010d %04d ", int64(sent), seq, phase))
	for i := bodyHeaderLen; i < len(body); i++ {
		body[i] = 'x'
	}
	return body
}

// parseBody reads the header of a bench event.
func parseBody(b []byte) (sent time.Duration, seq int64, phase int, ok bool) {
	if len(b) < bodyHeaderLen || b[20] != ' ' || b[31] != ' ' || b[36] != ' ' {
		return 0, 0, 0, false
	}
	ns, err1 := strconv.ParseInt(string(b[:20]), 10, 64)
	seq, err2 := strconv.ParseInt(string(b[21:31]), 10, 64)
	ph, err3 := strconv.Atoi(string(b[32:36]))
	if err1 != nil || err2 != nil || err3 != nil || seq < 0 {
		return 0, 0, 0, false
	}
	return time.Duration(ns), seq, ph, true
}

// clock is the run's one time base: durations since its epoch, from the
// monotonic clock; wall times (Ferry-Published-At) are converted with it.
type clock struct{ epoch time.Time }

func (c clock) since() time.Duration { return time.Since(c.epoch) }

func (c clock) fromWall(t time.Time) time.Duration {
	return time.Duration(t.UnixNano() - c.epoch.UnixNano())
}

// trace holds per-event timestamps (durations since the epoch; 0 ⇒ not
// seen) for the latency breakdown.
type trace struct {
	sent      []int64 // the publisher's send, from the body
	accepted  []int64 // publisher: the 202 received
	published []int64 // ferry's accept time (Ferry-Published-At)
	relayed   []int64 // an observer's XREAD saw the entry in Redis
	delivered []int64 // the sink's receipt
}

func newTrace(n int) *trace {
	return &trace{sent: make([]int64, n), accepted: make([]int64, n), published: make([]int64, n),
		relayed: make([]int64, n), delivered: make([]int64, n)}
}

// sink is the subscribing app of one phase: it counts each event once,
// counts duplicates, and, when it has a trace, keeps each event's times.
type sink struct {
	clock  clock
	phase  int
	n      int64
	seen   []atomic.Uint64 // bitmap by seq
	tr     *trace          // nil ⇒ no per-event times
	unique atomic.Int64
	dups   atomic.Int64
	last   atomic.Int64 // since epoch, of the last first delivery
	slots  chan struct{}
	done   chan struct{}
}

// newSink is the sink of phase for events 0..n-1; window > 0 bounds the
// events published and not yet delivered (the publisher takes a slot).
func newSink(c clock, phase int, n int64, window int, traced bool) *sink {
	s := &sink{clock: c, phase: phase, n: n, seen: make([]atomic.Uint64, (n+63)/64), done: make(chan struct{})}
	if window > 0 {
		s.slots = make(chan struct{}, window)
	}
	if traced {
		s.tr = newTrace(int(n))
	}
	return s
}

// first marks seq seen; false when it was already.
func (s *sink) first(seq int64) bool {
	w, bit := &s.seen[seq/64], uint64(1)<<(seq%64)
	for {
		old := w.Load()
		if old&bit != 0 {
			return false
		}
		if w.CompareAndSwap(old, old|bit) {
			return true
		}
	}
}

func (s *sink) receive(b []byte, publishedAt string) {
	now := s.clock.since()
	sent, seq, phase, ok := parseBody(b)
	if !ok || phase != s.phase || seq >= s.n {
		return
	}
	if !s.first(seq) {
		s.dups.Add(1)
		return
	}
	if s.tr != nil {
		s.tr.sent[seq] = int64(sent)
		s.tr.delivered[seq] = int64(now)
		if t, err := time.Parse(time.RFC3339Nano, publishedAt); err == nil && publishedAt != "" {
			s.tr.published[seq] = int64(s.clock.fromWall(t))
		}
	}
	s.last.Store(int64(now))
	if s.slots != nil {
		select {
		case <-s.slots:
		default:
		}
	}
	if s.unique.Add(1) == s.n {
		close(s.done)
	}
}

// latencies are the send → receipt times of the events delivered.
func (s *sink) latencies() []time.Duration {
	if s.tr == nil {
		return nil
	}
	lat := make([]time.Duration, 0, s.unique.Load())
	for i, d := range s.tr.delivered {
		if d != 0 {
			lat = append(lat, time.Duration(d-s.tr.sent[i]))
		}
	}
	return lat
}

// sinkServer is the app both subscribing sides POST to; it hands each
// event to the sink of the current phase.
type sinkServer struct {
	cur  atomic.Pointer[sink]
	pool sync.Pool
}

func newSinkServer() *sinkServer {
	return &sinkServer{pool: sync.Pool{New: func() any { return new(bytes.Buffer) }}}
}

func (ss *sinkServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	buf := ss.pool.Get().(*bytes.Buffer)
	defer ss.pool.Put(buf)
	buf.Reset()
	if _, err := buf.ReadFrom(r.Body); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable) // ferry retries
		return
	}
	if s := ss.cur.Load(); s != nil {
		s.receive(buf.Bytes(), r.Header.Get("Ferry-Published-At"))
	}
	w.WriteHeader(http.StatusNoContent)
}
