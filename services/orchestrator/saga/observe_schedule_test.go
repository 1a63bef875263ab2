package saga

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// observable is a registry update of tenant id in state, provisioned in
// postgres with credential version version.
func observable(id string, state events.TenantState, gen uint64, version int) registryUpdate {
	rec := &events.TenantRecord{State: state, Generation: gen, SagaID: fmt.Sprintf("saga-%s-%d", id, gen),
		Stores: map[events.Store]*events.StoreStatus{events.StorePostgres: {State: events.StoreProvisioned, CredentialVersion: version}}}
	return registryUpdate{key: id, op: jetstream.KeyValuePut, rec: rec}
}

func deleted(id string) registryUpdate { return registryUpdate{key: id, op: jetstream.KeyValueDelete} }

// TestObserveDuePopsOnlyDueSlots: with 10,000 tenants indexed, a tick in
// which 3 slots came returns exactly those 3, with the slot numbers every
// replica computes, and takes only them from the heap; a tenant deleted or
// no longer observable is not returned, one whose record changed is
// observed as it is now, and one that left and came back is returned once.
func TestObserveDuePopsOnlyDueSlots(t *testing.T) {
	const interval = 10 * time.Minute
	pg := -1
	for i, st := range events.Stores() {
		if st == events.StorePostgres {
			pg = i
		}
	}
	ix := newObserveIndex(interval)
	ids := make([]string, 10000)
	for i := range ids {
		ids[i] = fmt.Sprintf("t%05d", i)
		ix.apply(observable(ids[i], events.TenantActive, 1, 1))
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if got := ix.due(t0, t0); len(got) != 0 { // the first due queues everyone at its next slot
		t.Fatalf("%d due in an empty span", len(got))
	}
	if ix.slots.Len() != len(ids) {
		t.Fatalf("%d slots queued for %d tenants", ix.slots.Len(), len(ids))
	}
	// The tenants in the order of their next slot after t0.
	next := func(id string) time.Time {
		_, at := lastSlot(t0, slotOffset(id, interval), interval)
		return at.Add(interval)
	}
	order := append([]string(nil), ids...)
	sort.Slice(order, func(i, j int) bool { return next(order[i]).Before(next(order[j])) })
	if !next(order[2]).Before(next(order[3])) || !next(order[6]).Before(next(order[7])) {
		t.Fatal("test tenants share a slot time; pick others")
	}

	ix.popped = 0
	now := next(order[2])
	got := ix.due(t0, now)
	if len(got) != 3 {
		t.Fatalf("%d due, want 3: %v", len(got), got)
	}
	for _, id := range order[:3] {
		n, _ := lastSlot(now, slotOffset(id, interval), interval)
		if slot, ok := got[id]; !ok || slot != n {
			t.Fatalf("%s: slot %d (returned %t), want %d", id, slot, ok, n)
		}
	}
	if ix.popped != 3 {
		t.Fatalf("a tick with 3 due slots popped %d of %d", ix.popped, len(ids))
	}

	// The next four: deleted; no longer observable; rotated (changed,
	// still observable); left and came back.
	gone, busy, rotated, back := order[3], order[4], order[5], order[6]
	ix.apply(deleted(gone))
	ix.apply(observable(busy, events.TenantDeprovisioning, 1, 1))
	ix.apply(observable(rotated, events.TenantActive, 1, 2))
	ix.apply(observable(back, events.TenantDeprovisioning, 1, 1))
	ix.apply(observable(back, events.TenantActive, 2, 1))
	ix.popped = 0
	after := now
	now = next(back)
	got = ix.due(after, now)
	if len(got) != 2 {
		t.Fatalf("due %v, want %s and %s", got, rotated, back)
	}
	for _, id := range []string{rotated, back} {
		n, _ := lastSlot(now, slotOffset(id, interval), interval)
		if got[id] != n {
			t.Fatalf("%s: slot %d, want %d (due %v)", id, got[id], n, got)
		}
	}
	if e, _ := ix.get(rotated); e.versions[pg] != 2 {
		t.Fatalf("rotated tenant observed with credential version %d, want 2", e.versions[pg])
	}
	if e, _ := ix.get(back); e.generation != 2 {
		t.Fatalf("tenant back observed as generation %d, want 2", e.generation)
	}
	// gone's and busy's slots, back's slot of its earlier stay (skipped),
	// rotated's and back's.
	if ix.popped != 5 {
		t.Fatalf("popped %d slots, want 5", ix.popped)
	}
	if ix.slots.Len() != len(ids)-2 {
		t.Fatalf("%d slots queued for %d tenants", ix.slots.Len(), len(ids)-2)
	}
}

// TestObserveDueAsScan: the heap returns, tick after tick, what a scan of
// every tenant (the schedule's definition: each tenant whose latest slot
// fell in (after, now]) returns, through tenants leaving and coming back
// and gaps longer than the interval (a missed slot is not made up).
func TestObserveDueAsScan(t *testing.T) {
	const interval = 10 * time.Second
	rng := rand.New(rand.NewPCG(1, 2))
	ix := newObserveIndex(interval)
	in := map[string]bool{}
	ids := make([]string, 2000)
	for i := range ids {
		ids[i] = fmt.Sprintf("t%04d", i)
		ix.apply(observable(ids[i], events.TenantActive, 1, 1))
		in[ids[i]] = true
	}
	scan := func(after, now time.Time) map[string]int64 {
		out := map[string]int64{}
		for id, ok := range in {
			if n, at := lastSlot(now, slotOffset(id, interval), interval); ok && at.After(after) {
				out[id] = n
			}
		}
		return out
	}
	last := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for tick := range 2000 {
		for range rng.IntN(5) {
			id := ids[rng.IntN(len(ids))]
			if in[id] {
				ix.apply(deleted(id))
			} else {
				ix.apply(observable(id, events.TenantActive, 1, 1))
			}
			in[id] = !in[id]
		}
		step := time.Duration(rng.IntN(300)) * time.Millisecond
		if tick%500 == 499 {
			step = 3*interval + step // no replica ran for a while
		}
		now := last.Add(step)
		got, want := ix.due(last, now), scan(last, now)
		if len(got) != len(want) {
			t.Fatalf("tick %d (%s → %s): %d due, scan finds %d", tick, last, now, len(got), len(want))
		}
		for id, n := range want {
			if got[id] != n {
				t.Fatalf("tick %d: %s slot %d, scan finds %d", tick, id, got[id], n)
			}
		}
		last = now
	}
}

// TestObserveIndexCompacts: tenants that keep leaving and coming back, with
// no tick taking their earlier slots, do not pile up slots: the heap stays
// within a bound of the tenants indexed.
func TestObserveIndexCompacts(t *testing.T) {
	ix := newObserveIndex(time.Minute)
	for i := range 100 {
		ix.apply(observable(fmt.Sprintf("t%03d", i), events.TenantActive, 1, 1))
	}
	most := 0
	for round := range 100 {
		for i := range 100 {
			id := fmt.Sprintf("t%03d", i)
			ix.apply(observable(id, events.TenantDeprovisioning, 1, 1))
			ix.apply(observable(id, events.TenantActive, uint64(round+2), 1))
			most = max(most, ix.slots.Len())
		}
	}
	if most > 2*100+1024+1 {
		t.Fatalf("%d slots queued for 100 tenants after 10,000 re-entries", most)
	}
	got := ix.due(time.Time{}, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	if len(got) != 100 {
		t.Fatalf("%d due after compaction, want every tenant (100)", len(got))
	}
}
