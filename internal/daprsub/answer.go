package daprsub

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
)

// Outcome is what the app's answer to a delivery asks for.
type Outcome int

// The outcomes, as Dapr reads them.
const (
	// Success: ack the message.
	Success Outcome = iota
	// Retry: deliver again later (and count the attempt).
	Retry
	// Drop: Dapr discards the message; ferry dead-letters it with reason
	// dropped.
	Drop
)

func (o Outcome) String() string {
	switch o {
	case Success:
		return "success"
	case Retry:
		return "retry"
	case Drop:
		return "drop"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Answer statuses an app may give in a 2xx body {"status":…}.
const (
	StatusSuccess = "SUCCESS"
	StatusRetry   = "RETRY"
	StatusDrop    = "DROP"
)

// Classify reads the app's answer to a delivery exactly as Dapr's HTTP
// postman does (pkg/runtime/subscription/postman/http Deliver):
//
//	2xx, body empty or not a JSON object with a string status  → Success
//	2xx, {"status":""} or {"status":"SUCCESS"}                 → Success
//	2xx, {"status":"RETRY"}                                    → Retry
//	2xx, {"status":"DROP"}                                     → Drop
//	2xx, any other status string (case matters: "success")     → Retry
//	404                                                        → Drop
//	any other status (3xx, 4xx, 5xx)                           → Retry
//
// detail says why, for a log line or a dead letter's error (no body text).
// body is the answer body, or its first bytes: a status object fits in a
// few hundred.
func Classify(status int, body []byte) (o Outcome, detail string) {
	if status >= 200 && status <= 299 {
		var a struct {
			Status string `json:"status"`
		}
		if err := json.NewDecoder(bytes.NewReader(body)).Decode(&a); err != nil {
			return Success, fmt.Sprintf("status %d", status)
		}
		switch a.Status {
		case "", StatusSuccess:
			return Success, fmt.Sprintf("status %d", status)
		case StatusRetry:
			return Retry, fmt.Sprintf("status %d, app answered RETRY", status)
		case StatusDrop:
			return Drop, fmt.Sprintf("status %d, app answered DROP", status)
		}
		return Retry, fmt.Sprintf("status %d, unknown app status %q", status, truncate(a.Status, 64))
	}
	if status == http.StatusNotFound {
		return Drop, "status 404: the app has no such route"
	}
	return Retry, fmt.Sprintf("status %d", status)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
