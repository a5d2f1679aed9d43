package tracing

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// getenv is os.LookupEnv minus blank values: OpenTelemetry treats an empty
// variable as unset, and so does ferry.
func getenv(name string) (string, bool) {
	v := strings.TrimSpace(os.Getenv(name))
	return v, v != ""
}

// VarError is an invalid OTEL_* variable. Its message names the variable
// and never repeats a value that may hold a secret (headers).
type VarError struct {
	Var string
	Err error
}

func (e *VarError) Error() string { return e.Var + ": " + e.Err.Error() }
func (e *VarError) Unwrap() error { return e.Err }

func varErr(name, format string, args ...any) error {
	return &VarError{Var: name, Err: fmt.Errorf(format, args...)}
}

// envSettings is what ferry decides from the environment itself; the rest
// (endpoint paths, headers, TLS, timeouts, sampler, batch sizes, limits,
// resource) is read by the SDK and the exporter, after checkEnv has made sure
// they will not silently ignore a bad value.
type envSettings struct {
	on       bool   // an endpoint is set, the SDK is not disabled and the exporter is otlp
	endpoint string // the variable that enabled tracing, for the start log line
}

// readEnv decides whether tracing is on and checks every OTEL_* value the
// SDK and exporter would otherwise only complain about on stderr and then
// ignore.
func readEnv() (envSettings, error) {
	var s envSettings
	if v, ok := getenv("OTEL_SDK_DISABLED"); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return s, varErr("OTEL_SDK_DISABLED", "want true or false, got %q", v)
		}
		if b {
			return s, nil
		}
	}
	if v, ok := getenv("OTEL_TRACES_EXPORTER"); ok {
		switch strings.ToLower(v) {
		case "otlp":
		case "none":
			return s, nil
		default:
			return s, varErr("OTEL_TRACES_EXPORTER", "ferry exports traces with otlp only (or none), got %q", v)
		}
	}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
		v, ok := getenv(name)
		if !ok {
			continue
		}
		if err := checkEndpoint(v); err != nil {
			return s, &VarError{Var: name, Err: err}
		}
		if s.endpoint == "" {
			s.endpoint = name
		}
	}
	if s.endpoint == "" {
		return s, nil // no endpoint: tracing is off, whatever else is set
	}
	s.on = true
	return s, checkExporterEnv()
}

// checkEndpoint accepts what the OTLP/HTTP exporter can send to: an
// absolute http or https URL with a host.
func checkEndpoint(v string) error {
	u, err := url.Parse(v)
	if err != nil {
		return errors.New("not a URL")
	}
	if s := strings.ToLower(u.Scheme); s != "http" && s != "https" {
		return fmt.Errorf("want an http:// or https:// URL (OTLP over HTTP, port 4318 by convention), got scheme %q", u.Scheme)
	}
	if u.Host == "" {
		return errors.New("URL has no host")
	}
	if u.User != nil {
		return errors.New("URL must not carry credentials; use OTEL_EXPORTER_OTLP_HEADERS")
	}
	return nil
}

// checkExporterEnv checks every OTEL_* value the SDK would only log and
// ignore. It is one list of checks, read top to bottom, on purpose.
func checkExporterEnv() error {
	for _, name := range []string{"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"} {
		if v, ok := getenv(name); ok {
			switch v {
			case "http/protobuf", "http/json":
			case "grpc":
				return varErr(name, "grpc is not supported: ferry exports OTLP over HTTP; use http/protobuf and the collector's HTTP port (4318)")
			default:
				return varErr(name, "want http/protobuf or http/json, got %q", v)
			}
		}
	}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_COMPRESSION", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"} {
		if v, ok := getenv(name); ok && v != "gzip" && v != "none" {
			return varErr(name, "want gzip or none, got %q", v)
		}
	}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_INSECURE", "OTEL_EXPORTER_OTLP_TRACES_INSECURE"} {
		if v, ok := getenv(name); ok {
			if _, err := strconv.ParseBool(v); err != nil {
				return varErr(name, "want true or false, got %q", v)
			}
		}
	}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"} {
		if v, ok := getenv(name); ok {
			if err := checkHeaders(v); err != nil {
				return &VarError{Var: name, Err: err}
			}
		}
	}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_CERTIFICATE", "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE"} {
		if v, ok := getenv(name); ok {
			pem, err := os.ReadFile(v)
			if err != nil {
				return &VarError{Var: name, Err: fmt.Errorf("read CA file: %w", err)}
			}
			if !x509.NewCertPool().AppendCertsFromPEM(pem) {
				return varErr(name, "no PEM certificate in %s", v)
			}
		}
	}
	for _, p := range [][2]string{
		{"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_KEY"},
		{"OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY"},
	} {
		c, okc := getenv(p[0])
		k, okk := getenv(p[1])
		switch {
		case okc && okk:
			if _, err := tls.LoadX509KeyPair(c, k); err != nil {
				return &VarError{Var: p[0], Err: fmt.Errorf("load client certificate and key: %w", err)}
			}
		case okc:
			return varErr(p[1], "must be set together with %s", p[0])
		case okk:
			return varErr(p[0], "must be set together with %s", p[1])
		}
	}
	// Durations in milliseconds and counts: the SDK falls back to its default
	// on a bad value, ferry refuses to start.
	for _, name := range []string{
		"OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
		"OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_EXPORT_TIMEOUT",
		"OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
		"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_ATTRIBUTE_COUNT_LIMIT",
		"OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
		"OTEL_SPAN_EVENT_COUNT_LIMIT", "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT",
		"OTEL_SPAN_LINK_COUNT_LIMIT", "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT",
	} {
		if v, ok := getenv(name); ok {
			if n, err := strconv.Atoi(v); err != nil || n < 0 {
				return varErr(name, "want a whole number ≥ 0, got %q", v)
			}
		}
	}
	return checkSampler()
}

// checkHeaders follows the exporter's parser (comma-separated key=value,
// values URL-encoded) and names the entry by position, never by value:
// headers carry API keys.
func checkHeaders(v string) error {
	for i, h := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(h, "=")
		if !ok {
			return fmt.Errorf("entry %d has no '='", i+1)
		}
		k = strings.TrimSpace(k)
		if k == "" || strings.IndexFunc(k, func(r rune) bool { return !isTokenChar(r) }) >= 0 {
			return fmt.Errorf("entry %d has an invalid header name", i+1)
		}
		if _, err := url.PathUnescape(val); err != nil {
			return fmt.Errorf("entry %d (%s) has a badly escaped value", i+1, k)
		}
	}
	return nil
}

func isTokenChar(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	}
	return strings.ContainsRune("!#$%&'*+-.^_`|~", r)
}

// checkSampler accepts what the SDK's samplerFromEnv accepts; it would
// otherwise fall back to parentbased_always_on with only a stderr line.
func checkSampler() error {
	v, ok := getenv("OTEL_TRACES_SAMPLER")
	if !ok {
		return nil
	}
	ratio := false
	switch strings.ToLower(v) {
	case "always_on", "always_off", "parentbased_always_on", "parentbased_always_off":
	case "traceidratio", "parentbased_traceidratio":
		ratio = true
	default:
		return varErr("OTEL_TRACES_SAMPLER", "want always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio, got %q", v)
	}
	arg, ok := getenv("OTEL_TRACES_SAMPLER_ARG")
	if !ok || !ratio {
		return nil
	}
	f, err := strconv.ParseFloat(arg, 64)
	if err != nil || f < 0 || f > 1 {
		return varErr("OTEL_TRACES_SAMPLER_ARG", "want a ratio from 0 to 1, got %q", arg)
	}
	return nil
}
