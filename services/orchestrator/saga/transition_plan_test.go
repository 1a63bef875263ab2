package saga

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// Plans' decision table (DESIGN.md §10), without any server.

var testPlans = events.Plans{
	events.DefaultPlanName: {Name: events.DefaultPlanName},
	"small": {Name: "small", MinIO: &events.MinIOPlan{BucketQuotaBytes: 1 << 30},
		Postgres: &events.PostgresPlan{ConnectionLimit: 5, StatementTimeout: events.Duration(30 * time.Second)},
		Redis:    &events.RedisPlan{DenyCategories: []string{"@slow", "@blocking"}}},
	"large": {Name: "large", Postgres: &events.PostgresPlan{ConnectionLimit: 50}},
}

var ppolicy = func() Policy {
	p := lpolicy
	p.Plans = testPlans
	return p
}()

func pstep(t *testing.T, rec *events.TenantRecord, ev Event, at time.Time) *events.TenantRecord {
	t.Helper()
	next, d := Step(ppolicy, rec, ev, at)
	if next == nil {
		t.Fatalf("%s changed nothing (%+v)", ev.Kind, d)
	}
	if err := next.Validate(); err != nil {
		t.Fatalf("%s: invalid record: %v", ev.Kind, err)
	}
	return next
}

func updateReq(seq uint64, plan string) Event {
	return Event{Kind: EvUpdateRequested, Seq: seq, Update: &events.UpdateRequested{TenantID: "acme", Plan: plan}}
}

// planResult answers the store's pending apply_plan with limits.
func planResult(rec *events.TenantRecord, store events.Store, outcome events.Outcome, limits *events.Plan, reason string, seq uint64) Event {
	st := rec.Stores[store].Step
	res := &events.StoreResult{TenantID: "acme", Generation: rec.Generation, SagaID: rec.SagaID, Store: store, Outcome: outcome,
		Attempt: st.Attempt, Run: 1, CompletedAt: t0, Limits: limits, Usage: map[string]int64{"points": 7}}
	if outcome != events.OutcomePlanApplied {
		res.Limits, res.Reason, res.Error = nil, reason, "scripted"
	}
	return Event{Kind: EvResult, Seq: seq, Result: res, SubjectStore: store}
}

// A provision names a plan: its commands carry the store's section, the
// record the plan's name; an unknown plan is rejected with nothing changed.
func TestPlanProvisionCarriesPlan(t *testing.T) {
	ev := provisionReq(10, saga1)
	ev.Provision.Plan = "small"
	rec := pstep(t, nil, ev, t0)
	if rec.Plan != "small" {
		t.Fatalf("record plan %q", rec.Plan)
	}
	cmds := commandsIn(t, rec, events.ActionProvision)
	if len(cmds) != 4 {
		t.Fatalf("%d provision commands", len(cmds))
	}
	for _, c := range cmds {
		if c.Plan == nil || c.Plan.Name != "small" {
			t.Fatalf("%s command plan %+v", c.Store, c.Plan)
		}
		if c.Store == events.StorePostgres && (c.Plan.Postgres == nil || c.Plan.Postgres.ConnectionLimit != 5 || c.Plan.MinIO != nil) {
			t.Fatalf("postgres command carries %+v, want only its section", c.Plan)
		}
		if c.Store == events.StoreQdrant && (c.Plan.Qdrant != nil || c.Plan.Postgres != nil) {
			t.Fatalf("qdrant command carries %+v", c.Plan)
		}
	}
	// No plan named: the default.
	if rec := pstep(t, nil, provisionReq(11, saga1), t0); rec.Plan != events.DefaultPlanName {
		t.Fatalf("default plan recorded as %q", rec.Plan)
	}
	bad := provisionReq(12, saga1)
	bad.Provision.Plan = "gold"
	for name, cur := range map[string]*events.TenantRecord{"none": nil, "failed": fixtures(t)["failed"]} {
		next, d := Step(ppolicy, cur, bad, t0)
		if next != nil || !strings.Contains(d.RejectRequest, "unknown plan") {
			t.Fatalf("%s: unknown plan: next %v, decision %+v", name, next != nil, d)
		}
	}
}

// The provisioned results' limits are recorded, and TENANT_PLAN_APPLIED
// is audited when the tenant becomes active with a plan that limits
// something.
func TestPlanProvisionRecordsLimitsAndAudits(t *testing.T) {
	ev := provisionReq(10, saga1)
	ev.Provision.Plan = "small"
	rec := executed(pstep(t, nil, ev, t0))
	for i, store := range events.Stores() {
		r := result(store, 1, saga1, events.OutcomeProvisioned, 0, 1, uint64(101+i))
		r.Result.Limits = testPlans["small"].ForStore(store)
		r.Result.Usage = map[string]int64{"database_bytes": 42}
		rec = pstep(t, rec, r, t0)
	}
	if l := rec.Stores[events.StorePostgres].Limits; l == nil || l.Postgres.ConnectionLimit != 5 || rec.Stores[events.StorePostgres].Usage["database_bytes"] != 42 {
		t.Fatalf("postgres limits %+v usage %v", l, rec.Stores[events.StorePostgres].Usage)
	}
	seal := effect(rec, events.EffectPutSecrets)
	rec = pstep(t, rec, Event{Kind: EvObjectObserved, EffectID: seal.ID, Object: ObjectState{Present: true, SealID: seal.Seal.ID, SHA256: "ab"}}, t0)
	if rec.State != events.TenantActive {
		t.Fatalf("state %s", rec.State)
	}
	audits := auditsIn(rec, events.AuditTenantPlanApplied)
	if len(audits) != 1 || !strings.Contains(string(audits[0].Details), `"connection_limit":5`) || !strings.Contains(string(audits[0].Details), `"plan":"small"`) {
		t.Fatalf("TENANT_PLAN_APPLIED %v", audits)
	}
}

// Every update request against every state: the state it ends in, "="
// for no change, "rejectreq" for tenant.rejected.
func TestPlanUpdateRequestTable(t *testing.T) {
	f := lfixtures(t)
	f["updating"] = executed(pstep(t, f["active"], updateReq(30, "small"), t0.Add(2*time.Hour)))
	reqs := []struct {
		name string
		ev   Event
	}{
		{"update", updateReq(100, "small")},
		{"update unknown plan", updateReq(100, "gold")},
		{"update redelivered", updateReq(30, "small")},
		{"update other plan", updateReq(100, "large")},
	}
	want := map[string][]string{
		"none":           {"rejectreq", "rejectreq", "rejectreq", "rejectreq"},
		"provisioning":   {"rejectreq", "rejectreq", "rejectreq", "rejectreq"},
		"active":         {"updating", "rejectreq", "updating", "updating"},
		"rolling_back":   {"rejectreq", "rejectreq", "rejectreq", "rejectreq"},
		"failed":         {"rejectreq", "rejectreq", "rejectreq", "rejectreq"},
		"deprovisioning": {"rejectreq", "rejectreq", "rejectreq", "rejectreq"},
		"deprovisioned":  {"rejectreq", "rejectreq", "rejectreq", "rejectreq"},
		"rotating":       {"rejectreq", "rejectreq", "=", "rejectreq"},
		"suspending":     {"rejectreq", "rejectreq", "=", "rejectreq"},
		"suspended":      {"rejectreq", "rejectreq", "=", "rejectreq"},
		"resuming":       {"rejectreq", "rejectreq", "=", "rejectreq"},
		"retaining":      {"rejectreq", "rejectreq", "rejectreq", "rejectreq"},
		"retained":       {"rejectreq", "rejectreq", "rejectreq", "rejectreq"},
		"restoring":      {"rejectreq", "rejectreq", "=", "rejectreq"},
		"updating":       {"=", "rejectreq", "=", "rejectreq"},
	}
	for state, row := range want {
		for i, r := range reqs {
			t.Run(state+"/"+r.name, func(t *testing.T) {
				next, d := Step(ppolicy, f[state], r.ev, t0.Add(3*time.Hour))
				got := "="
				switch {
				case d.RejectRequest != "":
					got = "rejectreq"
					if next != nil {
						t.Errorf("a rejected request changed the record")
					}
				case next != nil:
					got = string(next.State)
				}
				if got != row[i] {
					t.Fatalf("got %s (%+v), want %s", got, d, row[i])
				}
			})
		}
	}
	// Other requests while updating: it is in flight.
	for _, ev := range []Event{lifecycleReq(EvSuspendRequested, 100), rotateReq(100, ""), deprovisionReq(100), retainReq(100, "24h")} {
		if next, d := Step(ppolicy, f["updating"], ev, t0.Add(3*time.Hour)); next != nil || d.RejectRequest == "" {
			t.Fatalf("%s while updating: next %v decision %+v", ev.Kind, next != nil, d)
		}
	}
	if next, d := Step(ppolicy, f["updating"], provisionReq(100, "acme-s7"), t0.Add(3*time.Hour)); next != nil || d.Note == "" {
		t.Fatalf("provision while updating: next %v decision %+v", next != nil, d)
	}
}

// An update applies the plan to every store; the limits read back are
// recorded, the plan changes, TENANT_PLAN_APPLIED and tenant.plan_applied.
func TestPlanUpdateFlow(t *testing.T) {
	at := t0.Add(2 * time.Hour)
	start := pstep(t, lfixtures(t)["active"], updateReq(30, "small"), at)
	cmds := commandsIn(t, start, events.ActionApplyPlan)
	if len(cmds) != 4 {
		t.Fatalf("%d apply_plan commands", len(cmds))
	}
	for _, c := range cmds {
		if c.Plan == nil || c.Plan.Name != "small" || (c.Store == events.StoreMinIO && c.Plan.MinIO.BucketQuotaBytes != 1<<30) {
			t.Fatalf("%s apply_plan carries %+v", c.Store, c.Plan)
		}
	}
	rec := executed(start)
	for i, store := range events.Stores() {
		limits := testPlans["small"].ForStore(store)
		if store == events.StoreRedis {
			// Another order, and a store value for what the plan leaves unset.
			limits.Redis = &events.RedisPlan{DenyCategories: []string{"@blocking", "@slow"}, DenyCommands: []string{"keys"}}
		}
		rec = pstep(t, rec, planResult(rec, store, events.OutcomePlanApplied, limits, "", uint64(500+i)), at)
	}
	if rec.State != events.TenantActive || rec.Plan != "small" || rec.Lifecycle != nil {
		t.Fatalf("state %s plan %q op %+v", rec.State, rec.Plan, rec.Lifecycle)
	}
	if l := rec.Stores[events.StorePostgres].Limits; l == nil || l.Postgres.ConnectionLimit != 5 || rec.Stores[events.StoreQdrant].Usage["points"] != 7 {
		t.Fatalf("limits %+v usage %v", l, rec.Stores[events.StoreQdrant].Usage)
	}
	if a := auditsIn(rec, events.AuditTenantPlanApplied); len(a) != 1 {
		t.Fatalf("%d TENANT_PLAN_APPLIED", len(a))
	}
	if o := outcomesIn(rec); len(o) != 1 || o[0] != events.TenantOutcomePlanApplied {
		t.Fatalf("outcomes %v", o)
	}
	var ev events.TenantOutcomeEvent
	_ = json.Unmarshal(effect(rec, events.EffectOutcome).Payload, &ev)
	if ev.Plan != "small" {
		t.Fatalf("outcome plan %q", ev.Plan)
	}
}

// A transient failure is retried after the backoff; the tenant is never
// rolled back. Limits read back that differ from the plan, or a store that
// cannot enforce it, end the update: active on the previous plan,
// tenant.plan_failed.
func TestPlanUpdateFailures(t *testing.T) {
	at := t0.Add(2 * time.Hour)
	start := executed(pstep(t, lfixtures(t)["active"], updateReq(30, "small"), at))
	pg := events.StorePostgres

	rec := pstep(t, start, planResult(start, pg, events.OutcomeApplyPlanFailed, nil, events.ReasonStoreError, 500), at)
	if rec.State != events.TenantUpdating || rec.Stores[pg].Step.State != events.StepFailed || rec.LastError == "" {
		t.Fatalf("transient failure: state %s step %+v", rec.State, rec.Stores[pg].Step)
	}
	rec = pstep(t, executed(rec), Event{Kind: EvTick}, at.Add(time.Minute))
	if c := commandsIn(t, rec, events.ActionApplyPlan); len(c) != 1 || c[0].Store != pg || c[0].Attempt != 2 {
		t.Fatalf("retry: %+v", c)
	}

	wrong := testPlans["small"].ForStore(pg)
	wrong.Postgres.ConnectionLimit = 3
	rec = executed(start)
	for i, store := range events.Stores() {
		limits := testPlans["small"].ForStore(store)
		if store == pg {
			limits = wrong
		}
		rec = pstep(t, rec, planResult(rec, store, events.OutcomePlanApplied, limits, "", uint64(600+i)), at)
	}
	if rec.State != events.TenantActive || rec.Plan != events.DefaultPlanName || !strings.Contains(rec.Reason, "connection_limit") {
		t.Fatalf("wrong limits: state %s plan %q reason %q", rec.State, rec.Plan, rec.Reason)
	}
	if o := outcomesIn(rec); len(o) != 1 || o[0] != events.TenantOutcomePlanFailed {
		t.Fatalf("outcomes %v", o)
	}
	if a := auditsIn(rec, events.AuditTenantPlanApplied); len(a) != 0 {
		t.Fatalf("plan audited as applied: %v", a)
	}
	if rec.Stores[pg].Limits != nil && rec.Stores[pg].Limits.Postgres != nil && rec.Stores[pg].Limits.Postgres.ConnectionLimit == 3 {
		t.Fatalf("unverified limits recorded as applied")
	}

	// A store that cannot enforce the plan: no retry; settles once all answered.
	rec = pstep(t, start, planResult(start, events.StoreRedis, events.OutcomeApplyPlanFailed, nil, events.ReasonUnsupported, 700), at)
	if rec.State != events.TenantUpdating {
		t.Fatalf("settled before every store answered: %s", rec.State)
	}
	if next, _ := Step(ppolicy, executed(rec), Event{Kind: EvTick}, at.Add(time.Hour)); next != nil {
		for _, c := range commandsIn(t, next, events.ActionApplyPlan) {
			if c.Store == events.StoreRedis {
				t.Fatalf("a refused plan is retried")
			}
		}
	}
	for i, store := range []events.Store{events.StoreMinIO, pg, events.StoreQdrant} {
		rec = pstep(t, rec, planResult(rec, store, events.OutcomePlanApplied, testPlans["small"].ForStore(store), "", uint64(701+i)), at)
	}
	if rec.State != events.TenantActive || rec.Plan != events.DefaultPlanName || !strings.Contains(rec.Reason, "redis") {
		t.Fatalf("refused: state %s plan %q reason %q", rec.State, rec.Plan, rec.Reason)
	}
}

func TestPlanVerified(t *testing.T) {
	want := testPlans["small"].ForStore(events.StoreRedis)
	for _, tc := range []struct {
		got  *events.Plan
		okay bool
	}{
		{nil, false},
		{&events.Plan{Name: "small", Redis: &events.RedisPlan{DenyCategories: []string{"@blocking", "@slow"}}}, true},
		{&events.Plan{Name: "x", Redis: &events.RedisPlan{DenyCategories: []string{"@slow"}}}, false},
		{&events.Plan{Name: "small"}, false},
	} {
		if ok, why := planVerified(want, tc.got); ok != tc.okay {
			t.Errorf("planVerified(%+v) = %v (%s), want %v", tc.got, ok, why, tc.okay)
		}
	}
	if ok, _ := planVerified(&events.Plan{Name: "default"}, &events.Plan{Name: "default"}); !ok {
		t.Error("an empty plan is not verified")
	}
}
