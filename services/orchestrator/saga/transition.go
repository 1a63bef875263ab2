package saga

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// This file is the saga's decision table: Step says what a tenant record
// becomes when an event arrives, and which effects that calls for. It does
// no I/O and reads no clock; everything it needs is in its arguments. The
// effects go into the record's outbox, written by the same compare-and-set
// as the new state, and are executed afterwards by whoever finds them
// pending (effects.go).

// EventKind names what happened.
type EventKind string

// Event kinds.
const (
	EvProvisionRequested   EventKind = "provision_requested"
	EvDeprovisionRequested EventKind = "deprovision_requested"
	EvResult               EventKind = "result"
	EvTick                 EventKind = "tick"            // the reconciler looks at the clock
	EvEffectDone           EventKind = "effect_done"     // a publish effect was executed
	EvObjectObserved       EventKind = "object_observed" // the sealed object as seen right after a put or delete
	EvSealFailed           EventKind = "seal_failed"     // a seal cannot be built (permanent)
	// Lifecycle requests (transition_lifecycle.go).
	EvRotateRequested  EventKind = "rotate_requested"
	EvSuspendRequested EventKind = "suspend_requested"
	EvResumeRequested  EventKind = "resume_requested"
	EvRestoreRequested EventKind = "restore_requested"
)

// Event is one input of Step.
type Event struct {
	Kind EventKind
	// Seq is the stream sequence of the request or result message.
	Seq uint64
	// Provision and Deprovision are the decoded requests.
	Provision   *events.TenantRequested
	Deprovision *events.DeprovisionRequested
	// Rotate and Lifecycle are the decoded lifecycle requests (Lifecycle:
	// suspend, resume, restore).
	Rotate    *events.RotateRequested
	Lifecycle *events.LifecycleRequested
	// Update is tenant.update.requested (transition_plan.go).
	Update *events.UpdateRequested
	// SagaID is the saga ID a provision request gets if it starts a new
	// generation (chosen at random by the caller).
	SagaID string
	// Result is a decoded store result; SubjectStore is the store its
	// subject names (only that store's agent may publish there).
	Result       *events.StoreResult
	SubjectStore events.Store
	// EffectID names the executed effect (EvEffectDone, EvObjectObserved,
	// EvSealFailed).
	EffectID string
	// Object is the observed state of the sealed secrets object.
	Object ObjectState
	// Reason explains EvSealFailed.
	Reason string
	// Progress is the evidence of working agents the caller has seen
	// (EvTick); nil when it has none, and then a passed deadline is never
	// extended.
	Progress *Progress
}

// Progress is what one observer knows about the store agents' heartbeats
// (events.AgentProgress), by its own clock.
type Progress struct {
	// Since is when the observer began listening: it cannot know of a
	// heartbeat before that, so silence shorter than the window since
	// then proves nothing.
	Since time.Time
	// Last is when a heartbeat of each store's agents was last received.
	Last map[events.Store]time.Time
}

// ObjectState is what the object store holds under <id>.sops.yaml.
type ObjectState struct {
	Present bool
	SealID  string // the seal the object carries in its metadata
	SHA256  string // hex digest of the object
	// Version is the object's (or its deletion's) modification time in
	// the object store: observations are ordered by it.
	Version time.Time
}

// Decision says what Step made of an event besides the new record.
type Decision struct {
	// RejectRequest is set when a request cannot be served: the caller
	// answers tenant.rejected and audits TENANT_REQUEST_REJECTED.
	RejectRequest string
	// RejectResult is set when a store result is not applied because it
	// does not belong to the saga, generation, store or run in flight; the
	// caller counts it (by RejectCode) and audits RESULT_REJECTED.
	RejectResult string
	RejectCode   string
	// Note explains a no-op, for the log.
	Note string
}

// Policy holds the timing the transitions need.
type Policy struct {
	SagaTimeout time.Duration
	RetryMin    time.Duration
	RetryMax    time.Duration
	// KeepPast bounds how many settled past generations the record keeps.
	KeepPast int
	// Lifecycle bounds the lifecycle requests.
	Lifecycle LifecyclePolicy
	// MaxTimeout is the hard cap of a provisioning saga, and the Deadline
	// its provision commands carry. Between SagaTimeout and MaxTimeout the
	// deadline is extended, ProgressWindow at a time, while the agents of
	// every store that has not answered show fresh progress. MaxTimeout <=
	// SagaTimeout or ProgressWindow <= 0 disables extension.
	MaxTimeout time.Duration
	// ProgressWindow is how old the last heartbeat of a store's agents may
	// be for them to count as working.
	ProgressWindow time.Duration
	// Plans are the configured plans (nil: the built-in default only).
	Plans events.Plans
}

// hardTimeout is how long a provision command may run: its Deadline.
func (p Policy) hardTimeout() time.Duration { return max(p.MaxTimeout, p.SagaTimeout) }

func (p Policy) extends() bool { return p.ProgressWindow > 0 && p.MaxTimeout > p.SagaTimeout }

func (p Policy) backoff(retry int) time.Duration {
	d := p.RetryMin
	for i := 0; i < retry && d < p.RetryMax; i++ {
		d *= 2
	}
	return min(d, p.RetryMax)
}

// Result rejection codes (the metric's label values).
const (
	rejectStore      = "store_mismatch"
	rejectTenant     = "unknown_tenant"
	rejectGeneration = "generation"
	rejectSaga       = "saga"
	rejectStale      = "stale_run"
	rejectAttempt    = "attempt"
	rejectConflict   = "conflict"
)

// Step is the saga: the record cur (nil when the tenant has none) becomes
// the returned record when ev arrives at now. It returns nil when the event
// changes nothing. cur is never modified.
func Step(p Policy, cur *events.TenantRecord, ev Event, now time.Time) (*events.TenantRecord, Decision) {
	t := &step{p: p, now: now.UTC()}
	if cur != nil {
		t.rec = cloneRecord(cur)
	}
	var d Decision
	switch ev.Kind {
	case EvProvisionRequested:
		d = t.provisionRequested(ev)
	case EvDeprovisionRequested:
		if handled, dd := t.deprovisionLifecycle(ev); handled {
			d = dd
		} else {
			d = t.deprovisionRequested(ev)
		}
	case EvRotateRequested, EvSuspendRequested, EvResumeRequested, EvRestoreRequested:
		d = t.lifecycleRequested(ev)
	case EvUpdateRequested:
		d = t.updateRequested(ev)
	case EvResult:
		d = t.result(ev)
	case EvTick:
		d = t.tick(ev.Progress)
	case EvEffectDone:
		t.effectDone(ev.EffectID)
	case EvObjectObserved:
		t.objectObserved(ev.EffectID, ev.Object)
	case EvSealFailed:
		t.sealFailed(ev.EffectID, ev.Reason)
	}
	if !t.changed {
		return nil, d
	}
	return t.rec, d
}

type step struct {
	p       Policy
	now     time.Time
	rec     *events.TenantRecord
	changed bool
}

// ---- requests ----

func (t *step) provisionRequested(ev Event) Decision {
	req, rec := ev.Provision, t.rec
	if d, bad := t.rejectUnknownPlan(req); bad {
		return d
	}
	if rec != nil {
		if ev.Seq != 0 && ev.Seq <= rec.RequestSeq {
			return Decision{Note: "request already handled (stream sequence)"}
		}
		switch rec.State {
		case events.TenantProvisioning, events.TenantActive:
			return Decision{Note: "tenant is " + string(rec.State) + ": nothing to do"}
		case events.TenantRollingBack, events.TenantDeprovisioning:
			return Decision{RejectRequest: fmt.Sprintf("tenant %s is %s; request again after it settles", rec.TenantID, rec.State)}
		case events.TenantRotating, events.TenantSuspending, events.TenantSuspended, events.TenantResuming, events.TenantRestoring, events.TenantUpdating:
			return Decision{Note: "tenant is " + string(rec.State) + ": it exists; nothing to do"}
		case events.TenantRetaining, events.TenantRetained:
			return Decision{RejectRequest: fmt.Sprintf("tenant %s is %s: its data is kept for restore; send tenant.restore.requested, or wait for the purge", rec.TenantID, rec.State)}
		case events.TenantFailed:
			if req.RequestID != "" && req.RequestID == rec.RequestID {
				return Decision{Note: "request " + req.RequestID + " already ended in failure"}
			}
		}
	}
	gen, created := uint64(1), t.now
	next := &events.TenantRecord{}
	if rec != nil {
		gen, created = rec.Generation+1, rec.CreatedAt
		// The generation that ends keeps answering for a while: keep
		// what is needed to recognise and compensate its late results.
		next.Past = append([]*events.PastGeneration{{Generation: rec.Generation, SagaID: rec.SagaID, State: rec.State, Stores: rec.Stores}}, rec.Past...)
		next.Outbox, next.EffectSeq = rec.Outbox, rec.EffectSeq
		// A pending delete of the ended generation's sealed object would
		// race with the new seal; the new seal overwrites it anyway.
		next.Outbox = slices.DeleteFunc(next.Outbox, func(e *events.Effect) bool { return e.Kind == events.EffectDeleteSecrets })
	}
	// Two deadlines. The record's Deadline (SagaTimeout) is when the saga
	// stops waiting unless the agents it waits for show they are working
	// (tick); the commands carry the hard one (MaxTimeout), so that a
	// command queued behind a busy agent, or running long, while the saga
	// extends its deadline is still executed. An agent never touches the
	// store after the Deadline its command carries (pkg/agent: checked
	// when a delivery starts and bound on every store call), and a rollback
	// before it is safe: a provision that runs after the compensation
	// began is answered, and its result starts another compensation round
	// (storeResult), as for any late result.
	deadline := t.now.Add(t.p.SagaTimeout)
	hard := t.now.Add(t.p.hardTimeout())
	*next = events.TenantRecord{
		TenantID: req.TenantID, State: events.TenantProvisioning, Generation: gen, SagaID: ev.SagaID,
		RequestID: req.RequestID, RequestedBy: req.RequestedBy, Labels: req.Labels, RequestSeq: ev.Seq, Plan: planName(req.Plan),
		Stores: map[events.Store]*events.StoreStatus{}, Deadline: &deadline, CreatedAt: created,
		Past: next.Past, Outbox: next.Outbox, EffectSeq: next.EffectSeq,
	}
	t.rec, t.changed = next, true
	t.compactPast()
	t.audit(events.AuditTenantProvisioningStarted, "", "", map[string]any{"request_id": req.RequestID, "labels": req.Labels, "deadline": deadline, "max_deadline": hard, "request_seq": ev.Seq})
	for _, store := range events.Stores() {
		now := t.now
		next.Stores[store] = &events.StoreStatus{State: events.StorePending, StartedAt: &now, CommandSentAt: &now, ProvisionDeadline: &hard}
		t.command(store, events.ActionProvision, 0, hard)
	}
	return Decision{}
}

func (t *step) deprovisionRequested(ev Event) Decision {
	rec := t.rec
	if rec == nil {
		return Decision{RejectRequest: fmt.Sprintf("deprovision %s: unknown tenant", ev.Deprovision.TenantID)}
	}
	if ev.Seq != 0 && (ev.Seq <= rec.DeprovisionSeq || ev.Seq < rec.RequestSeq) {
		// Published before the request that started this generation:
		// it targeted an earlier one, which it already ended.
		return Decision{Note: "deprovision request already handled or aimed at an earlier generation"}
	}
	switch rec.State {
	case events.TenantActive:
	case events.TenantProvisioning, events.TenantRollingBack:
		return Decision{RejectRequest: fmt.Sprintf("deprovision %s: a provisioning saga is in flight for this tenant; retry after it settles", rec.TenantID)}
	default:
		return Decision{Note: "tenant is " + string(rec.State) + ": nothing to deprovision"}
	}
	req := ev.Deprovision
	t.changed = true
	rec.State = events.TenantDeprovisioning
	rec.Announced = ""
	rec.DeprovisionSeq = ev.Seq
	rec.RequestID, rec.RequestedBy = req.RequestID, req.RequestedBy
	t.audit(events.AuditTenantDeprovisioningStarted, "", "", map[string]any{"request_id": req.RequestID, "requested_by": req.RequestedBy})
	for _, store := range events.Stores() {
		st := rec.Stores[store]
		st.Reason, st.Error = "", ""
		t.startRound(rec.Generation, store, st)
	}
	return Decision{}
}

// ---- results ----

func (t *step) result(ev Event) Decision {
	res, rec := ev.Result, t.rec
	reject := func(code, format string, a ...any) Decision {
		return Decision{RejectResult: fmt.Sprintf(format, a...), RejectCode: code}
	}
	if ev.SubjectStore != res.Store {
		return reject(rejectStore, "published on %s's subject but names store %s", ev.SubjectStore, res.Store)
	}
	switch a := res.Outcome.Action(); {
	case a == events.ActionObserve:
		return t.observed(ev)
	case a.Lifecycle():
		return t.lifecycleResult(ev)
	}
	if rec == nil {
		return reject(rejectTenant, "no saga for tenant %s", res.TenantID)
	}
	if res.Generation > rec.Generation {
		return reject(rejectGeneration, "generation %d is newer than the current %d", res.Generation, rec.Generation)
	}
	if res.Generation < rec.Generation {
		for _, pg := range rec.Past {
			if pg.Generation != res.Generation {
				continue
			}
			if pg.SagaID != res.SagaID {
				return reject(rejectSaga, "saga %q is not generation %d's", res.SagaID, res.Generation)
			}
			return t.storeResult(pg.Generation, pg.State, pg.Stores[res.Store], res, ev.Seq)
		}
		return reject(rejectGeneration, "generation %d is no longer tracked", res.Generation)
	}
	if res.SagaID != rec.SagaID {
		return reject(rejectSaga, "saga %q is not the saga in flight", res.SagaID)
	}
	return t.storeResult(rec.Generation, rec.State, rec.Stores[res.Store], res, ev.Seq)
}

// storeResult applies a result bound to generation gen (the current one
// when gen == rec.Generation) whose tenant-level state is state.
func (t *step) storeResult(gen uint64, state events.TenantState, st *events.StoreStatus, res *events.StoreResult, seq uint64) Decision {
	if st == nil {
		return Decision{RejectResult: "store not part of the saga", RejectCode: rejectStore}
	}
	current := gen == t.rec.Generation
	if res.Outcome.Action() == events.ActionProvision {
		if res.Attempt > st.ProvisionAttempt {
			return Decision{RejectResult: fmt.Sprintf("provision attempt %d was never sent", res.Attempt), RejectCode: rejectAttempt}
		}
		if st.ResultSeq != 0 { // a provision result was applied before: only a newer one counts
			switch cmp := compareRun(res.Attempt, res.Run, st.ResultAttempt, st.Run); {
			case cmp < 0:
				return Decision{RejectResult: fmt.Sprintf("attempt %d run %d is older than the applied attempt %d run %d", res.Attempt, res.Run, st.ResultAttempt, st.Run), RejectCode: rejectStale}
			case cmp == 0 && (seq == st.ResultSeq || (res.Outcome == events.OutcomeProvisioned && res.CredentialID == st.CredentialID)):
				return Decision{Note: "result already applied"}
			case cmp == 0:
				return Decision{RejectResult: fmt.Sprintf("a different result for attempt %d run %d was applied", res.Attempt, res.Run), RejectCode: rejectConflict}
			}
		}
		if current && (lifecycleState(state) || st.CredentialVersion > 1) {
			// A later run of a provision would reset a credential the
			// lifecycle moved on (rotated, suspended): never applied.
			return Decision{RejectResult: fmt.Sprintf("provision attempt %d run %d answered while the tenant is %s (credential version %d)", res.Attempt, res.Run, state, st.CredentialVersion), RejectCode: rejectStale}
		}
		t.changed = true
		st.ResultAttempt, st.Run, st.ResultSeq = res.Attempt, res.Run, seq
		expired := res.Outcome == events.OutcomeProvisionFailed && res.Reason == events.ReasonExpired
		t.storeAudit(gen, res, st)
		if !current || !(state == events.TenantProvisioning || state == events.TenantActive) {
			// After compensation began: a run that did anything may
			// have left resources after the deprovision ran.
			if !expired {
				t.startRound(gen, res.Store, st)
			}
			return Decision{}
		}
		if res.Outcome == events.OutcomeProvisioned {
			t.applyProvisioned(st, res)
			if !st.Verified {
				t.startRollback(fmt.Sprintf("%s: isolation checks did not pass", res.Store))
				return Decision{}
			}
			t.maybeSeal()
			return Decision{}
		}
		// provision_failed
		if expired && st.State == events.StoreProvisioned {
			return Decision{} // that run touched nothing; the store holds what it held
		}
		reason := fmt.Sprintf("%s: %s", res.Store, res.Reason)
		if res.Error != "" {
			reason += ": " + res.Error
		}
		st.Reason, st.Error = res.Reason, res.Error
		completed := res.CompletedAt
		st.CompletedAt, st.DurationMS = &completed, res.DurationMS
		if state == events.TenantProvisioning {
			// Includes a re-run failing after an earlier run of the
			// same command succeeded: it changed the credential, so
			// the store is in an unknown state. Roll back.
			st.State = events.StoreFailed
			t.startRollback(reason)
			return Decision{}
		}
		// Active: the re-run changed the store's credential and failed.
		// Re-provision that store (after the failed command's deadline,
		// when no run of it can touch the store any more); the tenant
		// stays active and its other stores are not touched.
		st.State = events.StorePending
		st.ProvisionAttempt++
		st.CommandSentAt = nil
		t.rec.LastError = "re-provisioning " + reason
		t.dropPendingSeals()
		return Decision{}
	}
	// deprovision outcomes
	if res.Attempt > st.Attempt {
		return Decision{RejectResult: fmt.Sprintf("deprovision attempt %d was never sent", res.Attempt), RejectCode: rejectAttempt}
	}
	if st.State != events.StoreDeprovisioning {
		return Decision{Note: "store is " + string(st.State)}
	}
	// An agent works on one tenant at a time and publishes each result
	// before its next execution starts, so the stream order of one store's
	// results is the order the store saw them: a deprovision that
	// reports after the provision result that began this round ran after
	// it, whichever attempt it was.
	if res.Attempt < st.Round && seq < st.ResultSeq {
		return Decision{RejectResult: fmt.Sprintf("deprovision attempt %d ran before the provision that began round %d", res.Attempt, st.Round), RejectCode: rejectStale}
	}
	t.changed = true
	t.storeAudit(gen, res, st)
	if res.Outcome == events.OutcomeDeprovisionFailed {
		st.FailedAttempt = max(st.FailedAttempt, res.Attempt)
		st.Reason, st.Error = res.Reason, res.Error
		t.rec.LastError = fmt.Sprintf("g%d %s deprovision attempt %d: %s %s", gen, res.Store, res.Attempt, res.Reason, res.Error)
		return Decision{}
	}
	completed := res.CompletedAt
	st.State = events.StoreDeprovisioned
	st.CompletedAt, st.DurationMS = &completed, res.DurationMS
	st.Reason, st.Error = "", ""
	st.Warnings = res.Warnings
	if current {
		t.maybeSettle()
	}
	return Decision{}
}

func compareRun(a1 int, r1 uint64, a2 int, r2 uint64) int {
	if a1 != a2 {
		return a1 - a2
	}
	switch {
	case r1 < r2:
		return -1
	case r1 > r2:
		return 1
	}
	return 0
}

func (t *step) applyProvisioned(st *events.StoreStatus, res *events.StoreResult) {
	completed := res.CompletedAt
	st.State = events.StoreProvisioned
	st.Resources = res.Resources
	st.Verified = res.Verification != nil && res.Verification.Passed
	st.IsolationMode = res.IsolationMode
	st.CompletedAt = &completed
	st.DurationMS = res.DurationMS
	st.Warnings = res.Warnings
	st.CredentialID = res.CredentialID
	st.CredentialSeq = st.ResultSeq
	st.Reason, st.Error = "", ""
	planLimits(st, res)
}

// maybeSeal asks for a (new) sealed file once every store of a
// provisioning or active tenant is provisioned: the credentials changed.
func (t *step) maybeSeal() {
	rec := t.rec
	spec := &events.SealSpec{Results: map[events.Store]events.SealedResult{}}
	for _, store := range events.Stores() {
		st := rec.Stores[store]
		if st == nil || st.State != events.StoreProvisioned || !st.Verified {
			return
		}
		spec.Results[store] = events.SealedResult{Seq: st.CredentialSeq, CredentialID: st.CredentialID, CredentialVersion: st.CredentialVersion}
	}
	// Every store answered: the deadline guarded against silence and no
	// longer applies; what is left is ours to finish.
	rec.Deadline = nil
	t.dropPendingSeals()
	e := t.emit(&events.Effect{Kind: events.EffectPutSecrets, Generation: rec.Generation, Seal: spec})
	spec.ID = fmt.Sprintf("g%d-e%s", rec.Generation, e.ID)
}

func (t *step) dropPendingSeals() {
	t.rec.Outbox = slices.DeleteFunc(t.rec.Outbox, func(e *events.Effect) bool { return e.Kind == events.EffectPutSecrets })
}

// maybeSettle ends a rollback or deprovisioning once every store is clean.
func (t *step) maybeSettle() {
	rec := t.rec
	for _, store := range events.Stores() {
		if st := rec.Stores[store]; st == nil || st.State != events.StoreDeprovisioned {
			return
		}
	}
	switch rec.State {
	case events.TenantRollingBack:
		rec.State = events.TenantFailed
		t.deleteSecrets()
		t.announce(events.AuditTenantRolledBack, events.TenantOutcomeProvisionFailed)
	case events.TenantDeprovisioning:
		rec.State = events.TenantDeprovisioned
		rec.Secrets = nil
		// Deleted last, after every store is clean.
		t.deleteSecrets()
		t.purged()
		t.announce(events.AuditTenantDeprovisioned, events.TenantOutcomeDeprovisioned)
	}
}

// startRollback moves a provisioning record to rolling_back: every store
// gets a deprovision, including stores that never answered (deprovision is
// idempotent), and no provision command not yet sent is sent.
func (t *step) startRollback(reason string) {
	rec := t.rec
	rec.State = events.TenantRollingBack
	rec.Reason, rec.LastError = reason, reason
	rec.Deadline = nil
	rec.Announced = ""
	rec.Outbox = slices.DeleteFunc(rec.Outbox, func(e *events.Effect) bool {
		return e.Kind == events.EffectPutSecrets ||
			(e.Kind == events.EffectCommand && e.Generation == rec.Generation && strings.HasSuffix(e.Subject, "."+string(events.ActionProvision)))
	})
	t.audit(events.AuditTenantRollbackStarted, "", "", map[string]any{"reason": reason})
	t.deleteSecrets() // a seal may have been put already
	for _, store := range events.Stores() {
		st := rec.Stores[store]
		if st.State == events.StorePending {
			st.Reason = "no answer before rollback"
		}
		t.startRound(rec.Generation, store, st)
	}
}

// startRound begins a compensation round for one store of generation gen.
func (t *step) startRound(gen uint64, store events.Store, st *events.StoreStatus) {
	t.changed = true
	st.Attempt++
	st.Round = st.Attempt
	st.State = events.StoreDeprovisioning
	now := t.now
	st.CommandSentAt = &now
	t.commandFor(gen, store, events.ActionDeprovision, st.Attempt, now.Add(t.p.SagaTimeout))
}

// ---- the clock ----

func (t *step) tick(progress *Progress) Decision {
	rec := t.rec
	if rec == nil {
		return Decision{}
	}
	var d Decision
	if rec.State == events.TenantProvisioning && rec.Deadline != nil && t.now.After(*rec.Deadline) {
		t.changed = true
		if next, why := t.extension(progress); why == "" {
			rec.Deadline = &next
			d.Note = "deadline extended: the agents of " + pendingStores(rec) + " are working"
		} else {
			t.startRollback(why)
		}
	}
	for _, store := range events.Stores() {
		st := rec.Stores[store]
		if st == nil {
			continue
		}
		t.retry(rec.Generation, store, st, progress)
		if rec.State == events.TenantActive && st.State == events.StorePending {
			t.reprovision(store, st)
		}
	}
	for _, pg := range rec.Past {
		for _, store := range events.Stores() {
			if st := pg.Stores[store]; st != nil {
				t.retry(pg.Generation, store, st, progress)
			}
		}
	}
	if t.compactPast() {
		t.changed = true
	}
	t.lifecycleTick()
	return d
}

// working reports whether store's agents count as working by progress:
// a heartbeat within ProgressWindow, or an observer that has listened for
// less than that (it cannot know yet).
func (t *step) working(store events.Store, progress *Progress) bool {
	if progress == nil || t.p.ProgressWindow <= 0 {
		return false
	}
	if t.now.Sub(progress.Since) < t.p.ProgressWindow {
		return true
	}
	last, ok := progress.Last[store]
	return ok && t.now.Sub(last) <= t.p.ProgressWindow
}

// extension decides on a provisioning deadline that has passed: it returns
// the new deadline when every store that has not answered has agents that
// are demonstrably working — they sent a heartbeat within ProgressWindow
// (or the observer has listened for less than that, and cannot know yet) —
// and the commands' own deadline (the hard cap) is still ahead; otherwise
// the reason to roll back. A command waiting in the queue behind a busy
// agent pool, or one that runs long, keeps the tenant; an agent that is
// dead does not. The deadline moves ProgressWindow at a time, so a replica
// that restarts (and has heard nothing yet) finds it in the future, and the
// evidence is looked at again then.
func (t *step) extension(progress *Progress) (time.Time, string) {
	rec := t.rec
	pending := pendingStores(rec)
	silence := fmt.Sprintf("deadline of %s exceeded; no answer from: %s", t.p.SagaTimeout, pending)
	if !t.p.extends() || progress == nil {
		return time.Time{}, silence
	}
	var hard *time.Time
	var silent []string
	for _, store := range events.Stores() {
		st := rec.Stores[store]
		if st == nil || st.State != events.StorePending {
			continue
		}
		if st.ProvisionDeadline != nil && (hard == nil || st.ProvisionDeadline.Before(*hard)) {
			hard = st.ProvisionDeadline
		}
		if !t.working(store, progress) {
			silent = append(silent, string(store))
		}
	}
	switch {
	case hard == nil || !t.now.Before(*hard):
		return time.Time{}, fmt.Sprintf("hard deadline of %s (SAGA_MAX_TIMEOUT) exceeded; no answer from: %s", t.p.hardTimeout(), pending)
	case len(silent) > 0:
		return time.Time{}, fmt.Sprintf("%s (no heartbeat within %s from the agents of: %s)", silence, t.p.ProgressWindow, strings.Join(silent, ", "))
	}
	next := t.now.Add(t.p.ProgressWindow)
	if next.After(*hard) {
		next = *hard
	}
	return next, ""
}

// retry re-sends a deprovision whose backoff elapsed without it
// completing — unless its latest attempt is unanswered and the store's
// agents show they are working: the command waits in their queue (a
// durable work queue) or runs, and another copy would only queue behind it
// and run again (in a chaos run of 2 x 200 tenants, 200 MinIO deprovisions
// became over a thousand store calls). A failed attempt, silent agents, or
// an attempt unanswered for longer than the hard cap are retried with
// backoff as before.
func (t *step) retry(gen uint64, store events.Store, st *events.StoreStatus, progress *Progress) {
	if st.State != events.StoreDeprovisioning || st.CommandSentAt == nil {
		return
	}
	if t.now.Sub(*st.CommandSentAt) < t.p.backoff(st.Attempt-st.Round) {
		return
	}
	if st.FailedAttempt < st.Attempt && t.working(store, progress) && t.now.Sub(*st.CommandSentAt) < t.p.hardTimeout() {
		return // (a command unanswered for longer than the hard cap is sent again all the same)
	}
	t.changed = true
	st.Attempt++
	now := t.now
	st.CommandSentAt = &now
	t.commandFor(gen, store, events.ActionDeprovision, st.Attempt, now.Add(t.p.SagaTimeout))
}

// reprovision sends an active tenant's store its next provision command
// once the previous one's deadline has passed (so that no run of it can
// touch the store after a run of the new one), and again with backoff
// while it gets no answer.
func (t *step) reprovision(store events.Store, st *events.StoreStatus) {
	if st.ProvisionDeadline != nil && !t.now.After(*st.ProvisionDeadline) {
		return
	}
	if st.CommandSentAt != nil {
		if t.now.Sub(*st.CommandSentAt) < t.p.backoff(st.ProvisionAttempt) {
			return
		}
		st.ProvisionAttempt++ // the previous one expired unanswered
	}
	t.changed = true
	now := t.now
	deadline := now.Add(t.p.SagaTimeout)
	st.CommandSentAt, st.ProvisionDeadline = &now, &deadline
	t.commandFor(t.rec.Generation, store, events.ActionProvision, st.ProvisionAttempt, deadline)
}

// compactPast drops settled past generations beyond KeepPast.
func (t *step) compactPast() bool {
	keep := max(t.p.KeepPast, 1)
	var out []*events.PastGeneration
	dropped := false
	for i, pg := range t.rec.Past {
		busy := false
		for _, st := range pg.Stores {
			if st.State == events.StoreDeprovisioning {
				busy = true
			}
		}
		if i < keep || busy {
			out = append(out, pg)
		} else {
			dropped = true
		}
	}
	t.rec.Past = out
	return dropped
}

// ---- effects done ----

func (t *step) effectDone(id string) {
	rec := t.rec
	if rec == nil {
		return
	}
	i := slices.IndexFunc(rec.Outbox, func(e *events.Effect) bool { return e.ID == id })
	if i < 0 {
		return
	}
	e := rec.Outbox[i]
	if e.Kind == events.EffectPutSecrets || e.Kind == events.EffectDeleteSecrets {
		return // done only when observed (EvObjectObserved)
	}
	t.changed = true
	rec.Outbox = slices.Delete(rec.Outbox, i, i+1)
	if e.Kind == events.EffectOutcome && e.Generation == rec.Generation && e.Announces == rec.State {
		rec.Announced = rec.State
	}
}

// objectObserved compares the sealed object, as seen right after a put or
// delete (by effect id), with what the record wants, completes the effect
// that it satisfies, and asks for a correction when another executor's put
// or delete landed in between.
func (t *step) objectObserved(id string, obj ObjectState) {
	rec := t.rec
	if rec == nil {
		return
	}
	if rec.ObjectSeen != nil && obj.Version.Before(*rec.ObjectSeen) {
		return // a newer observation was applied already
	}
	if !obj.Version.IsZero() && (rec.ObjectSeen == nil || obj.Version.After(*rec.ObjectSeen)) {
		t.changed = true
		v := obj.Version
		rec.ObjectSeen = &v
	}
	var seal, del *events.Effect
	for _, e := range rec.Outbox {
		switch e.Kind {
		case events.EffectPutSecrets:
			seal = e
		case events.EffectDeleteSecrets:
			del = e
		}
	}
	switch {
	case rec.State == events.TenantProvisioning || rec.State == events.TenantActive || lifecycleState(rec.State):
		if del != nil && !obj.Present {
			t.remove(del.ID)
		}
		switch {
		case seal != nil && obj.Present && obj.SealID == seal.Seal.ID:
			t.remove(seal.ID)
			t.sealed(seal, obj)
		case seal != nil:
			// Not (yet) the seal wanted: it stays pending.
		case (rec.State == events.TenantActive || lifecycleState(rec.State)) && rec.Secrets != nil && (!obj.Present || obj.SealID != rec.Secrets.SealID):
			// Someone's late put or delete replaced the sealed file.
			t.changed = true
			t.maybeSeal()
		case (rec.State == events.TenantActive || lifecycleState(rec.State)) && rec.Secrets != nil && obj.SHA256 != rec.Secrets.SHA256:
			// The same seal put again (SOPS encrypts afresh): same
			// content, the record follows the stored bytes.
			t.changed = true
			rec.Secrets.SHA256 = obj.SHA256
		}
	case rec.State == events.TenantDeprovisioning:
		// The file stays until every store is clean.
	default: // rolling_back, failed, deprovisioned: no file wanted
		switch {
		case !obj.Present && del != nil:
			t.remove(del.ID)
		case obj.Present && del == nil:
			t.changed = true
			t.deleteSecrets()
		}
	}
	_ = id
}

func (t *step) remove(id string) {
	i := slices.IndexFunc(t.rec.Outbox, func(e *events.Effect) bool { return e.ID == id })
	if i >= 0 {
		t.changed = true
		t.rec.Outbox = slices.Delete(t.rec.Outbox, i, i+1)
	}
}

// sealed records a completed seal: a provisioning tenant becomes active
// (every store verified: the gate of DESIGN.md §4 step 8 was passed when
// the seal was asked for), an active one points at its new file.
func (t *step) sealed(seal *events.Effect, obj ObjectState) {
	rec := t.rec
	t.changed = true
	rec.Secrets = &events.SecretsRef{Bucket: events.ObjectStoreSecrets, Object: events.TenantID(rec.TenantID).SecretsObject(), SHA256: obj.SHA256, SealID: obj.SealID}
	t.audit(events.AuditSecretsSealed, "", seal.Seal.ID, map[string]any{"object": rec.Secrets.Object, "sha256": obj.SHA256, "seal_id": obj.SealID})
	if rec.State == events.TenantProvisioning {
		rec.State = events.TenantActive
		rec.Deadline = nil
		rec.Reason = ""
		t.announce(events.AuditTenantProvisioned, events.TenantOutcomeProvisioned)
	}
	t.lifecycleSealed()
}

func (t *step) sealFailed(id, reason string) {
	rec := t.rec
	if rec == nil || !slices.ContainsFunc(rec.Outbox, func(e *events.Effect) bool { return e.ID == id && e.Kind == events.EffectPutSecrets }) {
		return
	}
	t.changed = true
	if rec.State == events.TenantProvisioning {
		t.startRollback("sealing the credentials failed: " + reason)
		return
	}
	// An active tenant keeps the file it has; an operator has to look.
	t.remove(id)
	if rec.Lifecycle != nil && rec.Lifecycle.Sealing {
		t.lifecycleSealFailed(reason)
		return
	}
	rec.LastError = "re-sealing the credentials failed: " + reason
}

// ---- emitting effects ----

func (t *step) emit(e *events.Effect) *events.Effect {
	t.changed = true
	t.rec.EffectSeq++
	e.ID = strconv.FormatUint(t.rec.EffectSeq, 10)
	t.rec.Outbox = append(t.rec.Outbox, e)
	return e
}

func (t *step) command(store events.Store, action events.Action, attempt int, deadline time.Time) {
	t.commandFor(t.rec.Generation, store, action, attempt, deadline)
}

// commandFor emits a command for generation gen (an earlier one when a
// late result of it is compensated).
func (t *step) commandFor(gen uint64, store events.Store, action events.Action, attempt int, deadline time.Time) {
	saga := t.rec.SagaID
	for _, pg := range t.rec.Past {
		if pg.Generation == gen {
			saga = pg.SagaID
		}
	}
	cmd := &events.StoreCommand{TenantID: t.rec.TenantID, Generation: gen, SagaID: saga, Store: store, Action: action,
		Attempt: attempt, IssuedAt: t.now, Deadline: deadline}
	if action == events.ActionProvision && gen == t.rec.Generation && t.rec.Plan != "" {
		cmd.Plan = t.storePlan(t.rec.Plan, store)
	}
	t.emit(&events.Effect{Kind: events.EffectCommand, Generation: gen, Subject: events.CommandSubject(store, action),
		MsgID: events.CommandMsgID(cmd), Payload: mustJSON(cmd)})
}

// audit emits an audit event of the current generation. disc tells apart
// events of one type that record different facts.
func (t *step) audit(typ events.AuditType, store events.Store, disc string, details map[string]any) {
	t.auditFor(t.rec.Generation, t.rec.SagaID, typ, store, disc, details)
}

func (t *step) auditFor(gen uint64, saga string, typ events.AuditType, store events.Store, disc string, details map[string]any) {
	actor := t.rec.RequestedBy
	if actor == "" {
		actor = Source
	}
	ev := &events.AuditEvent{
		EventID: events.AuditEventID(typ, t.rec.TenantID, gen, store, disc),
		Type:    typ, TenantID: t.rec.TenantID, Generation: gen, SagaID: saga, Store: store,
		Actor: actor, OccurredAt: t.now, Source: Source, Details: mustJSON(compact(details)),
	}
	t.emit(&events.Effect{Kind: events.EffectAudit, Generation: gen, Subject: events.AuditSubject(typ), MsgID: ev.EventID, Payload: mustJSON(ev)})
}

// storeAudit records an applied result; its ID names the command attempt
// and run it answers, so a later run's event is never de-duplicated away.
func (t *step) storeAudit(gen uint64, res *events.StoreResult, st *events.StoreStatus) {
	details := map[string]any{"outcome": res.Outcome, "duration_ms": res.DurationMS, "resources": res.Resources, "reason": res.Reason,
		"error": res.Error, "warnings": res.Warnings, "isolation_mode": res.IsolationMode, "attempt": res.Attempt, "run": res.Run}
	if res.Verification != nil {
		details["verification"] = res.Verification
	}
	if res.CredentialID != "" {
		details["credential_id"] = res.CredentialID
	}
	if gen != t.rec.Generation || (t.rec.State != events.TenantProvisioning && t.rec.State != events.TenantActive && res.Outcome.Action() == events.ActionProvision) {
		details["late"] = true
	}
	saga := t.rec.SagaID
	for _, pg := range t.rec.Past {
		if pg.Generation == gen {
			saga = pg.SagaID
		}
	}
	disc := fmt.Sprintf("a%d-r%d", res.Attempt, res.Run)
	if res.Outcome == events.OutcomeProvisioned {
		disc += "-" + res.CredentialID
	}
	t.auditFor(gen, saga, auditTypeOf(res.Outcome), res.Store, disc, details)
}

// announce emits the audit event and tenant.<outcome> of a settled state:
// the audit event first (it is the fact; the outcome the notification).
func (t *step) announce(typ events.AuditType, outcome events.Outcome) {
	rec := t.rec
	details := map[string]any{"stores": storeSummary(rec), "reason": rec.Reason}
	if rec.Plan != "" {
		details["plan"] = rec.Plan
	}
	ev := &events.TenantOutcomeEvent{
		Outcome: outcome, TenantID: rec.TenantID, Generation: rec.Generation, SagaID: rec.SagaID,
		RequestID: rec.RequestID, Reason: rec.Reason, OccurredAt: t.now,
	}
	if rec.Secrets != nil && rec.State == events.TenantActive {
		ev.SecretsRef = rec.Secrets.Bucket + "/" + rec.Secrets.Object
		ev.SecretsSHA256 = rec.Secrets.SHA256
		details["secrets_sha256"] = rec.Secrets.SHA256
	}
	t.audit(typ, "", "", details)
	t.planAnnounced(typ)
	msgID := events.MsgID{Kind: "tenant", Tenant: rec.TenantID, Generation: rec.Generation, Step: string(outcome)}.String()
	t.emit(&events.Effect{Kind: events.EffectOutcome, Generation: rec.Generation, Subject: events.TenantOutcomeSubject(outcome),
		MsgID: msgID, Payload: mustJSON(ev), Announces: rec.State})
}

func (t *step) deleteSecrets() {
	if slices.ContainsFunc(t.rec.Outbox, func(e *events.Effect) bool { return e.Kind == events.EffectDeleteSecrets }) {
		return
	}
	t.emit(&events.Effect{Kind: events.EffectDeleteSecrets, Generation: t.rec.Generation})
}

func auditTypeOf(o events.Outcome) events.AuditType {
	switch o {
	case events.OutcomeProvisioned:
		return events.AuditStoreProvisioned
	case events.OutcomeProvisionFailed:
		return events.AuditStoreProvisionFailed
	case events.OutcomeDeprovisioned:
		return events.AuditStoreDeprovisioned
	}
	return events.AuditStoreDeprovisionFailed
}

func storeSummary(rec *events.TenantRecord) map[string]any {
	out := map[string]any{}
	for store, st := range rec.Stores {
		m := map[string]any{"state": st.State, "duration_ms": st.DurationMS}
		if st.IsolationMode != "" {
			m["isolation_mode"] = st.IsolationMode
		}
		if st.Reason != "" {
			m["reason"] = st.Reason
		}
		out[string(store)] = m
	}
	return out
}

// pendingStores names the stores that have not answered, for a deadline
// rollback's reason.
func pendingStores(rec *events.TenantRecord) string {
	var names []string
	for store, st := range rec.Stores {
		if st.State == events.StorePending {
			names = append(names, string(store))
		}
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// compact drops empty details so audit records stay short.
func compact(details map[string]any) map[string]any {
	for k, v := range details {
		switch v := v.(type) {
		case nil:
			delete(details, k)
		case string:
			if v == "" {
				delete(details, k)
			}
		case []string:
			if len(v) == 0 {
				delete(details, k)
			}
		case map[string]string:
			if len(v) == 0 {
				delete(details, k)
			}
		}
	}
	return details
}

// mustJSON marshals a payload built here from validated parts; the
// executor validates it again before publishing.
func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("saga: marshal %T: %v", v, err))
	}
	return b
}

// cloneRecord deep-copies a record, so that a step retried after a
// conflict starts from the stored value (clone.go).
func cloneRecord(r *events.TenantRecord) *events.TenantRecord {
	if r == nil {
		return nil
	}
	c := deepCopy(r)
	// A record read from the registry holds its effects' payloads as
	// Update stored them, indented; the executors publish them as they
	// are. Compact them, as the JSON round trip this copy replaced did
	// (payloads made here are json.Marshal output, compact already).
	for _, e := range c.Outbox {
		e.Payload = compactPayload(e.Payload)
	}
	return c
}
