package inventory

import (
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
)

var now = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func rec(id string, state events.TenantState, gen uint64) *events.TenantRecord {
	return &events.TenantRecord{TenantID: id, State: state, Generation: gen, UpdatedAt: now.Add(-time.Second)}
}

// complete returns every item an active tenant holds, of generation gen.
func complete(id string, gen uint64) map[events.Store][]events.InventoryItem {
	out := map[events.Store][]events.InventoryItem{}
	for st, kinds := range Expected {
		for _, k := range kinds {
			out[st] = append(out[st], events.InventoryItem{Store: st, Kind: k, Name: string(k) + "-" + id, TenantID: id, Ours: true, Generation: gen})
		}
	}
	return out
}

func merge(ms ...map[events.Store][]events.InventoryItem) map[events.Store][]events.InventoryItem {
	out := map[events.Store][]events.InventoryItem{}
	for _, st := range events.Stores() {
		out[st] = []events.InventoryItem{}
	}
	for _, m := range ms {
		for st, items := range m {
			out[st] = append(out[st], items...)
		}
	}
	return out
}

func without(m map[events.Store][]events.InventoryItem, st events.Store, k events.ResourceKind) map[events.Store][]events.InventoryItem {
	out := map[events.Store][]events.InventoryItem{}
	for s, items := range m {
		for _, it := range items {
			if s == st && it.Kind == k {
				continue
			}
			out[s] = append(out[s], it)
		}
	}
	return out
}

func item(st events.Store, k events.ResourceKind, id string, ours bool, gen uint64) map[events.Store][]events.InventoryItem {
	return map[events.Store][]events.InventoryItem{st: {{Store: st, Kind: k, Name: string(k) + "-" + id, TenantID: id, Ours: ours, Generation: gen}}}
}

// key is what a test asserts of a finding.
type key struct {
	Category Category
	Tenant   string
	Store    events.Store
	Kind     events.ResourceKind
}

func TestCompare(t *testing.T) {
	deadline := now.Add(-time.Minute)
	soon := now.Add(time.Minute)
	withDeadline := func(r *events.TenantRecord, d time.Time) *events.TenantRecord { r.Deadline = &d; return r }
	idle := func(r *events.TenantRecord, d time.Duration) *events.TenantRecord {
		r.UpdatedAt = now.Add(-d)
		return r
	}
	appIsolation := rec("app", events.TenantActive, 1)
	appIsolation.Stores = map[events.Store]*events.StoreStatus{events.StoreQdrant: {State: events.StoreProvisioned, IsolationMode: "application"}}

	for _, tc := range []struct {
		name       string
		records    []*events.TenantRecord
		inv        map[events.Store][]events.InventoryItem
		unanswered map[events.Store]string
		tenant     string
		want       []key
		ok         bool
	}{
		{name: "active and complete", records: []*events.TenantRecord{rec("acme", events.TenantActive, 1)}, inv: merge(complete("acme", 1)), ok: true},
		{name: "nothing at all", inv: merge(), ok: true},
		{name: "resource without record is leaked",
			inv:  merge(item(events.StoreRedis, events.KindACLUser, "ghost", true, 3)),
			want: []key{{Leaked, "ghost", events.StoreRedis, events.KindACLUser}}},
		{name: "resources of a failed tenant are leaked",
			records: []*events.TenantRecord{rec("acme", events.TenantFailed, 2)},
			inv:     merge(item(events.StoreMinIO, events.KindBucket, "acme", true, 2), item(events.StorePostgres, events.KindMarker, "acme", true, 2)),
			want:    []key{{Leaked, "acme", events.StoreMinIO, events.KindBucket}, {Leaked, "acme", events.StorePostgres, events.KindMarker}}},
		{name: "resources of a deprovisioned tenant are leaked",
			records: []*events.TenantRecord{rec("acme", events.TenantDeprovisioned, 1)},
			inv:     merge(item(events.StoreQdrant, events.KindTokenRecord, "acme", true, 1)),
			want:    []key{{Leaked, "acme", events.StoreQdrant, events.KindTokenRecord}}},
		{name: "resources of live transient tenants are not leaks",
			records: []*events.TenantRecord{rec("a", events.TenantProvisioning, 1), rec("b", events.TenantRollingBack, 1), rec("c", events.TenantDeprovisioning, 1), rec("d", "retained", 1)},
			inv: merge(item(events.StoreRedis, events.KindACLUser, "a", true, 1), item(events.StoreRedis, events.KindACLUser, "b", true, 1),
				item(events.StoreRedis, events.KindACLUser, "c", true, 1), item(events.StoreRedis, events.KindKeys, "d", true, 1)),
			ok: true},
		{name: "active tenant missing a resource",
			records: []*events.TenantRecord{rec("acme", events.TenantActive, 1)},
			inv:     merge(without(complete("acme", 1), events.StorePostgres, events.KindRole)),
			want:    []key{{Missing, "acme", events.StorePostgres, events.KindRole}}},
		{name: "a foreign look-alike does not stand in for a missing resource",
			records: []*events.TenantRecord{rec("acme", events.TenantActive, 1)},
			inv:     merge(without(complete("acme", 1), events.StoreRedis, events.KindACLUser), item(events.StoreRedis, events.KindACLUser, "acme", false, 0)),
			want:    []key{{Foreign, "acme", events.StoreRedis, events.KindACLUser}, {Missing, "acme", events.StoreRedis, events.KindACLUser}}},
		{name: "no token record is expected with application isolation",
			records: []*events.TenantRecord{appIsolation},
			inv:     merge(without(complete("app", 1), events.StoreQdrant, events.KindTokenRecord)), ok: true},
		{name: "a store that did not answer is reported and not counted as missing",
			records:    []*events.TenantRecord{rec("acme", events.TenantActive, 1)},
			inv:        map[events.Store][]events.InventoryItem{events.StoreMinIO: complete("acme", 1)[events.StoreMinIO]},
			unanswered: map[events.Store]string{events.StorePostgres: "timeout", events.StoreQdrant: "timeout", events.StoreRedis: "no responders"},
			want:       []key{{Unanswered, "", events.StorePostgres, ""}, {Unanswered, "", events.StoreQdrant, ""}, {Unanswered, "", events.StoreRedis, ""}}},
		{name: "foreign look-alike of no tenant is reported but is no problem",
			inv:  merge(item(events.StoreMinIO, events.KindBucket, "lookalike", false, 0)),
			want: []key{{Foreign, "lookalike", events.StoreMinIO, events.KindBucket}}, ok: true},
		{name: "provisioning past deadline plus margin is stuck",
			records: []*events.TenantRecord{withDeadline(rec("slow", events.TenantProvisioning, 1), deadline)},
			inv:     merge(),
			want:    []key{{Stuck, "slow", "", ""}}},
		{name: "provisioning within deadline plus margin is not stuck",
			records: []*events.TenantRecord{withDeadline(rec("fast", events.TenantProvisioning, 1), now.Add(-10*time.Second)), withDeadline(rec("fresh", events.TenantProvisioning, 1), soon)},
			inv:     merge(), ok: true},
		{name: "rolling back long after the provisioning deadline is not stuck while it moves",
			records: []*events.TenantRecord{withDeadline(rec("rb", events.TenantRollingBack, 1), deadline)},
			inv:     merge(), ok: true},
		{name: "deprovisioning without an update for too long is stuck",
			records: []*events.TenantRecord{idle(rec("dp", events.TenantDeprovisioning, 1), time.Hour), idle(rec("act", events.TenantActive, 1), time.Hour)},
			inv:     merge(complete("act", 1)),
			want:    []key{{Stuck, "dp", "", ""}}},
		{name: "marker of a newer generation than the registry",
			records: []*events.TenantRecord{rec("acme", events.TenantActive, 1)},
			inv:     merge(without(complete("acme", 1), events.StoreMinIO, events.KindBucket), item(events.StoreMinIO, events.KindBucket, "acme", true, 4)),
			want:    []key{{GenerationMismatch, "acme", events.StoreMinIO, events.KindBucket}}},
		{name: "marker of an older generation while a new one is provisioned is expected",
			records: []*events.TenantRecord{rec("acme", events.TenantProvisioning, 2)},
			inv:     merge(item(events.StoreMinIO, events.KindBucket, "acme", true, 1)), ok: true},
		{name: "marker of an older generation on an active tenant",
			records: []*events.TenantRecord{rec("acme", events.TenantActive, 2)},
			inv:     merge(without(complete("acme", 2), events.StoreRedis, events.KindMarker), item(events.StoreRedis, events.KindMarker, "acme", true, 1)),
			want:    []key{{GenerationMismatch, "acme", events.StoreRedis, events.KindMarker}}},
		{name: "one tenant only",
			records: []*events.TenantRecord{rec("acme", events.TenantActive, 1), rec("other", events.TenantActive, 1)},
			inv:     merge(complete("acme", 1), item(events.StoreRedis, events.KindACLUser, "ghost", true, 1)),
			tenant:  "acme", ok: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := Compare(Input{Records: tc.records, Inventories: tc.inv, Unanswered: tc.unanswered, Tenant: tc.tenant, Now: now})
			var got []key
			for _, f := range rep.Findings {
				got = append(got, key{f.Category, f.TenantID, f.Store, f.Kind})
			}
			sortKeys(got)
			want := append([]key(nil), tc.want...)
			sortKeys(want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("findings:\n got %v\nwant %v\n(%+v)", got, want, rep.Findings)
			}
			wantOK := tc.ok
			if rep.OK() != wantOK {
				t.Errorf("OK() = %v, want %v", rep.OK(), wantOK)
			}
			n := 0
			for _, c := range rep.Counts {
				n += c
			}
			if n != len(rep.Findings) {
				t.Errorf("counts add up to %d, findings %d", n, len(rep.Findings))
			}
		})
	}
}

func sortKeys(ks []key) {
	sort.Slice(ks, func(i, j int) bool {
		a, b := ks[i], ks[j]
		if a.Tenant != b.Tenant {
			return a.Tenant < b.Tenant
		}
		if a.Category != b.Category {
			return a.Category < b.Category
		}
		if a.Store != b.Store {
			return a.Store < b.Store
		}
		return a.Kind < b.Kind
	})
}
