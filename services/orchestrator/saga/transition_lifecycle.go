package saga

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// The lifecycle after provisioning (DESIGN.md §10) as transitions of Step:
// rotation, suspend/resume, retention/restore. Like the rest of Step they
// do no I/O; their effects go into the outbox.
//
// A lifecycle operation (rec.Lifecycle) is a list of phases, each a store
// action sent to every store concerned; a phase is complete when every
// store answered it (a rotate may fail per store: that store keeps its old
// credential; every other action is retried with backoff until it
// succeeds). Steps scheduled for later — retiring the credentials a
// rotation replaced, purging a retained tenant — are kept in the record
// (rec.Scheduled) and started by the clock (EvTick) when due.
//
//	rotate   active    → rotating  [retire the pending grace,] rotate, seal[, retire if grace 0] → active
//	retire   active    → rotating  retire (scheduled at the end of the grace)                → active
//	suspend  active    → suspending suspend                                                  → suspended
//	resume   suspended → resuming  resume                                                    → active
//	retain   active    → retaining suspend (suspended: none)                                 → retained
//	restore  retained  → restoring resume, rotate (grace 0), seal, retire                    → active
//	purge    retained  → deprovisioning (as a deprovision)                                   → deprovisioned

// LifecyclePolicy bounds the lifecycle requests.
type LifecyclePolicy struct {
	// GraceDefault is a rotation's grace when the request names none;
	// GraceMax the longest one accepted.
	GraceDefault time.Duration
	GraceMax     time.Duration
	// RetainMax is the longest retention a deprovision may ask for.
	RetainMax time.Duration
}

var lifecycleKinds = map[EventKind]events.LifecycleKind{
	EvRotateRequested:  events.LifecycleRotate,
	EvSuspendRequested: events.LifecycleSuspend,
	EvResumeRequested:  events.LifecycleResume,
	EvRestoreRequested: events.LifecycleRestore,
}

// lifecycleStates are the states a lifecycle operation leaves a tenant in
// while it runs.
var lifecycleStates = map[events.LifecycleKind]events.TenantState{
	events.LifecycleRotate:  events.TenantRotating,
	events.LifecycleRetire:  events.TenantRotating,
	events.LifecycleSuspend: events.TenantSuspending,
	events.LifecycleResume:  events.TenantResuming,
	events.LifecycleRetain:  events.TenantRetaining,
	events.LifecycleRestore: events.TenantRestoring,
	events.LifecyclePlan:    events.TenantUpdating,
}

// lifecycleInFlight reports whether s is one of the states a lifecycle
// operation runs in.
func lifecycleInFlight(s events.TenantState) bool {
	switch s {
	case events.TenantRotating, events.TenantSuspending, events.TenantResuming, events.TenantRetaining, events.TenantRestoring, events.TenantUpdating:
		return true
	}
	return false
}

// lifecycleState reports whether s is a state of the lifecycle after
// provisioning (in flight or settled): the tenant's slices exist and are
// wanted, its sealed file stays.
func lifecycleState(s events.TenantState) bool {
	return lifecycleInFlight(s) || s == events.TenantSuspended || s == events.TenantRetained
}

// ---- requests ----

// lifecycleRequested starts a rotation, suspend, resume or restore, or
// says why it cannot.
func (t *step) lifecycleRequested(ev Event) Decision {
	kind := lifecycleKinds[ev.Kind]
	var tenant, reqID, by string
	if ev.Rotate != nil {
		tenant, reqID, by = ev.Rotate.TenantID, ev.Rotate.RequestID, ev.Rotate.RequestedBy
	} else if ev.Lifecycle != nil {
		tenant, reqID, by = ev.Lifecycle.TenantID, ev.Lifecycle.RequestID, ev.Lifecycle.RequestedBy
	}
	rec := t.rec
	if rec == nil {
		return Decision{RejectRequest: fmt.Sprintf("%s %s: unknown tenant", kind, tenant)}
	}
	if ev.Seq != 0 && (ev.Seq <= rec.LifecycleSeq || ev.Seq < rec.RequestSeq) {
		return Decision{Note: string(kind) + " request already handled or aimed at an earlier generation"}
	}
	if reqID != "" && slices.Contains(rec.LifecycleRequestIDs, reqID) {
		return Decision{Note: "request " + reqID + " already handled"}
	}
	notAllowed := func(why string) Decision {
		return Decision{RejectRequest: fmt.Sprintf("%s %s: tenant is %s: %s", kind, rec.TenantID, rec.State, why)}
	}
	op := &events.LifecycleOp{Kind: kind, RequestID: reqID, RequestedBy: by, StartedAt: t.now}
	switch kind {
	case events.LifecycleRotate:
		switch {
		case rec.State == events.TenantSuspended:
			return notAllowed("a suspended tenant is never rotated; resume it first")
		case rec.State != events.TenantActive:
			return notAllowed("only an active tenant can be rotated")
		}
		grace, _ := events.ParseRequestDuration(ev.Rotate.Grace) // validated when decoded
		if ev.Rotate.Grace == "" {
			grace = t.p.Lifecycle.GraceDefault
		}
		if grace > t.p.Lifecycle.GraceMax {
			return Decision{RejectRequest: fmt.Sprintf("rotate %s: grace %s is longer than the maximum %s", rec.TenantID, grace, t.p.Lifecycle.GraceMax)}
		}
		op.GraceSeconds = int64(grace / time.Second)
		op.Stores = storeSet(ev.Rotate.Stores)
		// A rotation whose grace is still running is retired first: the
		// credentials it replaced are revoked before newer ones are made,
		// so a store never holds more than two.
		if sc := rec.Scheduled; sc != nil && sc.Kind == events.LifecycleRetire {
			op.Phases = append(op.Phases, events.ActionRetire)
			op.Retire = sc.Stores
		}
		op.Phases = append(op.Phases, events.ActionRotate)
		if grace == 0 {
			op.Phases = append(op.Phases, events.ActionRetire)
		}
	case events.LifecycleSuspend:
		switch rec.State {
		case events.TenantActive:
		case events.TenantSuspending, events.TenantSuspended:
			return Decision{Note: "tenant is " + string(rec.State) + " already"}
		default:
			return notAllowed("only an active tenant can be suspended")
		}
		op.Phases = []events.Action{events.ActionSuspend}
	case events.LifecycleResume:
		switch rec.State {
		case events.TenantSuspended:
		case events.TenantResuming, events.TenantActive:
			return Decision{Note: "tenant is " + string(rec.State) + " already"}
		case events.TenantRetained:
			return notAllowed("a retained tenant comes back with tenant.restore.requested")
		default:
			return notAllowed("only a suspended tenant can be resumed")
		}
		op.Phases = []events.Action{events.ActionResume}
	case events.LifecycleRestore:
		switch rec.State {
		case events.TenantRetained:
		case events.TenantRestoring:
			return Decision{Note: "tenant is restoring already"}
		case events.TenantDeprovisioning, events.TenantDeprovisioned:
			return notAllowed("the purge has started; the data is gone")
		default:
			return notAllowed("only a retained tenant can be restored")
		}
		// Fresh credentials: the retained ones were revoked when the
		// tenant was retained, and are retired for good once the new
		// ones are sealed.
		op.Phases = []events.Action{events.ActionResume, events.ActionRotate, events.ActionRetire}
		op.Stores = events.Stores()
		rec.Scheduled = nil // the purge is off
	}
	rec.LifecycleSeq = ev.Seq
	t.rememberRequest(reqID)
	t.startOp(op)
	return Decision{}
}

// keepRequestIDs bounds how many lifecycle request IDs a record remembers.
const keepRequestIDs = 16

// rememberRequest records the request_id of a request that started an
// operation, so that the same request sent again changes nothing.
func (t *step) rememberRequest(id string) {
	if id == "" {
		return
	}
	ids := append(t.rec.LifecycleRequestIDs, id)
	if len(ids) > keepRequestIDs {
		ids = ids[len(ids)-keepRequestIDs:]
	}
	t.rec.LifecycleRequestIDs = ids
}

// storeSet is the stores named (deduplicated, in canonical order), or all.
func storeSet(named []events.Store) []events.Store {
	if len(named) == 0 {
		return events.Stores()
	}
	var out []events.Store
	for _, s := range events.Stores() {
		if slices.Contains(named, s) {
			out = append(out, s)
		}
	}
	return out
}

// deprovisionLifecycle handles the deprovision requests the lifecycle
// changes: with "retain", and of a suspended, retained or lifecycle-busy
// tenant. It reports false for the ones deprovisionRequested handles as
// before (an active tenant without retain, an unknown or provisioning one).
func (t *step) deprovisionLifecycle(ev Event) (bool, Decision) {
	rec, req := t.rec, ev.Deprovision
	if rec == nil {
		return false, Decision{}
	}
	if ev.Seq != 0 && (ev.Seq <= rec.DeprovisionSeq || ev.Seq < rec.RequestSeq) {
		return false, Decision{} // deprovisionRequested says so
	}
	if lifecycleInFlight(rec.State) {
		return true, Decision{RejectRequest: fmt.Sprintf("deprovision %s: tenant is %s; retry after it settles", rec.TenantID, rec.State)}
	}
	if req.Retain == "" {
		switch rec.State {
		case events.TenantRetained:
			// Purge now, without waiting for the retention to end.
			rec.DeprovisionSeq = ev.Seq
			t.startPurge(req.RequestID, req.RequestedBy, "requested")
			return true, Decision{}
		case events.TenantSuspended:
			rec.DeprovisionSeq = ev.Seq
			t.startDeprovisioning(req.RequestID, req.RequestedBy, nil)
			return true, Decision{}
		}
		return false, Decision{}
	}
	if req.RequestID != "" && slices.Contains(rec.LifecycleRequestIDs, req.RequestID) {
		return true, Decision{Note: "request " + req.RequestID + " already handled"}
	}
	retain, _ := events.ParseRequestDuration(req.Retain) // validated when decoded
	if retain <= 0 || retain > t.p.Lifecycle.RetainMax {
		return true, Decision{RejectRequest: fmt.Sprintf("deprovision %s: retain %q is outside the allowed (0, %s]", rec.TenantID, req.Retain, t.p.Lifecycle.RetainMax)}
	}
	switch rec.State {
	case events.TenantActive, events.TenantSuspended:
	case events.TenantRetained:
		return true, Decision{Note: "tenant is retained already"}
	case events.TenantProvisioning, events.TenantRollingBack:
		return true, Decision{RejectRequest: fmt.Sprintf("deprovision %s: a provisioning saga is in flight for this tenant; retry after it settles", rec.TenantID)}
	default:
		return true, Decision{Note: "tenant is " + string(rec.State) + ": nothing to retain"}
	}
	rec.DeprovisionSeq = ev.Seq
	t.rememberRequest(req.RequestID)
	op := &events.LifecycleOp{Kind: events.LifecycleRetain, RequestID: req.RequestID, RequestedBy: req.RequestedBy, StartedAt: t.now,
		RetainSeconds: int64(retain / time.Second)}
	if rec.State == events.TenantActive {
		op.Phases = []events.Action{events.ActionSuspend} // a suspended tenant's credentials are refused already
	}
	// The credentials a rotation replaced are revoked with the rest; a
	// restore retires every credential but its fresh ones.
	rec.Scheduled = nil
	t.startOp(op)
	return true, Decision{}
}

// startDeprovisioning moves a settled tenant to deprovisioning, as
// deprovisionRequested does for an active one.
func (t *step) startDeprovisioning(reqID, by string, details map[string]any) {
	rec := t.rec
	t.changed = true
	rec.State = events.TenantDeprovisioning
	rec.Announced = ""
	rec.Scheduled = nil
	rec.RequestID, rec.RequestedBy = reqID, by
	if details == nil {
		details = map[string]any{}
	}
	details["request_id"], details["requested_by"] = reqID, by
	t.audit(events.AuditTenantDeprovisioningStarted, "", "", details)
	for _, store := range events.Stores() {
		st := rec.Stores[store]
		st.Reason, st.Error = "", ""
		t.startRound(rec.Generation, store, st)
	}
}

// startPurge deprovisions a retained tenant: its retention ended (or a
// deprovision without retain asked for it now). maybeSettle audits
// TENANT_PURGED with TENANT_DEPROVISIONED when every store is clean.
func (t *step) startPurge(reqID, by, why string) {
	rec := t.rec
	due := ""
	if rec.Scheduled != nil {
		due = rec.Scheduled.DueAt.Format(time.RFC3339)
	}
	rec.Lifecycle = &events.LifecycleOp{ID: t.opID(), Kind: events.LifecyclePurge, RequestID: reqID, RequestedBy: by, StartedAt: t.now}
	t.startDeprovisioning(reqID, by, map[string]any{"purge": why, "purge_due": due})
}

// purged is called by maybeSettle when a deprovisioning ends.
func (t *step) purged() {
	op := t.rec.Lifecycle
	if op == nil || op.Kind != events.LifecyclePurge {
		return
	}
	t.audit(events.AuditTenantPurged, "", op.ID, map[string]any{"stores": storeSummary(t.rec)})
	t.rec.Lifecycle = nil
}

// ---- running an operation ----

// opID names a new operation: unique within the record (the effect
// sequence only grows), so its audit events and outcomes never collide
// with an earlier operation's.
func (t *step) opID() string { return fmt.Sprintf("op%d", t.rec.EffectSeq+1) }

func (t *step) startOp(op *events.LifecycleOp) {
	rec := t.rec
	t.changed = true
	op.ID = t.opID()
	rec.Lifecycle = op
	rec.State = lifecycleStates[op.Kind]
	rec.Announced = ""
	rec.Reason = ""
	if op.Kind != events.LifecycleRetire {
		rec.RequestID, rec.RequestedBy = op.RequestID, op.RequestedBy
	}
	t.startPhase()
}

// phaseStores are the stores the running phase concerns.
func (t *step) phaseStores() []events.Store {
	op := t.rec.Lifecycle
	switch op.Phases[op.Phase] {
	case events.ActionRotate:
		return op.Stores
	case events.ActionRetire:
		return op.Retire
	}
	return events.Stores()
}

func (t *step) startPhase() {
	op := t.rec.Lifecycle
	if op.Phase >= len(op.Phases) {
		t.finishOp()
		return
	}
	action := op.Phases[op.Phase]
	if action == events.ActionRotate {
		op.Rotated, op.Failed = nil, nil
	}
	for _, store := range t.phaseStores() {
		st := t.rec.Stores[store]
		t.lifecycleCommand(store, st, action, true)
	}
	t.advance()
}

// lifecycleCommand sends store the command of the running phase: a new
// step (first) or a retry of it.
func (t *step) lifecycleCommand(store events.Store, st *events.StoreStatus, action events.Action, first bool) {
	rec, op := t.rec, t.rec.Lifecycle
	t.changed = true
	prev := st.Step
	attempt := 1
	if prev != nil {
		attempt = prev.Attempt + 1
	}
	now := t.now
	deadline := now.Add(t.p.SagaTimeout)
	step := &events.StoreStep{Action: action, Attempt: attempt, Round: attempt, State: events.StepSent, SentAt: &now, Deadline: &deadline}
	if !first {
		step.Round, step.Retries, step.Version, step.Prev = prev.Round, prev.Retries+1, prev.Version, prev.Prev
	}
	cur := max(st.CredentialVersion, 1)
	cmd := &events.StoreCommand{TenantID: rec.TenantID, Generation: rec.Generation, SagaID: rec.SagaID, Store: store, Action: action,
		Attempt: attempt, IssuedAt: now, Deadline: deadline}
	switch action {
	case events.ActionRotate:
		step.Version = cur + 1
		step.Prev = &events.SealedResult{Seq: st.CredentialSeq, CredentialID: st.CredentialID, CredentialVersion: st.CredentialVersion}
		cmd.CredentialVersion, cmd.Version, cmd.GraceSeconds = cur, cur+1, op.GraceSeconds
	case events.ActionRetire:
		step.Version = cur
		cmd.CredentialVersion = cur
	case events.ActionApplyPlan:
		cmd.Plan = t.storePlan(op.Plan, store)
		if cmd.Plan == nil { // the plan left the configuration since the request
			cmd.Plan = &events.Plan{Name: op.Plan}
		}
	}
	st.Step = step
	t.emit(&events.Effect{Kind: events.EffectCommand, Generation: rec.Generation, Subject: events.CommandSubject(store, action),
		MsgID: events.CommandMsgID(cmd), Payload: mustJSON(cmd)})
}

// advance completes the running phase once every store concerned answered
// it, and moves on.
func (t *step) advance() {
	op := t.rec.Lifecycle
	if op == nil || op.Sealing || op.Phase >= len(op.Phases) {
		return
	}
	action := op.Phases[op.Phase]
	if t.planPhaseFailed() {
		return
	}
	for _, store := range t.phaseStores() {
		s := t.rec.Stores[store].Step
		if s == nil || s.Action != action || s.Round == 0 {
			return
		}
		if s.State == events.StepSent || (s.State == events.StepFailed && action != events.ActionRotate) {
			return
		}
	}
	t.changed = true
	switch action {
	case events.ActionRotate:
		if len(op.Rotated) > 0 {
			// The new credentials are sealed before anything else: the
			// file always holds the newest working credential of each
			// store. sealed → lifecycleSealed continues.
			op.Sealing = true
			t.maybeSeal()
			if effect := t.pendingSeal(); effect == nil {
				// maybeSeal seals only when every store is provisioned
				// and verified; never wait for a seal that is not coming.
				t.lifecycleSealFailed("not every store is provisioned and verified")
			}
			return
		}
		t.rotationSettled()
	case events.ActionRetire:
		t.retired()
	}
	t.nextPhase()
}

func (t *step) pendingSeal() *events.Effect {
	for _, e := range t.rec.Outbox {
		if e.Kind == events.EffectPutSecrets {
			return e
		}
	}
	return nil
}

func (t *step) nextPhase() {
	op := t.rec.Lifecycle
	op.Phase++
	t.startPhase()
}

// lifecycleSealed continues a rotation once its new sealed file is stored
// (sealed calls it).
func (t *step) lifecycleSealed() {
	op := t.rec.Lifecycle
	if op == nil || !op.Sealing {
		return
	}
	op.Sealing = false
	t.rotationSettled()
	t.nextPhase()
}

// lifecycleSealFailed: the new credentials cannot be sealed. Every store
// keeps its old credential (the grace has not started; the old ones work),
// the rotation counts as failed for each.
func (t *step) lifecycleSealFailed(reason string) {
	rec, op := t.rec, t.rec.Lifecycle
	op.Sealing = false
	if op.Failed == nil {
		op.Failed = map[events.Store]string{}
	}
	for _, store := range op.Rotated {
		st := rec.Stores[store]
		if p := st.Step.Prev; p != nil {
			st.CredentialSeq, st.CredentialID, st.CredentialVersion = p.Seq, p.CredentialID, p.CredentialVersion
		}
		st.Step.State = events.StepFailed
		op.Failed[store] = "sealing the new credentials failed: " + reason
	}
	op.Rotated = nil
	rec.LastError = "rotation: sealing the new credentials failed: " + reason
	t.rotationSettled()
	t.nextPhase()
}

// rotationSettled audits what a rotate phase came to and schedules the
// retirement of the credentials it replaced.
func (t *step) rotationSettled() {
	rec, op := t.rec, t.rec.Lifecycle
	// A store given up at the deadline may hold the new credential all the
	// same (its agent made it, then died or answered late): nobody has its
	// secret, but it logs in. It is retired with the rotated stores,
	// keeping its current version.
	retire := slices.Clone(op.Rotated)
	for _, store := range events.Stores() {
		if st := rec.Stores[store]; op.Failed[store] != "" && st != nil && st.Step != nil && st.Step.Action == events.ActionRotate && st.Step.Reason == events.ReasonExpired {
			retire = append(retire, store)
		}
	}
	if op.Kind == events.LifecycleRotate && op.GraceSeconds > 0 && len(op.Rotated) == 0 && len(retire) > 0 {
		rec.Scheduled = &events.ScheduledStep{Kind: events.LifecycleRetire, DueAt: t.now.Add(time.Duration(op.GraceSeconds) * time.Second), Stores: retire, Op: op.ID}
	}
	if len(op.Rotated) > 0 {
		versions := map[string]any{}
		for _, store := range op.Rotated {
			st := rec.Stores[store]
			versions[string(store)] = map[string]any{"credential_version": st.CredentialVersion, "credential_id": st.CredentialID}
		}
		details := map[string]any{"stores": versions, "grace_seconds": op.GraceSeconds, "operation": op.Kind}
		if op.Kind == events.LifecycleRotate && op.GraceSeconds > 0 {
			due := t.now.Add(time.Duration(op.GraceSeconds) * time.Second)
			rec.Scheduled = &events.ScheduledStep{Kind: events.LifecycleRetire, DueAt: due, Stores: retire, Op: op.ID}
			details["retire_at"] = due
		}
		if rec.Secrets != nil {
			details["secrets_sha256"] = rec.Secrets.SHA256
		}
		t.audit(events.AuditCredentialsRotated, "", op.ID, details)
	}
	for _, store := range events.Stores() {
		reason, ok := op.Failed[store]
		if !ok {
			continue
		}
		st := rec.Stores[store]
		t.audit(events.AuditCredentialsRotationFailed, store, op.ID, map[string]any{"reason": reason, "error": st.Step.Error,
			"kept_credential_version": max(st.CredentialVersion, 1), "operation": op.Kind})
	}
	// The retire phase (grace 0, restore) revokes what this one replaced,
	// and whatever a store given up made.
	op.Retire = retire
}

// retired audits a completed retire phase.
func (t *step) retired() {
	rec, op := t.rec, t.rec.Lifecycle
	kept := map[string]any{}
	for _, store := range op.Retire {
		kept[string(store)] = rec.Stores[store].Step.Version
	}
	if len(op.Retire) > 0 {
		t.audit(events.AuditCredentialsRetired, "", op.ID+"-p"+fmt.Sprint(op.Phase), map[string]any{"kept_credential_versions": kept, "operation": op.Kind})
		t.lifecycleOutcome(events.TenantOutcomeRetired, "", fmt.Sprintf("%s-p%d", op.ID, op.Phase))
	}
	if sc := rec.Scheduled; sc != nil && sc.Kind == events.LifecycleRetire {
		rec.Scheduled = nil
	}
}

// finishOp settles the tenant at the end of its operation.
func (t *step) finishOp() {
	rec, op := t.rec, t.rec.Lifecycle
	t.changed = true
	rec.Lifecycle = nil
	var typ events.AuditType
	var outcome events.Outcome
	switch op.Kind {
	case events.LifecycleRotate:
		rec.State = events.TenantActive
		outcome = events.TenantOutcomeRotated
		if len(op.Rotated) == 0 {
			outcome = events.TenantOutcomeRotationFailed
			rec.Reason = "no store rotated: " + failedSummary(op.Failed)
		} else if len(op.Failed) > 0 {
			rec.Reason = "kept their old credential: " + failedSummary(op.Failed)
		}
	case events.LifecycleRetire:
		rec.State = events.TenantActive
	case events.LifecycleSuspend:
		rec.State, typ, outcome = events.TenantSuspended, events.AuditTenantSuspended, events.TenantOutcomeSuspended
	case events.LifecycleResume:
		rec.State, typ, outcome = events.TenantActive, events.AuditTenantResumed, events.TenantOutcomeResumed
	case events.LifecycleRetain:
		rec.State, typ, outcome = events.TenantRetained, events.AuditTenantRetained, events.TenantOutcomeRetained
		due := t.now.Add(time.Duration(op.RetainSeconds) * time.Second)
		rec.Scheduled = &events.ScheduledStep{Kind: events.LifecyclePurge, DueAt: due, Op: op.ID}
	case events.LifecycleRestore:
		rec.State, typ, outcome = events.TenantActive, events.AuditTenantRestored, events.TenantOutcomeRestored
		if len(op.Failed) > 0 {
			rec.Reason = "kept their retained credential: " + failedSummary(op.Failed)
		}
	case events.LifecyclePlan:
		t.planApplied(op) // transition_plan.go
		return
	}
	if typ != "" {
		details := map[string]any{"stores": storeSummary(rec), "request_id": op.RequestID, "reason": rec.Reason}
		if rec.Scheduled != nil && rec.Scheduled.Kind == events.LifecyclePurge {
			details["purge_at"] = rec.Scheduled.DueAt
		}
		if rec.Secrets != nil && op.Kind == events.LifecycleRestore {
			details["secrets_sha256"] = rec.Secrets.SHA256
		}
		t.audit(typ, "", op.ID, details)
	}
	if outcome != "" {
		t.lifecycleOutcome(outcome, rec.State, op.ID)
	} else {
		rec.Announced = rec.State // a scheduled retire ends with its own outcome (retired)
	}
}

func failedSummary(failed map[events.Store]string) string {
	var parts []string
	for _, s := range events.Stores() {
		if r, ok := failed[s]; ok {
			parts = append(parts, string(s)+": "+r)
		}
	}
	return strings.Join(parts, "; ")
}

// lifecycleOutcome publishes tenant.<outcome>; announces is the settled
// state it announces ("" for an intermediate one). Its message ID carries
// disc (the operation), so a later operation's outcome is never
// de-duplicated.
func (t *step) lifecycleOutcome(outcome events.Outcome, announces events.TenantState, disc string) {
	rec := t.rec
	ev := &events.TenantOutcomeEvent{Outcome: outcome, TenantID: rec.TenantID, Generation: rec.Generation, SagaID: rec.SagaID,
		RequestID: rec.RequestID, Reason: rec.Reason, OccurredAt: t.now}
	if rec.Secrets != nil && announces == events.TenantActive {
		ev.SecretsRef = rec.Secrets.Bucket + "/" + rec.Secrets.Object
		ev.SecretsSHA256 = rec.Secrets.SHA256
	}
	if outcome == events.TenantOutcomeRotationFailed && ev.Reason == "" {
		ev.Reason = "rotation failed"
	}
	msgID := events.MsgID{Kind: "tenant", Tenant: rec.TenantID, Generation: rec.Generation, Step: string(outcome) + ":" + disc}.String()
	t.emit(&events.Effect{Kind: events.EffectOutcome, Generation: rec.Generation, Subject: events.TenantOutcomeSubject(outcome),
		MsgID: msgID, Payload: mustJSON(ev), Announces: announces})
}

// ---- results ----

// lifecycleResult applies a store's answer to a lifecycle command (rotate,
// retire, suspend, resume). Like a provision result it is bound to the
// generation and saga in flight and to the command (attempt) it answers,
// and of two runs of one command only the later one counts.
func (t *step) lifecycleResult(ev Event) Decision {
	res, rec := ev.Result, t.rec
	reject := func(code, format string, a ...any) Decision {
		return Decision{RejectResult: fmt.Sprintf(format, a...), RejectCode: code}
	}
	if rec == nil {
		return reject(rejectTenant, "no saga for tenant %s", res.TenantID)
	}
	if res.Generation != rec.Generation {
		return reject(rejectGeneration, "generation %d is not the current %d", res.Generation, rec.Generation)
	}
	if res.SagaID != rec.SagaID {
		return reject(rejectSaga, "saga %q is not the saga in flight", res.SagaID)
	}
	st := rec.Stores[res.Store]
	if st == nil {
		return reject(rejectStore, "store not part of the saga")
	}
	action := res.Outcome.Action()
	s := st.Step
	switch {
	case s == nil || res.Attempt > s.Attempt:
		return reject(rejectAttempt, "%s attempt %d was never sent", action, res.Attempt)
	case res.Attempt < s.Round:
		if res.Outcome == action.SuccessOutcome() && s.ResultSeq != 0 && ev.Seq > s.ResultSeq && action != s.Action {
			// The agent answers one tenant's commands in the order it
			// ran them: this earlier command ran again after the current
			// step was answered (a redelivery), so the store may no
			// longer be what the step made it. Never silently.
			t.changed = true
			rec.LastError = fmt.Sprintf("%s: a re-run of %s attempt %d finished after %s attempt %d: the store may not be as the record says; check it (tenantctl doctor) and repeat the last request",
				res.Store, action, res.Attempt, s.Action, s.ResultAttempt)
		}
		return reject(rejectStale, "%s attempt %d belongs to an earlier step (this one began at attempt %d)", action, res.Attempt, s.Round)
	case s.Action != action:
		return reject(rejectStale, "%s attempt %d: the store's step is %s now", action, res.Attempt, s.Action)
	}
	success := res.Outcome == action.SuccessOutcome()
	if action == events.ActionRotate && success {
		if res.CredentialVersion != s.Version {
			return reject(rejectConflict, "rotated to version %d; version %d was asked for", res.CredentialVersion, s.Version)
		}
		if res.Verification == nil || !res.Verification.Passed {
			success = false // an unverified credential is never sealed
			res.Reason, res.Error = "verification_failed", "the new credential did not pass the isolation checks"
		}
	}
	if action == events.ActionApplyPlan && success && rec.Lifecycle != nil {
		if ok, why := planVerified(t.storePlan(rec.Lifecycle.Plan, res.Store), res.Limits); !ok {
			success = false // limits that do not hold are not recorded as applied
			res.Reason, res.Error = events.ReasonVerifyFailed, "the limits read back differ from the plan: "+why
		}
	}
	if s.State != events.StepSent {
		switch {
		case ev.Seq == s.ResultSeq:
			return Decision{Note: "result already applied"}
		case s.ResultSeq != 0 && res.Attempt != s.ResultAttempt && (success || action != events.ActionRotate):
			// Another attempt of a step already answered: retire, suspend
			// and resume are idempotent, so neither its success nor its
			// failure changes what the applied answer established.
			return Decision{Note: fmt.Sprintf("%s attempt %d answered after attempt %d settled the step", action, res.Attempt, s.ResultAttempt)}
		case s.ResultSeq != 0 && (res.Attempt != s.ResultAttempt || res.Run <= s.Run):
			return reject(rejectStale, "%s attempt %d run %d is not newer than the result applied (attempt %d run %d)", action, res.Attempt, res.Run, s.ResultAttempt, s.Run)
		}
		return t.laterRun(res.Store, st, res, ev.Seq, success)
	}
	if !success && res.Attempt < s.Attempt {
		return Decision{Note: "failure of an attempt a retry replaced"}
	}
	t.changed = true
	t.applyStep(res.Store, st, res, ev.Seq, success)
	t.advance()
	return Decision{}
}

// applyStep records a store's answer to the step in flight.
func (t *step) applyStep(store events.Store, st *events.StoreStatus, res *events.StoreResult, seq uint64, success bool) {
	rec, op, s := t.rec, t.rec.Lifecycle, st.Step
	s.ResultAttempt, s.Run, s.ResultSeq = res.Attempt, res.Run, seq
	if success {
		s.State, s.Reason, s.Error = events.StepDone, "", ""
		if res.Outcome == events.OutcomePlanApplied {
			planLimits(st, res)
		}
		if res.Outcome == events.OutcomeRotated {
			st.CredentialSeq, st.CredentialID, st.CredentialVersion = seq, res.CredentialID, res.CredentialVersion
			if op != nil && !slices.Contains(op.Rotated, store) {
				op.Rotated = append(op.Rotated, store)
				delete(op.Failed, store)
			}
		}
		return
	}
	s.State, s.Reason, s.Error = events.StepFailed, res.Reason, res.Error
	rec.LastError = fmt.Sprintf("%s %s attempt %d: %s %s", store, res.Outcome.Action(), res.Attempt, res.Reason, res.Error)
	if res.Outcome.Action() == events.ActionRotate && op != nil {
		// The agent removed the new credential: the store keeps its old
		// one (its version unchanged).
		if op.Failed == nil {
			op.Failed = map[events.Store]string{}
		}
		op.Failed[store] = strings.TrimSpace(res.Reason + " " + res.Error)
	}
}

// laterRun applies a later run of a command already answered (the agent
// executed a redelivered command again): it describes what the store
// holds now.
func (t *step) laterRun(store events.Store, st *events.StoreStatus, res *events.StoreResult, seq uint64, success bool) Decision {
	rec, op, s := t.rec, t.rec.Lifecycle, st.Step
	action := s.Action
	inPhase := op != nil && !op.Sealing && op.Phase < len(op.Phases) && op.Phases[op.Phase] == action
	if inPhase {
		if op.Failed != nil && !success {
			delete(op.Failed, store)
		}
		if !success && action == events.ActionRotate {
			if i := slices.Index(op.Rotated, store); i >= 0 {
				op.Rotated = slices.Delete(op.Rotated, i, i+1)
				if p := s.Prev; p != nil {
					st.CredentialSeq, st.CredentialID, st.CredentialVersion = p.Seq, p.CredentialID, p.CredentialVersion
				}
			}
		}
		t.changed = true
		t.applyStep(store, st, res, seq, success)
		t.advance()
		return Decision{}
	}
	if action == events.ActionRotate && success && rec.State == events.TenantActive && s.State == events.StepDone {
		// A re-run made yet another credential of the same version: the
		// store holds that one; seal it.
		t.changed = true
		s.Run, s.ResultSeq = res.Run, seq
		st.CredentialSeq, st.CredentialID = seq, res.CredentialID
		t.maybeSeal()
		return Decision{}
	}
	t.changed = true
	s.Run, s.ResultSeq = res.Run, seq
	rec.LastError = fmt.Sprintf("%s: a later run of %s attempt %d answered %s after the step was settled; not applied (check the store, e.g. with tenantctl doctor)", store, action, res.Attempt, res.Outcome)
	return Decision{Note: rec.LastError}
}

// ---- the clock ----

// lifecycleTick retries what is due: a lifecycle command unanswered by its
// deadline or failed (a rotate is not retried: that store keeps its old
// credential), and scheduled steps.
func (t *step) lifecycleTick() {
	rec := t.rec
	if op := rec.Lifecycle; op != nil && lifecycleInFlight(rec.State) && !op.Sealing && op.Phase < len(op.Phases) {
		action := op.Phases[op.Phase]
		for _, store := range t.phaseStores() {
			st := rec.Stores[store]
			s := st.Step
			if s == nil || s.Action != action {
				continue
			}
			switch {
			case s.State == events.StepSent && s.Deadline != nil && t.now.After(*s.Deadline) && action == events.ActionRotate:
				t.changed = true
				s.State, s.Reason, s.Error = events.StepFailed, events.ReasonExpired, "no answer before the deadline"
				if op.Failed == nil {
					op.Failed = map[events.Store]string{}
				}
				op.Failed[store] = "no answer before the deadline"
				rec.LastError = fmt.Sprintf("%s rotate attempt %d: no answer before the deadline", store, s.Attempt)
			case action == events.ActionRotate:
			case s.State == events.StepSent && s.Deadline != nil && t.now.After(*s.Deadline),
				s.State == events.StepFailed && s.SentAt != nil && t.now.Sub(*s.SentAt) >= t.p.backoff(s.Retries) && !(action == events.ActionApplyPlan && planPermanent(s.Reason)):
				t.lifecycleCommand(store, st, action, false)
			}
		}
		t.advance()
	}
	sc := rec.Scheduled
	if sc == nil || t.now.Before(sc.DueAt) {
		return
	}
	switch {
	case sc.Kind == events.LifecycleRetire && rec.State == events.TenantActive && rec.Lifecycle == nil:
		t.startOp(&events.LifecycleOp{Kind: events.LifecycleRetire, Phases: []events.Action{events.ActionRetire}, Retire: sc.Stores, StartedAt: t.now, RequestedBy: Source})
	case sc.Kind == events.LifecycleRetire && (rec.State == events.TenantSuspended || rec.State.InFlight()):
		// Waits: a suspended tenant is retired after its resume.
	case sc.Kind == events.LifecyclePurge && rec.State == events.TenantRetained:
		t.changed = true
		t.startPurge("", Source, "retention ended")
	case sc.Kind == events.LifecyclePurge && rec.State == events.TenantRestoring:
	default:
		t.changed = true
		rec.Scheduled = nil // nothing left to do it to
	}
}
