package pgstore

import (
	"testing"

	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// TestInventory lists two provisioned tenants as ours with their
// generations, a foreign look-alike role and database as not ours, and no
// longer lists a deprovisioned tenant.
func TestInventory(t *testing.T) {
	ts := newTestServer(t, nil)
	storetest.RunInventory(t, ts.harness())
}
