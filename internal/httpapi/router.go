package httpapi

import (
	"crypto/subtle"
	"net/http"
	"strings"
)

// Router is an http.ServeMux whose own 404 and 405 answers are RFC 9457
// problems (a 405 keeps its Allow header).
type Router struct {
	mux *http.ServeMux
}

// NewRouter returns an empty Router.
func NewRouter() *Router { return &Router{mux: http.NewServeMux()} }

// Handle registers h for an http.ServeMux pattern ("POST /v1/publish/{topic}").
func (rt *Router) Handle(pattern string, h http.HandlerFunc) { rt.mux.HandleFunc(pattern, h) }

var probeMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// ServeHTTP routes r, answering unknown paths and methods with problems.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := rt.mux.Handler(r); pattern != "" {
		rt.mux.ServeHTTP(w, r)
		return
	}
	var allow []string
	for _, m := range probeMethods {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := rt.mux.Handler(probe); pattern != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		Problem(w, http.StatusMethodNotAllowed, "method-not-allowed", r.Method+" is not allowed on "+r.URL.Path)
		return
	}
	Problem(w, http.StatusNotFound, "not-found", "no endpoint at "+r.URL.Path)
}

// Bearer guards h with a token: the Bearer scheme is matched
// case-insensitively and the token compared in constant time. An empty
// token leaves h open.
func Bearer(token string, h http.HandlerFunc) http.HandlerFunc {
	if token == "" {
		return h
	}
	want := []byte(token)
	return func(w http.ResponseWriter, r *http.Request) {
		if !TokenMatches(r.Header.Get("Authorization"), want) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ferry"`)
			Problem(w, http.StatusUnauthorized, "unauthorized", "a valid Authorization: Bearer token is required")
			return
		}
		h(w, r)
	}
}

// TokenMatches reports whether an Authorization header carries want as a Bearer token.
func TokenMatches(header string, want []byte) bool {
	scheme, got, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), want) == 1
}
