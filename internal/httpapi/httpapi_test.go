package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestRouterAnswersProblems(t *testing.T) {
	rt := NewRouter()
	rt.Handle("POST /v1/publish/{topic}", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(202) })
	for _, c := range []struct {
		method, path string
		code         int
		allow        string
	}{
		{"POST", "/v1/publish/x", 202, ""},
		{"GET", "/v1/publish/x", 405, "POST"},
		{"POST", "/nope", 404, ""},
	} {
		rec := httptest.NewRecorder()
		rt.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, nil))
		if rec.Code != c.code || rec.Header().Get("Allow") != c.allow {
			t.Errorf("%s %s: %d Allow=%q, want %d %q", c.method, c.path, rec.Code, rec.Header().Get("Allow"), c.code, c.allow)
		}
		if c.code >= 400 {
			var p map[string]any
			if rec.Header().Get("Content-Type") != "application/problem+json" || json.Unmarshal(rec.Body.Bytes(), &p) != nil || p["status"] != float64(c.code) || !strings.HasPrefix(p["type"].(string), TypeBase) {
				t.Errorf("%s %s: not a problem: %s", c.method, c.path, rec.Body)
			}
		}
	}
}

func TestBearer(t *testing.T) {
	h := Bearer("s3cret", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	for hdr, want := range map[string]int{"Bearer s3cret": 200, "bearer s3cret": 200, "BEARER  s3cret ": 200, "Bearer wrong": 401, "s3cret": 401, "Basic s3cret": 401, "": 401} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set("Authorization", hdr)
		h(rec, req)
		if rec.Code != want {
			t.Errorf("Authorization %q: %d, want %d", hdr, rec.Code, want)
		}
		if want == 401 && rec.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("Authorization %q: no WWW-Authenticate", hdr)
		}
	}
	open := Bearer("", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	rec := httptest.NewRecorder()
	open(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 204 {
		t.Fatalf("no token: %d", rec.Code)
	}
}

func TestRetryAfterRoundsUp(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "1", time.Millisecond: "1", time.Second: "1", 1500 * time.Millisecond: "2"} {
		rec := httptest.NewRecorder()
		RetryAfter(rec, d)
		if got := rec.Header().Get("Retry-After"); got != want {
			t.Errorf("RetryAfter(%v) = %s, want %s", d, got, want)
		}
	}
}

// Seed corpora live in testdata/fuzz/<Name>/; `go test` runs them as plain tests.
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
		var req struct {
			From string `json:"from"`
		}
		if err := DecodeStrict(bytes.NewReader(data), &req); err == nil {
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
		if err := DecodeStrict(bytes.NewReader(data), &m); err == nil {
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
