package retry

import (
	"net/http"
	"net/http/httptrace"
	"sync/atomic"
)

// Attempt records how far one HTTP request got on the wire, so that its
// outcome can tell "the app is not there" from "the app took the request
// and failed". Create it with [Observe]; it is safe for concurrent use (the
// transport calls the trace from its own goroutines).
type Attempt struct {
	connected atomic.Bool // the last try got a connection (after dial and TLS)
	sent      atomic.Bool // the last try wrote the whole request to its connection
}

// Observe returns a copy of req whose context carries an
// [httptrace.ClientTrace] (merged with any trace already there) that
// records into the returned Attempt. Send the returned request.
//
// net/http may try a request more than once on its own (on a fresh
// connection after a kept-alive one turned out closed, for requests it
// considers replayable: no body or a rewindable one, and an idempotent
// method or an Idempotency-Key header). Each new connection starts the
// record afresh, so the Attempt describes the last try, whose error is the
// one returned.
func Observe(req *http.Request) (*http.Request, *Attempt) {
	a := &Attempt{}
	trace := &httptrace.ClientTrace{
		GotConn: func(httptrace.GotConnInfo) {
			a.sent.Store(false)
			a.connected.Store(true)
		},
		WroteRequest: func(info httptrace.WroteRequestInfo) {
			a.sent.Store(info.Err == nil)
		},
	}
	return req.WithContext(httptrace.WithClientTrace(req.Context(), trace)), a
}

// Connected reports whether the request got a connection to the app (TCP
// connected and, for https, the TLS handshake done).
func (a *Attempt) Connected() bool { return a.connected.Load() }

// Sent reports whether the whole request (headers and body) was written
// to its connection. net/http reports this when the request is in the
// connection's write buffer, just before flushing it: true does not prove
// the bytes left the machine, only false proves they did not all leave.
func (a *Attempt) Sent() bool { return a.sent.Load() }

// Classify maps the attempt to a Result: [ClassifySent] with what was
// observed. Call it after the client returned (the transport has then
// finished writing or given up).
func (a *Attempt) Classify(status int, err error) Result {
	return ClassifySent(status, err, a.Sent())
}
