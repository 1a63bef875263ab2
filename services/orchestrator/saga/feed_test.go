package saga

import (
	"context"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// registryConsumers returns how many consumers the registry's stream
// (KV_tenants) has: every watch on the bucket is one.
func (h *harness) registryConsumers() int {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	st, err := h.js.Stream(ctx, "KV_"+events.KVTenants)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	return info.State.Consumers
}

// TestOneRegistryWatchPerProcess: an orchestrator process running the saga
// (reconciler) and the observer (observation schedule) follows the
// registry with ONE watch, so each registry write is delivered once per
// replica and the bucket is replayed once at start.
func TestOneRegistryWatchPerProcess(t *testing.T) {
	h := newHarness(t)
	for _, st := range events.Stores() {
		h.agents.set(st, observing)
	}
	h.startSaga()
	h.startObserver(observeConfig(2 * time.Second))
	h.publish(events.SubjectTenantRequested, `{"tenant_id":"acme"}`)
	h.waitSettled("acme", events.TenantActive, time.Minute)
	// Both indexes are fed: the reconciler settled acme, the schedule
	// observed it.
	h.waitCommands(events.StoreRedis, events.ActionObserve, 1, time.Minute)

	// A watch the observer's registration replaced may take a moment to go.
	deadline := time.Now().Add(30 * time.Second)
	n := h.registryConsumers()
	for n != 1 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		n = h.registryConsumers()
	}
	if n != 1 {
		t.Fatalf("%d consumers on the registry's stream from one orchestrator process, want 1", n)
	}
	// And it stays one.
	for range 10 {
		time.Sleep(100 * time.Millisecond)
		if n := h.registryConsumers(); n != 1 {
			t.Fatalf("%d consumers on the registry's stream, want 1", n)
		}
	}
}
