package tracing

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// scope is the instrumentation scope of every span ferry makes.
const scope = "github.com/ferry-sidecar/ferry"

// Settings are what ferry knows about itself; everything about where and
// how to export comes from the OTEL_* variables.
type Settings struct {
	// ServiceName is service.name unless OTEL_SERVICE_NAME or a service.name
	// in OTEL_RESOURCE_ATTRIBUTES says otherwise: FERRY_APP_ID.
	ServiceName string
	// ServiceVersion is service.version and the scope version; empty ⇒ not set.
	ServiceVersion string
	// InstanceID is service.instance.id (the consumer name, HOSTNAME);
	// empty ⇒ not set.
	InstanceID string
	// Logger gets the start line and export errors (at most one line per
	// errorEvery); nil ⇒ discard.
	Logger *slog.Logger
}

// Tracer makes ferry's spans. A nil *Tracer, or one built with no OTLP
// endpoint set, is off: every method returns at once, allocates nothing and
// starts nothing.
type Tracer struct {
	provider *sdktrace.TracerProvider // nil when off
	tracer   trace.Tracer
}

// New builds the tracer from the OTEL_* variables. With neither
// OTEL_EXPORTER_OTLP_ENDPOINT nor OTEL_EXPORTER_OTLP_TRACES_ENDPOINT set (or
// with OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none) it returns an
// off Tracer and creates no exporter. An invalid value is a *VarError
// naming the variable; ferry exits 2 on it.
//
// A Tracer that is on installs the process-wide OpenTelemetry error handler
// and logger, so that the SDK's complaints reach Settings.Logger: ferry
// makes one Tracer per process.
func New(ctx context.Context, s Settings) (*Tracer, error) {
	env, err := readEnv()
	if err != nil {
		return nil, err
	}
	if !env.on {
		return &Tracer{}, nil
	}
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	attrs := []resource.Option{resource.WithSchemaURL(semconv.SchemaURL)}
	if s.ServiceName != "" {
		attrs = append(attrs, resource.WithAttributes(semconv.ServiceName(s.ServiceName)))
	}
	if s.ServiceVersion != "" {
		attrs = append(attrs, resource.WithAttributes(semconv.ServiceVersion(s.ServiceVersion)))
	}
	if s.InstanceID != "" {
		attrs = append(attrs, resource.WithAttributes(semconv.ServiceInstanceID(s.InstanceID)))
	}
	// Later options win: the variables override ferry's defaults.
	attrs = append(attrs, resource.WithTelemetrySDK(), resource.WithFromEnv())
	res, err := resource.New(ctx, attrs...)
	if err != nil {
		return nil, &VarError{Var: "OTEL_RESOURCE_ATTRIBUTES", Err: err}
	}
	// The exporter reads the endpoint, protocol, headers, TLS files,
	// compression and timeout itself; readEnv has checked them.
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("create otlp exporter: %w", err)
	}
	// The SDK's own complaints (failed exports, dropped spans) go to ferry's
	// log instead of the standard logger on stderr.
	otel.SetErrorHandler(newErrorLog(log, errorEvery))
	otel.SetLogger(logr.FromSlogHandler(log.Handler()))
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithBatcher(exp), // OTEL_BSP_* apply; the sampler comes from OTEL_TRACES_SAMPLER
	)
	var tracerOpts []trace.TracerOption
	tracerOpts = append(tracerOpts, trace.WithSchemaURL(semconv.SchemaURL))
	if s.ServiceVersion != "" {
		tracerOpts = append(tracerOpts, trace.WithInstrumentationVersion(s.ServiceVersion))
	}
	log.Info("tracing on", "endpoint_from", env.endpoint, "service_name", serviceName(res))
	return &Tracer{provider: tp, tracer: tp.Tracer(scope, tracerOpts...)}, nil
}

func serviceName(res *resource.Resource) string {
	v, _ := res.Set().Value(semconv.ServiceNameKey)
	return v.AsString()
}

// Enabled reports whether spans are made and exported.
func (t *Tracer) Enabled() bool { return t != nil && t.provider != nil }

// Shutdown exports the spans still buffered and stops the exporter; call it
// after the parts that make spans have stopped, within the shutdown budget.
// An off Tracer returns nil at once.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if !t.Enabled() {
		return nil
	}
	if err := t.provider.Shutdown(ctx); err != nil {
		return fmt.Errorf("shut down tracing: %w", err)
	}
	return nil
}

// errorEvery bounds export error lines: a collector that is down would
// otherwise add one line per batch (every OTEL_BSP_SCHEDULE_DELAY).
const errorEvery = 30 * time.Second

// errorLog is the OpenTelemetry error handler: a warning, then at most one
// line per interval with the count of the errors it left out.
type errorLog struct {
	log   *slog.Logger
	every time.Duration

	mu      sync.Mutex
	last    time.Time
	skipped int
}

func newErrorLog(log *slog.Logger, every time.Duration) *errorLog {
	return &errorLog{log: log, every: every}
}

// Handle implements otel.ErrorHandler.
func (e *errorLog) Handle(err error) {
	if err == nil {
		return
	}
	now := time.Now()
	e.mu.Lock()
	if !e.last.IsZero() && now.Sub(e.last) < e.every {
		e.skipped++
		e.mu.Unlock()
		return
	}
	skipped := e.skipped
	e.last, e.skipped = now, 0
	e.mu.Unlock()
	e.log.Warn("tracing export", "err", err.Error(), "errors_not_logged", skipped)
}

var _ otel.ErrorHandler = (*errorLog)(nil)
