package saga

import (
	"fmt"
	"slices"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/inventory"
)

// Observation (drift, DESIGN.md §10) as a transition of Step. Observe
// commands — periodic (ObserveScheduler) or on demand
// (tenant.observe.requested) — carry the record's saga ID and generation;
// their results are bound to both, like every other result.

// Observable reports whether a tenant in state s is settled with resources
// in the stores, so that its slices are observed: active, suspended,
// retained.
func Observable(s events.TenantState) bool {
	return s == events.TenantActive || s == events.TenantSuspended || s == events.TenantRetained
}

// maxObservedDrift bounds the drift entries kept per store in the record
// (and in one audit event), so that a store gone badly wrong cannot push
// the record past the registry's value limit.
const maxObservedDrift = 32

// observed applies a store's observation of a tenant's slice to the record
// and audits what it found: new drift as DRIFT_DETECTED, a repair as
// DRIFT_REPAIRED. An observation identical to the last one is recorded but
// not audited again; a stale one (not newer than the last, of another
// generation, or for a tenant not settled) changes nothing.
func (t *step) observed(ev Event) Decision {
	res, rec := ev.Result, t.rec
	if rec == nil {
		return Decision{RejectResult: fmt.Sprintf("no tenant %s to observe", res.TenantID), RejectCode: rejectTenant}
	}
	if res.Generation > rec.Generation {
		return Decision{RejectResult: fmt.Sprintf("generation %d is newer than the current %d", res.Generation, rec.Generation), RejectCode: rejectGeneration}
	}
	if res.Generation < rec.Generation {
		return Decision{Note: fmt.Sprintf("observation of generation %d; the tenant is at %d", res.Generation, rec.Generation)}
	}
	if res.SagaID != rec.SagaID {
		return Decision{RejectResult: fmt.Sprintf("saga %q is not generation %d's", res.SagaID, res.Generation), RejectCode: rejectSaga}
	}
	if !Observable(rec.State) {
		return Decision{Note: "tenant is " + string(rec.State) + ": observation not applied"}
	}
	if res.Outcome == events.OutcomeObserveFailed && res.Reason == events.ReasonExpired {
		return Decision{Note: "observe command expired before an agent took it: nothing was observed"}
	}
	st := rec.Stores[res.Store]
	if st == nil || st.State != events.StoreProvisioned {
		return Decision{Note: "store is not provisioned: observation not applied"}
	}
	if prev := st.Observation; prev != nil && prev.Generation == rec.Generation && !res.CompletedAt.After(prev.At) {
		return Decision{Note: "observation not newer than the last one"}
	}
	obs := &events.Observation{At: res.CompletedAt.UTC(), Generation: rec.Generation, Drift: boundDrift(res.Drift), Repaired: boundDrift(res.Repaired)}
	if res.Outcome == events.OutcomeObserveFailed {
		obs.Error = res.Reason
		if res.Error != "" {
			obs.Error += ": " + res.Error
		}
		obs.Error = events.Truncate(obs.Error, 512)
	}
	prev := st.Observation
	if prev != nil && prev.Generation != rec.Generation {
		prev = nil
	}
	t.changed = true
	st.Observation = obs
	if prev != nil && sameObservation(prev, obs) {
		return Decision{}
	}
	disc := fmt.Sprintf("obs%d", obs.At.UnixNano())
	if len(obs.Drift) > 0 && (prev == nil || !sameDrift(prev.Drift, obs.Drift)) {
		t.audit(events.AuditDriftDetected, res.Store, disc, map[string]any{
			"observed_at": obs.At, "drift": obs.Drift, "new": newDrift(prev, obs.Drift), "open": inventory.OpenDrift(obs),
			"repair": len(obs.Repaired) > 0,
		})
	}
	if len(obs.Repaired) > 0 {
		t.audit(events.AuditDriftRepaired, res.Store, disc, map[string]any{"observed_at": obs.At, "repaired": obs.Repaired})
	}
	return Decision{}
}

func newDrift(prev *events.Observation, drift []events.Drift) []events.Drift {
	var out []events.Drift
	for _, d := range drift {
		if prev == nil || !slices.Contains(prev.Drift, d) {
			out = append(out, d)
		}
	}
	return out
}

// sameDrift compares two drift lists as sets.
func sameDrift(a, b []events.Drift) bool {
	if len(a) != len(b) {
		return false
	}
	for _, d := range a {
		if !slices.Contains(b, d) {
			return false
		}
	}
	return true
}

func sameObservation(a, b *events.Observation) bool {
	return a.Error == b.Error && sameDrift(a.Drift, b.Drift) && sameDrift(a.Repaired, b.Repaired)
}

// boundDrift keeps at most maxObservedDrift entries with short details;
// the rest is summarised by one entry of kind "truncated".
func boundDrift(in []events.Drift) []events.Drift {
	if len(in) == 0 {
		return nil
	}
	out := make([]events.Drift, 0, min(len(in), maxObservedDrift+1))
	for i, d := range in {
		if i == maxObservedDrift {
			out = append(out, events.Drift{Kind: "truncated", Detail: fmt.Sprintf("%d more not kept", len(in)-i)})
			break
		}
		d.Kind = events.Truncate(d.Kind, 64)
		d.Resource = events.Truncate(d.Resource, 128)
		d.Detail = events.Truncate(d.Detail, 256)
		out = append(out, d)
	}
	return out
}
