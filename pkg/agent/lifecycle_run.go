package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// The runtime's half of the lifecycle (DESIGN.md §10): how a
// store.cmd.<store>.rotate|retire|suspend|resume|observe command is
// executed. Everything around the store calls — decoding and routing,
// MaxDeliver, the deadline (a lifecycle command received after its
// Deadline is answered <action>_failed, reason expired, without touching
// the store; its store calls end at the Deadline), the tenant's lock,
// heartbeats, retries of transient errors, Run, the reply's message ID and
// the metrics — is runtime.execute's, exactly as for a provision.

const (
	// maxDrifts bounds the drift and repaired lists of one observed
	// result, and maxDriftText each drift's resource and detail, so that
	// a store gone badly wrong still fits in one result (64 KiB).
	maxDrifts    = 64
	maxDriftText = 400
	// cleanupTimeout bounds the Retire that removes a rotation's
	// half-made credential when the command's own context has ended.
	cleanupTimeout = 15 * time.Second
)

// deadlineBound reports whether a's store calls end at the command's
// Deadline and a delivery after it is answered "expired": every action
// but deprovision, which (as compensation) is bound by CommandTimeout only.
func deadlineBound(a events.Action) bool {
	return a == events.ActionProvision || a.Lifecycle()
}

// lifecycle runs one lifecycle command under the tenant's lock.
func (r *runtime) lifecycle(ctx context.Context, id ident, tenant events.TenantID, cmd *events.StoreCommand, delivery uint64) verdict {
	lc := lifecycleOf(r.store, r.metrics)
	switch cmd.Action {
	case events.ActionRotate, events.ActionRetire:
		if lc.rotator == nil {
			return r.unsupported(id, "Rotator")
		}
		if cmd.Action == events.ActionRotate {
			return r.rotate(ctx, lc, id, tenant, cmd, delivery)
		}
		return r.retire(ctx, lc, id, tenant, cmd, delivery)
	case events.ActionSuspend, events.ActionResume:
		if lc.suspender == nil {
			return r.unsupported(id, "Suspender")
		}
		req := SuspendRequest{Tenant: tenant, Generation: cmd.Generation}
		call, outcome := lc.suspend, events.OutcomeSuspended
		if cmd.Action == events.ActionResume {
			call, outcome = lc.resume, events.OutcomeResumed
		}
		if err := call(ctx, req); err != nil {
			return r.storeFailure(ctx, id, cmd, delivery, err)
		}
		return verdict{reply: r.newResult(id, outcome), settle: settleAck}
	case events.ActionObserve:
		if lc.observer == nil {
			return r.unsupported(id, "Observer")
		}
		return r.observe(ctx, lc, id, tenant, cmd, delivery)
	}
	return r.fail(id, events.ReasonInvalid, fmt.Sprintf("unknown action %q", cmd.Action))
}

func (r *runtime) unsupported(id ident, iface string) verdict {
	return r.fail(id, events.ReasonUnsupported, fmt.Sprintf(
		"the %s agent does not implement agent.%s: it cannot %s; the store was not touched", r.kind, iface, id.action))
}

// rotate gives the tenant credential version cmd.Version next to
// cmd.CredentialVersion, verifies it with the store's full Verify and only
// then seals it into a rotated result. A new credential that fails
// verification is removed again (Retire keeping cmd.CredentialVersion):
// the old one keeps working, and the answer is rotate_failed, reason
// verification_failed.
func (r *runtime) rotate(ctx context.Context, lc lifecycleCalls, id ident, tenant events.TenantID, cmd *events.StoreCommand, delivery uint64) verdict {
	password, err := secret.Generate()
	if err != nil {
		return r.storeFailure(ctx, id, cmd, delivery, err)
	}
	rresp, err := lc.rotate(ctx, RotateRequest{
		Tenant: tenant, Generation: cmd.Generation,
		CurrentVersion: cmd.CredentialVersion, Version: cmd.Version,
		Password: password, Grace: time.Duration(cmd.GraceSeconds) * time.Second,
	})
	if err != nil {
		return r.rotateFailure(ctx, lc, id, tenant, cmd, r.storeFailure(ctx, id, cmd, delivery, err, password))
	}
	secrets := append([]secret.String{password}, credentialSecrets(rresp.Credential)...)
	if len(rresp.Credential) == 0 {
		return r.rotateFailure(ctx, lc, id, tenant, cmd, r.fail(id, events.ReasonStoreError, "the store rotated the credential but returned none"))
	}
	vresp, err := r.store.Verify(ctx, VerifyRequest{Tenant: tenant, Generation: cmd.Generation, Credential: rresp.Credential})
	if err != nil {
		return r.rotateFailure(ctx, lc, id, tenant, cmd, r.storeFailure(ctx, id, cmd, delivery, err, secrets...))
	}
	checks := completeChecks(vresp.Checks)
	ver := &events.Verification{Passed: VerifyResponse{Checks: checks}.Passed(), Checks: checks}
	if !ver.Passed {
		var failed []string
		for _, c := range checks {
			if !c.Passed {
				failed = append(failed, c.Name)
			}
		}
		res := r.newResult(id, events.OutcomeRotateFailed)
		res.Reason = events.ReasonVerifyFailed
		res.Error = errorText(fmt.Errorf("the new credential (version %d) failed isolation checks: %s", cmd.Version, strings.Join(failed, ", ")), secrets...)
		res.Verification = ver
		res.Warnings = rresp.Warnings
		v := verdict{reply: res, settle: settleTerm, reason: res.Reason, err: res.Error}
		// Remove the half-made credential before answering; if that fails
		// transiently, the redelivery rotates, verifies and removes again.
		if cerr := r.removeNewCredential(ctx, lc, tenant, cmd); cerr != nil {
			if permanent, _ := Classify(cerr); !permanent && delivery < uint64(r.cfg.MaxDeliver) && ctx.Err() == nil {
				return verdict{settle: settleNak, delay: r.retryDelay(delivery), reason: events.ReasonStoreError,
					err: errorText(fmt.Errorf("verification failed and the new credential could not be removed: %w", cerr), secrets...)}
			}
			res.Warnings = append(res.Warnings, errorText(fmt.Errorf("the new credential version %d could not be removed (retire keeping version %d to remove it): %w", cmd.Version, cmd.CredentialVersion, cerr), secrets...))
		}
		return v
	}

	plain, err := json.Marshal(rresp.Credential.Plain())
	if err != nil {
		return r.rotateFailure(ctx, lc, id, tenant, cmd, r.fail(id, events.ReasonStoreError, errorText(fmt.Errorf("encode credential: %w", err), secrets...)))
	}
	armored, err := secret.Seal(plain, r.recipients...)
	clear(plain)
	if err != nil {
		return r.rotateFailure(ctx, lc, id, tenant, cmd, r.fail(id, events.ReasonStoreError, errorText(fmt.Errorf("seal credential: %w", err), secrets...)))
	}
	res := r.newResult(id, events.OutcomeRotated)
	res.Credential = armored
	res.CredentialID = newCredentialID()
	res.CredentialVersion = cmd.Version
	res.Verification = ver
	res.Warnings = rresp.Warnings
	return verdict{reply: res, settle: settleAck}
}

// rotateFailure completes a rotation that failed after (or while) the
// store was asked for the new credential. A final answer (rotate_failed)
// first removes whatever of the new credential exists, so that the store
// is left with its old credential only; a retry or an interruption leaves
// it for the redelivered command, whose Rotate resets it.
func (r *runtime) rotateFailure(ctx context.Context, lc lifecycleCalls, id ident, tenant events.TenantID, cmd *events.StoreCommand, v verdict) verdict {
	if v.reply == nil {
		return v
	}
	if err := r.removeNewCredential(ctx, lc, tenant, cmd); err != nil {
		v.reply.Warnings = append(v.reply.Warnings, errorText(fmt.Errorf(
			"removing whatever exists of the new credential version %d (retire keeping version %d) failed: %w", cmd.Version, cmd.CredentialVersion, err)))
	}
	return v
}

// removeNewCredential retires every credential but cmd.CredentialVersion.
// It runs on the command's context while that lives, and on a short one
// of its own once the deadline cut it (the store was already changed on
// this delivery; leaving the unsealed credential would be worse).
func (r *runtime) removeNewCredential(ctx context.Context, lc lifecycleCalls, tenant events.TenantID, cmd *events.StoreCommand) error {
	if ctx.Err() != nil {
		if cause := context.Cause(ctx); errors.Is(cause, errShuttingDown) || errors.Is(cause, errLockLost) {
			return cause // another delivery owns the tenant now
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
	}
	_, err := lc.retire(ctx, RetireRequest{Tenant: tenant, Generation: cmd.Generation, Keep: cmd.CredentialVersion})
	return err
}

// retire revokes every credential but cmd.CredentialVersion.
func (r *runtime) retire(ctx context.Context, lc lifecycleCalls, id ident, tenant events.TenantID, cmd *events.StoreCommand, delivery uint64) verdict {
	resp, err := lc.retire(ctx, RetireRequest{Tenant: tenant, Generation: cmd.Generation, Keep: cmd.CredentialVersion})
	if err != nil {
		return r.storeFailure(ctx, id, cmd, delivery, err)
	}
	res := r.newResult(id, events.OutcomeRetired)
	res.CredentialVersion = cmd.CredentialVersion
	res.Retired = resp.Retired
	res.Warnings = resp.Warnings
	return verdict{reply: res, settle: settleAck}
}

// observe reports the tenant's drift and, with cmd.Repair, repairs it. An
// agent cannot open the sealed secrets file, so Observe gets no credential
// and cannot check that the current one still authenticates: that check
// belongs to whoever holds the control plane's key. A store that refuses
// to observe a tenant it has no record of (a permanent "invalid" error) is
// answered observed with a resource_missing drift (DataLost): the tenant's
// slice is not there, which is what an observation is for.
func (r *runtime) observe(ctx context.Context, lc lifecycleCalls, id ident, tenant events.TenantID, cmd *events.StoreCommand, delivery uint64) verdict {
	resp, err := lc.observe(ctx, ObserveRequest{Tenant: tenant, Generation: cmd.Generation, CredentialVersion: cmd.CredentialVersion, Repair: cmd.Repair})
	if err != nil {
		if permanent, reason := Classify(err); !permanent || reason != events.ReasonInvalid {
			return r.storeFailure(ctx, id, cmd, delivery, err)
		}
		resp = ObserveResponse{Drift: []Drift{{Kind: DriftResourceMissing, Resource: string(tenant), DataLost: true,
			Detail: "the store has no record of the tenant: " + errorText(err)}}}
	}
	res := r.newResult(id, events.OutcomeObserved)
	var cut bool
	res.Drift, cut = boundDrifts(resp.Drift)
	var cutRepaired bool
	res.Repaired, cutRepaired = boundDrifts(resp.Repaired)
	if cut || cutRepaired {
		res.Warnings = append(res.Warnings, fmt.Sprintf("the store reported %d drifts and %d repairs; only the first %d of each are in this result", len(resp.Drift), len(resp.Repaired), maxDrifts))
	}
	return verdict{reply: res, settle: settleAck}
}

// DriftResourceMissing is the drift kind the runtime reports when the store
// has no record of the tenant at all.
const DriftResourceMissing = "resource_missing"

// boundDrifts sanitises and bounds a drift list; it reports whether it cut
// entries off.
func boundDrifts(in []Drift) ([]Drift, bool) {
	if len(in) == 0 {
		return nil, false
	}
	n := min(len(in), maxDrifts)
	out := make([]Drift, n)
	for i, d := range in[:n] {
		d.Kind = events.Truncate(SanitizeText(d.Kind), 64)
		d.Resource = events.Truncate(SanitizeText(d.Resource), maxDriftText)
		d.Detail = events.Truncate(SanitizeText(d.Detail), maxDriftText)
		out[i] = d
	}
	return out, len(in) > n
}

// lifecycleCalls are the lifecycle interfaces of the store under the
// runtime's decorators, each call panic-safe, instrumented
// (MetricStoreCallDuration, MetricStoreCallErrorsTotal with call rotate,
// retire, suspend, resume, observe) and sanitised like Store's methods. A
// nil interface means the store does not implement it.
type lifecycleCalls struct {
	rotator   Rotator
	suspender Suspender
	observer  Observer
	kind      events.Store
	m         *Metrics
}

// lifecycleOf finds the lifecycle interfaces of the store inside the
// runtime's decorators (Traced, Sanitize, Instrument, recovering), which wrap
// Store's methods only.
func lifecycleOf(s Store, m *Metrics) lifecycleCalls {
	inner := unwrapStore(s)
	lc := lifecycleCalls{kind: s.Kind(), m: m}
	lc.rotator, _ = inner.(Rotator)
	lc.suspender, _ = inner.(Suspender)
	lc.observer, _ = inner.(Observer)
	return lc
}

func unwrapStore(s Store) Store {
	for {
		switch d := s.(type) {
		case sanitizingStore:
			s = d.next
		case instrumentedStore:
			s = d.next
		case recoveringStore:
			s = d.next
		case tracedStore:
			s = d.Store
		default:
			return s
		}
	}
}

func (lc lifecycleCalls) done(call string, start time.Time, err error) {
	if lc.m == nil {
		return
	}
	lc.m.storeCalls.WithLabelValues(string(lc.kind), call).Observe(time.Since(start).Seconds())
	if err != nil {
		permanent, _ := Classify(err)
		lc.m.storeCallErrors.WithLabelValues(string(lc.kind), call, fmt.Sprint(permanent)).Inc()
	}
}

func (lc lifecycleCalls) rotate(ctx context.Context, req RotateRequest) (resp RotateResponse, err error) {
	start := time.Now()
	defer func() {
		lc.done("rotate", start, err)
		secrets := append([]secret.String{req.Password}, credentialSecrets(resp.Credential)...)
		resp.Warnings = sanitizeAll(resp.Warnings, secrets)
		err = SanitizeError(err, secrets...)
	}()
	defer recoverInto("rotate", &err)
	return lc.rotator.Rotate(ctx, req)
}

func (lc lifecycleCalls) retire(ctx context.Context, req RetireRequest) (resp RetireResponse, err error) {
	start := time.Now()
	defer func() {
		lc.done("retire", start, err)
		resp.Warnings = sanitizeAll(resp.Warnings, nil)
		err = SanitizeError(err)
	}()
	defer recoverInto("retire", &err)
	return lc.rotator.Retire(ctx, req)
}

func (lc lifecycleCalls) suspend(ctx context.Context, req SuspendRequest) (err error) {
	start := time.Now()
	defer func() { lc.done("suspend", start, err); err = SanitizeError(err) }()
	defer recoverInto("suspend", &err)
	return lc.suspender.Suspend(ctx, req)
}

func (lc lifecycleCalls) resume(ctx context.Context, req SuspendRequest) (err error) {
	start := time.Now()
	defer func() { lc.done("resume", start, err); err = SanitizeError(err) }()
	defer recoverInto("resume", &err)
	return lc.suspender.Resume(ctx, req)
}

func (lc lifecycleCalls) observe(ctx context.Context, req ObserveRequest) (resp ObserveResponse, err error) {
	start := time.Now()
	defer func() {
		lc.done("observe", start, err)
		secrets := credentialSecrets(req.Credential)
		for _, ds := range [][]Drift{resp.Drift, resp.Repaired} {
			for i := range ds {
				ds[i].Resource = SanitizeText(ds[i].Resource, secrets...)
				ds[i].Detail = SanitizeText(ds[i].Detail, secrets...)
			}
		}
		err = SanitizeError(err, secrets...)
	}()
	defer recoverInto("observe", &err)
	return lc.observer.Observe(ctx, req)
}
