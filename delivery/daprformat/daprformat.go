// Package daprformat is the delivery.Format of FERRY_APP_SUBSCRIBE=dapr:
// deliveries as Dapr makes them (structured CloudEvents routed by the
// subscription's CEL rules) and the app's answer read as Dapr reads it.
package daprformat

import (
	"strings"

	"github.com/ferry-sidecar/ferry/delivery"
	"github.com/ferry-sidecar/ferry/internal/cloudevent"
	"github.com/ferry-sidecar/ferry/internal/daprsub"
	"github.com/ferry-sidecar/ferry/retry"
	"github.com/ferry-sidecar/ferry/stream"
)

// Format delivers the way Dapr does to a subscription read from the
// app's /dapr/subscribe: a structured CloudEvent (cloudevent.ForDelivery,
// with topic, pubsubname and the trace context) to the path its routing
// rules pick, and the answer read as Dapr reads it (daprsub.Classify):
// SUCCESS or an empty 2xx is success, RETRY or any non-2xx but 404 is a
// retry, DROP or 404 is a dead letter with reason dropped.
type Format struct {
	sub  *daprsub.Subscription
	base string
}

// New returns the format of sub for the app at appURL.
func New(sub *daprsub.Subscription, appURL string) *Format {
	return &Format{sub: sub, base: strings.TrimRight(appURL, "/")}
}

// Prepare builds the CloudEvent and routes it; no matching rule, or a rule
// that fails on the event, is a *delivery.DropError (Dapr drops such an event).
func (f *Format) Prepare(m *stream.Message) (delivery.Request, error) {
	e, err := cloudevent.ForDelivery(cloudevent.Message{
		ID: m.ID, Source: source(m), Topic: f.sub.Topic, PubsubName: f.sub.PubsubName,
		ContentType: m.ContentType, Header: m.Header, Body: []byte(m.Body), PublishedAt: m.PublishedAt,
	}, f.sub.RawPayload)
	if err != nil {
		return delivery.Request{}, &delivery.DropError{Reason: "dropped", Err: err}
	}
	path, err := f.sub.Route(e)
	if err != nil {
		return delivery.Request{}, &delivery.DropError{Reason: "dropped", Err: err}
	}
	body, err := e.Marshal()
	if err != nil {
		return delivery.Request{}, &delivery.DropError{Reason: "dropped", Err: err}
	}
	return delivery.Request{URL: f.base + path, Body: string(body), ContentType: cloudevent.ContentType, Structured: true}, nil
}

// source is the publishing app's id as stored with the message.
func source(m *stream.Message) string {
	s, _ := m.Fields[stream.FieldSource].(string)
	return s
}

// ReadsAnswer is true: {"status":…} decides.
func (*Format) ReadsAnswer() bool { return true }

// Classify maps Dapr's reading of the answer to a delivery result: a drop
// is Poison (the app answered; dead-lettered as dropped).
func (*Format) Classify(status int, body []byte) retry.Result {
	switch o, _ := daprsub.Classify(status, body); o {
	case daprsub.Success:
		return retry.Success
	case daprsub.Drop:
		return retry.Poison
	}
	return retry.Retry
}

// PoisonReason is dropped: only a DROP or a 404 is Poison here.
func (*Format) PoisonReason() string { return "dropped" }
