package saga

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/inventory"
)

func observation(store events.Store, gen uint64, saga string, at time.Time, drift, repaired []events.Drift) Event {
	res := &events.StoreResult{TenantID: "acme", Generation: gen, SagaID: saga, Store: store, Outcome: events.OutcomeObserved,
		CompletedAt: at, Drift: drift, Repaired: repaired}
	return Event{Kind: EvResult, Seq: 900, Result: res, SubjectStore: store}
}

func auditsOf(rec *events.TenantRecord, typ events.AuditType) []*events.AuditEvent {
	var out []*events.AuditEvent
	for _, e := range rec.Outbox {
		if e.Kind != events.EffectAudit || e.Subject != events.AuditSubject(typ) {
			continue
		}
		var ev events.AuditEvent
		if err := json.Unmarshal(e.Payload, &ev); err == nil {
			out = append(out, &ev)
		}
	}
	return out
}

// TestStepObserved is the observation table: what each observation does to
// the record and which audit events it emits.
func TestStepObserved(t *testing.T) {
	f := fixtures(t)
	pg := events.StorePostgres
	grant := events.Drift{Kind: "grant_added", Resource: "tenant_acme", Detail: "CONNECT granted to role intruder"}
	marker := events.Drift{Kind: "marker_missing", Resource: "tenant_acme"}
	lost := events.Drift{Kind: "resource_missing", Resource: "tenant_acme", DataLost: true}
	at := t0.Add(2 * time.Hour)

	// withLast is the active record after a first observation (grant found).
	withLast := executed(must(t, f["active"], observation(pg, 1, saga1, at, []events.Drift{grant}, nil), at))

	for _, c := range []struct {
		name     string
		rec      *events.TenantRecord
		ev       Event
		changed  bool
		reject   string // RejectCode
		detected int
		repaired int
		check    func(t *testing.T, rec *events.TenantRecord)
	}{
		{name: "clean observation recorded, not audited", rec: f["active"], ev: observation(pg, 1, saga1, at, nil, nil), changed: true,
			check: func(t *testing.T, rec *events.TenantRecord) {
				o := rec.Stores[pg].Observation
				if o == nil || !o.At.Equal(at) || o.Generation != 1 || len(o.Drift) != 0 {
					t.Fatalf("observation %+v", o)
				}
			}},
		{name: "drift detected", rec: f["active"], ev: observation(pg, 1, saga1, at, []events.Drift{grant, lost}, nil), changed: true, detected: 1,
			check: func(t *testing.T, rec *events.TenantRecord) {
				if o := rec.Stores[pg].Observation; len(o.Drift) != 2 || len(inventory.OpenDrift(o)) != 2 {
					t.Fatalf("observation %+v", o)
				}
			}},
		{name: "drift repaired", rec: f["active"], ev: observation(pg, 1, saga1, at, []events.Drift{grant, marker}, []events.Drift{grant, marker}), changed: true, detected: 1, repaired: 1,
			check: func(t *testing.T, rec *events.TenantRecord) {
				if o := rec.Stores[pg].Observation; len(inventory.OpenDrift(o)) != 0 {
					t.Fatalf("open drift after repair: %+v", o)
				}
			}},
		{name: "identical observation not re-audited", rec: withLast, ev: observation(pg, 1, saga1, at.Add(10*time.Minute), []events.Drift{grant}, nil), changed: true,
			check: func(t *testing.T, rec *events.TenantRecord) {
				if !rec.Stores[pg].Observation.At.Equal(at.Add(10 * time.Minute)) {
					t.Fatal("the newer identical observation's time was not recorded")
				}
			}},
		{name: "new drift next to old is audited", rec: withLast, ev: observation(pg, 1, saga1, at.Add(10*time.Minute), []events.Drift{grant, marker}, nil), changed: true, detected: 1,
			check: func(t *testing.T, rec *events.TenantRecord) {
				ev := auditsOf(rec, events.AuditDriftDetected)[0]
				var d struct{ New []events.Drift }
				_ = json.Unmarshal(ev.Details, &d)
				if len(d.New) != 1 || d.New[0] != marker {
					t.Fatalf("new drift %+v", d.New)
				}
			}},
		{name: "drift gone is recorded", rec: withLast, ev: observation(pg, 1, saga1, at.Add(10*time.Minute), nil, nil), changed: true,
			check: func(t *testing.T, rec *events.TenantRecord) {
				if len(rec.Stores[pg].Observation.Drift) != 0 {
					t.Fatal("old drift kept")
				}
			}},
		{name: "older observation ignored", rec: withLast, ev: observation(pg, 1, saga1, at.Add(-time.Minute), []events.Drift{marker}, nil)},
		{name: "same-time observation ignored", rec: withLast, ev: observation(pg, 1, saga1, at, []events.Drift{marker}, nil)},
		{name: "foreign saga rejected", rec: f["active"], ev: observation(pg, 1, "other", at, nil, nil), reject: rejectSaga},
		{name: "past generation changes nothing", rec: func() *events.TenantRecord { r := cloneRecord(f["active"]); r.Generation = 2; return r }(), ev: observation(pg, 1, saga1, at, []events.Drift{grant}, nil)},
		{name: "future generation rejected", rec: f["active"], ev: observation(pg, 2, saga1, at, nil, nil), reject: rejectGeneration},
		{name: "unknown tenant rejected", rec: nil, ev: observation(pg, 1, saga1, at, nil, nil), reject: rejectTenant},
		{name: "provisioning tenant not observed", rec: f["provisioning"], ev: observation(pg, 1, saga1, at, []events.Drift{grant}, nil)},
		{name: "deprovisioning tenant not observed", rec: f["deprovisioning"], ev: observation(pg, 1, saga1, at, []events.Drift{grant}, nil)},
		{name: "deprovisioned tenant not observed", rec: f["deprovisioned"], ev: observation(pg, 1, saga1, at, []events.Drift{grant}, nil)},
		{name: "observe_failed recorded with its error", rec: f["active"], ev: func() Event {
			ev := observation(pg, 1, saga1, at, nil, nil)
			ev.Result.Outcome, ev.Result.Reason, ev.Result.Error = events.OutcomeObserveFailed, events.ReasonStoreError, "connection refused"
			return ev
		}(), changed: true, check: func(t *testing.T, rec *events.TenantRecord) {
			if o := rec.Stores[pg].Observation; o.Error != "store_error: connection refused" {
				t.Fatalf("error %q", o.Error)
			}
		}},
		{name: "suspended tenant observed", rec: func() *events.TenantRecord { r := cloneRecord(f["active"]); r.State = events.TenantSuspended; return r }(),
			ev: observation(pg, 1, saga1, at, []events.Drift{grant}, nil), changed: true, detected: 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			next, d := Step(policy, c.rec, c.ev, at)
			if d.RejectCode != c.reject {
				t.Fatalf("reject %q (%s), want %q", d.RejectCode, d.RejectResult, c.reject)
			}
			if (next != nil) != c.changed {
				t.Fatalf("changed=%v, want %v (%+v)", next != nil, c.changed, d)
			}
			if next == nil {
				return
			}
			if err := next.Validate(); err != nil {
				t.Fatal(err)
			}
			if n := len(auditsOf(next, events.AuditDriftDetected)) - len(auditsOf(c.rec, events.AuditDriftDetected)); n != c.detected {
				t.Fatalf("%d DRIFT_DETECTED, want %d", n, c.detected)
			}
			if n := len(auditsOf(next, events.AuditDriftRepaired)) - len(auditsOf(c.rec, events.AuditDriftRepaired)); n != c.repaired {
				t.Fatalf("%d DRIFT_REPAIRED, want %d", n, c.repaired)
			}
			for _, ev := range append(auditsOf(next, events.AuditDriftDetected), auditsOf(next, events.AuditDriftRepaired)...) {
				if err := ev.Validate(); err != nil || ev.Store != pg || ev.Generation != 1 {
					t.Fatalf("audit event %+v: %v", ev, err)
				}
			}
			if next.State != c.rec.State {
				t.Fatalf("state %s became %s", c.rec.State, next.State)
			}
			if c.check != nil {
				c.check(t, next)
			}
		})
	}
}

// TestStepObservedBoundsDrift: a store reporting thousands of differences
// does not push the record past the registry's value limit.
func TestStepObservedBoundsDrift(t *testing.T) {
	f := fixtures(t)
	var many []events.Drift
	for i := range 5000 {
		many = append(many, events.Drift{Kind: "grant_added", Resource: "r", Detail: string(rune('a'+i%26)) + " granted"})
	}
	next := must(t, f["active"], observation(events.StoreRedis, 1, saga1, t0.Add(time.Hour), many, nil), t0.Add(time.Hour))
	if n := len(next.Stores[events.StoreRedis].Observation.Drift); n != maxObservedDrift+1 {
		t.Fatalf("%d drift entries kept", n)
	}
	if _, err := events.Encode(next); err != nil {
		t.Fatal(err)
	}
}

// TestStepNeverAppliesASweepResult: the orphan sweep's deprovision carries
// a sweep saga ID; its result is never applied to a tenant record, whatever
// the record's state or generation (the handler routes it to the sweep
// before Step; Step would reject it anyway).
func TestStepNeverAppliesASweepResult(t *testing.T) {
	f := fixtures(t)
	for name, rec := range f {
		for _, gen := range []uint64{1, 2} {
			ev := result(events.StoreRedis, gen, SweepSagaPrefix+"acme-0123", events.OutcomeDeprovisioned, 1, 1, 999)
			next, d := Step(policy, rec, ev, t0.Add(3*time.Hour))
			if next != nil {
				t.Fatalf("%s g%d: a sweep's result changed the record (%+v)", name, gen, d)
			}
		}
	}
	if !IsSweepSaga(SweepSagaPrefix+"x") || IsSweepSaga(saga1) {
		t.Fatal("IsSweepSaga")
	}
}
