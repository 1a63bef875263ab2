package saga

import (
	"context"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/telemetry"
)

// One tenant's saga is one trace (issue 16). The request's trace context
// (or, when the publisher sent none, the span the orchestrator starts on
// taking the request) is kept in the record (TenantRecord.Trace); every
// effect keeps the context of the step that decided it (Effect.Trace), so
// its execution — by the handler, or by the reconciler of any replica
// after a crash — continues that trace, and every message it publishes
// carries it on (traceparent, tracestate). Results come back with the
// agent's context, so the orchestrator's handling of them nests under the
// agent's work, and the effects they trigger under that.

// tracerName names the orchestrator's spans.
const tracerName = "github.com/tenantprov/tenantprov/services/orchestrator/saga"

func tracer() trace.Tracer { return telemetry.Tracer(tracerName) }

// traced wraps a consumer's handler in a consumer span whose parent is the
// trace context the message carries or, when it carries none, the saga's
// (parent finds it).
func (s *Saga) traced(kind string, handle func(context.Context, jetstream.Msg) error) func(context.Context, jetstream.Msg) error {
	return func(ctx context.Context, msg jetstream.Msg) error {
		if telemetry.Carried(msg.Headers()) {
			ctx = telemetry.Extract(ctx, msg.Headers())
		} else {
			ctx = s.sagaParent(ctx, kind, msg)
		}
		ctx, span := tracer().Start(ctx, "orchestrator "+kind+" "+msg.Subject(), trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(attribute.String("messaging.system", "nats"), attribute.String("messaging.destination.name", msg.Subject())))
		defer span.End()
		err := handle(ctx, msg)
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, "not handled; will be redelivered")
		}
		return err
	}
}

// sagaParent is the parent of a message that carries no trace context: a
// result (an agent that does not trace) belongs to its tenant's saga; a
// request that repeats one the running saga already took (redelivered, or
// sent again while it runs) belongs to that saga too. Any other request
// starts a new trace. It reads the registry, so only when spans are recorded.
func (s *Saga) sagaParent(ctx context.Context, kind string, msg jetstream.Msg) context.Context {
	if !telemetry.Recording() {
		return ctx
	}
	id := tenantHint(msg.Data())
	if _, err := events.ParseTenantID(id); err != nil {
		return ctx
	}
	rec, _, err := s.reg.Get(ctx, id)
	if err != nil || rec == nil || len(rec.Trace) == 0 {
		return ctx
	}
	if kind == "request" {
		var seq uint64
		if meta, err := msg.Metadata(); err == nil {
			seq = meta.Sequence.Stream
		}
		if !rec.State.InFlight() && (seq == 0 || (seq != rec.RequestSeq && seq != rec.DeprovisionSeq)) {
			return ctx
		}
	}
	return telemetry.Restore(ctx, rec.Trace)
}

// traceStep records trace contexts in next, the record a step of ev made
// from before: a request that starts a saga (a new generation, or a
// deprovisioning) makes ctx's the saga's trace; each new effect gets
// ctx's context, or the saga's when ctx has none (the reconciler's
// clock ticks).
func traceStep(ctx context.Context, before, next *events.TenantRecord, ev Event) {
	cur := telemetry.Save(ctx)
	if (ev.Kind == EvProvisionRequested || ev.Kind == EvDeprovisionRequested) && cur != nil &&
		(before == nil || before.Generation != next.Generation || before.State != next.State) {
		next.Trace = cur
	}
	if cur == nil {
		cur = next.Trace
	}
	if cur == nil {
		return
	}
	for _, e := range next.Outbox {
		if e.Trace == nil {
			e.Trace = cur
		}
	}
}

// startEffect starts the span of one effect's execution as a child of the
// step that decided it.
func startEffect(ctx context.Context, e *events.Effect) (context.Context, trace.Span) {
	ctx = telemetry.Restore(ctx, e.Trace)
	name := "effect " + string(e.Kind)
	kind := trace.SpanKindInternal
	attrs := []attribute.KeyValue{attribute.String("tenantprov.effect.id", e.ID), attribute.Int64("tenantprov.generation", int64(e.Generation))}
	if e.Subject != "" {
		name = "publish " + e.Subject
		kind = trace.SpanKindProducer
		attrs = append(attrs, attribute.String("messaging.system", "nats"), attribute.String("messaging.destination.name", e.Subject))
	}
	return tracer().Start(ctx, name, trace.WithSpanKind(kind), trace.WithAttributes(attrs...))
}

// startSpan starts an internal child span of ctx.
func startSpan(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	return tracer().Start(ctx, name, trace.WithAttributes(attrs...))
}

// endSpan ends span, recording err as its failure.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, firstLine(err.Error()))
	}
	span.End()
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// injectTrace puts ctx's trace context into a message about to be published.
func injectTrace(ctx context.Context, m *nats.Msg) {
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	telemetry.Inject(ctx, m.Header)
}

// markDuplicate notes on ctx's span that JetStream had the message already
// (another executor of the same effect published it first): the trace
// shows both executions, and which one stored the message.
func markDuplicate(ctx context.Context, ack *jetstream.PubAck) {
	if ack != nil && ack.Duplicate {
		trace.SpanFromContext(ctx).SetAttributes(attribute.Bool("messaging.nats.duplicate", true))
	}
}
