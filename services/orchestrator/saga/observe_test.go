package saga

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// Observation scheduling with scripted agents on real JetStream: the
// orchestrator's side of drift (the agents' Observe is tested in each
// store's conformance suite).

// observing answers observe with observed and everything else as succeed.
func observing(cmd *events.StoreCommand) (events.Outcome, bool) {
	if cmd.Action == events.ActionObserve {
		return events.OutcomeObserved, true
	}
	return succeed(cmd)
}

// holdObserve records observe commands without answering them (the test
// answers), and succeeds at everything else.
func holdObserve(cmd *events.StoreCommand) (events.Outcome, bool) {
	if cmd.Action == events.ActionObserve {
		return "", false
	}
	return succeed(cmd)
}

// startObserver runs an observer on the harness's latest saga replica.
func (h *harness) startObserver(cfg ObserveConfig) {
	h.t.Helper()
	if err := cfg.Validate(); err != nil {
		h.t.Fatal(err)
	}
	o := NewObserver(h.sagas[len(h.sagas)-1], cfg)
	ctx, cancel := context.WithCancel(h.ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = o.Run(ctx) }()
	h.t.Cleanup(func() { cancel(); wg.Wait() })
}

func observeConfig(interval time.Duration) ObserveConfig {
	return ObserveConfig{ObserveInterval: interval, DriftRepair: "auto", ObserveTimeout: time.Minute, OrphanGrace: time.Hour, InventoryTimeout: 10 * time.Second}
}

// waitCommands waits until store has received at least n commands for
// action and returns them.
func (h *harness) waitCommands(store events.Store, action events.Action, n int, within time.Duration) []*events.StoreCommand {
	h.t.Helper()
	deadline := time.Now().Add(within)
	for {
		cmds := h.agents.commands(store, action)
		if len(cmds) >= n {
			return cmds
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s received %d %s commands within %s, want %d", store, len(cmds), action, within, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPeriodicObservationRecordsDriftOnce: two orchestrator replicas
// schedule observations; each store gets one observe per slot (the
// replicas' commands are de-duplicated), bound to the tenant's saga and
// generation and asking for repair (DRIFT_REPAIR=auto); drift an agent
// reports lands in the record and is audited once, and the same drift
// observed again in the next slot is not audited again. On one node and on
// the 3-node cluster.
func TestPeriodicObservationRecordsDriftOnce(t *testing.T) {
	eachTopology(t, periodicObservation)
}

func periodicObservation(t *testing.T, h *harness) {
	for _, st := range events.Stores() {
		h.agents.set(st, observing)
	}
	h.agents.set(events.StorePostgres, holdObserve)
	const interval = 3 * time.Second
	h.startSaga()
	h.startObserver(observeConfig(interval))
	h.startSaga()
	h.startObserver(observeConfig(interval))

	h.publish(events.SubjectTenantRequested, `{"tenant_id":"acme"}`)
	rec := h.waitSettled("acme", events.TenantActive, time.Minute)

	cmd := h.waitCommands(events.StorePostgres, events.ActionObserve, 1, time.Minute)[0]
	if cmd.SagaID != rec.SagaID || cmd.Generation != rec.Generation || !cmd.Repair || cmd.CredentialVersion != 1 || cmd.TenantID != "acme" {
		t.Fatalf("observe command %+v for record saga %s generation %d", cmd, rec.SagaID, rec.Generation)
	}
	grant := events.Drift{Kind: "grant_added", Resource: "tenant_acme", Detail: "CONNECT granted to intruder"}
	h.agents.answer(cmd, events.OutcomeObserved, 1, func(r *events.StoreResult) { r.Drift = []events.Drift{grant} })
	h.waitFor("acme", time.Minute, "postgres drift recorded", func(r *events.TenantRecord) bool {
		o := r.Stores[events.StorePostgres].Observation
		return o != nil && len(o.Drift) == 1 && o.Drift[0] == grant && len(r.Outbox) == 0
	})
	detected := h.waitAudits(events.AuditDriftDetected, "acme", 1)
	if detected[0].Store != events.StorePostgres {
		t.Fatalf("DRIFT_DETECTED for %s", detected[0].Store)
	}

	// The next slot: the same drift again is recorded, not audited again.
	cmds := h.waitCommands(events.StorePostgres, events.ActionObserve, 2, time.Minute)
	first := h.record("acme").Stores[events.StorePostgres].Observation.At
	h.agents.answer(cmds[1], events.OutcomeObserved, 1, func(r *events.StoreResult) {
		r.Drift = []events.Drift{grant}
		r.CompletedAt = first.Add(time.Second)
	})
	h.waitFor("acme", time.Minute, "second observation recorded", func(r *events.TenantRecord) bool {
		o := r.Stores[events.StorePostgres].Observation
		return o != nil && o.At.After(first) && len(r.Outbox) == 0
	})
	if n := len(h.audits(events.AuditDriftDetected, "acme")); n != 1 {
		t.Fatalf("%d DRIFT_DETECTED after the same drift was observed twice, want 1", n)
	}

	// Every store is observed; each slot reaches a store once although two
	// replicas schedule it.
	minio := h.waitCommands(events.StoreMinIO, events.ActionObserve, 2, time.Minute)
	off := slotOffset("acme", interval)
	seen := map[int64]bool{}
	for _, c := range minio {
		n, _ := lastSlot(c.IssuedAt, off, interval)
		if seen[n] {
			t.Fatalf("slot %d sent to minio twice (%d commands)", n, len(minio))
		}
		seen[n] = true
	}
	h.waitFor("acme", time.Minute, "every store observed", func(r *events.TenantRecord) bool {
		for _, st := range events.Stores() {
			if r.Stores[st].Observation == nil {
				return false
			}
		}
		return true
	})
	if n := len(h.audits(events.AuditResultRejected, "acme")); n != 0 {
		t.Fatalf("%d observe results rejected", n)
	}
}

// TestObserveOnDemand: tenant.observe.requested (tenantctl doctor <id>)
// observes every provisioned store of an active tenant at once, with
// periodic observation off; a request for an unknown tenant is rejected.
func TestObserveOnDemand(t *testing.T) {
	h := newHarness(t)
	for _, st := range events.Stores() {
		h.agents.set(st, observing)
	}
	h.startSaga()
	h.startObserver(observeConfig(0))
	h.publish(events.SubjectTenantRequested, `{"tenant_id":"acme"}`)
	h.waitSettled("acme", events.TenantActive, time.Minute)
	if n := len(h.agents.commands(events.StoreRedis, events.ActionObserve)); n != 0 {
		t.Fatalf("%d observe commands with OBSERVE_INTERVAL=0 before any request", n)
	}
	h.publish(events.SubjectTenantObserveRequested, `{"tenant_id":"acme","requested_by":"doctor"}`)
	for _, st := range events.Stores() {
		h.waitCommands(st, events.ActionObserve, 1, time.Minute)
	}
	h.waitFor("acme", time.Minute, "every store observed", func(r *events.TenantRecord) bool {
		for _, st := range events.Stores() {
			if r.Stores[st].Observation == nil {
				return false
			}
		}
		return true
	})
	h.publish(events.SubjectTenantObserveRequested, `{"tenant_id":"ghost"}`)
	h.waitAudits(events.AuditTenantRequestRejected, "ghost", 1)
}

// TestSlotsSpreadTenants: 10,000 tenants' slots cover a 10-minute
// interval evenly (no second holds more than a small multiple of the
// mean), and a tenant's slot is the same for every replica.
func TestSlotsSpreadTenants(t *testing.T) {
	const interval = 10 * time.Minute
	per := map[int64]int{}
	for i := range 10000 {
		id := events.TenantID(fmt.Sprintf("t%05d", i))
		per[int64(slotOffset(string(id), interval)/time.Second)]++
	}
	most := 0
	for _, n := range per {
		most = max(most, n)
	}
	if most > 10*10000/600 {
		t.Fatalf("%d tenants share one second of the interval (mean %d)", most, 10000/600)
	}
	if a, b := slotOffset("acme", interval), slotOffset("acme", interval); a != b {
		t.Fatal("slot not deterministic")
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	n, at := lastSlot(now, 90*time.Second, interval)
	if at.After(now) || now.Sub(at) >= interval || at.Sub(time.Unix(0, 0)).Nanoseconds()%int64(interval) != int64(90*time.Second) {
		t.Fatalf("slot %d at %s for now %s", n, at, now)
	}
}
