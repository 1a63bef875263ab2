package miniostore

import (
	"testing"

	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// TestInventory lists two provisioned tenants' buckets, users, policies and
// system records as ours with their generations, a foreign look-alike as
// not ours, and no longer lists a deprovisioned tenant.
func TestInventory(t *testing.T) {
	storetest.RunInventory(t, newEnv(t).harness())
}
