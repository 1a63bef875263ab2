package saga

import (
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// TestObservationsYieldToSagas: periodic observations that fall due while
// sagas are in flight wait for them, each at most the maximum deferral;
// when none is in flight they go out oldest first at the given rate; a
// tenant due again while it waits is sent once, for its latest slot; with
// no deferral they go out at once whatever is in flight.
func TestObservationsYieldToSagas(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	ids := func(ds []queuedObservation) []string {
		var out []string
		for _, d := range ds {
			out = append(out, d.id)
		}
		return out
	}
	const maxDefer = 5 * time.Minute

	var q observeQueue
	q.add(map[string]int64{"a": 1, "b": 1}, t0)
	if got := q.take(t0, true, maxDefer, 10); len(got) != 0 {
		t.Fatalf("busy: sent %v at once, want them to wait", ids(got))
	}
	q.add(map[string]int64{"c": 1}, t0.Add(time.Minute))
	q.add(map[string]int64{"a": 2}, t0.Add(2*time.Minute)) // due again while waiting
	if got := q.take(t0.Add(4*time.Minute), true, maxDefer, 10); len(got) != 0 {
		t.Fatalf("busy, 4 min: sent %v, want them to wait up to 5 min", ids(got))
	}
	got := q.take(t0.Add(maxDefer), true, maxDefer, 10)
	if !slices.Equal(ids(got), []string{"a", "b"}) {
		t.Fatalf("busy, after the maximum deferral: sent %v, want [a b]", ids(got))
	}
	if got[0].slot != 2 {
		t.Fatalf("tenant a sent for slot %d, want its latest slot 2", got[0].slot)
	}
	q.add(map[string]int64{"d": 1, "e": 1, "f": 1}, t0.Add(maxDefer))
	got = q.take(t0.Add(maxDefer+time.Second), false, maxDefer, 2)
	if !slices.Equal(ids(got), []string{"c", "d"}) {
		t.Fatalf("idle with a budget of 2: sent %v, want the two oldest [c d]", ids(got))
	}
	got = q.take(t0.Add(maxDefer+2*time.Second), false, maxDefer, 2)
	if !slices.Equal(ids(got), []string{"e", "f"}) {
		t.Fatalf("idle, next tick: sent %v, want [e f]", ids(got))
	}
	if len(q.order) != 0 || len(q.queued) != 0 {
		t.Fatalf("queue not empty: %v %v", q.order, q.queued)
	}

	var now observeQueue
	now.add(map[string]int64{"x": 1, "y": 1, "z": 1}, t0)
	if got := now.take(t0, true, 0, 1); len(got) != 3 {
		t.Fatalf("no deferral: sent %v while busy, want all three at once", ids(got))
	}
}

// TestObservationsWaitForSagasInFlight: on a running orchestrator, periodic
// observations stop going out while a saga is in flight (for up to
// OBSERVE_MAX_DEFER) and resume once it settles.
func TestObservationsWaitForSagasInFlight(t *testing.T) {
	h := newHarness(t)
	for _, st := range events.Stores() {
		h.agents.set(st, observing)
	}
	// The PostgreSQL agent keeps tenant busy's provision command without
	// answering: its saga stays in flight until the test answers.
	h.agents.set(events.StorePostgres, func(cmd *events.StoreCommand) (events.Outcome, bool) {
		if cmd.TenantID == "busy" && cmd.Action == events.ActionProvision {
			return "", false
		}
		return observing(cmd)
	})
	const interval = time.Second
	h.cfg.SagaTimeout = 5 * time.Minute // busy's saga waits for the test, not for its deadline
	h.startSaga()
	cfg := observeConfig(interval)
	cfg.ObserveMaxDefer = time.Hour
	h.startObserver(cfg)

	h.publish(events.SubjectTenantRequested, `{"tenant_id":"acme"}`)
	h.waitSettled("acme", events.TenantActive, time.Minute)
	observesOfAcme := func() int {
		n := 0
		for _, c := range h.agents.commands(events.StoreRedis, events.ActionObserve) {
			if c.TenantID == "acme" {
				n++
			}
		}
		return n
	}
	waitUntil(t, time.Minute, "acme observed with nothing in flight", func() bool { return observesOfAcme() >= 1 })

	h.publish(events.SubjectTenantRequested, `{"tenant_id":"busy"}`)
	var held *events.StoreCommand
	waitUntil(t, time.Minute, "busy's provision held", func() bool {
		for _, c := range h.agents.commands(events.StorePostgres, events.ActionProvision) {
			if c.TenantID == "busy" {
				held = c
				return true
			}
		}
		return false
	})
	time.Sleep(2 * interval) // an observation sent just before is delivered
	before := observesOfAcme()
	time.Sleep(5 * interval)
	if n := observesOfAcme(); n != before {
		t.Fatalf("%d observations of acme went out in 5 intervals while a saga was in flight, want none", n-before)
	}
	deferred := func() float64 { return testutil.ToFloat64(h.sagas[0].metrics.observationsDeferred) }
	if d := deferred(); d != 1 {
		t.Fatalf("tenantprov_orchestrator_observations_deferred = %v while acme's observation waits, want 1 (one per tenant)", d)
	}
	h.agents.answer(held, events.OutcomeProvisioned, 1, nil)
	h.waitSettled("busy", events.TenantActive, time.Minute)
	waitUntil(t, time.Minute, "observations resumed", func() bool { return observesOfAcme() > before })
	waitUntil(t, time.Minute, "no observation deferred", func() bool { return deferred() == 0 })
}

// waitUntil polls cond until it holds and fails the test, naming what,
// if it does not within the given time. The harness's own waits
// (waitFor, waitSettled, waitCommands) poll a record or a count of
// commands; this one polls any condition.
func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
