package saga

import (
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// A provisioning saga run through Step with foldTimings as write does:
// the record ends with the agents' breakdowns, the orchestrator's steps
// and a total from the request's storage time; a deprovisioning starts
// fresh timings.
func TestFoldTimings(t *testing.T) {
	requested := t0.Add(-30 * time.Millisecond)
	step := func(rec *events.TenantRecord, ev Event, at time.Time, p *pendingTimes) *events.TenantRecord {
		t.Helper()
		next := must(t, rec, ev, at)
		foldTimings(rec, next, ev, p, at)
		return next
	}
	// The request's time as the stream stored it, read in a zone that is
	// not UTC: the record keeps it in UTC, as every other time it holds.
	rec := step(nil, provisionReq(1, saga1), t0, &pendingTimes{ms: map[string]float64{events.StepQueue: 30}, requestedAt: requested.In(time.FixedZone("CET", 3600))})
	if rec.Timings == nil || rec.Timings.Saga != "provision" || !rec.Timings.RequestedAt.Equal(requested) || rec.Timings.MS[events.StepQueue] != 30 {
		t.Fatalf("saga start: timings %+v", rec.Timings)
	}
	if loc := rec.Timings.RequestedAt.Location(); loc != time.UTC {
		t.Errorf("requested_at in %s, want UTC", loc)
	}
	rec = executed(rec)
	at := t0.Add(100 * time.Millisecond)
	for i, s := range events.Stores() {
		ev := result(s, 1, saga1, events.OutcomeProvisioned, 0, 1, uint64(10+i))
		ev.Result.CompletedAt = at.Add(-5 * time.Millisecond)
		ev.Result.DurationMS = 60
		ev.Result.TimingsMS = map[string]float64{events.StepProvision: 40, events.StepVerify: 20}
		rec = step(rec, ev, at, &pendingTimes{ms: map[string]float64{events.StepRegistry: 2, events.StepCommands: 1}})
	}
	for _, s := range events.Stores() {
		st := rec.Stores[s]
		if st.TimingsMS[events.StepProvision] != 40 || st.TimingsMS[events.StepVerify] != 20 || st.TimingsMS[events.StepResult] != 5 {
			t.Errorf("%s: timings %v, want provision 40, verify 20, result 5", s, st.TimingsMS)
		}
	}
	if got := rec.Timings.MS[events.StepRegistry]; got != 8 {
		t.Errorf("registry ms %v, want 8 (four writes' worth)", got)
	}
	if got := rec.Timings.MS[events.StepStores]; got != 100 {
		t.Errorf("stores ms %v, want 100 (first command at t0, last result applied 100ms later)", got)
	}
	if _, ok := rec.Timings.MS[events.StepTotal]; ok {
		t.Fatalf("total set before the saga settled: %v", rec.Timings.MS)
	}
	// Run the rest of the saga (seal, observe) until it is active.
	for i := 0; rec.State != events.TenantActive && i < 10; i++ {
		var put *events.Effect
		for _, e := range rec.Outbox {
			if e.Kind == events.EffectPutSecrets {
				put = e
			}
		}
		if put == nil {
			t.Fatalf("state %s with no seal pending: %+v", rec.State, rec.Outbox)
		}
		ev := Event{Kind: EvObjectObserved, EffectID: put.ID, Object: ObjectState{Present: true, SealID: put.Seal.ID, SHA256: "ab", Version: at}}
		rec = step(rec, ev, at.Add(20*time.Millisecond), nil)
	}
	if rec.State != events.TenantActive {
		t.Fatalf("state %s, want active", rec.State)
	}
	if got := rec.Timings.MS[events.StepTotal]; got != 150 {
		t.Errorf("total %v ms, want 150 (requested 30 ms before t0, active at t0+120 ms)", got)
	}
	rec = executed(rec)
	rec = step(rec, deprovisionReq(2), at.Add(time.Second), &pendingTimes{ms: map[string]float64{events.StepQueue: 1}, requestedAt: at.Add(time.Second)})
	if rec.Timings.Saga != "deprovision" || rec.Timings.MS[events.StepRegistry] != 0 || rec.Timings.MS[events.StepQueue] != 1 {
		t.Errorf("deprovisioning timings %+v, want fresh ones", rec.Timings)
	}
}

// The book keeps what was given back and forgets a dropped tenant.
func TestTimingBook(t *testing.T) {
	b := newTimingBook()
	b.add("a", events.StepAudit, 2*time.Millisecond)
	p := b.take("a")
	if b.size() != 0 || p == nil || p.ms[events.StepAudit] != 2 {
		t.Fatalf("take: %+v, size %d", p, b.size())
	}
	b.add("a", events.StepAudit, time.Millisecond)
	b.giveBack("a", p)
	if got := b.take("a").ms[events.StepAudit]; got != 3 {
		t.Fatalf("after giveBack: audit %v, want 3", got)
	}
	b.add("b", events.StepAudit, time.Millisecond)
	b.drop("b")
	if b.size() != 0 {
		t.Fatalf("size %d after drop, want 0", b.size())
	}
}
