package qdrantstore

import (
	"testing"

	"github.com/tenantprov/tenantprov/testkit"
	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// TestInventory lists two provisioned tenants' collections, markers and
// token records as ours with their generations, a foreign look-alike
// collection as not ours, and no longer lists a deprovisioned tenant.
func TestInventory(t *testing.T) {
	q := testkit.StartQdrant(t)
	storetest.RunInventory(t, newEnv(t, q, nil).harness())
}
