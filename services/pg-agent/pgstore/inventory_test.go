package pgstore

import (
	"testing"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// TestInventory lists two provisioned tenants as ours with their
// generations, a foreign look-alike role and database as not ours, and no
// longer lists a deprovisioned tenant.
func TestInventory(t *testing.T) {
	ts := newTestServer(t, nil)
	storetest.RunInventory(t, ts.harness())
}

// TestInventoryVersionRoles: a rotation's login role tenant_<id>__v2 is
// listed as ours (the credentials record names it by OID); a look-alike
// version role made by hand is listed and not ours.
func TestInventoryVersionRoles(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := testCtx(t)
	id := events.MustTenantID("inv-rot")
	ts.provision(t, ctx, id, 4)
	pw, err := secret.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.store.Rotate(ctx, agent.RotateRequest{Tenant: id, Generation: 4, CurrentVersion: 1, Version: 2, Password: pw}); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if _, err := ts.admin.Exec(ctx, `CREATE ROLE "tenant_inv-fake__v2"`); err != nil {
		t.Fatal(err)
	}
	resp, err := ts.store.Inventory(ctx, agent.InventoryRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]events.InventoryItem{}
	for _, it := range resp.Items {
		got[it.Name] = it
	}
	if it := got["tenant_inv-rot__v2"]; !it.Ours || it.TenantID != "inv-rot" || it.Generation != 4 {
		t.Errorf("version role of a rotation = %+v, want ours, tenant inv-rot, generation 4", it)
	}
	if it, ok := got["tenant_inv-fake__v2"]; !ok || it.Ours || it.TenantID != "inv-fake" {
		t.Errorf("hand-made look-alike version role = %+v (listed %v), want listed, not ours, tenant inv-fake", it, ok)
	}
}
