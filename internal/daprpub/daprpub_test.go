package daprpub

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestErrors(t *testing.T) {
	tests := []struct {
		err    *Error
		status int
		code   string
		msg    string
	}{
		{NotFound("kafka"), 404, "ERR_PUBSUB_NOT_FOUND", "pubsub kafka is not found"},
		{NameEmpty(), 404, "ERR_PUBSUB_EMPTY", "pubsub name is empty"},
		{TopicEmpty("pubsub"), 404, "ERR_TOPIC_NAME_EMPTY", "topic is empty in pubsub pubsub"},
		{RequestMetadata(errors.New("x")), 400, "ERR_PUBSUB_REQUEST_METADATA", "failed deserializing metadata. Error: x"},
		{CloudEventCreation(), 500, "ERR_PUBSUB_CLOUD_EVENTS_SER", "cannot create cloudevent"},
		{MarshalEnvelope("t", "p", errors.New("x")), 400, "ERR_PUBSUB_EVENTS_SER", "error when marshalling cloud event envelope for topic t pubsub p: x"},
		{MarshalEvents("t", "p", errors.New("x")), 400, "ERR_PUBSUB_EVENTS_SER", "error marshaling events to bytes for topic t pubsub p. error: x"},
		{UnmarshalEvents("t", "p", errors.New("x")), 400, "ERR_PUBSUB_EVENTS_SER", "error when unmarshaling the request for topic t pubsub p: x"},
		{Forbidden("t", "orders"), 403, "ERR_PUBSUB_FORBIDDEN", "topic t is not allowed for app id orders"},
		{PublishMessage(500, "t", "p", errors.New("x")), 500, "ERR_PUBSUB_PUBLISH_MESSAGE", "error when publishing to topic t in pubsub p: x"},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			rec := httptest.NewRecorder()
			rec.Header().Set("Retry-After", "1")
			tt.err.Write(rec)
			if rec.Code != tt.status {
				t.Errorf("status = %d, want %d", rec.Code, tt.status)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if rec.Header().Get("Retry-After") != "1" {
				t.Error("Retry-After dropped")
			}
			var body map[string]string
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			if len(body) != 2 || body["errorCode"] != tt.code || body["message"] != tt.msg {
				t.Errorf("body = %v", body)
			}
		})
	}
}

func TestMetadataAndRawPayload(t *testing.T) {
	q, _ := url.ParseQuery("metadata.rawPayload=true&metadata.ttlInSeconds=5&metadata.ttlInSeconds=9&other=x&metadata.=y")
	md := Metadata(q)
	if len(md) != 3 || md["rawPayload"] != "true" || md["ttlInSeconds"] != "5" || md[""] != "y" {
		t.Fatalf("metadata = %v", md)
	}
	for v, want := range map[string]bool{"": false, "true": true, "1": true, "False": false, "T": true} {
		got, err := RawPayload(map[string]string{"rawPayload": v})
		if err != nil || got != want {
			t.Errorf("RawPayload(%q) = %v, %v", v, got, err)
		}
	}
	if _, err := RawPayload(map[string]string{"rawPayload": "yes"}); err == nil {
		t.Error("rawPayload=yes accepted")
	}
	if got, _ := RawPayload(map[string]string{"rawpayload": "true"}); got {
		t.Error("key matched without its exact case, unlike Dapr")
	}
}

func TestParseBulk(t *testing.T) {
	body := `[
	 {"entryId":"a","event":{"n":12345678901234567890},"contentType":"application/json","metadata":{"ttlInSeconds":"9"}},
	 {"entryId":"b","event":"hello","contentType":"text/plain"},
	 {"entryId":"c","event":"AAE=","contentType":"application/octet-stream"},
	 {"entryId":"d","event":{"id":"x","source":"s","type":"t","specversion":"1.0"},"contentType":"application/cloudevents+json","extra":1}
	]`
	entries, err := ParseBulk([]byte(body), "t", "pubsub", map[string]string{"ttlInSeconds": "5", "rawPayload": "false"})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ id, event, ttl string }{
		{"a", `{"n":12345678901234567890}`, "9"},
		{"b", "hello", "5"},
		{"c", "\x00\x01", "5"},
		{"d", `{"id":"x","source":"s","type":"t","specversion":"1.0"}`, "5"},
	}
	if len(entries) != len(want) {
		t.Fatalf("%d entries", len(entries))
	}
	for i, w := range want {
		e := entries[i]
		if e.EntryID != w.id || string(e.Event) != w.event || e.Metadata["ttlInSeconds"] != w.ttl || e.Metadata["rawPayload"] != "false" {
			t.Errorf("entry %d = %+v, want %+v", i, e, w)
		}
	}
}

func TestParseBulkErrors(t *testing.T) {
	tests := []struct {
		name, body string
		code       string
		contains   string
	}{
		{"not json", `{`, CodeEventsSer, "error when unmarshaling the request"},
		{"object", `{"entryId":"a"}`, CodeEventsSer, "error when unmarshaling the request"},
		{"null", `null`, CodeEventsSer, "null"},
		{"empty", ``, CodeEventsSer, "empty body"},
		{"no entry id", `[{"event":"x","contentType":"text/plain"}]`, CodeEventsSer, `entry 0 (entryId ""): entryId is duplicated or not present`},
		{"duplicate", `[{"entryId":"a","event":"x","contentType":"text/plain"},{"entryId":"a","event":"y","contentType":"text/plain"}]`, CodeEventsSer, `entry 1 (entryId "a"): entryId is duplicated`},
		{"no event", `[{"entryId":"a","contentType":"text/plain"}]`, CodeEventsSer, `entry 0 (entryId "a"): event is required`},
		{"null event", `[{"entryId":"a","event":null,"contentType":"application/json"}]`, CodeEventsSer, "event is required"},
		{"text needs string", `[{"entryId":"a","event":{"x":1},"contentType":"text/plain"}]`, CodeEventsSer, "mismatch between contentType and event"},
		{"bad base64", `[{"entryId":"a","event":"!!","contentType":"application/octet-stream"}]`, CodeEventsSer, "unable to decode base64"},
		{"no content type", `[{"entryId":"a","event":"x"}]`, CodeEventsSer, "mismatch between contentType and event"},
		{"odd content type", `[{"entryId":"a","event":"x","contentType":"image/png"}]`, CodeEventsSer, `contentType "image/png"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseBulk([]byte(tt.body), "t", "pubsub", nil)
			if err == nil {
				t.Fatal("accepted")
			}
			if err.Code != tt.code || err.Status != http.StatusBadRequest || !strings.Contains(err.Message, tt.contains) {
				t.Fatalf("err = %+v, want %s 400 containing %q", err, tt.code, tt.contains)
			}
		})
	}
}

func TestBulkFailure(t *testing.T) {
	b := BulkFailure([]BulkEntry{{EntryID: "a"}, {EntryID: "b"}}, errors.New("outbox full"))
	want := `{"failedEntries":[{"entryId":"a","error":"outbox full"},{"entryId":"b","error":"outbox full"}],"errorCode":"ERR_PUBSUB_PUBLISH_MESSAGE"}`
	if string(b) != want {
		t.Fatalf("body = %s", b)
	}
}

// plainString agrees with json.Unmarshal wherever it answers.
func TestPlainStringMatchesUnmarshal(t *testing.T) {
	for _, raw := range []string{`"abc"`, `""`, `"é 日本 😀"`, `"a\nb"`, `"a\"b"`, `"\u00e9"`, "\"bad \xff\"", "\"tab\there\"", `"<&>"`, `1`, `"x`} {
		got, ok := plainString(json.RawMessage(raw))
		var want string
		err := json.Unmarshal([]byte(raw), &want)
		if ok && (err != nil || string(got) != want) {
			t.Errorf("plainString(%s) = %q, json.Unmarshal = %q, %v", raw, got, want, err)
		}
		if !ok && err == nil && !strings.ContainsAny(raw[1:len(raw)-1], "\\\"\t\n\xff") {
			t.Errorf("plainString(%s) refused a plain string", raw)
		}
	}
}
