package e2e

import (
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// TestHappyPathOnTheAuthenticatedBus provisions and deprovisions a tenant
// with every component on its own least-privilege NATS identity (DESIGN.md
// §11): the request from a requester, the saga as the orchestrator, each
// store as its own agent.
func TestHappyPathOnTheAuthenticatedBus(t *testing.T) {
	s := startAuthenticatedSystem(t, 60*time.Second)
	s.startOrchestrator()
	s.request(events.SubjectTenantRequested, `{"tenant_id":"acme","request_id":"e2e-auth-1","requested_by":"e2e"}`)
	rec := s.waitState("acme", events.TenantActive, 120*time.Second)
	for _, st := range events.Stores() {
		if !rec.Stores[st].Verified {
			t.Errorf("%s not verified", st)
		}
	}
	_, file := s.secretsFile("acme")
	s.useCredentials(file)
	s.request(events.SubjectTenantDeprovisionRequested, `{"tenant_id":"acme","request_id":"e2e-auth-2","requested_by":"e2e"}`)
	s.waitState("acme", events.TenantDeprovisioned, 120*time.Second)
	if left := s.leftovers("acme"); len(left) > 0 {
		t.Errorf("left after deprovision: %v", left)
	}
}
