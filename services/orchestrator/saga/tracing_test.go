package saga

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/telemetry"
)

// A replica dies right after writing the request's step: the effects it
// decided are executed by another replica, and they — the commands, the
// audit events, the outcome — continue the request's trace, because the
// trace context is kept with each effect in the record.
func TestTraceSurvivesAReplicaDying(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	otel.SetTracerProvider(tp)
	t.Cleanup(func() { otel.SetTracerProvider(noop.NewTracerProvider()); _ = tp.Shutdown(context.Background()) })

	eachTopology(t, func(t *testing.T, h *harness) {
		stop := h.startSaga()
		h.sagas[0].crashAfterWrite.Store(true)
		ctx, up := tp.Tracer("upstream").Start(h.ctx, "upstream publish")
		traceID := up.SpanContext().TraceID()
		m := nats.NewMsg(events.SubjectTenantRequested)
		m.Data = []byte(`{"tenant_id":"traced"}`)
		telemetry.Inject(ctx, m.Header)
		if _, err := h.js.PublishMsg(h.ctx, m); err != nil {
			t.Fatal(err)
		}
		up.End()
		rec := h.waitFor("traced", 20*time.Second, "registered", func(r *events.TenantRecord) bool { return len(r.Outbox) > 0 })
		stop()
		if got := savedTraceID(rec.Trace); got != traceID {
			t.Fatalf("record's trace %v, want trace %s", rec.Trace, traceID)
		}
		for _, e := range rec.Outbox {
			if got := savedTraceID(e.Trace); got != traceID {
				t.Errorf("effect %s keeps trace %v, want %s", e.ID, e.Trace, traceID)
			}
		}

		h.startSaga()
		h.waitSettled("traced", events.TenantActive, 30*time.Second)
		// Every message the saga published for this tenant carries the trace.
		for stream, subjects := range map[string][]string{
			events.StreamTenants: {events.SubjectTenantProvisioned},
			events.StreamAudit:   {events.AuditSubject(events.AuditTenantProvisioningStarted), events.AuditSubject(events.AuditTenantProvisioned)},
		} {
			for _, subject := range subjects {
				hs := h.streamHeaders(stream, subject)
				if len(hs) == 0 {
					t.Errorf("no %s message", subject)
				}
				for _, hd := range hs {
					if got := trace.SpanContextFromContext(telemetry.Extract(context.Background(), hd)).TraceID(); got != traceID {
						t.Errorf("%s carries trace %s (traceparent %q), want %s", subject, got, hd.Get(telemetry.HeaderTraceparent), traceID)
					}
				}
			}
		}
		// The surviving replica's spans hang off the dead one's request span.
		deadline := time.Now().Add(30 * time.Second)
		for {
			problems := connected(exp.GetSpans(), traceID, "publish "+events.CommandSubject(events.StoreRedis, events.ActionProvision), "publish "+events.SubjectTenantProvisioned, "effect "+string(events.EffectPutSecrets))
			if problems == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal(problems)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

func savedTraceID(saved map[string]string) trace.TraceID {
	return trace.SpanContextFromContext(telemetry.Restore(context.Background(), saved)).TraceID()
}

// connected describes what keeps trace id's spans from being one tree with
// the named spans ("" when nothing does).
func connected(all tracetest.SpanStubs, id trace.TraceID, want ...string) string {
	ids, names, roots := map[trace.SpanID]bool{}, map[string]bool{}, 0
	var spans tracetest.SpanStubs
	for _, s := range all {
		if s.SpanContext.TraceID() == id {
			spans = append(spans, s)
			ids[s.SpanContext.SpanID()], names[s.Name] = true, true
		}
	}
	var problems []string
	for _, s := range spans {
		switch {
		case !s.Parent.IsValid():
			roots++
		case !ids[s.Parent.SpanID()]:
			problems = append(problems, fmt.Sprintf("span %q: parent not in the trace", s.Name))
		}
	}
	if roots != 1 {
		problems = append(problems, fmt.Sprintf("%d roots, want 1", roots))
	}
	for _, n := range want {
		if !names[n] {
			problems = append(problems, fmt.Sprintf("no span %q", n))
		}
	}
	if len(problems) == 0 {
		return ""
	}
	return fmt.Sprintf("trace %s (%d spans): %s", id, len(spans), strings.Join(problems, "; "))
}

// streamHeaders returns the headers of every message on subject in stream.
func (h *harness) streamHeaders(stream, subject string) []nats.Header {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
	defer cancel()
	st, err := h.js.Stream(ctx, stream)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []nats.Header
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			h.t.Fatal(err)
		}
		if m.Subject == subject {
			out = append(out, m.Header)
		}
	}
	return out
}

// A saga rolled back by its deadline — the reconciler's clock, no message
// to follow — and compensated with retries stays one trace: the
// compensation commands, their results, the rollback's announcement.
func TestDeadlineRollbackStaysInTheTrace(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	otel.SetTracerProvider(tp)
	t.Cleanup(func() { otel.SetTracerProvider(noop.NewTracerProvider()); _ = tp.Shutdown(context.Background()) })

	h := newHarness(t)
	h.startSaga()
	var mu sync.Mutex
	down := true
	h.agents.set(events.StoreRedis, func(cmd *events.StoreCommand) (events.Outcome, bool) {
		mu.Lock()
		defer mu.Unlock()
		return "", !down // swallowed while down: the agent died with it
	})
	h.publish(events.SubjectTenantRequested, `{"tenant_id":"late"}`)
	h.waitFor("late", 30*time.Second, "compensation retried", func(r *events.TenantRecord) bool {
		return r.State == events.TenantRollingBack && h.agents.count(events.StoreRedis, events.ActionDeprovision) >= 2
	})
	mu.Lock()
	down = false
	mu.Unlock()
	rec := h.waitSettled("late", events.TenantFailed, 30*time.Second)
	traceID := savedTraceID(rec.Trace)
	if !traceID.IsValid() {
		t.Fatalf("no trace in the record: %v", rec.Trace)
	}
	want := []string{"orchestrator request " + events.SubjectTenantRequested, "publish " + events.SubjectTenantProvisionFailed,
		"publish " + events.AuditSubject(events.AuditTenantRollbackStarted), "publish " + events.AuditSubject(events.AuditTenantRolledBack)}
	for _, st := range events.Stores() {
		want = append(want, "publish "+events.CommandSubject(st, events.ActionDeprovision), "orchestrator result "+events.EventSubject(st, events.OutcomeDeprovisioned))
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		problems := connected(exp.GetSpans(), traceID, want...)
		if problems == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(problems)
		}
		time.Sleep(100 * time.Millisecond)
	}
	n := 0
	for _, s := range exp.GetSpans() {
		if s.SpanContext.TraceID() == traceID && s.Name == "publish "+events.CommandSubject(events.StoreRedis, events.ActionDeprovision) {
			n++
		}
	}
	if n < 2 {
		t.Errorf("%d redis compensation publishes in the trace, want the retries too", n)
	}
}
