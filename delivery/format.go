package delivery

import (
	"errors"
	"time"

	"github.com/ferry-sidecar/ferry/retry"
	"github.com/ferry-sidecar/ferry/stream"
)

// Format is how a subscription talks to its app: what one delivery of a
// message looks like (where it goes, its body and Content-Type) and what
// the app's answer means. The zero Options.Format is the plain format of
// FERRY_SUBSCRIPTIONS (the stored body to the subscription's route,
// DESIGN.md's answer table); daprformat.Format is FERRY_APP_SUBSCRIBE=dapr.
type Format interface {
	// Prepare returns the request for m. A *DropError dead-letters m
	// without sending it (no route for it, or it cannot be delivered).
	Prepare(m *stream.Message) (Request, error)
	// ReadsAnswer reports whether Classify needs the answer's body.
	ReadsAnswer() bool
	// Classify reads the app's answer: the status and, when ReadsAnswer,
	// the first bytes of its body. Poison dead-letters at once with
	// PoisonReason.
	Classify(status int, body []byte) retry.Result
	// PoisonReason is the dead-letter reason of a Poison answer.
	PoisonReason() string
}

// Request is one delivery as a Format shapes it.
type Request struct {
	// URL is where the POST goes.
	URL string
	// Body and ContentType are what the app receives.
	Body        string
	ContentType string
	// Structured drops the carried Ce-* headers: the body is a structured
	// CloudEvent and carries its attributes itself.
	Structured bool
}

// DropError is a message that a Format cannot or must not deliver; it is
// dead-lettered with Reason at once.
type DropError struct {
	Reason string // dead-letter reason: dropped
	Err    error
}

func (e *DropError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *DropError) Unwrap() error { return e.Err }

// plainFormat delivers the stored body and Content-Type to one route.
type plainFormat struct{ url string }

func (f plainFormat) Prepare(m *stream.Message) (Request, error) {
	return Request{URL: f.url, Body: m.Body, ContentType: m.ContentType}, nil
}
func (plainFormat) ReadsAnswer() bool                          { return false }
func (plainFormat) Classify(status int, _ []byte) retry.Result { return retry.Classify(status, nil) }
func (plainFormat) PoisonReason() string                       { return "poison" }

// prepare readies d for its attempt: an expired message is dead-lettered
// (reason expired) without being sent, whatever the format; otherwise the
// format shapes the request once, on the first attempt. ok is false when
// the attempt must end with o.
func (s *Subscriber) prepare(d *delivery) (o outcome, ok bool) {
	if d.msg.Expired(time.Now()) {
		d.lastErr = "expired at " + d.msg.ExpiresAt.UTC().Format(time.RFC3339) + " before delivery"
		return outcome{verdict: deadLetter, reason: "expired"}, false
	}
	if d.prepared {
		return outcome{}, true
	}
	req, err := s.format.Prepare(d.msg)
	if err != nil {
		var de *DropError
		if !errors.As(err, &de) {
			de = &DropError{Reason: "poison", Err: err}
		}
		d.lastErr = de.Err.Error()
		return outcome{verdict: deadLetter, reason: de.Reason}, false
	}
	d.out, d.prepared = req, true
	return outcome{}, true
}
