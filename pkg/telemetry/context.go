package telemetry

import (
	"context"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// Header names of the W3C trace context, as they travel in NATS headers.
const (
	HeaderTraceparent = events.HeaderTraceparent
	HeaderTracestate  = events.HeaderTracestate
)

// headerCarrier adapts nats.Header (case-sensitive keys, unlike HTTP) to
// the propagator.
type headerCarrier nats.Header

func (c headerCarrier) Get(key string) string { return nats.Header(c).Get(key) }
func (c headerCarrier) Set(key, value string) { nats.Header(c).Set(key, value) }
func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes ctx's span context into h (traceparent, tracestate). It
// writes nothing when ctx carries no valid span context.
func Inject(ctx context.Context, h nats.Header) {
	if h == nil {
		return
	}
	Propagator.Inject(ctx, headerCarrier(h))
}

// Extract returns ctx with the remote span context h carries, if any, as
// the parent of the spans started from it.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if h == nil {
		return ctx
	}
	return Propagator.Extract(ctx, headerCarrier(h))
}

// Carried reports whether h carries a valid trace context.
func Carried(h nats.Header) bool {
	return h != nil && trace.SpanContextFromContext(Extract(context.Background(), h)).IsValid()
}

// Save is ctx's span context as a small map (traceparent, tracestate) to
// keep in a record, so that work done later — after a restart, by another
// replica — continues the same trace (Restore). It is nil when ctx carries
// no valid span context.
func Save(ctx context.Context) map[string]string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	m := propagation.MapCarrier{}
	Propagator.Inject(ctx, m)
	if len(m[HeaderTracestate]) > maxSavedTracestate {
		// A caller's long tracestate would be copied into every effect
		// of the record; W3C lets a hop drop what it cannot carry.
		delete(m, HeaderTracestate)
	}
	return m
}

// maxSavedTracestate bounds the tracestate Save keeps (W3C asks that at
// least 512 characters be propagated).
const maxSavedTracestate = 512

// Restore returns ctx with the span context saved by Save as the remote
// parent of the spans started from it; ctx unchanged when saved is empty
// or invalid.
func Restore(ctx context.Context, saved map[string]string) context.Context {
	if len(saved) == 0 {
		return ctx
	}
	return Propagator.Extract(ctx, propagation.MapCarrier(saved))
}

// LogFields are the zap fields naming ctx's trace (trace_id, span_id),
// none when ctx carries no valid span context.
func LogFields(ctx context.Context) []zap.Field {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return nil
	}
	return []zap.Field{zap.String("trace_id", sc.TraceID().String()), zap.String("span_id", sc.SpanID().String())}
}

// Logger is log with ctx's LogFields.
func Logger(ctx context.Context, log *zap.Logger) *zap.Logger {
	if f := LogFields(ctx); f != nil {
		return log.With(f...)
	}
	return log
}
