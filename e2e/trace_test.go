package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/telemetry"
)

// Issue 16: one tenant's saga is one trace. The real orchestrator and the
// four real agents (real stores) export to an in-memory exporter; a
// provisioning and a rollback must each form one connected trace — one
// root, every other span's parent in the trace — that covers the request,
// every command, the agents' lock and store calls, every result, the
// sealing, the outcome and the audit publishes. The span trees are
// printed in the test log.
func TestSagaIsOneTrace(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	otel.SetTracerProvider(tp)
	t.Cleanup(func() { otel.SetTracerProvider(noop.NewTracerProvider()); _ = tp.Shutdown(context.Background()) })

	s := startSystem(t, 60*time.Second)
	s.startOrchestrator()

	t.Run("provisioning", func(t *testing.T) {
		// The upstream publisher traces: its span is the trace's root.
		ctx, up := tp.Tracer("upstream").Start(s.ctx, "upstream publish tenant.requested", trace.WithSpanKind(trace.SpanKindProducer))
		m := nats.NewMsg(events.SubjectTenantRequested)
		m.Data = []byte(`{"tenant_id":"trace-ok","request_id":"trace-1"}`)
		telemetry.Inject(ctx, m.Header)
		if _, err := s.reqJS.PublishMsg(s.ctx, m); err != nil {
			t.Fatal(err)
		}
		up.End()
		rec := s.waitState("trace-ok", events.TenantActive, 120*time.Second)
		s.waitFor("trace-ok", 30*time.Second, "outbox executed", func(r *events.TenantRecord) bool { return len(r.Outbox) == 0 })
		if got := telemetry.Save(telemetry.Restore(context.Background(), rec.Trace)); got == nil {
			t.Fatalf("the record keeps no trace context: %v", rec.Trace)
		}
		spans := waitConnectedTrace(t, exp, up.SpanContext().TraceID(), provisionSpans())
		if root := rootOf(spans); root.Name != "upstream publish tenant.requested" {
			t.Errorf("root is %q, want the upstream publisher's span", root.Name)
		}
		// Log lines written under the trace name it.
		tid := `"trace_id":"` + up.SpanContext().TraceID().String() + `"`
		s.mu.Lock()
		orch := s.logs[0].String()
		s.mu.Unlock()
		if !strings.Contains(orch, tid) {
			t.Errorf("no orchestrator log line carries %s", tid)
		}
		for _, st := range events.Stores() {
			if !strings.Contains(s.agent(st).LogText(), tid) {
				t.Errorf("no %s agent log line carries %s", st, tid)
			}
		}
	})

	t.Run("deprovisioning", func(t *testing.T) {
		// Its own saga, its own trace: started by the orchestrator, kept
		// in the record in place of the provisioning's.
		before := s.record("trace-ok").Trace
		s.request(events.SubjectTenantDeprovisionRequested, `{"tenant_id":"trace-ok"}`)
		rec := s.waitState("trace-ok", events.TenantDeprovisioned, 120*time.Second)
		s.waitFor("trace-ok", 30*time.Second, "outbox executed", func(r *events.TenantRecord) bool { return len(r.Outbox) == 0 })
		sc := trace.SpanContextFromContext(telemetry.Restore(context.Background(), rec.Trace))
		if !sc.IsValid() || sc.TraceID() == trace.SpanContextFromContext(telemetry.Restore(context.Background(), before)).TraceID() {
			t.Fatalf("deprovisioning keeps trace %v, provisioning's was %v", rec.Trace, before)
		}
		want := []string{"publish " + events.SubjectTenantDeprovisioned, "publish " + events.AuditSubject(events.AuditTenantDeprovisioned), "effect " + string(events.EffectDeleteSecrets)}
		for _, st := range events.Stores() {
			want = append(want, "agent "+events.CommandSubject(st, events.ActionDeprovision), "orchestrator result "+events.EventSubject(st, events.OutcomeDeprovisioned))
		}
		spans := waitConnectedTrace(t, exp, sc.TraceID(), append(want, "store deprovision"))
		if root := rootOf(spans); root.Name != "orchestrator request "+events.SubjectTenantDeprovisionRequested {
			t.Errorf("root is %q, want the orchestrator's request span", root.Name)
		}
	})

	t.Run("rollback", func(t *testing.T) {
		// A foreign role holds the tenant's PostgreSQL name: pg-agent
		// answers provision_failed (conflict) and every store is
		// compensated. The request carries no trace context: the
		// orchestrator starts the trace.
		conn, err := pgx.Connect(s.ctx, s.pg.AdminURL())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(s.ctx, "CREATE ROLE "+pgx.Identifier{"tenant_trace-rb"}.Sanitize()); err != nil {
			t.Fatal(err)
		}
		s.request(events.SubjectTenantRequested, `{"tenant_id":"trace-rb"}`)
		rec := s.waitState("trace-rb", events.TenantFailed, 120*time.Second)
		s.waitFor("trace-rb", 30*time.Second, "outbox executed", func(r *events.TenantRecord) bool { return len(r.Outbox) == 0 })
		sc := trace.SpanContextFromContext(telemetry.Restore(context.Background(), rec.Trace))
		if !sc.IsValid() {
			t.Fatalf("the record keeps no trace context: %v", rec.Trace)
		}
		spans := waitConnectedTrace(t, exp, sc.TraceID(), rollbackSpans())
		if root := rootOf(spans); root.Name != "orchestrator request "+events.SubjectTenantRequested {
			t.Errorf("root is %q, want the orchestrator's request span", root.Name)
		}
	})
}

// provisionSpans are span names a provisioning's trace must hold.
func provisionSpans() []string {
	want := []string{
		"orchestrator request " + events.SubjectTenantRequested,
		"publish " + events.AuditSubject(events.AuditTenantProvisioningStarted),
		"effect " + string(events.EffectPutSecrets), "seal secrets (sops)",
		"publish " + events.AuditSubject(events.AuditTenantProvisioned),
		"publish " + events.SubjectTenantProvisioned,
	}
	for _, st := range events.Stores() {
		want = append(want,
			"publish "+events.CommandSubject(st, events.ActionProvision),
			"agent "+events.CommandSubject(st, events.ActionProvision),
			"lock "+events.AgentLockKey(st, "trace-ok"),
			"publish "+events.EventSubject(st, events.OutcomeProvisioned),
			"orchestrator result "+events.EventSubject(st, events.OutcomeProvisioned))
	}
	return append(want, "store provision", "store verify")
}

// rollbackSpans are span names a rollback's trace must hold.
func rollbackSpans() []string {
	want := []string{
		"orchestrator result " + events.EventSubject(events.StorePostgres, events.OutcomeProvisionFailed),
		"publish " + events.AuditSubject(events.AuditTenantRollbackStarted),
		"publish " + events.AuditSubject(events.AuditTenantRolledBack),
		"publish " + events.SubjectTenantProvisionFailed,
		"store provision", "store deprovision",
	}
	for _, st := range events.Stores() {
		want = append(want,
			"publish "+events.CommandSubject(st, events.ActionDeprovision),
			"agent "+events.CommandSubject(st, events.ActionDeprovision),
			"orchestrator result "+events.EventSubject(st, events.OutcomeDeprovisioned))
	}
	return want
}

// waitConnectedTrace waits until trace id's ended spans form one tree with
// every name in want, and prints it; it fails with the tree otherwise.
func waitConnectedTrace(t *testing.T, exp *tracetest.InMemoryExporter, id trace.TraceID, want []string) tracetest.SpanStubs {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var spans tracetest.SpanStubs
		for _, s := range exp.GetSpans() {
			if s.SpanContext.TraceID() == id {
				spans = append(spans, s)
			}
		}
		problems := traceProblems(spans, want)
		if len(problems) == 0 {
			t.Logf("trace %s, %d spans:\n%s", id, len(spans), spanTree(spans))
			return spans
		}
		if time.Now().After(deadline) {
			t.Fatalf("trace %s is not one connected saga trace:\n  %s\n%s", id, strings.Join(problems, "\n  "), spanTree(spans))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// traceProblems lists what keeps spans from being one connected trace
// holding want: roots other than exactly one, parents not in the trace,
// names missing.
func traceProblems(spans tracetest.SpanStubs, want []string) []string {
	var out []string
	ids := map[trace.SpanID]bool{}
	names := map[string]bool{}
	for _, s := range spans {
		ids[s.SpanContext.SpanID()] = true
		names[s.Name] = true
	}
	roots := 0
	for _, s := range spans {
		switch {
		case !s.Parent.IsValid():
			roots++
		case !ids[s.Parent.SpanID()]:
			out = append(out, fmt.Sprintf("span %q: parent %s is not in the trace", s.Name, s.Parent.SpanID()))
		}
	}
	if roots != 1 {
		out = append(out, fmt.Sprintf("%d roots, want 1", roots))
	}
	for _, n := range want {
		if !names[n] {
			out = append(out, fmt.Sprintf("no span %q", n))
		}
	}
	return out
}

func rootOf(spans tracetest.SpanStubs) tracetest.SpanStub {
	for _, s := range spans {
		if !s.Parent.IsValid() {
			return s
		}
	}
	return tracetest.SpanStub{}
}

// spanTree renders spans as an indented tree (name, then the component
// that emitted it), children in start order; spans whose parent is
// missing are listed as extra roots. A publish JetStream had already (two
// executors of one effect; the message ID makes it once) is marked.
func spanTree(spans tracetest.SpanStubs) string {
	ids := map[trace.SpanID]bool{}
	kids := map[trace.SpanID][]tracetest.SpanStub{}
	var roots []tracetest.SpanStub
	for _, s := range spans {
		ids[s.SpanContext.SpanID()] = true
	}
	for _, s := range spans {
		if s.Parent.IsValid() && ids[s.Parent.SpanID()] {
			kids[s.Parent.SpanID()] = append(kids[s.Parent.SpanID()], s)
		} else {
			roots = append(roots, s)
		}
	}
	byStart := func(a, b tracetest.SpanStub) int { return a.StartTime.Compare(b.StartTime) }
	var b strings.Builder
	var walk func(s tracetest.SpanStub, depth int)
	walk = func(s tracetest.SpanStub, depth int) {
		scope := s.InstrumentationScope.Name
		scope = scope[strings.LastIndex(scope, "/")+1:]
		note := ""
		for _, a := range s.Attributes {
			if a.Key == "messaging.nats.duplicate" && a.Value.AsBool() {
				note = " (duplicate: the stream had it)"
			}
		}
		fmt.Fprintf(&b, "%s%s%s  [%s]\n", strings.Repeat("  ", depth), s.Name, note, scope)
		k := kids[s.SpanContext.SpanID()]
		slices.SortFunc(k, byStart)
		for _, c := range k {
			walk(c, depth+1)
		}
	}
	slices.SortFunc(roots, byStart)
	for _, r := range roots {
		walk(r, 0)
	}
	return b.String()
}
