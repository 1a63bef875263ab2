package storetest

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// RunInventory checks a store's agent.Inventorier against its real server:
// two tenants provisioned (generations 1 and 2) are listed with every item
// ours and of their generation; a foreign look-alike (h.CreateForeign) is
// listed and not ours; a deprovisioned tenant is no longer listed; every
// item names its tenant and holds no credential. The harness's Store must
// implement agent.Inventorier, and CreateForeign must be set.
func RunInventory(t *testing.T, h *Harness) {
	t.Helper()
	inv, ok := h.Store.(agent.Inventorier)
	if !ok {
		t.Fatalf("storetest: %T does not implement agent.Inventorier", h.Store)
	}
	if h.CreateForeign == nil {
		t.Fatal("storetest: RunInventory needs Harness.CreateForeign")
	}
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	a, b, c, d := events.MustTenantID("inv-alpha"), events.MustTenantID("inv-beta"), events.MustTenantID("inv-gamma"), events.MustTenantID("inv-delta")
	var passwords []secret.String
	for _, p := range []struct {
		id  events.TenantID
		gen uint64
	}{{a, 1}, {b, 2}, {d, 1}} {
		pw, err := secret.Generate()
		if err != nil {
			t.Fatal(err)
		}
		passwords = append(passwords, pw)
		if _, err := h.Store.Provision(ctx, agent.ProvisionRequest{Tenant: p.id, Generation: p.gen, SagaID: "inventory-" + p.id.String(), Password: pw}); err != nil {
			t.Fatalf("Provision %s: %v", p.id, err)
		}
	}
	if err := h.CreateForeign(ctx, c); err != nil {
		t.Fatalf("CreateForeign %s: %v", c, err)
	}
	if _, err := h.Store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: d, Generation: 1, SagaID: "inventory-" + d.String()}); err != nil {
		t.Fatalf("Deprovision %s: %v", d, err)
	}

	resp, err := inv.Inventory(ctx, agent.InventoryRequest{})
	if err != nil {
		t.Fatalf("Inventory: %v", err)
	}
	by := map[string][]events.InventoryItem{}
	for _, it := range resp.Items {
		t.Logf("item %+v", it)
		if it.TenantID == "" || it.Name == "" || it.Kind == "" {
			t.Errorf("item without tenant, name or kind: %+v", it)
		}
		for _, pw := range passwords {
			if strings.Contains(fmt.Sprintf("%+v", it), pw.Reveal()) {
				t.Errorf("item %s %s holds a tenant's password", it.Kind, it.Name)
			}
		}
		by[it.TenantID] = append(by[it.TenantID], it)
	}
	for _, want := range []struct {
		id  events.TenantID
		gen uint64
	}{{a, 1}, {b, 2}} {
		items := by[want.id.String()]
		if len(items) == 0 {
			t.Errorf("tenant %s (provisioned) is not in the inventory", want.id)
		}
		for _, it := range items {
			if !it.Ours {
				t.Errorf("tenant %s: %s %s is not listed as ours", want.id, it.Kind, it.Name)
			}
			if it.Generation != want.gen {
				t.Errorf("tenant %s: %s %s has generation %d, want %d", want.id, it.Kind, it.Name, it.Generation, want.gen)
			}
		}
	}
	foreign := by[c.String()]
	if len(foreign) == 0 {
		t.Errorf("the foreign look-alike %s is not in the inventory", c)
	}
	for _, it := range foreign {
		if it.Ours {
			t.Errorf("foreign look-alike %s: %s %s is listed as ours", c, it.Kind, it.Name)
		}
	}
	if items := by[d.String()]; len(items) > 0 {
		t.Errorf("deprovisioned tenant %s is still in the inventory: %+v", d, items)
	}
}
