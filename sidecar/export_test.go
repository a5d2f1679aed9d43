package sidecar

import (
	"context"
	"time"

	"github.com/ferry-sidecar/ferry/config"
	"github.com/ferry-sidecar/ferry/delivery"
	"github.com/ferry-sidecar/ferry/internal/httpapi"
	"github.com/ferry-sidecar/ferry/stream"
)

// Names the tests share with the wire format.
var (
	streamKey     = stream.Key
	deadLetterKey = stream.DeadLetterKey
	redriveKey    = stream.RedriveKey
	replayKey     = stream.ReplayKey
)

const (
	hdrMessageID   = stream.HeaderMessageID
	hdrTopic       = stream.HeaderTopic
	hdrAttempt     = stream.HeaderAttempt
	hdrPublishedAt = stream.HeaderPublishedAt
	hdrReplay      = stream.HeaderReplay
)

// problem is an RFC 9457 body as the tests read it.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// publishResponse is the 202 body as the tests read it.
type publishResponse struct {
	ID    string `json:"id"`
	Topic string `json:"topic"`
}

// problemTypeBase prefixes every problem type.
const problemTypeBase = httpapi.TypeBase

// DeadLetter is one listed dead letter.
type DeadLetter = delivery.DeadLetter

// readiness is the /readyz body as the tests read it.
type readiness struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

// LoadConfig is config.Load, for the tests.
func LoadConfig(env map[string]string) (config.Config, error) { return config.Load(env) }

// faultyOutbox wraps the real outbox so a test can fail appends or make it
// look failed for good.
type faultyOutbox struct {
	durableLog
	appendErr func() error // non-nil error: Append fails with it
	err       func() error // replaces Err
}

func (f *faultyOutbox) Append(ctx context.Context, data []byte) error {
	if f.appendErr != nil {
		if err := f.appendErr(); err != nil {
			return err
		}
	}
	return f.durableLog.Append(ctx, data)
}

func (f *faultyOutbox) Err() error {
	if f.err != nil {
		return f.err()
	}
	return f.durableLog.Err()
}

// injectOutboxFaults rebuilds the parts over a faultyOutbox.
func (s *Sidecar) injectOutboxFaults(appendErr, err func() error) {
	s.buildParts(&faultyOutbox{durableLog: s.outbox, appendErr: appendErr, err: err})
}

// setRefreshEvery shortens the lag, status and retention refresh.
func (s *Sidecar) setRefreshEvery(d time.Duration) {
	s.refreshEvery = d
	s.buildParts(s.outbox)
}

func (f *faultyOutbox) AppendBatch(ctx context.Context, records [][]byte) error {
	if f.appendErr != nil {
		if err := f.appendErr(); err != nil {
			return err
		}
	}
	return f.durableLog.AppendBatch(ctx, records)
}
