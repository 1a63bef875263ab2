package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/inventory"
	"github.com/tenantprov/tenantprov/testkit"
)

type items []events.InventoryItem

func (i items) Inventory(context.Context, agent.InventoryRequest) (agent.InventoryResponse, error) {
	return agent.InventoryResponse{Items: i}, nil
}

// completeSlice is what each store holds for a complete tenant.
func completeSlice(st events.Store, id string, gen uint64) items {
	var out items
	for _, k := range inventory.Expected[st] {
		out = append(out, events.InventoryItem{Kind: k, Name: string(k) + "-" + id, TenantID: id, Ours: true, Generation: gen})
	}
	return out
}

// TestDoctorReportsDriftExpiryAndOrphans runs doctor against a real NATS
// with inventories served as the agents serve them and records written as
// the saga writes them: a healthy tenant is exit 0; open drift, a Qdrant
// token near expiry and a failed observation in the records are findings
// (exit 1, in the JSON report); repaired drift is not; the orphan sweep's
// bucket is listed; --observe needs a tenant.
func TestDoctorReportsDriftExpiryAndOrphans(t *testing.T) {
	n := testkit.StartNATS(t)
	nc := n.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := (events.Topology{}).Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	for _, st := range events.Stores() {
		stop, err := agent.ServeInventory(ctx, nc, st, append(completeSlice(st, "good", 1), completeSlice(st, "bad", 1)...), zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(stop)
	}
	kv, _ := js.KeyValue(ctx, events.KVTenants)
	now := time.Now().UTC()
	fixed := events.Drift{Kind: "marker_missing", Resource: "tenant_good"}
	put := func(id string, obs map[events.Store]*events.Observation) {
		rec := &events.TenantRecord{TenantID: id, State: events.TenantActive, Generation: 1, SagaID: id + "-s", CreatedAt: now, UpdatedAt: now, Stores: map[events.Store]*events.StoreStatus{}}
		for _, st := range events.Stores() {
			rec.Stores[st] = &events.StoreStatus{State: events.StoreProvisioned, Verified: true, Observation: obs[st]}
		}
		data, err := events.Encode(rec)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, id, data); err != nil {
			t.Fatal(err)
		}
	}
	put("good", map[events.Store]*events.Observation{events.StorePostgres: {At: now, Generation: 1, Drift: []events.Drift{fixed}, Repaired: []events.Drift{fixed}}})
	put("bad", map[events.Store]*events.Observation{
		events.StorePostgres: {At: now, Generation: 1, Drift: []events.Drift{{Kind: "grant_added", Resource: "tenant_bad", Detail: "CONNECT granted to intruder"}}},
		events.StoreQdrant:   {At: now, Generation: 1, Drift: []events.Drift{{Kind: "credential_expiring", Resource: "tenant_bad", Detail: "expires in 3 days"}}},
		events.StoreRedis:    {At: now, Generation: 1, Error: "store_error: connection refused"},
	})
	okv, _ := js.KeyValue(ctx, events.KVOrphans)
	orphan, _ := json.Marshal(events.Orphan{Store: events.StoreRedis, TenantID: "ghost", Generation: 7, Items: []string{"acl_user/tenant_ghost"}, FirstSeen: now, LastSeen: now, Reported: true})
	if _, err := okv.Put(ctx, events.OrphanKey(events.StoreRedis, "ghost", 7, false), orphan); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := tenantctl(t, "doctor", "good", "--output", "json", "--nats-url", n.URL, "--store-timeout", "10s")
	var r doctorReport
	if err := json.Unmarshal([]byte(out), &r); err != nil || code != exitOK || !r.OK || len(r.Findings) != 0 {
		t.Fatalf("doctor good: exit %d, %v\n%s%s", code, err, out, errOut)
	}

	code, out, errOut = tenantctl(t, "doctor", "--output", "json", "--nats-url", n.URL, "--store-timeout", "10s")
	r = doctorReport{}
	if err := json.Unmarshal([]byte(out), &r); err != nil || code != exitFailed || r.OK {
		t.Fatalf("doctor: exit %d (want %d), ok %v, %v\n%s%s", code, exitFailed, r.OK, err, out, errOut)
	}
	want := map[inventory.Category]events.Store{inventory.Drift: events.StorePostgres, inventory.Expiring: events.StoreQdrant, inventory.ObserveFailed: events.StoreRedis}
	for c, st := range want {
		found := false
		for _, f := range r.Findings {
			if f.Category == c && f.Store == st && f.TenantID == "bad" {
				found = true
			}
		}
		if !found || r.Counts[c] != 1 {
			t.Errorf("no %s finding for bad in %s (counts %v)\n%s", c, st, r.Counts, out)
		}
	}
	if len(r.Findings) != 3 {
		t.Errorf("%d findings, want 3:\n%s", len(r.Findings), out)
	}
	if len(r.Orphans) != 1 || r.Orphans[0].TenantID != "ghost" || r.Orphans[0].Generation != 7 {
		t.Errorf("orphans %+v", r.Orphans)
	}

	code, out, _ = tenantctl(t, "doctor", "--nats-url", n.URL, "--store-timeout", "10s")
	if code != exitFailed || !strings.Contains(out, "drift") || !strings.Contains(out, "orphan sweep: redis ghost g7") || !strings.Contains(out, "PROBLEMS") {
		t.Errorf("doctor (text): exit %d\n%s", code, out)
	}

	if code, _, errOut := tenantctl(t, "doctor", "--observe", "--nats-url", n.URL); code != exitUsage || !strings.Contains(errOut, "--observe needs a tenant ID") {
		t.Errorf("doctor --observe without a tenant: exit %d %s", code, errOut)
	}
}
