package agent

import (
	"context"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/tenantprov/tenantprov/pkg/telemetry"
)

// tracerName names the agent runtime's spans.
const tracerName = "github.com/tenantprov/tenantprov/pkg/agent"

func tracer() trace.Tracer { return telemetry.Tracer(tracerName) }

// startCommandSpan starts the span of one command delivery, a child of the
// trace context the command carries (the orchestrator's saga), so that the
// agent's work — the lock, the store calls, the reply — is part of the
// tenant's trace.
func startCommandSpan(work context.Context, msg jetstream.Msg, delivery uint64) (context.Context, trace.Span) {
	ctx := telemetry.Extract(work, msg.Headers())
	return tracer().Start(ctx, "agent "+msg.Subject(), trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("messaging.system", "nats"), attribute.String("messaging.destination.name", msg.Subject()),
			attribute.Int64("messaging.nats.delivery", int64(delivery))))
}

// startSpan starts an internal child span of ctx.
func startSpan(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	return tracer().Start(ctx, name, trace.WithAttributes(attrs...))
}

// endSpan ends span, recording err (sanitised) as its failure.
func endSpan(span trace.Span, err error) {
	if err != nil {
		text := SanitizeText(err.Error())
		span.AddEvent("exception", trace.WithAttributes(attribute.String("exception.message", text)))
		span.SetStatus(codes.Error, text)
	}
	span.End()
}

// injectTrace puts ctx's trace context into a reply about to be published.
func injectTrace(ctx context.Context, m *nats.Msg) {
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	telemetry.Inject(ctx, m.Header)
}

// Traced decorates a store with one span per store operation (provision,
// verify, deprovision, and any method added to Store later is passed
// through untraced), children of the command's span. Readiness pings are
// not traced. Errors recorded on spans are sanitised.
func Traced(next Store) Store { return tracedStore{Store: next} }

type tracedStore struct{ Store }

var _ Store = tracedStore{}

func (s tracedStore) Provision(ctx context.Context, req ProvisionRequest) (resp ProvisionResponse, err error) {
	ctx, span := startSpan(ctx, "store provision", attribute.String("tenantprov.store", string(s.Kind())), attribute.String("tenantprov.tenant", string(req.Tenant)))
	defer func() { endSpan(span, err) }()
	return s.Store.Provision(ctx, req)
}

func (s tracedStore) Verify(ctx context.Context, req VerifyRequest) (resp VerifyResponse, err error) {
	ctx, span := startSpan(ctx, "store verify", attribute.String("tenantprov.store", string(s.Kind())), attribute.String("tenantprov.tenant", string(req.Tenant)))
	defer func() {
		if err == nil {
			span.SetAttributes(attribute.Bool("tenantprov.verify.passed", resp.Passed()))
		}
		endSpan(span, err)
	}()
	return s.Store.Verify(ctx, req)
}

func (s tracedStore) Deprovision(ctx context.Context, req DeprovisionRequest) (resp DeprovisionResponse, err error) {
	ctx, span := startSpan(ctx, "store deprovision", attribute.String("tenantprov.store", string(s.Kind())), attribute.String("tenantprov.tenant", string(req.Tenant)))
	defer func() { endSpan(span, err) }()
	return s.Store.Deprovision(ctx, req)
}
