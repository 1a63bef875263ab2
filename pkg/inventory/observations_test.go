package inventory

import (
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// TestObservationFindings: open drift, expiring credentials and failed
// observations of the current generation are findings (problems); repaired
// drift, observations of an earlier generation and tenants no longer live
// are not.
func TestObservationFindings(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	grant := events.Drift{Kind: "grant_added", Resource: "tenant_a1", Detail: "CONNECT to intruder"}
	fixed := events.Drift{Kind: "marker_missing", Resource: "tenant_a1"}
	lost := events.Drift{Kind: "keyspace_lost", Resource: "tenant:a1:", DataLost: true}
	exp := events.Drift{Kind: "credential_expiring", Resource: "tenant_a1", Detail: "expires at 2026-01-20"}
	rec := func(id string, state events.TenantState, gen uint64, obs map[events.Store]*events.Observation) *events.TenantRecord {
		r := &events.TenantRecord{TenantID: id, State: state, Generation: gen, Stores: map[events.Store]*events.StoreStatus{}}
		for st, o := range obs {
			r.Stores[st] = &events.StoreStatus{State: events.StoreProvisioned, Observation: o}
		}
		return r
	}
	records := []*events.TenantRecord{
		rec("a1", events.TenantActive, 2, map[events.Store]*events.Observation{
			events.StorePostgres: {At: at, Generation: 2, Drift: []events.Drift{grant, fixed}, Repaired: []events.Drift{fixed}},
			events.StoreRedis:    {At: at, Generation: 2, Drift: []events.Drift{lost}},
			events.StoreQdrant:   {At: at, Generation: 2, Drift: []events.Drift{exp}},
			events.StoreMinIO:    {At: at, Generation: 2, Error: "store_error: connection refused"},
		}),
		rec("b2", events.TenantActive, 3, map[events.Store]*events.Observation{
			events.StorePostgres: {At: at, Generation: 2, Drift: []events.Drift{grant}}, // an earlier generation's
			events.StoreRedis:    {At: at, Generation: 3, Drift: []events.Drift{fixed}, Repaired: []events.Drift{fixed}},
		}),
		rec("c3", events.TenantDeprovisioned, 1, map[events.Store]*events.Observation{
			events.StorePostgres: {At: at, Generation: 1, Drift: []events.Drift{grant}},
		}),
	}
	var rep Report
	rep.Merge(ObservationFindings(records, ""))
	want := map[Category]int{Drift: 2, Expiring: 1, ObserveFailed: 1}
	for c, n := range want {
		if rep.Counts[c] != n {
			t.Errorf("%s: %d findings, want %d (%+v)", c, rep.Counts[c], n, rep.Findings)
		}
	}
	if len(rep.Findings) != 4 || rep.OK() {
		t.Fatalf("findings %+v, ok %v", rep.Findings, rep.OK())
	}
	for _, f := range rep.Findings {
		if f.TenantID != "a1" {
			t.Errorf("finding for %s: %+v", f.TenantID, f)
		}
		if f.Store == events.StoreRedis && f.Detail != "keyspace_lost (data lost: not repaired automatically)" {
			t.Errorf("lost data detail %q", f.Detail)
		}
	}
	if fs := ObservationFindings(records, "b2"); len(fs) != 0 {
		t.Errorf("b2 (only repaired drift and an old generation's): %+v", fs)
	}
}
