package httpapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// problemBody is an RFC 9457 problem details body.
type problemBody struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// TypeBase prefixes the `type` URIs of ferry's problems; README lists them.
const TypeBase = "urn:ferry:problem:"

// Problem answers with an application/problem+json body. kind is the
// last path element of the problem type, e.g. "outbox-full".
func Problem(w http.ResponseWriter, status int, kind, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(problemBody{
		Type:   TypeBase + kind,
		Title:  http.StatusText(status),
		Status: status,
		Detail: detail,
	})
}

// RetryAfter sets Retry-After in whole seconds, at least 1.
func RetryAfter(w http.ResponseWriter, d time.Duration) {
	secs := int((d + time.Second - 1) / time.Second)
	w.Header().Set("Retry-After", strconv.Itoa(max(1, secs)))
}

// JSON answers with a JSON body.
func JSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
