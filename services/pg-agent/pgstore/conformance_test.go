package pgstore

import (
	"testing"

	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// TestConformance runs the agent.Store conformance suite against a real
// PostgreSQL. The subtests share one server: each uses its own random
// tenants and deprovisions them.
func TestConformance(t *testing.T) {
	ts := newTestServer(t, nil)
	h := ts.harness()
	storetest.Run(t, func(*testing.T) *storetest.Harness { return h })
}
