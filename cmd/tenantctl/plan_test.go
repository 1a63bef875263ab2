package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/testkit"
)

// provision --dry-run and update --plan against a real NATS server, with a
// scripted orchestrator that answers as the saga does (the saga is tested
// with these requests in services/orchestrator/saga).
func TestPlanCommands(t *testing.T) {
	n := testkit.StartNATS(t)
	js, err := jetstream.New(n.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := (events.Topology{}).Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, events.KVTenants)
	if err != nil {
		t.Fatal(err)
	}
	o := &scriptedOrchestrator{t: t, kv: kv}
	now := time.Now().UTC()
	rec := &events.TenantRecord{TenantID: "acme", State: events.TenantActive, Announced: events.TenantActive, Generation: 1, SagaID: "acme-s1",
		CreatedAt: now, UpdatedAt: now, Plan: "default", Stores: map[events.Store]*events.StoreStatus{}}
	for _, s := range events.Stores() {
		rec.Stores[s] = &events.StoreStatus{State: events.StoreProvisioned, Verified: true, CredentialVersion: 1}
	}
	data, _ := events.Encode(rec)
	if _, err := kv.Put(ctx, "acme", data); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, events.StreamTenants, jetstream.ConsumerConfig{Durable: "scripted-plans",
		FilterSubjects: []string{events.SubjectTenantRequested, events.SubjectTenantUpdateRequested}})
	if err != nil {
		t.Fatal(err)
	}
	publish := func(subject string, ev *events.TenantOutcomeEvent) {
		data, _ := events.Encode(ev)
		_, _ = js.Publish(ctx, subject, data)
	}
	consumeUntilCleanup(t, cons, func(m jetstream.Msg) {
		_ = m.Ack()
		meta, _ := m.Metadata()
		time.Sleep(100 * time.Millisecond)
		switch m.Subject() {
		case events.SubjectTenantRequested:
			req, err := events.DecodeTenantRequested(m.Data())
			if err != nil || !req.DryRun {
				t.Errorf("provision request %+v %v", req, err)
				return
			}
			if req.Plan == "gold" {
				publish(events.SubjectTenantRejected, &events.TenantOutcomeEvent{Outcome: events.TenantOutcomeRejected, TenantID: req.TenantID,
					Reason: `dry run acme: unknown plan "gold"`, OccurredAt: time.Now().UTC()})
				return
			}
			ev := &events.TenantOutcomeEvent{Outcome: events.TenantOutcomePlanned, TenantID: req.TenantID, RequestID: req.RequestID, Plan: req.Plan,
				OccurredAt: time.Now().UTC(), DryRun: map[events.Store]*events.DryRun{}}
			for _, s := range events.Stores() {
				ev.DryRun[s] = &events.DryRun{Operations: []events.Operation{{Kind: "statement", Text: "CREATE ROLE tenant_acme PASSWORD '<redacted>'"},
					{Kind: "statement", Text: "ALTER ROLE tenant_acme CONNECTION LIMIT 5", Skip: "the limit holds already"}},
					Names: map[string]string{"role": "tenant_acme"}}
			}
			if req.TenantID == "squat" {
				ev.DryRun[events.StorePostgres].Conflicts = []events.Conflict{{Kind: events.ConflictNameTaken, Resource: "database tenant_squat", Detail: "not created by tenantprov"}}
			}
			publish(events.TenantOutcomeSubject(events.TenantOutcomePlanned), ev)
		case events.SubjectTenantUpdateRequested:
			req, err := events.DecodeUpdateRequested(m.Data())
			if err != nil {
				t.Errorf("update request: %v", err)
				return
			}
			o.update("acme", func(r *events.TenantRecord) {
				r.State, r.Announced, r.LifecycleSeq = events.TenantUpdating, "", meta.Sequence.Stream
				r.Lifecycle = &events.LifecycleOp{ID: "op1", Kind: events.LifecyclePlan, Plan: req.Plan}
			})
			time.Sleep(100 * time.Millisecond)
			o.update("acme", func(r *events.TenantRecord) {
				r.State, r.Announced, r.Lifecycle = events.TenantActive, events.TenantActive, nil
				if req.Plan == "huge" {
					r.Reason = "plan huge refused: redis: unsupported max_memory_bytes"
					return
				}
				r.Plan = req.Plan
			})
		}
	})
	url := []string{"--nats-url", n.URL, "--timeout", "20s"}

	code, out, errOut := tenantctl(t, append([]string{"provision", "acme", "--plan", "small", "--dry-run"}, url...)...)
	if code != exitOK || !strings.Contains(out, "dry run of acme with plan small") || !strings.Contains(out, "run   statement  CREATE ROLE tenant_acme PASSWORD '<redacted>'") ||
		!strings.Contains(out, "(the limit holds already)") || !strings.Contains(out, "name role = tenant_acme") {
		t.Fatalf("provision --dry-run: exit %d\n%s%s", code, out, errOut)
	}
	req, err := events.DecodeTenantRequested(lastRequest(t, js, events.SubjectTenantRequested))
	if err != nil || !req.DryRun || req.Plan != "small" || req.RequestID == "" {
		t.Fatalf("published dry run %+v %v", req, err)
	}
	code, out, errOut = tenantctl(t, append([]string{"provision", "squat", "--dry-run", "-o", "json"}, url...)...)
	var doc events.TenantOutcomeEvent
	if code != exitFailed || json.Unmarshal([]byte(out), &doc) != nil || len(doc.DryRun[events.StorePostgres].Conflicts) != 1 || !strings.Contains(errOut, "1 conflict") {
		t.Fatalf("provision --dry-run with a conflict: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut = tenantctl(t, append([]string{"provision", "acme", "--plan", "gold", "--dry-run"}, url...)...); code != exitFailed || !strings.Contains(errOut, "unknown plan") {
		t.Fatalf("unknown plan: exit %d\n%s%s", code, out, errOut)
	}

	code, out, errOut = tenantctl(t, append([]string{"update", "acme", "--plan", "large", "--wait"}, url...)...)
	if code != exitOK || !strings.Contains(out, "acme is active") {
		t.Fatalf("update --wait: exit %d\n%s%s", code, out, errOut)
	}
	up, err := events.DecodeUpdateRequested(lastRequest(t, js, events.SubjectTenantUpdateRequested))
	if err != nil || up.Plan != "large" {
		t.Fatalf("published update %+v %v", up, err)
	}
	if code, out, errOut = tenantctl(t, append([]string{"update", "acme", "--plan", "huge", "--wait"}, url...)...); code != exitFailed || !strings.Contains(errOut, "unsupported max_memory_bytes") {
		t.Fatalf("refused update: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut = tenantctl(t, append([]string{"update", "acme"}, url...)...); code != exitUsage || !strings.Contains(errOut, "--plan is required") {
		t.Fatalf("update without --plan: exit %d %s", code, errOut)
	}
}

func TestPrintPlan(t *testing.T) {
	rec := &events.TenantRecord{TenantID: "acme", Plan: "small", Stores: map[events.Store]*events.StoreStatus{
		events.StorePostgres: {Limits: &events.Plan{Name: "small", Postgres: &events.PostgresPlan{ConnectionLimit: 5}}, Usage: map[string]int64{"database_bytes": 7}},
		events.StoreRedis:    {Limits: &events.Plan{Name: "small"}},
	}}
	var b strings.Builder
	printPlan(&b, rec)
	out := b.String()
	for _, want := range []string{"plan:        small", `postgres  limits "postgres":{"connection_limit":5}  usage database_bytes=7`, "redis     limits -"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
