package redisstore

import (
	"testing"

	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// TestInventory lists two provisioned tenants' ACL users, records and keys
// as ours with their generations, a foreign look-alike user as not ours,
// and no longer lists a deprovisioned tenant.
func TestInventory(t *testing.T) {
	storetest.RunInventory(t, newEnv(t).harness())
}
