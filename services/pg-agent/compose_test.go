package main

import (
	"testing"

	"github.com/tenantprov/tenantprov/testkit/composetest"
)

// The compose deployment gives this service exactly what its binary reads.
func TestComposeMatchesConfig(t *testing.T) {
	f := composetest.Load(t, composetest.Path(t))
	composetest.CheckService(t, f, name, "services/"+name, Config{}, "NATS_URL", "CONTROL_PLANE_RECIPIENT", "PG_ADMIN_URL", "PG_SSLMODE")
}
