package sink

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/auditlog"
	"github.com/tenantprov/tenantprov/pkg/telemetry"
)

// tracerName names the audit sink's spans.
const tracerName = "github.com/tenantprov/tenantprov/services/audit-sink/internal/sink"

// insertSpans are the spans of one batch's append: one per audit event, a
// child of the trace context its message carries (the saga that emitted
// it), since one batch mixes events of many tenants' traces.
type insertSpans struct {
	ctxs  []context.Context
	spans []trace.Span
}

func startInsertSpans(ctx context.Context, entries []*auditlog.Entry, msgs []jetstream.Msg) insertSpans {
	t := telemetry.Tracer(tracerName)
	is := insertSpans{ctxs: make([]context.Context, len(msgs)), spans: make([]trace.Span, len(msgs))}
	for i, m := range msgs {
		is.ctxs[i], is.spans[i] = t.Start(telemetry.Extract(ctx, m.Headers()), "audit insert "+m.Subject(),
			trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(
				attribute.String("messaging.system", "nats"), attribute.String("messaging.destination.name", m.Subject()),
				attribute.String("tenantprov.audit.event_id", entries[i].Event.EventID),
				attribute.Int("tenantprov.audit.batch_size", len(entries)),
			))
	}
	return is
}

// end ends every span with the append's outcome.
func (is insertSpans) end(outs []auditlog.Outcome, err error) {
	for i, span := range is.spans {
		switch {
		case err != nil:
			span.SetStatus(codes.Error, "append failed")
		case i < len(outs):
			span.SetAttributes(attribute.Bool("tenantprov.audit.duplicate", outs[i].Duplicate), attribute.Int64("tenantprov.audit.seq", outs[i].Seq))
		}
		span.End()
	}
}

// logFields names entry i's trace in a log line.
func (is insertSpans) logFields(i int) []zap.Field {
	if i >= len(is.ctxs) {
		return nil
	}
	return telemetry.LogFields(is.ctxs[i])
}
