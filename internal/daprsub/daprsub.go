package daprsub

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"reflect"
	"strconv"
	"strings"

	"github.com/google/cel-go/cel"

	"github.com/ferry-sidecar/ferry/internal/cloudevent"
)

// Subscription is one checked entry of the app's /dapr/subscribe answer.
type Subscription struct {
	// PubsubName is the entry's pubsubname (always the configured one).
	PubsubName string
	// Topic is the subscribed topic.
	Topic string
	// Rules are tried in order; the last one may have no Match (the
	// default route). Never empty.
	Rules []Rule
	// DeadLetterTopic is where ferry also publishes this app's dead letters
	// of the topic; empty for none.
	DeadLetterTopic string
	// RawPayload is metadata.rawPayload: deliver the stored body wrapped in a
	// data_base64 CloudEvent instead of as a CloudEvent.
	RawPayload bool
	// Metadata is the entry's metadata as the app sent it.
	Metadata map[string]string
}

// Rule is one routing rule: events for which Match is true go to Path.
type Rule struct {
	// Match is the CEL expression as the app wrote it, trimmed; empty for
	// the default route.
	Match string
	// Path is the app path, starting with "/".
	Path string

	program cel.Program
}

// ParseOptions says what the answer must agree with.
type ParseOptions struct {
	// PubsubName is FERRY_PUBSUB_NAME; every entry must name it.
	PubsubName string
	// ValidTopic checks a topic name (and a deadLetterTopic); nil accepts
	// any non-empty name.
	ValidTopic func(string) bool
}

// ParseError says which entry of the answer is wrong and why.
type ParseError struct {
	// Index is the entry's position in the answer, or -1 for the answer as
	// a whole.
	Index int
	// Topic is the entry's topic, when it has one.
	Topic string
	// Reason says what is wrong.
	Reason string
}

func (e *ParseError) Error() string {
	switch {
	case e.Index < 0:
		return "dapr/subscribe answer: " + e.Reason
	case e.Topic != "":
		return fmt.Sprintf("dapr/subscribe entry %d (topic %q): %s", e.Index, e.Topic, e.Reason)
	default:
		return fmt.Sprintf("dapr/subscribe entry %d: %s", e.Index, e.Reason)
	}
}

type subscriptionJSON struct {
	PubsubName      string            `json:"pubsubname"`
	Topic           string            `json:"topic"`
	DeadLetterTopic string            `json:"deadLetterTopic"`
	Metadata        map[string]string `json:"metadata"`
	Route           string            `json:"route"`
	Routes          struct {
		Rules []struct {
			Match string `json:"match"`
			Path  string `json:"path"`
		} `json:"rules"`
		Default string `json:"default"`
	} `json:"routes"`
}

// Parse reads and checks a /dapr/subscribe answer and compiles its rules.
// An empty body is no subscriptions, as for Dapr.
//
// One function on purpose: it checks each entry against all the others
// (duplicate topics, the pub/sub name) while it reads them.
func Parse(body []byte, opts ParseOptions) ([]Subscription, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, nil
	}
	var raw []json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&raw); err != nil {
		return nil, &ParseError{Index: -1, Reason: "not a JSON array: " + jsonReason(err)}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, &ParseError{Index: -1, Reason: "data after the JSON array"}
	}
	valid := opts.ValidTopic
	if valid == nil {
		valid = func(s string) bool { return s != "" }
	}
	subs := make([]Subscription, 0, len(raw))
	seen := make(map[string]int, len(raw))
	for i, r := range raw {
		var sj subscriptionJSON
		if err := json.Unmarshal(r, &sj); err != nil {
			return nil, &ParseError{Index: i, Reason: "not a subscription object: " + jsonReason(err)}
		}
		fail := func(format string, args ...any) error {
			return &ParseError{Index: i, Topic: sj.Topic, Reason: fmt.Sprintf(format, args...)}
		}
		if sj.Topic == "" {
			return nil, fail("topic is empty")
		}
		if !valid(sj.Topic) {
			return nil, fail("topic is not a valid ferry topic name")
		}
		if sj.PubsubName != opts.PubsubName {
			return nil, fail("pubsubname %q is not FERRY_PUBSUB_NAME %q", sj.PubsubName, opts.PubsubName)
		}
		if j, dup := seen[sj.Topic]; dup {
			return nil, fail("topic already subscribed by entry %d", j)
		}
		seen[sj.Topic] = i
		if sj.DeadLetterTopic != "" && !valid(sj.DeadLetterTopic) {
			return nil, fail("deadLetterTopic %q is not a valid ferry topic name", sj.DeadLetterTopic)
		}
		raw := false
		if v := sj.Metadata["rawPayload"]; v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, fail("metadata.rawPayload %q is not a boolean", v)
			}
			raw = b
		}
		s := Subscription{PubsubName: sj.PubsubName, Topic: sj.Topic, DeadLetterTopic: sj.DeadLetterTopic, RawPayload: raw, Metadata: sj.Metadata}
		for k, rule := range sj.Routes.Rules {
			if rule.Path == "" {
				return nil, fail("routes.rules[%d] has no path", k)
			}
			match := strings.TrimSpace(rule.Match)
			r := Rule{Match: match, Path: cleanPath(rule.Path)}
			if match != "" {
				prg, err := compile(match)
				if err != nil {
					return nil, fail("routes.rules[%d] match %q does not compile: %v", k, match, err)
				}
				r.program = prg
			}
			s.Rules = append(s.Rules, r)
		}
		switch {
		case sj.Routes.Default != "":
			s.Rules = append(s.Rules, Rule{Path: cleanPath(sj.Routes.Default)})
		case sj.Route != "":
			s.Rules = append(s.Rules, Rule{Path: cleanPath(sj.Route)})
		}
		if len(s.Rules) == 0 {
			return nil, fail("no route: set route, routes.default or routes.rules")
		}
		subs = append(subs, s)
	}
	return subs, nil
}

// cleanPath is what Dapr's HTTP app channel does with a route: path.Clean
// and a leading "/".
func cleanPath(p string) string {
	c := path.Clean(p)
	if c == "." {
		return "/"
	}
	if !strings.HasPrefix(c, "/") {
		c = "/" + c
	}
	return c
}

// maxDeclarations bounds the compile loop: each round declares at least one
// more variable.
const maxDeclarations = 64

// compile is Dapr's pkg/expr Expr.DecodeString: compile, declare every
// undeclared reference as a dynamic variable, compile again.
func compile(expr string) (cel.Program, error) {
	const undeclared = "undeclared reference to '"
	var vars []cel.EnvOption
	declared := map[string]bool{}
	for range maxDeclarations {
		env, err := cel.NewEnv(vars...)
		if err != nil {
			return nil, fmt.Errorf("create cel environment: %w", err)
		}
		ast, iss := env.Compile(expr)
		if iss.Err() == nil {
			prg, err := env.Program(ast)
			if err != nil {
				return nil, fmt.Errorf("plan cel program: %w", err)
			}
			return prg, nil
		}
		added := false
		for _, e := range iss.Errors() {
			name, ok := strings.CutPrefix(e.Message, undeclared)
			if !ok {
				return nil, iss.Err()
			}
			name, _, _ = strings.Cut(name, "'")
			if !declared[name] {
				declared[name] = true
				vars = append(vars, cel.Variable(name, cel.DynType))
				added = true
			}
		}
		if !added {
			return nil, iss.Err()
		}
	}
	return nil, fmt.Errorf("more than %d undeclared names", maxDeclarations)
}

// ErrNoRoute is returned by Route when no rule matches: Dapr drops the
// event; ferry dead-letters it with reason dropped.
var ErrNoRoute = errors.New("no routing rule matches the event")

// RouteError is a rule that failed on an event: it did not evaluate (a
// missing attribute, a type mismatch) or did not give a boolean.
type RouteError struct {
	// Rule is the rule's Match expression.
	Rule string
	Err  error
}

func (e *RouteError) Error() string { return fmt.Sprintf("routing rule %q: %v", e.Rule, e.Err) }
func (e *RouteError) Unwrap() error { return e.Err }

// Route returns the path of the first rule whose Match is true for the
// event (a rule without Match always matches), ErrNoRoute when none does,
// or a *RouteError when a rule fails on the event. The event is what the
// app receives (cloudevent.ForDelivery); the rules see it as variable
// event, numbers as float64, as Dapr's json.Unmarshal gives them.
func (s *Subscription) Route(e cloudevent.Event) (string, error) {
	var vars map[string]any
	for _, r := range s.Rules {
		if r.program == nil {
			return r.Path, nil
		}
		if vars == nil {
			vars = map[string]any{"event": plain(map[string]any(e))}
		}
		out, _, err := r.program.Eval(vars)
		if err != nil {
			return "", &RouteError{Rule: r.Match, Err: err}
		}
		b, ok := out.Value().(bool)
		if !ok {
			return "", &RouteError{Rule: r.Match, Err: fmt.Errorf("result is %s, not a boolean", out.Type().TypeName())}
		}
		if b {
			return r.Path, nil
		}
	}
	return "", ErrNoRoute
}

// plain turns json.Number into float64, deeply, as json.Unmarshal would
// have decoded it.
func plain(v any) any {
	switch x := v.(type) {
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return x.String()
		}
		return f
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, v := range x {
			m[k] = plain(v)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, v := range x {
			s[i] = plain(v)
		}
		return s
	default:
		return v
	}
}

func jsonReason(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		want := "a JSON value"
		if te.Type != nil {
			switch te.Type.Kind() {
			case reflect.String:
				want = "a string"
			case reflect.Map, reflect.Struct:
				want = "an object"
			case reflect.Slice:
				want = "an array"
			}
		}
		if te.Field != "" {
			return fmt.Sprintf("%s: got a JSON %s, want %s", te.Field, te.Value, want)
		}
		return fmt.Sprintf("got a JSON %s, want %s", te.Value, want)
	}
	if errors.Is(err, io.EOF) {
		return "empty body"
	}
	return err.Error()
}
