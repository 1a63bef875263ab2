package sink

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/telemetry"
)

// The sink's insert of an audit event is a span of the trace the event's
// message carries (the saga that emitted it), even when one batch holds
// events of several traces.
func TestInsertJoinsTheEventsTrace(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	otel.SetTracerProvider(tp)
	t.Cleanup(func() { otel.SetTracerProvider(noop.NewTracerProvider()); _ = tp.Shutdown(context.Background()) })

	c := startCluster(t)
	db, b := c.newDB(t), startBus(t)
	pool := db.open(t)
	r := startSink(t, b, pool, nil)

	parents := map[string]string{} // event ID -> publisher's span ID
	for i := range 3 {
		ctx, span := tp.Tracer("saga").Start(context.Background(), "publish audit")
		ev := event(i)
		data, err := events.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(events.AuditSubject(ev.Type))
		m.Data = data
		telemetry.Inject(ctx, m.Header)
		pctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if _, err := b.js.PublishMsg(pctx, m); err != nil {
			t.Fatal(err)
		}
		cancel()
		span.End()
		parents[ev.EventID] = span.SpanContext().SpanID().String()
	}
	waitFor(t, 20*time.Second, "three events written", func() bool { return r.written() == 3 })
	waitFor(t, 10*time.Second, "three insert spans", func() bool {
		n := 0
		for _, s := range exp.GetSpans() {
			if s.Name == "audit insert "+events.AuditSubject(events.AuditStoreProvisioned) {
				n++
			}
		}
		return n == 3
	})
	for _, s := range exp.GetSpans() {
		if s.Name != "audit insert "+events.AuditSubject(events.AuditStoreProvisioned) {
			continue
		}
		var id string
		for _, a := range s.Attributes {
			if a.Key == "tenantprov.audit.event_id" {
				id = a.Value.AsString()
			}
		}
		if want, ok := parents[id]; !ok || s.Parent.SpanID().String() != want {
			t.Errorf("insert span of %q has parent %s, want the publisher's span %s", id, s.Parent.SpanID(), want)
		}
	}
}
