package cloudevent

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name, body string
		field      string // "" = valid, "-" = whole-event error
		reason     string
	}{
		{"valid", `{"id":"1","source":"s","type":"t","specversion":"1.0","data":{"a":1}}`, "", ""},
		{"valid with time and base64", `{"id":"1","source":"/s","type":"t","specversion":"1.0","time":"2026-01-02T03:04:05.123Z","data_base64":"AAE="}`, "", ""},
		{"missing id", `{"source":"s","type":"t","specversion":"1.0"}`, "id", "required"},
		{"null id", `{"id":null,"source":"s","type":"t","specversion":"1.0"}`, "id", "required"},
		{"empty id", `{"id":"","source":"s","type":"t","specversion":"1.0"}`, "id", "must not be empty"},
		{"numeric id", `{"id":1,"source":"s","type":"t","specversion":"1.0"}`, "id", "must be a string"},
		{"missing source", `{"id":"1","type":"t","specversion":"1.0"}`, "source", "required"},
		{"missing type", `{"id":"1","source":"s","specversion":"1.0"}`, "type", "required"},
		{"missing specversion", `{"id":"1","source":"s","type":"t"}`, "specversion", "required"},
		{"old specversion", `{"id":"1","source":"s","type":"t","specversion":"0.3"}`, "specversion", `must be "1.0", got "0.3"`},
		{"numeric specversion", `{"id":"1","source":"s","type":"t","specversion":1.0}`, "specversion", `must be the string "1.0"`},
		{"bad time", `{"id":"1","source":"s","type":"t","specversion":"1.0","time":"yesterday"}`, "time", `not RFC 3339: "yesterday"`},
		{"bad base64", `{"id":"1","source":"s","type":"t","specversion":"1.0","data_base64":"!!"}`, "data_base64", "not base64"},
		{"data and base64", `{"id":"1","source":"s","type":"t","specversion":"1.0","data":1,"data_base64":"AA=="}`, "data_base64", "must not be set together with data"},
		{"numeric datacontenttype", `{"id":"1","source":"s","type":"t","specversion":"1.0","datacontenttype":5}`, "datacontenttype", "must be a string"},
		{"array", `[{"id":"1"}]`, "-", "not a JSON object: got a JSON array"},
		{"null", `null`, "-", "not a JSON object: null"},
		{"empty", ``, "-", "not a JSON object: empty body"},
		{"trailing", `{"id":"1","source":"s","type":"t","specversion":"1.0"} {}`, "-", "data after the JSON value"},
		{"broken", `{"id":`, "-", "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := Parse([]byte(tt.body))
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if e.ID() != "1" {
					t.Fatalf("id = %q", e.ID())
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v, want *FieldError", err)
			}
			want := tt.field
			if want == "-" {
				want = ""
			}
			if fe.Field != want || fe.Index != -1 || !strings.Contains(fe.Reason, tt.reason) {
				t.Fatalf("err = %+v (%v), want field %q reason containing %q", fe, err, want, tt.reason)
			}
		})
	}
}

func TestParseKeepsNumbers(t *testing.T) {
	e, err := Parse([]byte(`{"id":"1","source":"s","type":"t","specversion":"1.0","data":{"n":12345678901234567890}}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"n":12345678901234567890`) {
		t.Fatalf("number changed: %s", b)
	}
}

func TestParseBatch(t *testing.T) {
	ok := `{"id":"%d","source":"s","type":"t","specversion":"1.0"}`
	good := `[` + strings.ReplaceAll(ok, "%d", "a") + `,` + strings.ReplaceAll(ok, "%d", "b") + `]`
	events, err := ParseBatch([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 2 || events[0].ID() != "a" || events[1].ID() != "b" {
		t.Fatalf("events = %v", events)
	}
	if events, err := ParseBatch([]byte(`[]`)); err != nil || len(events) != 0 {
		t.Fatalf("empty batch: %v %v", events, err)
	}

	tests := []struct {
		name, body string
		index      int
		field      string
		msg        string
	}{
		{"second lacks type", `[` + strings.ReplaceAll(ok, "%d", "a") + `,{"id":"b","source":"s","specversion":"1.0"}]`, 1, "type", `event 1: attribute "type": required`},
		{"first is a string", `["x"]`, 0, "", `event 0: not a JSON object: got a JSON string`},
		{"not an array", `{"id":"a"}`, -1, "", `not a JSON array: got a JSON object`},
		{"null", `null`, -1, "", `not a JSON array: null`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseBatch([]byte(tt.body))
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v", err)
			}
			if fe.Index != tt.index || fe.Field != tt.field || err.Error() != tt.msg {
				t.Fatalf("err = %q %+v, want index %d field %q msg %q", err, fe, tt.index, tt.field, tt.msg)
			}
		})
	}
}

var now = time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)

func TestNewDaprEnvelope(t *testing.T) {
	base := Publish{Source: "orders", Topic: "t1", PubsubName: "pubsub", TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", TraceState: "k=v"}
	tests := []struct {
		name  string
		ct    string
		data  string
		field string // data or data_base64
		want  any
	}{
		{"json object", "application/json", `{"a":1}`, FieldData, map[string]any{"a": json.Number("1")}},
		{"json with charset", "application/json; charset=utf-8", `[1,2]`, FieldData, []any{json.Number("1"), json.Number("2")}},
		{"json that is not", "application/json", `{oops`, FieldData, "{oops"},
		{"text", "text/plain", "hello", FieldData, "hello"},
		{"no content type", "", "hello", FieldData, "hello"},
		{"vendor json is a string", "application/vnd.x+json", `{"a":1}`, FieldData, `{"a":1}`},
		{"binary", "application/octet-stream", "\x00\x01", FieldDataBase64, "AAE="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := base
			p.ContentType, p.Data = tt.ct, []byte(tt.data)
			e, err := NewDaprEnvelope(p, now)
			if err != nil {
				t.Fatal(err)
			}
			wantCT := tt.ct
			if wantCT == "" {
				wantCT = "text/plain"
			}
			if _, err := uuid.Parse(e.ID()); err != nil {
				t.Errorf("id %q is not a UUID", e.ID())
			}
			checkAttrs(t, e, map[string]any{
				"source": "orders", "type": DaprEventType, "specversion": "1.0", "datacontenttype": wantCT,
				"topic": "t1", "pubsubname": "pubsub", "time": "2026-11-29T10:00:00Z",
				"traceparent": base.TraceParent, "traceid": base.TraceParent, "tracestate": "k=v",
			})
			other := FieldDataBase64
			if tt.field == FieldDataBase64 {
				other = FieldData
			}
			if _, ok := e[other]; ok {
				t.Errorf("%s set too: %v", other, e)
			}
			got, _ := json.Marshal(e[tt.field])
			want, _ := json.Marshal(tt.want)
			if string(got) != string(want) {
				t.Errorf("%s = %s, want %s", tt.field, got, want)
			}
			if err := Validate(e); err != nil {
				t.Errorf("envelope does not validate: %v", err)
			}
		})
	}
}

func TestNewDaprEnvelopeOverridesAndTTL(t *testing.T) {
	e, err := NewDaprEnvelope(Publish{
		Source: "orders", Topic: "t1", PubsubName: "pubsub", ContentType: "text/plain", Data: []byte("x"),
		TraceParent: "00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb-01",
		Metadata: map[string]string{
			"CloudEvent.ID": "my-id", "cloudevent.source": "my-src", "cloudevent.type": "my.type",
			"cloudevent.subject": "sub", "cloudevent.traceparent": "00-cccccccccccccccccccccccccccccccc-dddddddddddddddd-01",
			"ttlInSeconds": "30", "rawPayload": "false",
		},
	}, now)
	if err != nil {
		t.Fatal(err)
	}
	checkAttrs(t, e, map[string]any{
		"id": "my-id", "source": "my-src", "type": "my.type", "subject": "sub",
		"traceparent": "00-cccccccccccccccccccccccccccccccc-dddddddddddddddd-01",
		"traceid":     "00-cccccccccccccccccccccccccccccccc-dddddddddddddddd-01",
		"expiration":  "2026-11-29T10:00:30Z",
	})
	if _, ok := e["tracestate"]; ok {
		t.Errorf("empty tracestate written: %v", e)
	}
	if e.Expired(now.Add(29*time.Second)) || !e.Expired(now.Add(31*time.Second)) {
		t.Errorf("expiry wrong around %v", e["expiration"])
	}

	if _, err := NewDaprEnvelope(Publish{Metadata: map[string]string{"ttlInSeconds": "soon"}}, now); !errors.Is(err, ErrTTL) {
		t.Fatalf("bad ttl: err = %v", err)
	}
}

func TestNewDaprEnvelopePassThrough(t *testing.T) {
	p := Publish{Source: "orders", Topic: "t1", PubsubName: "pubsub", ContentType: "application/cloudevents+json",
		TraceParent: "00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb-01",
		Metadata:    map[string]string{"cloudevent.id": "ignored", "ttl": "1m"},
		Data:        []byte(`{"id":"e1","source":"/app","type":"my.t","specversion":"1.0","topic":"other","datacontenttype":"application/json","data":{"n":1}}`)}
	e, err := NewDaprEnvelope(p, now)
	if err != nil {
		t.Fatal(err)
	}
	checkAttrs(t, e, map[string]any{
		"id": "e1", "source": "/app", "type": "my.t", "topic": "t1", "pubsubname": "pubsub",
		"time": "2026-11-29T10:00:00Z", "traceparent": p.TraceParent, "traceid": p.TraceParent,
		"expiration": "2026-11-29T10:01:00Z",
	})

	// Dapr adds defaults but does not require an id; trace fields of the
	// event win when it has a traceid.
	p.Data = []byte(`{"traceid":"mine","time":"2020-01-01T00:00:00Z"}`)
	p.Metadata = nil
	e, err = NewDaprEnvelope(p, now)
	if err != nil {
		t.Fatal(err)
	}
	checkAttrs(t, e, map[string]any{"source": "Dapr", "type": DaprEventType, "specversion": "1.0", "traceid": "mine", "time": "2020-01-01T00:00:00Z"})
	if _, ok := e["traceparent"]; ok {
		t.Errorf("traceparent added though traceid was there: %v", e)
	}

	p.Data = []byte(`not json`)
	if _, err := NewDaprEnvelope(p, now); err == nil {
		t.Fatal("non-JSON cloudevent accepted")
	}
}

func TestTTL(t *testing.T) {
	tests := []struct {
		meta map[string]string
		want time.Duration
		ok   bool
		err  bool
	}{
		{nil, 0, false, false},
		{map[string]string{"ttlInSeconds": ""}, 0, false, false},
		{map[string]string{"ttlInSeconds": "5"}, 5 * time.Second, true, false},
		{map[string]string{"TTLINSECONDS": "5"}, 5 * time.Second, true, false},
		{map[string]string{"ttl": "1m30s"}, 90 * time.Second, true, false},
		{map[string]string{"ttl": "2", "ttlInSeconds": "9"}, 2 * time.Second, true, false},
		{map[string]string{"ttl": "-5s"}, 0, true, false},
		{map[string]string{"ttlInSeconds": "0"}, 0, true, false}, // "0" parses as a Go duration, as in Dapr
		{map[string]string{"ttlInSeconds": "-1"}, 0, false, true},
		{map[string]string{"ttlInSeconds": "abc"}, 0, false, true},
	}
	for _, tt := range tests {
		got, ok, err := TTL(tt.meta)
		if got != tt.want || ok != tt.ok || (err != nil) != tt.err {
			t.Errorf("TTL(%v) = %v, %v, %v; want %v, %v, err %v", tt.meta, got, ok, err, tt.want, tt.ok, tt.err)
		}
	}
}

func TestForDelivery(t *testing.T) {
	tp := "00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb-01"
	h := http.Header{"Traceparent": {tp}}
	m := Message{ID: "m1", Source: "orders", Topic: "t1", PubsubName: "pubsub", Header: h, PublishedAt: now}

	t.Run("raw payload", func(t *testing.T) {
		m := m
		m.ContentType, m.Body = "application/cloudevents+json", []byte(`{"x":1}`)
		e, err := ForDelivery(m, true)
		if err != nil {
			t.Fatal(err)
		}
		checkAttrs(t, e, map[string]any{"id": "m1", "source": "Dapr", "type": DaprEventType, "specversion": "1.0",
			"datacontenttype": "application/octet-stream", "topic": "t1", "pubsubname": "pubsub",
			"data_base64": base64.StdEncoding.EncodeToString(m.Body), "traceparent": tp, "traceid": tp})
		if _, ok := e["data"]; ok {
			t.Error("data set")
		}
	})
	t.Run("structured", func(t *testing.T) {
		m := m
		m.ContentType, m.Body = "application/cloudevents+json", []byte(`{"id":"e1","source":"s","type":"t","specversion":"1.0","topic":"x","pubsubname":"y","data":"hi"}`)
		e, err := ForDelivery(m, false)
		if err != nil {
			t.Fatal(err)
		}
		checkAttrs(t, e, map[string]any{"id": "e1", "topic": "t1", "pubsubname": "pubsub", "data": "hi", "time": "2026-11-29T10:00:00Z", "traceparent": tp})
	})
	t.Run("binary mode", func(t *testing.T) {
		m := m
		m.Header = http.Header{"Ce-Id": {"b1"}, "Ce-Source": {"/s"}, "Ce-Type": {"t"}, "Ce-Specversion": {"1.0"}, "Ce-Myext": {"v"}}
		m.ContentType, m.Body = "application/json", []byte(`{"k":"v"}`)
		e, err := ForDelivery(m, false)
		if err != nil {
			t.Fatal(err)
		}
		checkAttrs(t, e, map[string]any{"id": "b1", "source": "/s", "type": "t", "specversion": "1.0", "myext": "v",
			"datacontenttype": "application/json", "topic": "t1", "pubsubname": "pubsub"})
		if d, _ := json.Marshal(e["data"]); string(d) != `{"k":"v"}` {
			t.Errorf("data = %s", d)
		}
		if err := Validate(e); err != nil {
			t.Error(err)
		}
	})
	t.Run("plain body", func(t *testing.T) {
		m := m
		m.ContentType, m.Body = "text/plain", []byte("hello")
		e, err := ForDelivery(m, false)
		if err != nil {
			t.Fatal(err)
		}
		checkAttrs(t, e, map[string]any{"id": "m1", "source": "orders", "type": DaprEventType, "data": "hello",
			"datacontenttype": "text/plain", "time": "2026-11-29T10:00:00Z", "topic": "t1", "pubsubname": "pubsub"})
	})
	t.Run("broken structured", func(t *testing.T) {
		m := m
		m.ContentType, m.Body = "application/cloudevents+json", []byte(`[`)
		if _, err := ForDelivery(m, false); err == nil {
			t.Fatal("accepted")
		}
	})
}

func checkAttrs(t *testing.T, e Event, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if e[k] != v {
			t.Errorf("%s = %#v, want %#v", k, e[k], v)
		}
	}
}

// Marshal writes what encoding/json's Encoder (HTML escaping off) writes.
func TestMarshalMatchesEncodingJSON(t *testing.T) {
	strs := []string{"", "plain", "<a href=\"x\">&amp;</a>", "tab\there", "nl\n", "\x00\x1f", `back\slash`,
		"é ü 日本", "line\u2028sep\u2029", "bad \xff utf8", "\xe2\x80", strings.Repeat("x", 2048), "emoji 😀"}
	for i, s := range strs {
		e := Event{"id": s, "source": "s", s: "key " + s, "n": json.Number("12.50"), "nil": nil,
			"data": map[string]any{"k": s, "list": []any{s, 1.5, true}}, "z": []any{}}
		got, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(map[string]any(e)); err != nil {
			t.Fatal(err)
		}
		if string(got) != strings.TrimSuffix(want.String(), "\n") {
			t.Errorf("case %d (%q):\n got %s\nwant %s", i, s, got, want.String())
		}
	}
}
