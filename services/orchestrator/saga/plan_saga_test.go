package saga

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// Plans and the dry run (DESIGN.md §10) over real JetStream with scripted
// agents, on one node and on the 3-node cluster.

const testPlansYAML = `plans:
  default: {}
  small:
    minio: {bucket_quota_bytes: 1073741824}
    postgres: {connection_limit: 5, statement_timeout: 30s}
  large:
    postgres: {connection_limit: 50}
    redis: {deny_categories: ["@slow"]}
`

// scriptedDryRun is a scripted agent's answer to a plan command: one
// operation, and a conflict when the tenant is called "squatted".
func scriptedDryRun(cmd *events.StoreCommand) *events.DryRun {
	dr := &events.DryRun{Operations: []events.Operation{{Kind: "statement", Text: "CREATE tenant_" + cmd.TenantID + " PASSWORD <redacted>"}},
		Names: map[string]string{"name": "tenant_" + cmd.TenantID}}
	if strings.HasPrefix(cmd.TenantID, "squatted") {
		dr.Conflicts = []events.Conflict{{Kind: events.ConflictNameTaken, Resource: "tenant_" + cmd.TenantID, Detail: "not ours"}}
	}
	return dr
}

func (h *harness) withPlans() {
	h.t.Helper()
	path := filepath.Join(h.t.TempDir(), "plans.yaml")
	if err := os.WriteFile(path, []byte(testPlansYAML), 0o644); err != nil {
		h.t.Fatal(err)
	}
	h.cfg.PlansFile = path
}

// rawRecord is the registry's bytes for id and their revision.
func (h *harness) rawRecord(id string) ([]byte, uint64) {
	h.t.Helper()
	kv, err := h.js.KeyValue(h.ctx, events.KVTenants)
	if err != nil {
		h.t.Fatal(err)
	}
	e, err := kv.Get(h.ctx, id)
	if err != nil {
		return nil, 0
	}
	return e.Value(), e.Revision()
}

// waitOutcome waits for the n-th tenant.<outcome> of tenant and returns it.
func (h *harness) waitOutcome(outcome events.Outcome, tenant string, n int) *events.TenantOutcomeEvent {
	h.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var got []*events.TenantOutcomeEvent
		for _, m := range h.streamMessages(events.StreamTenants, events.TenantOutcomeSubject(outcome)) {
			var ev events.TenantOutcomeEvent
			if json.Unmarshal(m.Data(), &ev) == nil && ev.TenantID == tenant {
				got = append(got, &ev)
			}
		}
		if len(got) >= n {
			return got[n-1]
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("no %d tenant.%s for %s (have %d)", n, outcome, tenant, len(got))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestPlanProvisionUpdateAndDryRun(t *testing.T) {
	eachTopology(t, func(t *testing.T, h *harness) {
		h.withPlans()
		h.startSaga()
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"acme","plan":"small"}`)
		rec := h.waitSettled("acme", events.TenantActive, 60*time.Second)
		if rec.Plan != "small" || rec.Stores[events.StorePostgres].Limits == nil || rec.Stores[events.StorePostgres].Limits.Postgres.ConnectionLimit != 5 {
			t.Fatalf("plan %q postgres limits %+v", rec.Plan, rec.Stores[events.StorePostgres].Limits)
		}
		if c := h.agents.commands(events.StoreMinIO, events.ActionProvision); len(c) != 1 || c[0].Plan == nil || c[0].Plan.MinIO.BucketQuotaBytes != 1<<30 || c[0].Plan.Postgres != nil {
			t.Fatalf("minio provision command plan %+v", c[0].Plan)
		}
		h.waitAudits(events.AuditTenantPlanApplied, "acme", 1)

		// A dry run of the existing tenant with another plan: every store
		// answers, the registry is untouched.
		before, rev := h.rawRecord("acme")
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"acme","plan":"large","dry_run":true,"request_id":"dry-1"}`)
		planned := h.waitOutcome(events.TenantOutcomePlanned, "acme", 1)
		if planned.Plan != "large" || len(planned.DryRun) != 4 || len(planned.Failed) != 0 || planned.RequestID != "dry-1" {
			t.Fatalf("tenant.planned %+v", planned)
		}
		for _, store := range events.Stores() {
			if dr := planned.DryRun[store]; dr == nil || len(dr.Operations) != 1 {
				t.Fatalf("%s dry run %+v", store, dr)
			}
			c := h.agents.commands(store, events.ActionPlan)
			if len(c) != 1 || c[0].Plan == nil || c[0].Plan.Name != "large" || !IsDryRunSaga(c[0].SagaID) {
				t.Fatalf("%s plan commands %+v", store, c)
			}
		}
		h.waitAudits(events.AuditTenantPlanned, "acme", 1)
		if after, rev2 := h.rawRecord("acme"); !bytes.Equal(before, after) || rev2 != rev {
			t.Fatalf("the dry run changed the registry record (revision %d → %d)", rev, rev2)
		}
		// A dry run of a new tenant whose name is taken: the conflict is
		// reported, and no record is created.
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"squatted","dry_run":true}`)
		sq := h.waitOutcome(events.TenantOutcomePlanned, "squatted", 1)
		if c := sq.DryRun[events.StorePostgres]; c == nil || len(c.Conflicts) != 1 || c.Conflicts[0].Kind != events.ConflictNameTaken {
			t.Fatalf("squatted dry run %+v", sq.DryRun)
		}
		if b, _ := h.rawRecord("squatted"); b != nil {
			t.Fatalf("a dry run created a record: %s", b)
		}

		// The update: apply_plan everywhere, the record on the new plan.
		h.publish(events.SubjectTenantUpdateRequested, `{"tenant_id":"acme","plan":"large","request_id":"up-1"}`)
		applied := h.waitOutcome(events.TenantOutcomePlanApplied, "acme", 1)
		if applied.Plan != "large" || applied.RequestID != "up-1" {
			t.Fatalf("tenant.plan_applied %+v", applied)
		}
		rec = h.waitFor("acme", 60*time.Second, "on plan large", func(r *events.TenantRecord) bool {
			return r.State == events.TenantActive && r.Plan == "large" && len(r.Outbox) == 0
		})
		if l := rec.Stores[events.StorePostgres].Limits; l == nil || l.Postgres.ConnectionLimit != 50 {
			t.Fatalf("postgres limits after the update %+v", l)
		}
		if l := rec.Stores[events.StoreMinIO].Limits; l == nil || l.MinIO != nil {
			t.Fatalf("minio limits after the update %+v (large sets none)", l)
		}
		h.waitAudits(events.AuditTenantPlanApplied, "acme", 2)

		// Bad input: rejected, audited, nothing changed.
		before, rev = h.rawRecord("acme")
		for _, bad := range []struct{ subject, payload string }{
			{events.SubjectTenantUpdateRequested, `{"tenant_id":"acme","plan":"gold"}`},
			{events.SubjectTenantUpdateRequested, `{"tenant_id":"acme"}`},
			{events.SubjectTenantUpdateRequested, `{"tenant_id":"acme","plan":5}`},
			{events.SubjectTenantRequested, `{"tenant_id":"acme","plan":"gold","dry_run":true}`},
		} {
			h.publish(bad.subject, bad.payload)
		}
		h.publish(events.SubjectTenantUpdateRequested, `{"tenant_id":"ghost","plan":"large"}`)
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"newco","plan":"gold"}`)
		h.waitAudits(events.AuditTenantRequestRejected, "acme", 4)
		h.waitAudits(events.AuditTenantRequestRejected, "ghost", 1)
		h.waitAudits(events.AuditTenantRequestRejected, "newco", 1)
		if after, rev2 := h.rawRecord("acme"); !bytes.Equal(before, after) || rev2 != rev {
			t.Fatalf("a rejected request changed the record (revision %d → %d)", rev, rev2)
		}
		if b, _ := h.rawRecord("newco"); b != nil {
			t.Fatalf("an unknown plan created a record: %s", b)
		}
		// An update of a suspended tenant is rejected.
		h.publish(events.SubjectTenantSuspendRequested, `{"tenant_id":"acme"}`)
		h.waitSettled("acme", events.TenantSuspended, 60*time.Second)
		h.publish(events.SubjectTenantUpdateRequested, `{"tenant_id":"acme","plan":"small"}`)
		h.waitAudits(events.AuditTenantRequestRejected, "acme", 5)
		if rec := h.record("acme"); rec.State != events.TenantSuspended || rec.Plan != "large" {
			t.Fatalf("state %s plan %q", rec.State, rec.Plan)
		}
	})
}

// An update a store fails is retried until it succeeds (the tenant is
// never rolled back); one a store refuses for good ends active on the
// previous plan with tenant.plan_failed.
func TestPlanUpdateRetriedOrRefused(t *testing.T) {
	eachTopology(t, func(t *testing.T, h *harness) {
		h.withPlans()
		h.startSaga()
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"acme","plan":"small"}`)
		h.waitSettled("acme", events.TenantActive, 60*time.Second)

		var mu sync.Mutex
		fails := 2
		h.agents.set(events.StorePostgres, func(cmd *events.StoreCommand) (events.Outcome, bool) {
			mu.Lock()
			defer mu.Unlock()
			if cmd.Action == events.ActionApplyPlan && fails > 0 {
				fails--
				return events.OutcomeApplyPlanFailed, true
			}
			return "", true
		})
		h.publish(events.SubjectTenantUpdateRequested, `{"tenant_id":"acme","plan":"large"}`)
		h.waitOutcome(events.TenantOutcomePlanApplied, "acme", 1)
		rec := h.waitFor("acme", 60*time.Second, "on plan large", func(r *events.TenantRecord) bool {
			return r.State == events.TenantActive && r.Plan == "large" && len(r.Outbox) == 0
		})
		if n := len(h.agents.commands(events.StorePostgres, events.ActionApplyPlan)); n != 3 {
			t.Errorf("postgres got %d apply_plan commands, want 3 (two failures retried)", n)
		}
		if n := len(h.agents.commands(events.StoreRedis, events.ActionApplyPlan)); n != 1 {
			t.Errorf("redis got %d apply_plan commands, want 1", n)
		}
		if rec.Stores[events.StorePostgres].Limits.Postgres.ConnectionLimit != 50 {
			t.Errorf("postgres limits %+v", rec.Stores[events.StorePostgres].Limits)
		}

		// Redis cannot enforce what "small" asks now: refused for good.
		h.agents.set(events.StoreRedis, func(cmd *events.StoreCommand) (events.Outcome, bool) {
			if cmd.Action == events.ActionApplyPlan {
				res := h.agents.result(cmd, events.OutcomeApplyPlanFailed)
				res.Reason, res.Error = events.ReasonUnsupported, "max_memory_bytes: Redis has no per-user memory limit"
				if err := h.agents.send(res); err != nil {
					t.Errorf("send: %v", err)
				}
				return "", false
			}
			return "", true
		})
		h.publish(events.SubjectTenantUpdateRequested, `{"tenant_id":"acme","plan":"small"}`)
		failed := h.waitOutcome(events.TenantOutcomePlanFailed, "acme", 1)
		if !strings.Contains(failed.Reason, "redis") || !strings.Contains(failed.Reason, "unsupported") {
			t.Fatalf("tenant.plan_failed reason %q", failed.Reason)
		}
		rec = h.waitSettled("acme", events.TenantActive, 60*time.Second)
		if rec.Plan != "large" {
			t.Fatalf("plan %q after a refused update, want the previous one", rec.Plan)
		}
		if n := len(h.agents.commands(events.StoreRedis, events.ActionApplyPlan)); n != 2 {
			t.Errorf("redis got %d apply_plan commands, want 2 (a refusal is not retried)", n)
		}
		if n := h.auditCount(events.AuditTenantPlanApplied, "acme"); n != 2 {
			t.Errorf("TENANT_PLAN_APPLIED %d times, want 2 (provision, first update)", n)
		}
	})
}
