package sidecar

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// adminHandler serves health, metrics, status, dead letters and replay on FERRY_ADMIN_ADDR.
func (s *Sidecar) adminHandler() http.Handler {
	rt := newRouter()
	tok := s.cfg.APIToken
	rt.handle("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	rt.handle("GET /readyz", s.readyz)
	rt.handle("GET /metrics", promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{}).ServeHTTP)
	rt.handle("GET /v1/status", bearer(tok, s.statusHandler))
	rt.handle("GET /v1/deadletters/{topic}", bearer(tok, s.listDeadLetters))
	rt.handle("POST /v1/deadletters/{topic}/redrive", bearer(tok, s.redrive))
	rt.handle("POST /v1/subscriptions/{topic}/replay", bearer(tok, s.replayHandler))
	return rt
}

type readiness struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

// readyz is 200 from the moment the outbox is recovered and the APIs
// listen until shutdown begins. Redis being down does not make ferry unready.
func (s *Sidecar) readyz(w http.ResponseWriter, r *http.Request) {
	body := readiness{Status: "ready", Checks: map[string]string{"outbox": "ok", "redis": "down"}}
	if s.redisHealth.Up() {
		body.Checks["redis"] = "up"
	}
	// "full" once there is no room left for a typical event: under 1/16 of
	// the limit, at most 64 KiB.
	if st := s.outbox.Stats(); s.cfg.OutboxMaxBytes-st.PendingBytes < min(64<<10, s.cfg.OutboxMaxBytes/16) {
		body.Checks["outbox"] = "full"
	}
	code := http.StatusOK
	switch {
	case s.shuttingDown.Load():
		body.Status, code = "shutting_down", http.StatusServiceUnavailable
	case !s.ready.Load():
		body.Status, code = "starting", http.StatusServiceUnavailable
	}
	writeJSON(w, code, body)
}

// Status is the body of GET /v1/status.
type Status struct {
	AppID         string               `json:"app_id"`
	Redis         RedisStatus          `json:"redis"`
	Outbox        OutboxStatus         `json:"outbox"`
	Subscriptions []SubscriptionStatus `json:"subscriptions"`
}

// RedisStatus says whether the last Redis command succeeded.
type RedisStatus struct {
	Up bool `json:"up"`
}

// OutboxStatus describes the records not yet relayed.
type OutboxStatus struct {
	PendingRecords   int64   `json:"pending_records"`
	Bytes            int64   `json:"bytes"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
}

// SubscriptionStatus describes one subscription's consumer group.
type SubscriptionStatus struct {
	Topic         string `json:"topic"`
	Route         string `json:"route"`
	Breaker       string `json:"breaker"`
	Pending       int64  `json:"pending"`
	Lag           int64  `json:"lag"`
	LastDelivered string `json:"last_delivered_id"`
}

func (s *Sidecar) statusHandler(w http.ResponseWriter, r *http.Request) {
	// Fresh figures when Redis answers quickly; the last ones (at most 5 s old) otherwise.
	ctx, cancel := context.WithTimeout(r.Context(), 500*time.Millisecond)
	defer cancel()
	for _, sub := range s.subs {
		_ = sub.refreshGroupStatus(ctx)
	}
	writeJSON(w, http.StatusOK, s.Status())
}

// Status reports the sidecar's state as GET /v1/status shows it.
func (s *Sidecar) Status() Status {
	st := s.outbox.Stats()
	out := Status{
		AppID:         s.cfg.AppID,
		Redis:         RedisStatus{Up: s.redisHealth.Up()},
		Outbox:        OutboxStatus{PendingRecords: st.PendingRecords, Bytes: st.PendingBytes, OldestAgeSeconds: oldestAge(st)},
		Subscriptions: []SubscriptionStatus{},
	}
	for _, sub := range s.subs {
		ss := sub.status.Load()
		out.Subscriptions = append(out.Subscriptions, SubscriptionStatus{
			Topic: sub.sub.Topic, Route: sub.sub.Route, Breaker: s.breakers.State(sub.sub.Topic).String(),
			Pending: ss.Pending, Lag: ss.Lag, LastDelivered: ss.LastDelivered,
		})
	}
	return out
}

// subscription finds the subscriber of the {topic} path value, or answers 404.
func (s *Sidecar) subscription(w http.ResponseWriter, r *http.Request) *subscriber {
	topic := r.PathValue("topic")
	for _, sub := range s.subs {
		if sub.sub.Topic == topic {
			return sub
		}
	}
	writeProblem(w, http.StatusNotFound, "unknown-topic", fmt.Sprintf("this app (%s) does not subscribe to topic %q", s.cfg.AppID, topic))
	return nil
}

func (s *Sidecar) listDeadLetters(w http.ResponseWriter, r *http.Request) {
	sub := s.subscription(w, r)
	if sub == nil {
		return
	}
	limit := int64(100)
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 || n > 1000 {
			writeProblem(w, http.StatusBadRequest, "invalid-limit", "limit must be a whole number from 1 to 1000")
			return
		}
		limit = n
	}
	dls, err := sub.deadLetters(r.Context(), limit)
	if err != nil {
		s.redisProblem(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string][]DeadLetter{"deadletters": dls})
}

func (s *Sidecar) redrive(w http.ResponseWriter, r *http.Request) {
	sub := s.subscription(w, r)
	if sub == nil {
		return
	}
	n, err := sub.redriveAll(r.Context())
	if err != nil {
		s.redisProblem(w, err)
		return
	}
	s.log.Info("dead letters redriven", "topic", sub.sub.Topic, "app_id", s.cfg.AppID, "count", n)
	writeJSON(w, http.StatusOK, map[string]int{"redriven": n})
}

type replayRequest struct {
	From string `json:"from"`
}

func (s *Sidecar) replayHandler(w http.ResponseWriter, r *http.Request) {
	sub := s.subscription(w, r)
	if sub == nil {
		return
	}
	var req replayRequest
	if err := decodeStrict(http.MaxBytesReader(w, r.Body, 4<<10), &req); err != nil {
		writeProblem(w, http.StatusBadRequest, "invalid-body", err.Error())
		return
	}
	start, err := replayStart(req.From)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, "invalid-from", err.Error())
		return
	}
	if err := sub.replay(r.Context(), start); err != nil {
		s.redisProblem(w, err)
		return
	}
	s.log.Info("replay", "topic", sub.sub.Topic, "app_id", s.cfg.AppID, "from", start)
	writeJSON(w, http.StatusOK, map[string]string{"replayed_from": start})
}

// decodeStrict decodes one JSON object: anything but an object (null
// included), unknown fields, duplicate keys and trailing data are errors.
func decodeStrict(r io.Reader, v any) error {
	body, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return errors.New("decode JSON body: want one JSON object")
	}
	if err := checkDuplicateKeys(body); err != nil {
		return err
	}
	dec := json.NewDecoder(bytesReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode JSON body: %w", err)
	}
	if dec.More() {
		return errors.New("decode JSON body: trailing data after the object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("decode JSON body: trailing data after the object")
	}
	return nil
}

// redisProblem answers 503 for an admin call that needed Redis.
func (s *Sidecar) redisProblem(w http.ResponseWriter, err error) {
	s.log.Warn("admin redis call", "err", redactErr(err))
	setRetryAfter(w, 0)
	writeProblem(w, http.StatusServiceUnavailable, "redis-unavailable", "Redis did not answer; try again")
}
