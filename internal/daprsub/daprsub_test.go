package daprsub

import (
	"errors"
	"strings"
	"testing"

	"github.com/ferry-sidecar/ferry/internal/cloudevent"
)

var opts = ParseOptions{PubsubName: "pubsub"}

func TestParse(t *testing.T) {
	body := `[
	 {"pubsubname":"pubsub","topic":"orders","route":"/orders"},
	 {"pubsubname":"pubsub","topic":"invoices","routes":{"rules":[{"match":"event.type == \"big\"","path":"big"},{"match":"  ","path":"/always"}],"default":"/inv"},
	  "metadata":{"rawPayload":"true","other":"x"},"deadLetterTopic":"invoices-dead","bulkSubscribe":{"enabled":true},"priority":3},
	 {"pubsubname":"pubsub","topic":"v1and2","route":"/old","routes":{"rules":[{"match":"event.id == \"a\"","path":"/a"}]}},
	 {"pubsubname":"pubsub","topic":"both","route":"/old","routes":{"default":"/new"}}
	]`
	subs, err := Parse([]byte(body), opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(subs) != 4 {
		t.Fatalf("%d subscriptions", len(subs))
	}
	paths := func(s Subscription) string {
		var p []string
		for _, r := range s.Rules {
			p = append(p, r.Match+"=>"+r.Path)
		}
		return strings.Join(p, ";")
	}
	want := []string{
		"=>/orders",
		`event.type == "big"=>/big;=>/always;=>/inv`,
		`event.id == "a"=>/a;=>/old`,
		"=>/new",
	}
	for i, w := range want {
		if got := paths(subs[i]); got != w {
			t.Errorf("subscription %d rules = %s, want %s", i, got, w)
		}
	}
	inv := subs[1]
	if !inv.RawPayload || inv.DeadLetterTopic != "invoices-dead" || inv.Metadata["other"] != "x" || inv.PubsubName != "pubsub" {
		t.Errorf("invoices = %+v", inv)
	}
	if subs[0].RawPayload || subs[0].DeadLetterTopic != "" {
		t.Errorf("orders = %+v", subs[0])
	}

	for _, empty := range []string{"", "  \n", "[]"} {
		subs, err := Parse([]byte(empty), opts)
		if err != nil || len(subs) != 0 {
			t.Errorf("Parse(%q) = %v, %v", empty, subs, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	noDots := ParseOptions{PubsubName: "pubsub", ValidTopic: func(s string) bool { return s != "" && !strings.Contains(s, "/") }}
	tests := []struct {
		name, body string
		index      int
		contains   string
	}{
		{"object", `{"topic":"a"}`, -1, "not a JSON array: got a JSON object, want an array"},
		{"broken", `[{"topic":`, -1, "not a JSON array: unexpected EOF"},
		{"trailing", `[] []`, -1, "data after the JSON array"},
		{"entry not object", `["a"]`, 0, "not a subscription object: got a JSON string, want an object"},
		{"metadata bool", `[{"pubsubname":"pubsub","topic":"a","route":"/a","metadata":{"rawPayload":true}}]`, 0, "metadata: got a JSON bool, want a string"},
		{"rawPayload not bool", `[{"pubsubname":"pubsub","topic":"a","route":"/a","metadata":{"rawPayload":"yes"}}]`, 0, `metadata.rawPayload "yes" is not a boolean`},
		{"no topic", `[{"pubsubname":"pubsub","route":"/a"}]`, 0, "topic is empty"},
		{"bad topic", `[{"pubsubname":"pubsub","topic":"a/b","route":"/a"}]`, 0, "not a valid ferry topic name"},
		{"bad dead letter topic", `[{"pubsubname":"pubsub","topic":"a","route":"/a","deadLetterTopic":"x/y"}]`, 0, `deadLetterTopic "x/y"`},
		{"other pubsub", `[{"pubsubname":"pubsub","topic":"a","route":"/a"},{"pubsubname":"kafka","topic":"b","route":"/b"}]`, 1, `pubsubname "kafka" is not FERRY_PUBSUB_NAME "pubsub"`},
		{"no pubsub", `[{"topic":"b","route":"/b"}]`, 0, `pubsubname "" is not`},
		{"duplicate", `[{"pubsubname":"pubsub","topic":"a","route":"/a"},{"pubsubname":"pubsub","topic":"a","route":"/b"}]`, 1, "already subscribed by entry 0"},
		{"no route", `[{"pubsubname":"pubsub","topic":"a"}]`, 0, "no route"},
		{"rule without path", `[{"pubsubname":"pubsub","topic":"a","routes":{"rules":[{"match":"true"}]}}]`, 0, "routes.rules[0] has no path"},
		{"rule does not compile", `[{"pubsubname":"pubsub","topic":"a","routes":{"rules":[{"match":"true","path":"/x"},{"match":"event.type ==","path":"/y"}]}}]`, 0, `routes.rules[1] match "event.type ==" does not compile`},
		{"rule type error", `[{"pubsubname":"pubsub","topic":"a","routes":{"rules":[{"match":"1 + \"a\"","path":"/x"}]}}]`, 0, "does not compile"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.body), noDots)
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v", err)
			}
			if pe.Index != tt.index || !strings.Contains(err.Error(), tt.contains) {
				t.Fatalf("err = %q (index %d), want index %d containing %q", err, pe.Index, tt.index, tt.contains)
			}
		})
	}
}

func TestRoute(t *testing.T) {
	body := `[{"pubsubname":"pubsub","topic":"orders","routes":{"rules":[
	  {"match":"event.type == \"order.big\" && event.data.amount > 1000","path":"/big"},
	  {"match":"has(event.data.vip) && event.data.vip","path":"/vip"},
	  {"match":"event.source.startsWith(\"eu-\")","path":"/eu"}
	]}},
	{"pubsubname":"pubsub","topic":"plain","route":"/plain"},
	{"pubsubname":"pubsub","topic":"typed","routes":{"rules":[{"match":"event.data.amount","path":"/x"}]}},
	{"pubsubname":"pubsub","topic":"other","routes":{"rules":[{"match":"somethingelse == 1","path":"/x"}]}}]`
	subs, err := Parse([]byte(body), opts)
	if err != nil {
		t.Fatal(err)
	}
	orders := subs[0]
	ev := func(s string) cloudevent.Event {
		e, err := cloudevent.Decode([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	tests := []struct {
		event string
		path  string
		err   error
	}{
		{`{"type":"order.big","source":"us-1","data":{"amount":2500}}`, "/big", nil},
		{`{"type":"order.big","source":"us-1","data":{"amount":999.5,"vip":true}}`, "/vip", nil},
		{`{"type":"order.small","source":"eu-west","data":{"amount":1}}`, "/eu", nil},
		{`{"type":"order.small","source":"us-1","data":{"amount":1}}`, "", ErrNoRoute},
	}
	for _, tt := range tests {
		got, err := orders.Route(ev(tt.event))
		if got != tt.path || !errors.Is(err, tt.err) {
			t.Errorf("Route(%s) = %q, %v; want %q, %v", tt.event, got, err, tt.path, tt.err)
		}
	}

	// A missing attribute fails the rule, as it does in Dapr.
	var re *RouteError
	if _, err := orders.Route(ev(`{"type":"order.big","source":"us-1"}`)); !errors.As(err, &re) || re.Rule != orders.Rules[0].Match {
		t.Errorf("missing data: err = %v", err)
	}
	if _, err := subs[2].Route(ev(`{"data":{"amount":1}}`)); !errors.As(err, &re) || !strings.Contains(err.Error(), "not a boolean") {
		t.Errorf("non-boolean: err = %v", err)
	}
	if _, err := subs[3].Route(ev(`{}`)); !errors.As(err, &re) {
		t.Errorf("undeclared name: err = %v", err)
	}
	if p, err := subs[1].Route(ev(`{}`)); p != "/plain" || err != nil {
		t.Errorf("plain: %q, %v", p, err)
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		status int
		body   string
		want   Outcome
	}{
		{200, "", Success},
		{204, "", Success},
		{200, `{"status":"SUCCESS"}`, Success},
		{200, `{"status":""}`, Success},
		{200, `{}`, Success},
		{200, `OK`, Success},
		{200, `{"status":5}`, Success},
		{200, `null`, Success},
		{201, `{"status":"RETRY"}`, Retry},
		{200, `{"status":"DROP"}`, Drop},
		{200, `{"status":"drop"}`, Retry},
		{200, `{"status":"LATER"}`, Retry},
		{200, `{"Status":"DROP"}`, Drop}, // encoding/json matches names case-insensitively, for Dapr too
		{404, "", Drop},
		{404, `{"status":"SUCCESS"}`, Drop},
		{400, "", Retry},
		{303, "nil content", Retry},
		{410, "", Retry},
		{500, `{"status":"SUCCESS"}`, Retry},
		{503, "", Retry},
	}
	for _, tt := range tests {
		got, detail := Classify(tt.status, []byte(tt.body))
		if got != tt.want || detail == "" {
			t.Errorf("Classify(%d, %q) = %v %q, want %v", tt.status, tt.body, got, detail, tt.want)
		}
	}
}
