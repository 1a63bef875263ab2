package saga

import (
	"slices"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// A store whose agent never answers its rotate (it may have made the new
// credential, then died) is given up at the deadline and keeps its old
// credential; its half-made credential is retired with the others (a
// retire keeping its current version), at once with grace 0, at the end of
// the grace otherwise. The restore e2e test found the credential left
// behind, logging in with a secret nobody holds.
func TestRotateGivenUpStoreIsRetired(t *testing.T) {
	eachTopology(t, func(t *testing.T, h *harness) {
		h.startSaga()
		h.provisionActive("acme")
		h.agents.set(events.StoreRedis, func(cmd *events.StoreCommand) (events.Outcome, bool) {
			if cmd.Action == events.ActionRotate {
				return "", false // made the credential, then died
			}
			return "", true
		})
		h.publish(events.SubjectTenantRotateRequested, `{"tenant_id":"acme","grace":"0s"}`)
		h.waitAudits(events.AuditCredentialsRetired, "acme", 1)
		rec := h.waitSettled("acme", events.TenantActive, 60*time.Second)
		if v := rec.Stores[events.StoreRedis].CredentialVersion; v > 1 {
			t.Errorf("redis credential version %d after its rotate was given up", v)
		}
		retire := h.agents.commands(events.StoreRedis, events.ActionRetire)
		if len(retire) != 1 || retire[0].CredentialVersion != 1 {
			t.Fatalf("redis retire commands %+v, want one keeping version 1", retire)
		}
		if n := h.auditCount(events.AuditCredentialsRotationFailed, "acme"); n != 1 {
			t.Errorf("CREDENTIALS_ROTATION_FAILED %d", n)
		}

		// With a grace: the scheduled retire names it.
		h.publish(events.SubjectTenantRotateRequested, `{"tenant_id":"acme","grace":"1h"}`)
		rec = h.waitFor("acme", 60*time.Second, "rotated with a scheduled retire", func(r *events.TenantRecord) bool {
			return r.State == events.TenantActive && r.Lifecycle == nil && r.Scheduled != nil && len(r.Outbox) == 0
		})
		if !slices.Contains(rec.Scheduled.Stores, events.StoreRedis) || len(rec.Scheduled.Stores) != 4 {
			t.Errorf("scheduled retire %+v, want every store (redis given up)", rec.Scheduled)
		}
	})
}
