package saga

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// The lifecycle (DESIGN.md §10) over real JetStream with scripted agents,
// on one node and on the 3-node cluster: rotation with its scheduled
// retire (across a restart), a store whose rotation fails, suspend/resume
// with a failing store, retention purged after a restart, restore, and
// bad requests.

func (h *harness) provisionActive(id string) *events.TenantRecord {
	h.t.Helper()
	h.publish(events.SubjectTenantRequested, `{"tenant_id":"`+id+`"}`)
	return h.waitSettled(id, events.TenantActive, 60*time.Second)
}

func (h *harness) outcomeCount(subject, tenant string) int {
	n := 0
	for _, m := range h.streamMessages(events.StreamTenants, subject) {
		var ev events.TenantOutcomeEvent
		if json.Unmarshal(m.Data(), &ev) == nil && ev.TenantID == tenant {
			n++
		}
	}
	return n
}

// grace is a grace or retention long enough for the topology to settle a
// step before it runs out (the cluster is slower on a loaded machine).
func (h *harness) grace(single time.Duration) time.Duration {
	if h.cluster != nil {
		return 3 * single
	}
	return single
}

func TestRotateSealsNewCredentialsAndRetiresAfterGrace(t *testing.T) {
	eachTopology(t, func(t *testing.T, h *harness) {
		h.startSaga()
		h.provisionActive("acme")
		oldPG := h.agents.secrets["postgres/acme"]
		grace := h.grace(5 * time.Second)
		h.publish(events.SubjectTenantRotateRequested, `{"tenant_id":"acme","grace":"`+grace.String()+`","request_id":"rot-1","requested_by":"ops"}`)
		rotated := h.waitAudits(events.AuditCredentialsRotated, "acme", 1)[0]
		_, _, plain := h.sealed("acme")
		newPG := h.agents.secrets["postgres/acme"]
		if newPG == oldPG || !strings.Contains(plain, newPG) || strings.Contains(plain, oldPG) {
			t.Fatal("the sealed file does not hold postgres's new credential (only)")
		}
		if !strings.Contains(plain, "credential_versions:") || !strings.Contains(plain, "postgres: 2") {
			t.Fatalf("the sealed file does not record the credential versions:\n%s", redactedKeys(plain))
		}
		// The retire runs when the grace ends, never before.
		rec := h.waitFor("acme", 60*time.Second+grace, "retired", func(r *events.TenantRecord) bool {
			return r.State == events.TenantActive && r.Scheduled == nil && len(r.Outbox) == 0 && r.Lifecycle == nil
		})
		h.waitAudits(events.AuditCredentialsRetired, "acme", 1)
		for _, store := range events.Stores() {
			if v := rec.Stores[store].CredentialVersion; v != 2 {
				t.Errorf("%s credential version %d", store, v)
			}
			retire := h.agents.commands(store, events.ActionRetire)
			if len(retire) != 1 || retire[0].CredentialVersion != 2 {
				t.Fatalf("%s retire commands %+v", store, retire)
			}
			if retire[0].IssuedAt.Before(rotated.OccurredAt.Add(grace)) {
				t.Errorf("%s retired at %s, before the grace ended (%s + %s)", store, retire[0].IssuedAt, rotated.OccurredAt, grace)
			}
			rot := h.agents.commands(store, events.ActionRotate)
			if len(rot) != 1 || rot[0].CredentialVersion != 1 || rot[0].Version != 2 || rot[0].GraceSeconds != int64(grace/time.Second) {
				t.Errorf("%s rotate commands %+v", store, rot)
			}
		}
		if n := h.outcomeCount(events.TenantOutcomeSubject(events.TenantOutcomeRotated), "acme"); n != 1 {
			t.Errorf("tenant.rotated %d times", n)
		}
		if n := h.outcomeCount(events.TenantOutcomeSubject(events.TenantOutcomeRetired), "acme"); n != 1 {
			t.Errorf("tenant.retired %d times", n)
		}
		h.consistent("acme")
	})
}

// redactedKeys shows a decrypted file's keys without its values.
func redactedKeys(plain string) string {
	var out []string
	for _, l := range strings.Split(plain, "\n") {
		k, _, _ := strings.Cut(l, ":")
		out = append(out, k)
	}
	return strings.Join(out, "\n")
}

func TestRotateOneStoreFailingKeepsItsCredential(t *testing.T) {
	eachTopology(t, func(t *testing.T, h *harness) {
		h.startSaga()
		h.provisionActive("acme")
		oldPG := h.agents.secrets["postgres/acme"]
		oldRedis := h.agents.secrets["redis/acme"]
		h.agents.set(events.StorePostgres, func(cmd *events.StoreCommand) (events.Outcome, bool) {
			if cmd.Action == events.ActionRotate {
				return events.OutcomeRotateFailed, true
			}
			return "", true
		})
		h.publish(events.SubjectTenantRotateRequested, `{"tenant_id":"acme"}`)
		failed := h.waitAudits(events.AuditCredentialsRotationFailed, "acme", 1)
		if failed[0].Store != events.StorePostgres || !strings.Contains(string(failed[0].Details), "store_error") {
			t.Fatalf("CREDENTIALS_ROTATION_FAILED %+v %s", failed[0], failed[0].Details)
		}
		rec := h.waitSettled("acme", events.TenantActive, 60*time.Second)
		if v := rec.Stores[events.StorePostgres].CredentialVersion; v > 1 {
			t.Errorf("postgres credential version %d after its rotation failed", v)
		}
		if v := rec.Stores[events.StoreRedis].CredentialVersion; v != 2 {
			t.Errorf("redis credential version %d", v)
		}
		if rec.Scheduled == nil || slices.Contains(rec.Scheduled.Stores, events.StorePostgres) || len(rec.Scheduled.Stores) != 3 {
			t.Errorf("scheduled retire %+v", rec.Scheduled)
		}
		plain := h.consistent("acme")
		if !strings.Contains(plain, oldPG) {
			t.Error("the sealed file lost postgres's (old, working) credential")
		}
		if newRedis := h.agents.secrets["redis/acme"]; newRedis == oldRedis || !strings.Contains(plain, newRedis) {
			t.Error("the sealed file does not hold redis's new credential")
		}
		if n := h.auditCount(events.AuditCredentialsRotated, "acme"); n != 1 {
			t.Errorf("CREDENTIALS_ROTATED %d", n)
		}
		if n := len(h.agents.commands(events.StorePostgres, events.ActionDeprovision)); n != 0 {
			t.Errorf("a failed rotation deprovisioned postgres (%d commands)", n)
		}
	})
}

func TestScheduledRetireSurvivesRestart(t *testing.T) {
	eachTopology(t, func(t *testing.T, h *harness) {
		stop := h.startSaga()
		h.provisionActive("acme")
		grace := h.grace(6 * time.Second)
		h.publish(events.SubjectTenantRotateRequested, `{"tenant_id":"acme","grace":"`+grace.String()+`"}`)
		rec := h.waitFor("acme", 60*time.Second, "rotated", func(r *events.TenantRecord) bool {
			return r.State == events.TenantActive && r.Scheduled != nil && len(r.Outbox) == 0
		})
		stop()
		due := rec.Scheduled.DueAt
		time.Sleep(time.Until(due) + time.Second)
		if n := len(h.agents.commands(events.StoreRedis, events.ActionRetire)); n != 0 {
			t.Fatalf("retired with no orchestrator running (%d)", n)
		}
		if r := h.record("acme"); r == nil || r.Scheduled == nil {
			t.Fatal("the scheduled retire is gone from the record")
		}
		// Two replicas find it due: it is executed once.
		h.startSaga()
		h.startSaga()
		h.waitFor("acme", 60*time.Second, "retired after the restart", func(r *events.TenantRecord) bool {
			return r.State == events.TenantActive && r.Scheduled == nil && len(r.Outbox) == 0
		})
		h.waitAudits(events.AuditCredentialsRetired, "acme", 1)
		if n := h.outcomeCount(events.TenantOutcomeSubject(events.TenantOutcomeRetired), "acme"); n != 1 {
			t.Errorf("tenant.retired %d times", n)
		}
		for _, store := range events.Stores() {
			cmds := h.agents.commands(store, events.ActionRetire)
			if len(cmds) != 1 || cmds[0].IssuedAt.Before(due) {
				t.Errorf("%s retire commands %+v (due %s)", store, cmds, due)
			}
		}
	})
}

func TestSuspendRetriesAFailingStoreThenResume(t *testing.T) {
	eachTopology(t, func(t *testing.T, h *harness) {
		h.startSaga()
		h.provisionActive("acme")
		var mu sync.Mutex
		failures := 2
		h.agents.set(events.StoreRedis, func(cmd *events.StoreCommand) (events.Outcome, bool) {
			mu.Lock()
			defer mu.Unlock()
			if cmd.Action == events.ActionSuspend && failures > 0 {
				failures--
				return events.OutcomeSuspendFailed, true
			}
			return "", true
		})
		h.publish(events.SubjectTenantSuspendRequested, `{"tenant_id":"acme","request_id":"s1"}`)
		rec := h.waitSettled("acme", events.TenantSuspended, 60*time.Second)
		if n := len(h.agents.commands(events.StoreRedis, events.ActionSuspend)); n != 3 {
			t.Errorf("redis got %d suspend commands, want 3 (two failures retried)", n)
		}
		for _, store := range events.Stores() {
			if s := rec.Stores[store].Step; s == nil || s.Action != events.ActionSuspend || s.State != events.StepDone {
				t.Errorf("%s step %+v", store, s)
			}
		}
		if n := h.auditCount(events.AuditTenantSuspended, "acme"); n != 1 {
			t.Errorf("TENANT_SUSPENDED %d", n)
		}
		// Never rotated while suspended.
		h.publish(events.SubjectTenantRotateRequested, `{"tenant_id":"acme"}`)
		h.waitAudits(events.AuditTenantRequestRejected, "acme", 1)
		h.publish(events.SubjectTenantResumeRequested, `{"tenant_id":"acme"}`)
		h.waitSettled("acme", events.TenantActive, 60*time.Second)
		if n := h.auditCount(events.AuditTenantResumed, "acme"); n != 1 {
			t.Errorf("TENANT_RESUMED %d", n)
		}
		if n := h.outcomeCount(events.TenantOutcomeSubject(events.TenantOutcomeResumed), "acme"); n != 1 {
			t.Errorf("tenant.resumed %d", n)
		}
		if n := len(h.agents.commands(events.StoreMinIO, events.ActionRotate)); n != 0 {
			t.Errorf("rotated a suspended tenant")
		}
	})
}

func TestRetentionPurgedAfterRestart(t *testing.T) {
	eachTopology(t, func(t *testing.T, h *harness) {
		stop := h.startSaga()
		h.provisionActive("acme")
		retain := h.grace(6 * time.Second)
		h.publish(events.SubjectTenantDeprovisionRequested, `{"tenant_id":"acme","retain":"`+retain.String()+`"}`)
		rec := h.waitSettled("acme", events.TenantRetained, 60*time.Second)
		if rec.Scheduled == nil || rec.Scheduled.Kind != events.LifecyclePurge {
			t.Fatalf("no purge scheduled: %+v", rec.Scheduled)
		}
		for _, store := range events.Stores() {
			if n := len(h.agents.commands(store, events.ActionSuspend)); n != 1 {
				t.Errorf("%s suspend commands %d", store, n)
			}
		}
		if n := h.auditCount(events.AuditTenantRetained, "acme"); n != 1 {
			t.Errorf("TENANT_RETAINED %d", n)
		}
		stop()
		time.Sleep(time.Until(rec.Scheduled.DueAt) + time.Second)
		if n := len(h.agents.commands(events.StoreMinIO, events.ActionDeprovision)); n != 0 {
			t.Fatal("purged with no orchestrator running")
		}
		h.startSaga()
		h.waitSettled("acme", events.TenantDeprovisioned, 60*time.Second)
		if n := h.auditCount(events.AuditTenantPurged, "acme"); n != 1 {
			t.Errorf("TENANT_PURGED %d", n)
		}
		if n := h.auditCount(events.AuditTenantDeprovisioned, "acme"); n != 1 {
			t.Errorf("TENANT_DEPROVISIONED %d", n)
		}
		if d, _ := h.object("acme"); d != "" {
			t.Error("the sealed file outlived the purge")
		}
		// A restore after the purge is rejected.
		h.publish(events.SubjectTenantRestoreRequested, `{"tenant_id":"acme"}`)
		h.waitAudits(events.AuditTenantRequestRejected, "acme", 1)
	})
}

func TestRestoreWithinRetention(t *testing.T) {
	eachTopology(t, func(t *testing.T, h *harness) {
		h.startSaga()
		h.provisionActive("acme")
		oldRedis := h.agents.secrets["redis/acme"]
		h.publish(events.SubjectTenantDeprovisionRequested, `{"tenant_id":"acme","retain":"168h"}`)
		h.waitSettled("acme", events.TenantRetained, 60*time.Second)
		h.publish(events.SubjectTenantRestoreRequested, `{"tenant_id":"acme","request_id":"back"}`)
		rec := h.waitSettled("acme", events.TenantActive, 90*time.Second)
		if rec.Scheduled != nil {
			t.Errorf("still scheduled: %+v", rec.Scheduled)
		}
		if n := h.auditCount(events.AuditTenantRestored, "acme"); n != 1 {
			t.Errorf("TENANT_RESTORED %d", n)
		}
		plain := h.consistent("acme")
		if newRedis := h.agents.secrets["redis/acme"]; newRedis == oldRedis || !strings.Contains(plain, newRedis) || strings.Contains(plain, oldRedis) {
			t.Error("the restored tenant's sealed file does not hold fresh credentials")
		}
		h.agents.mu.Lock()
		cmds := slices.Clone(h.agents.cmds)
		h.agents.mu.Unlock()
		for _, store := range events.Stores() {
			var order []events.Action
			for _, c := range cmds {
				if c.Store == store && c.Action != events.ActionProvision {
					order = append(order, c.Action)
					if c.Action == events.ActionRotate && c.GraceSeconds != 0 {
						t.Errorf("%s restore rotated with grace %d", store, c.GraceSeconds)
					}
					if c.Action == events.ActionRetire && c.CredentialVersion != 2 {
						t.Errorf("%s retire keeps %d", store, c.CredentialVersion)
					}
				}
			}
			want := []events.Action{events.ActionSuspend, events.ActionResume, events.ActionRotate, events.ActionRetire}
			if !slices.Equal(order, want) {
				t.Errorf("%s commands %v, want %v", store, order, want)
			}
		}
	})
}

// Malformed requests, requests the state does not allow and values out of
// bounds: tenant.rejected and TENANT_REQUEST_REJECTED each, record
// untouched.
func TestLifecycleBadRequestsRejected(t *testing.T) {
	h := newHarness(t)
	h.startSaga()
	before := h.provisionActive("acme")
	bad := []struct{ subject, payload string }{
		{events.SubjectTenantRotateRequested, `not json`},
		{events.SubjectTenantRotateRequested, `{"tenant_id":"acme","grace":"1000h"}`},
		{events.SubjectTenantRotateRequested, `{"tenant_id":"acme","grace":"soon"}`},
		{events.SubjectTenantRotateRequested, `{"tenant_id":"acme","stores":["mysql"]}`},
		{events.SubjectTenantSuspendRequested, `{"tenant_id":"nobody"}`},
		{events.SubjectTenantResumeRequested, `{"tenant_id":"Bad_ID"}`},
		{events.SubjectTenantRestoreRequested, `{"tenant_id":"acme"}`},
		{events.SubjectTenantDeprovisionRequested, `{"tenant_id":"acme","retain":"10000h"}`},
		{events.SubjectTenantDeprovisionRequested, `{"tenant_id":"acme","retain":"-1h"}`},
		{events.SubjectTenantDeprovisionRequested, `{"tenant_id":"acme","retain":"0s"}`},
	}
	for _, b := range bad {
		h.publish(b.subject, b.payload)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		rej := h.streamMessages(events.StreamTenants, events.SubjectTenantRejected)
		aud := h.streamMessages(events.StreamAudit, events.AuditSubject(events.AuditTenantRequestRejected))
		if len(rej) == len(bad) && len(aud) == len(bad) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rejections: %d tenant.rejected, %d audit events, want %d each", len(rej), len(aud), len(bad))
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, m := range h.streamMessages(events.StreamTenants, events.SubjectTenantRejected) {
		var ev events.TenantOutcomeEvent
		if json.Unmarshal(m.Data(), &ev) != nil || ev.Reason == "" {
			t.Errorf("rejection without a reason: %s", m.Data())
		}
	}
	// Nothing a request could have started: no operation, no schedule, no
	// effect emitted, no request sequence recorded.
	after := h.record("acme")
	if after.State != events.TenantActive || after.EffectSeq != before.EffectSeq || after.Lifecycle != nil || after.Scheduled != nil ||
		after.LifecycleSeq != 0 || after.DeprovisionSeq != 0 {
		b, _ := json.MarshalIndent(after, "", "  ")
		t.Fatalf("a rejected request changed the record (effect seq %d → %d):\n%s", before.EffectSeq, after.EffectSeq, b)
	}
	if h.record("nobody") != nil {
		t.Error("a record exists for an unknown tenant")
	}
	h.agents.mu.Lock()
	n := len(h.agents.cmds)
	h.agents.mu.Unlock()
	if n != 4 {
		t.Errorf("%d store commands, want only the 4 provisions", n)
	}
}

// A request repeated with the same request_id is served once, even after
// the tenant moved on (a suspend s1 repeated after the resume does not
// suspend again); a suspend of a suspending tenant changes nothing.
func TestLifecycleRequestsIdempotent(t *testing.T) {
	h := newHarness(t)
	h.startSaga()
	h.provisionActive("acme")
	h.publish(events.SubjectTenantSuspendRequested, `{"tenant_id":"acme","request_id":"s1"}`)
	// s1 must be the request that starts the suspension: the requests
	// consumer runs several workers, and had s2 gone first, s1 (published
	// earlier, a lower stream sequence) would be dropped as an earlier
	// request without its request_id being remembered.
	h.waitFor("acme", 60*time.Second, "s1 started the suspension", func(r *events.TenantRecord) bool {
		return slices.Contains(r.LifecycleRequestIDs, "s1")
	})
	h.publish(events.SubjectTenantSuspendRequested, `{"tenant_id":"acme","request_id":"s2"}`)
	h.waitSettled("acme", events.TenantSuspended, 60*time.Second)
	h.publish(events.SubjectTenantResumeRequested, `{"tenant_id":"acme","request_id":"r1"}`)
	h.waitSettled("acme", events.TenantActive, 60*time.Second)
	h.publish(events.SubjectTenantSuspendRequested, `{"tenant_id":"acme","request_id":"s1"}`)
	h.drained()
	if r := h.record("acme"); r.State != events.TenantActive {
		t.Fatalf("a repeated request_id changed the tenant: %s", r.State)
	}
	for _, store := range events.Stores() {
		if s, r := len(h.agents.commands(store, events.ActionSuspend)), len(h.agents.commands(store, events.ActionResume)); s != 1 || r != 1 {
			t.Errorf("%s: %d suspend, %d resume commands; want 1 each", store, s, r)
		}
	}
	if n := h.auditCount(events.AuditTenantSuspended, "acme"); n != 1 {
		t.Errorf("TENANT_SUSPENDED %d", n)
	}
}

// drained waits until the orchestrator handled every request published.
func (h *harness) drained() {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		cons, err := h.js.Consumer(h.ctx, events.StreamTenants, events.ConsumerOrchestratorRequests)
		if err == nil {
			if info, err := cons.Info(h.ctx); err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.t.Fatal("requests not drained within 30s")
}

// A deprovision without retain of a retained tenant purges it now; a
// restore after that is rejected.
func TestDeprovisionOfRetainedPurgesNow(t *testing.T) {
	h := newHarness(t)
	h.startSaga()
	h.provisionActive("acme")
	h.publish(events.SubjectTenantDeprovisionRequested, `{"tenant_id":"acme","retain":"168h"}`)
	h.waitSettled("acme", events.TenantRetained, 60*time.Second)
	h.publish(events.SubjectTenantDeprovisionRequested, `{"tenant_id":"acme"}`)
	rec := h.waitSettled("acme", events.TenantDeprovisioned, 60*time.Second)
	if rec.Scheduled != nil || rec.Lifecycle != nil {
		t.Errorf("left scheduled %+v, lifecycle %+v", rec.Scheduled, rec.Lifecycle)
	}
	if n := h.auditCount(events.AuditTenantPurged, "acme"); n != 1 {
		t.Errorf("TENANT_PURGED %d", n)
	}
	for _, store := range events.Stores() {
		if n := len(h.agents.commands(store, events.ActionDeprovision)); n != 1 {
			t.Errorf("%s deprovision commands %d", store, n)
		}
	}
	h.publish(events.SubjectTenantRestoreRequested, `{"tenant_id":"acme"}`)
	h.waitAudits(events.AuditTenantRequestRejected, "acme", 1)
}
