package saga

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// Plans (DESIGN.md §10) as transitions of Step: the plan a provision
// carries, and the update of an active tenant's plan as a lifecycle
// operation (transition_lifecycle.go) with one phase, apply_plan:
//
//	update   active → updating  apply_plan (every store, retried until it succeeds) → active
//
// A store that refuses the plan for good (a limit it cannot enforce, a
// setting fixed at creation) ends the update: the tenant is active again on
// its previous plan, and the stores that applied the new one keep it (a
// plan is never rolled back; the record's per-store limits say what each
// store enforces). A dry run never reaches Step (dryrun.go).

// EvUpdateRequested is tenant.update.requested.
const EvUpdateRequested EventKind = "update_requested"

// plans is the configured set of plans (the built-in default when none).
func (p Policy) plans() events.Plans {
	if p.Plans == nil {
		return events.DefaultPlans()
	}
	return p.Plans
}

// planName is the plan a request names, "" meaning the default.
func planName(name string) string {
	if name == "" {
		return events.DefaultPlanName
	}
	return name
}

// rejectUnknownPlan reports a provision request naming a plan the
// configuration does not define.
func (t *step) rejectUnknownPlan(req *events.TenantRequested) (Decision, bool) {
	if _, err := t.p.plans().Lookup(req.Plan); err != nil {
		return Decision{RejectRequest: fmt.Sprintf("provision %s: %v", req.TenantID, err)}, true
	}
	return Decision{}, false
}

// storePlan is the section of the plan called name a command to store
// carries (nil when the configuration no longer defines it: the store
// keeps what it enforces).
func (t *step) storePlan(name string, store events.Store) *events.Plan {
	p, err := t.p.plans().Lookup(name)
	if err != nil {
		return nil
	}
	return p.ForStore(store)
}

// updateRequested starts applying a new plan to an active tenant, or says
// why it cannot.
func (t *step) updateRequested(ev Event) Decision {
	req, rec := ev.Update, t.rec
	if rec == nil {
		return Decision{RejectRequest: fmt.Sprintf("update %s: unknown tenant", req.TenantID)}
	}
	if ev.Seq != 0 && (ev.Seq <= rec.LifecycleSeq || ev.Seq < rec.RequestSeq) {
		return Decision{Note: "update request already handled or aimed at an earlier generation"}
	}
	if req.RequestID != "" && slices.Contains(rec.LifecycleRequestIDs, req.RequestID) {
		return Decision{Note: "request " + req.RequestID + " already handled"}
	}
	if _, err := t.p.plans().Lookup(req.Plan); err != nil {
		return Decision{RejectRequest: fmt.Sprintf("update %s: %v", rec.TenantID, err)}
	}
	switch rec.State {
	case events.TenantActive:
	case events.TenantUpdating:
		if op := rec.Lifecycle; op != nil && op.Plan == req.Plan {
			return Decision{Note: "plan " + req.Plan + " is being applied already"}
		}
		return Decision{RejectRequest: fmt.Sprintf("update %s: tenant is updating to another plan; retry after it settles", rec.TenantID)}
	default:
		return Decision{RejectRequest: fmt.Sprintf("update %s: tenant is %s: only an active tenant's plan can be changed", rec.TenantID, rec.State)}
	}
	rec.LifecycleSeq = ev.Seq
	t.rememberRequest(req.RequestID)
	t.startOp(&events.LifecycleOp{Kind: events.LifecyclePlan, Phases: []events.Action{events.ActionApplyPlan}, Plan: req.Plan,
		RequestID: req.RequestID, RequestedBy: req.RequestedBy, StartedAt: t.now})
	return Decision{}
}

// planVerified reports whether the limits a store read back hold every
// limit the plan's section sets (a limit the plan leaves unset may read
// back as the store's value).
func planVerified(want, got *events.Plan) (bool, string) {
	if want == nil {
		return true, ""
	}
	if got == nil {
		return false, "no limits read back"
	}
	var w, g map[string]map[string]any
	_ = json.Unmarshal(mustJSON(want), &w)
	_ = json.Unmarshal(mustJSON(got), &g)
	var bad []string
	for section, fields := range w {
		if section == "name" {
			continue
		}
		for field, v := range fields {
			if !sameLimit(v, g[section][field]) {
				bad = append(bad, fmt.Sprintf("%s.%s is %v, want %v", section, field, g[section][field], v))
			}
		}
	}
	slices.Sort(bad)
	return len(bad) == 0, strings.Join(bad, "; ")
}

// sameLimit compares two JSON values; lists as sets (a store may report
// ACL categories in its own order).
func sameLimit(a, b any) bool {
	la, okA := a.([]any)
	lb, okB := b.([]any)
	if okA && okB {
		if len(la) != len(lb) {
			return false
		}
		for _, x := range la {
			if !slices.ContainsFunc(lb, func(y any) bool { return reflect.DeepEqual(x, y) }) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

// planPermanent reports whether an apply_plan failure will not go away by
// retrying: the store cannot enforce the plan (or enforces something else
// than it asks for).
func planPermanent(reason string) bool {
	switch reason {
	case events.ReasonInvalid, events.ReasonUnsupported, events.ReasonConflict, events.ReasonVerifyFailed:
		return true
	}
	return false
}

// planLimits records what a store read back (provision or apply_plan).
func planLimits(st *events.StoreStatus, res *events.StoreResult) {
	if res.Limits != nil {
		st.Limits = res.Limits
	}
	if res.Usage != nil {
		st.Usage = res.Usage
	}
}

// planAudit emits TENANT_PLAN_APPLIED: the plan and each store's limits as
// read back, and usage.
func (t *step) planAudit(plan, disc string) {
	rec := t.rec
	stores := map[string]any{}
	for _, store := range events.Stores() {
		if st := rec.Stores[store]; st != nil {
			stores[string(store)] = map[string]any{"limits": st.Limits, "usage": st.Usage}
		}
	}
	t.audit(events.AuditTenantPlanApplied, "", disc, map[string]any{"plan": plan, "stores": stores, "request_id": rec.RequestID})
}

// planAnnounced is called when a provisioning settles active: its plan
// was applied with the resources. A plan that limits nothing (the
// built-in default) is not audited as applied.
func (t *step) planAnnounced(typ events.AuditType) {
	if typ != events.AuditTenantProvisioned || t.rec.Plan == "" || t.rec.State != events.TenantActive {
		return
	}
	if p, err := t.p.plans().Lookup(t.rec.Plan); err != nil || (p.MinIO == nil && p.Postgres == nil && p.Qdrant == nil && p.Redis == nil) {
		return
	}
	t.planAudit(t.rec.Plan, "provision")
}

// planPhaseFailed ends an update a store refused for good.
func (t *step) planPhaseFailed() bool {
	rec, op := t.rec, t.rec.Lifecycle
	if op == nil || op.Kind != events.LifecyclePlan {
		return false
	}
	var failed []string
	for _, store := range events.Stores() {
		if s := rec.Stores[store].Step; s != nil && s.Action == events.ActionApplyPlan && s.State == events.StepFailed && planPermanent(s.Reason) {
			failed = append(failed, fmt.Sprintf("%s: %s %s", store, s.Reason, s.Error))
		}
	}
	if len(failed) == 0 {
		return false
	}
	// Wait for every store's answer before settling: a store still at it
	// would otherwise apply the plan after the tenant is active again.
	for _, store := range events.Stores() {
		if s := rec.Stores[store].Step; s == nil || s.Action != events.ActionApplyPlan || s.State == events.StepSent {
			return true
		}
	}
	t.changed = true
	rec.Lifecycle = nil
	rec.State = events.TenantActive
	rec.Reason = events.Truncate("plan "+op.Plan+" refused: "+strings.Join(failed, "; "), 1000)
	t.lifecycleOutcome(events.TenantOutcomePlanFailed, events.TenantActive, op.ID)
	return true
}

// planApplied settles an update: every store applied the plan.
func (t *step) planApplied(op *events.LifecycleOp) {
	rec := t.rec
	rec.State = events.TenantActive
	rec.Plan = op.Plan
	t.planAudit(op.Plan, op.ID)
	ev := &events.TenantOutcomeEvent{Outcome: events.TenantOutcomePlanApplied, TenantID: rec.TenantID, Generation: rec.Generation, SagaID: rec.SagaID,
		RequestID: op.RequestID, OccurredAt: t.now, Plan: op.Plan}
	msgID := events.MsgID{Kind: "tenant", Tenant: rec.TenantID, Generation: rec.Generation, Step: string(events.TenantOutcomePlanApplied) + ":" + op.ID}.String()
	t.emit(&events.Effect{Kind: events.EffectOutcome, Generation: rec.Generation, Subject: events.TenantOutcomeSubject(events.TenantOutcomePlanApplied),
		MsgID: msgID, Payload: mustJSON(ev), Announces: events.TenantActive})
}
