package sidecar

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// Seed corpora live in testdata/fuzz/<Name>/; `go test` runs them as plain
// tests. To fuzz: go test -run '^$' -fuzz FuzzPublishHandler -fuzztime 30s ./sidecar/

// validHeaderValue is what net/http's server lets through as a header value:
// no control characters but tab. Requests the server would refuse are not
// the handler's problem.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// validHeaderName is an RFC 9110 token.
func validHeaderName(v string) bool {
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

func FuzzPublishHandler(f *testing.F) {
	f.Add("POST", "/v1/publish/orders", "order-1", true, "", false, "application/json", "Type", "order.created", []byte(`{"a":1}`))
	f.Add("POST", "/v1/publish/orders", "", false, "customer-7", true, "", "", "", []byte{})
	f.Add("GET", "/v1/publish/orders", "", false, "", false, "", "", "", []byte("x"))
	f.Add("POST", "/v1/publish/bad%20topic", "", false, "", false, "", "", "", []byte("x"))
	f.Add("POST", "/v1/publish/orders", "has space", true, "", false, "", "", "", []byte("x"))
	f.Add("POST", "/v1/publish/orders", "", true, "", false, "", "", "", []byte("x"))
	f.Add("POST", "/v1/publish/"+strings.Repeat("a", 129), "", false, "", false, "", "", "", []byte("x"))
	f.Add("POST", "/v1/publish/orders", "", false, "", false, "", "", "", bytes.Repeat([]byte("b"), 4097))

	cfg, err := LoadConfig(map[string]string{
		"FERRY_APP_ID":         "billing",
		"FERRY_REDIS_URL":      "redis://127.0.0.1:1/0", // nowhere: publish needs only the outbox
		"FERRY_OUTBOX_DIR":     f.TempDir(),
		"FERRY_MAX_BODY_BYTES": "4096",
		"HOSTNAME":             "billing-0",
	})
	if err != nil {
		f.Fatal(err)
	}
	sc, err := New(cfg, nil, nil, nil) // never Run: Redis is not needed to accept
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { sc.outbox.Close(); sc.rdb.Close() })
	h := sc.publishHandler()

	f.Fuzz(func(t *testing.T, method, path, idem string, hasIdem bool, ordering string, hasOrdering bool, contentType, ceName, ceValue string, body []byte) {
		req, err := http.NewRequest(method, "http://127.0.0.1"+path, bytes.NewReader(body))
		if err != nil || req.URL.Host != "127.0.0.1" {
			return // not a request a client could send
		}
		set := func(name, value string) bool {
			if !validHeaderName(name) || !validHeaderValue(value) {
				return false
			}
			req.Header.Set(name, value)
			return true
		}
		if hasIdem && !set("Idempotency-Key", idem) {
			return
		}
		if hasOrdering && !set("Ordering-Key", ordering) {
			return
		}
		if contentType != "" && !set("Content-Type", contentType) {
			return
		}
		if ceName != "" && !set("Ce-"+ceName, ceValue) {
			return
		}
		before := sc.outbox.Stats().Appends
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		after := sc.outbox.Stats().Appends

		code := rec.Code
		switch {
		case code >= 500:
			t.Fatalf("%s %q: %d %s", method, path, code, rec.Body)
		case code >= 300 && code < 400:
			// ServeMux's redirect to the cleaned path ("/v1//publish" …): nothing stored.
			if rec.Header().Get("Location") == "" {
				t.Fatalf("%s %q: %d without Location", method, path, code)
			}
		case code < 200:
			t.Fatalf("%s %q: %d", method, path, code)
		}
		if code != http.StatusAccepted {
			if after != before {
				t.Fatalf("%s %q answered %d but stored %d records", method, path, code, after-before)
			}
			if code >= 400 && rec.Header().Get("Content-Type") != "application/problem+json" {
				t.Fatalf("%d without a problem body: %q", code, rec.Header().Get("Content-Type"))
			}
			return
		}
		if after != before+1 {
			t.Fatalf("202 stored %d records, want exactly 1", after-before)
		}
		var resp publishResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
			t.Fatalf("202 body %q: %v", rec.Body, err)
		}
		wantTopic := strings.TrimPrefix(req.URL.Path, "/v1/publish/")
		if resp.Topic != wantTopic || !ValidTopic(resp.Topic) {
			t.Fatalf("202 for topic %q, path %q", resp.Topic, req.URL.Path)
		}
		if hasIdem {
			if resp.ID != idem {
				t.Fatalf("id %q, want the Idempotency-Key %q", resp.ID, idem)
			}
		} else if u, err := uuid.Parse(resp.ID); err != nil || u.Version() != 7 {
			t.Fatalf("generated id %q is not a UUIDv7", resp.ID)
		}

		// The one new record decodes to this topic, id and body; consume it
		// so that the outbox never fills up while fuzzing.
		entries, err := sc.outbox.Read(sc.outbox.Checkpoint(), 2, 0)
		if err != nil || len(entries) != 1 {
			t.Fatalf("read outbox: %d entries, %v; want the 1 new record", len(entries), err)
		}
		ev, err := decodeEvent(entries[0].Data)
		if err != nil {
			t.Fatalf("decode the stored record: %v", err)
		}
		if ev.Topic != resp.Topic || !bytes.Equal(ev.Body, body) {
			t.Fatalf("stored topic %q body %q, want %q %q", ev.Topic, ev.Body, resp.Topic, body)
		}
		fields := map[string]string{}
		for i := 0; i+1 < len(ev.Fields); i += 2 {
			fields[ev.Fields[i]] = ev.Fields[i+1]
		}
		wantCT := contentType
		if wantCT == "" {
			wantCT = "application/octet-stream"
		}
		if fields[fieldID] != resp.ID || fields[fieldContentType] != wantCT || fields[fieldSource] != "billing" {
			t.Fatalf("stored fields %q, want id %q, ct %q", ev.Fields, resp.ID, wantCT)
		}
		if hasOrdering && fields[headerPrefix+"Ordering-Key"] != ordering {
			t.Fatalf("stored Ordering-Key %q, want %q", fields[headerPrefix+"Ordering-Key"], ordering)
		}
		if err := sc.outbox.Commit(entries[0].Next); err != nil {
			t.Fatalf("commit: %v", err)
		}
	})
}

// referenceTopic is the DESIGN.md topic rule written as a loop.
func referenceTopic(s string) bool {
	if len(s) < 1 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || (c != '.' && c != '_' && c != '-')) {
			return false
		}
	}
	return true
}

func FuzzValidTopic(f *testing.F) {
	for _, s := range []string{"orders", "a", "", "-x", ".x", "a.b_c-d", "with space", "x\n", "ÿ", strings.Repeat("a", 128), strings.Repeat("a", 129)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := ValidTopic(s), referenceTopic(s); got != want {
			t.Fatalf("ValidTopic(%q) = %v, reference says %v", s, got, want)
		}
	})
}

var keyReference = regexp.MustCompile(`^[\x21-\x7e]{1,255}$`)

func FuzzValidKey(f *testing.F) {
	for _, s := range []string{"order-42", "", " ", "a b", "~!", "\x7f", "é", strings.Repeat("k", 255), strings.Repeat("k", 256)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// The regexp works on runes: only compare where s is ASCII, and
		// require any non-ASCII byte to be refused.
		ascii := true
		for i := 0; i < len(s); i++ {
			if s[i] >= 0x80 {
				ascii = false
			}
		}
		got := ValidKey(s)
		if !ascii {
			if got {
				t.Fatalf("ValidKey(%q) accepts non-ASCII", s)
			}
			return
		}
		if want := keyReference.MatchString(s); got != want {
			t.Fatalf("ValidKey(%q) = %v, reference says %v", s, got, want)
		}
	})
}

func FuzzLoadConfig(f *testing.F) {
	f.Add("billing", "redis://:s3cret-password@127.0.0.1:6379/0", "orders=/events/orders", "1048576", "10s", "0.5", "info", "127.0.0.1:7400")
	f.Add("", "http://x", "orders", "-1", "ten", "2", "loud", "")
	f.Add("bad app", "redis://%zz", "a=b,,=/c", "1e9", "-5s", "NaN", "DEBUG", ":0")
	f.Add("x", "rediss://u:p@h/0", "a=/b,a=/c", "99999999999999999999", "0", "0", "warn", "127.0.0.1:0")
	f.Fuzz(func(t *testing.T, appID, redisURL, subs, maxBody, timeout, ratio, level, listen string) {
		env := map[string]string{
			"FERRY_APP_ID":                appID,
			"FERRY_REDIS_URL":             redisURL,
			"FERRY_SUBSCRIPTIONS":         subs,
			"FERRY_MAX_BODY_BYTES":        maxBody,
			"FERRY_DELIVERY_TIMEOUT":      timeout,
			"FERRY_BREAKER_FAILURE_RATIO": ratio,
			"FERRY_LOG_LEVEL":             level,
			"FERRY_LISTEN_ADDR":           listen,
			"HOSTNAME":                    "fuzz-0",
		}
		_, err := LoadConfig(env)
		if err == nil {
			return
		}
		var leaves []error
		var walk func(error)
		walk = func(e error) {
			if j, ok := e.(interface{ Unwrap() []error }); ok {
				for _, e := range j.Unwrap() {
					walk(e)
				}
				return
			}
			leaves = append(leaves, e)
		}
		walk(err)
		for _, e := range leaves {
			var ce *ConfigError
			if !errors.As(e, &ce) || !strings.HasPrefix(ce.Var, EnvPrefix) || !strings.HasPrefix(e.Error(), EnvPrefix) {
				t.Fatalf("error %q (%T) does not name a FERRY_ variable", e, e)
			}
		}
		// The Redis password never shows in an error.
		if u, perr := url.Parse(redisURL); perr == nil && u.User != nil {
			if pw, ok := u.User.Password(); ok && len(pw) >= 8 {
				others := appID + subs + maxBody + timeout + ratio + level + listen
				if strings.Contains(err.Error(), pw) && !strings.Contains(others, pw) {
					t.Fatalf("error shows the Redis password: %v", err)
				}
			}
		}
	})
}

func FuzzDecodeStrict(f *testing.F) {
	for _, s := range []string{
		`{"from":"2024-01-01T00:00:00Z"}`, `{"from":"0"}`, `{}`, ` {"from":"1-0"} `,
		`{"from":"a","from":"b"}`, `{"from":"a","FROM":"b"}`, `{"from":"a"}{}`, `{"from":"a"} x`,
		`null`, `[]`, `"x"`, `1`, ``, `{"other":1}`, `{"from":1}`, `{"a":{"b":1,"b":2}}`,
		`{"from":"a","x":{"y":[1,{"z":1,"Z":2}]}}`, strings.Repeat("[", 100),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var req replayRequest
		if err := decodeStrict(bytes.NewReader(data), &req); err == nil {
			// Accepted ⇒ one valid JSON object whose only key is "from",
			// given at most once (in any case).
			if !json.Valid(data) || bytes.TrimSpace(data)[0] != '{' {
				t.Fatalf("accepted %q: not one JSON object", data)
			}
			if n := topLevelKeys(t, data); n > 1 {
				t.Fatalf("accepted %q with %d keys", data, n)
			}
		}
		var m map[string]any
		if err := decodeStrict(bytes.NewReader(data), &m); err == nil {
			if !json.Valid(data) || bytes.TrimSpace(data)[0] != '{' {
				t.Fatalf("accepted %q: not one JSON object", data)
			}
			if n := topLevelKeys(t, data); n != len(m) {
				t.Fatalf("accepted %q: %d keys in the text, %d decoded: a duplicate got through", data, n, len(m))
			}
		}
	})
}

// topLevelKeys counts the keys of the JSON object in data as written.
func topLevelKeys(t *testing.T, data []byte) int {
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil {
		t.Fatalf("token: %v", err)
	}
	n := 0
	for dec.More() {
		if _, err := dec.Token(); err != nil { // the key
			t.Fatalf("token: %v", err)
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatalf("value: %v", err)
		}
		n++
	}
	return n
}
