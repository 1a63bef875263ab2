package saga

import (
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/inventory"
)

// TestGroupOrphans: the comparison's findings become one orphan per store,
// tenant and marker generation (foreign ones per store and tenant); other
// categories are not orphans.
func TestGroupOrphans(t *testing.T) {
	got := groupOrphans([]inventory.Finding{
		{Category: inventory.Leaked, TenantID: "ghost", Store: events.StoreRedis, Kind: events.KindACLUser, Name: "tenant_ghost", StoreGeneration: 7},
		{Category: inventory.Leaked, TenantID: "ghost", Store: events.StoreRedis, Kind: events.KindMarker, Name: "m", StoreGeneration: 7},
		{Category: inventory.Leaked, TenantID: "ghost", Store: events.StoreRedis, Kind: events.KindMarker, Name: "m6", StoreGeneration: 6},
		{Category: inventory.GenerationMismatch, TenantID: "live", Store: events.StorePostgres, Kind: events.KindDatabase, Name: "tenant_live", StoreGeneration: 3},
		{Category: inventory.Foreign, TenantID: "look", Store: events.StoreMinIO, Kind: events.KindBucket, Name: "tenant-look"},
		{Category: inventory.Missing, TenantID: "live", Store: events.StoreMinIO, Kind: events.KindBucket},
		{Category: inventory.Stuck, TenantID: "slow"},
	})
	want := map[string]int{"redis.ghost.g7": 2, "redis.ghost.g6": 1, "postgres.live.g3": 1, "minio.look.foreign": 1}
	if len(got) != len(want) {
		t.Fatalf("%d orphans: %v", len(got), got)
	}
	for k, n := range want {
		g := got[k]
		if g == nil || len(g.value.Items) != n {
			t.Fatalf("%s: %+v", k, g)
		}
	}
	if !got["minio.look.foreign"].value.Foreign || got["redis.ghost.g7"].value.Foreign || got["redis.ghost.g7"].value.Generation != 7 {
		t.Fatal("foreign flag or generation wrong")
	}
}

// TestUnsteadyTenants: a tenant whose record moved between the two reads,
// appeared, disappeared, or has a saga in flight is not judged.
func TestUnsteadyTenants(t *testing.T) {
	t1, t2 := time.Unix(100, 0), time.Unix(200, 0)
	rec := func(id string, st events.TenantState, at time.Time) *events.TenantRecord {
		return &events.TenantRecord{TenantID: id, State: st, UpdatedAt: at}
	}
	before := []*events.TenantRecord{rec("still", events.TenantFailed, t1), rec("moved", events.TenantFailed, t1), rec("gone", events.TenantFailed, t1),
		rec("busy", events.TenantDeprovisioning, t1)}
	after := []*events.TenantRecord{rec("still", events.TenantFailed, t1), rec("moved", events.TenantProvisioning, t2), rec("new", events.TenantActive, t2),
		rec("busy", events.TenantDeprovisioning, t1)}
	got := unsteadyTenants(before, after)
	for _, id := range []string{"moved", "gone", "new", "busy"} {
		if !got[id] {
			t.Errorf("%s judged", id)
		}
	}
	if got["still"] {
		t.Error("a record that held still was not judged")
	}
}
