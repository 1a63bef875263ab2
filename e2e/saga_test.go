package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/testkit"
)

// The acceptance tests of the orchestrator issue, against the real agents
// and stores.

func TestHappyPath(t *testing.T) {
	s := startSystem(t, 60*time.Second)
	s.startOrchestrator()
	start := time.Now()
	s.request(events.SubjectTenantRequested, `{"tenant_id":"acme","request_id":"e2e-1","requested_by":"e2e"}`)
	rec := s.waitState("acme", events.TenantActive, 90*time.Second)
	e2e := time.Since(start)
	slowest := int64(0)
	for _, st := range events.Stores() {
		ss := rec.Stores[st]
		if !ss.Verified {
			t.Errorf("%s not verified", st)
		}
		slowest = max(slowest, ss.DurationMS)
	}
	t.Logf("request -> active: %s; slowest single store's provision+verify: %dms (ratio %.2f)", e2e.Round(time.Millisecond), slowest, float64(e2e.Milliseconds())/float64(max(slowest, 1)))
	if mode := rec.Stores[events.StoreQdrant].IsolationMode; mode != "jwt_rbac" {
		t.Errorf("qdrant isolation mode %q, want jwt_rbac", mode)
	}

	raw, file := s.secretsFile("acme")
	if got := file["_"]["tenant_id"]; got != "acme" {
		t.Fatalf("secrets file tenant_id = %v", got)
	}
	secrets := secretValues(file)
	if len(secrets) != 5 {
		t.Fatalf("secrets file has %d credential values, want 5", len(secrets))
	}
	for _, sec := range secrets {
		if strings.Contains(string(raw), sec) {
			t.Fatal("the sealed file holds a credential in plain text")
		}
	}
	s.useCredentials(file)

	// The standard sops CLI decrypts it with the operator key.
	sops := testkit.RequireBinary(t, "sops", "make tools")
	path := filepath.Join(t.TempDir(), "acme.sops.yaml")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sops, "-d", path)
	cmd.Env = append(os.Environ(), "SOPS_AGE_KEY_FILE="+s.opFile)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sops -d: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), file["postgres"]["password"].(string)) || !strings.Contains(string(out), "bucket: tenant-acme") {
		t.Fatal("sops -d output lacks the credentials")
	}
	if n := s.auditCount(events.AuditTenantProvisioned, "acme"); n != 1 {
		t.Fatalf("TENANT_PROVISIONED events: %d, want 1", n)
	}
	s.assertNoPlaintext(secrets)

	// Deprovision: every store clean, the sealed file gone, old credentials
	// refused.
	s.request(events.SubjectTenantDeprovisionRequested, `{"tenant_id":"acme"}`)
	s.waitState("acme", events.TenantDeprovisioned, 60*time.Second)
	if left := s.leftovers("acme"); len(left) > 0 {
		t.Fatalf("after deprovisioning: %v", left)
	}
	obj, _ := s.js.ObjectStore(s.ctx, events.ObjectStoreSecrets)
	if _, err := obj.GetInfo(s.ctx, "acme.sops.yaml"); err == nil {
		t.Fatal("sealed secrets kept after deprovisioning")
	}
	s.assertNoPlaintext(secrets)
}

// Each store's server stopped in turn: the tenant is rolled back, and every
// other store's resources are gone; once the server is back, compensation
// completes and nothing is left anywhere.
func TestEachStoreFailingRollsBack(t *testing.T) {
	s := startSystem(t, 8*time.Second)
	s.startOrchestrator()
	type server interface {
		Stop(testing.TB)
		Start(testing.TB)
	}
	servers := map[events.Store]server{events.StorePostgres: s.pg, events.StoreRedis: s.redis, events.StoreMinIO: s.minio, events.StoreQdrant: s.qdrant}
	for _, down := range events.Stores() {
		t.Run(string(down), func(t *testing.T) {
			id := events.MustTenantID("fail-" + string(down))
			servers[down].Stop(t)
			s.request(events.SubjectTenantRequested, fmt.Sprintf(`{"tenant_id":%q}`, id))
			rec := s.waitFor(string(id), 60*time.Second, "rolling back with the other stores clean", func(r *events.TenantRecord) bool {
				if r.State != events.TenantRollingBack {
					return false
				}
				for _, st := range events.Stores() {
					if st != down && r.Stores[st].State != events.StoreDeprovisioned {
						return false
					}
				}
				return true
			})
			if !strings.Contains(rec.Reason, string(down)) {
				t.Errorf("reason %q does not name %s", rec.Reason, down)
			}
			servers[down].Start(t)
			s.waitState(string(id), events.TenantFailed, 90*time.Second)
			s.waitClean(id, 60*time.Second)
			if n := s.auditCount(events.AuditTenantRolledBack, string(id)); n != 1 {
				t.Fatalf("TENANT_ROLLED_BACK: %d", n)
			}
		})
	}
}

// An agent dies mid-saga: the deadline rolls the tenant back; when the
// agent returns it answers its stale command without touching the store
// (expired) and completes the compensation. Nothing leaks.
func TestAgentKilledMidSaga(t *testing.T) {
	s := startSystem(t, 6*time.Second)
	s.startOrchestrator()
	if err := s.agent(events.StoreRedis).Stop(); err != nil {
		t.Fatal(err)
	}
	s.request(events.SubjectTenantRequested, `{"tenant_id":"orphan"}`)
	rec := s.waitFor("orphan", 30*time.Second, "rolled back after the deadline", func(r *events.TenantRecord) bool { return r.State == events.TenantRollingBack })
	if !strings.Contains(rec.Reason, "deadline") || !strings.Contains(rec.Reason, "redis") {
		t.Errorf("reason %q should name the deadline and redis", rec.Reason)
	}
	s.startAgent(events.StoreRedis)
	s.waitState("orphan", events.TenantFailed, 60*time.Second)
	s.waitClean("orphan", 60*time.Second)
}

// The only orchestrator dies mid-saga and a new one completes it.
func TestOrchestratorKilledMidSaga(t *testing.T) {
	s := startSystem(t, 60*time.Second)
	stop := s.startOrchestrator()
	s.request(events.SubjectTenantRequested, `{"tenant_id":"phoenix"}`)
	s.waitFor("phoenix", 30*time.Second, "some store provisioned", func(r *events.TenantRecord) bool {
		for _, st := range r.Stores {
			if st.State == events.StoreProvisioned {
				return true
			}
		}
		return false
	})
	stop()
	s.startOrchestrator()
	s.waitState("phoenix", events.TenantActive, 90*time.Second)
	if n := s.auditCount(events.AuditTenantProvisioned, "phoenix"); n != 1 {
		t.Fatalf("TENANT_PROVISIONED: %d", n)
	}
	_, file := s.secretsFile("phoenix")
	s.useCredentials(file)
}

// The same request twice, and again with another request ID: one
// provisioning, one TENANT_PROVISIONED.
func TestDuplicateRequests(t *testing.T) {
	s := startSystem(t, 60*time.Second)
	s.startOrchestrator()
	s.request(events.SubjectTenantRequested, `{"tenant_id":"twice","request_id":"a"}`)
	s.request(events.SubjectTenantRequested, `{"tenant_id":"twice","request_id":"a"}`)
	s.request(events.SubjectTenantRequested, `{"tenant_id":"twice","request_id":"b"}`)
	rec := s.waitState("twice", events.TenantActive, 90*time.Second)
	s.request(events.SubjectTenantRequested, `{"tenant_id":"twice","request_id":"c"}`)
	time.Sleep(time.Second)
	if rec.Generation != 1 || s.record("twice").Generation != 1 {
		t.Fatalf("generation %d, want 1", s.record("twice").Generation)
	}
	if n := s.auditCount(events.AuditTenantProvisioned, "twice"); n != 1 {
		t.Fatalf("TENANT_PROVISIONED: %d", n)
	}
	provisioned := 0
	for _, d := range s.streamData(events.StreamStoreEvents) {
		if r, err := events.DecodeStoreResult(d); err == nil && r.TenantID == "twice" && r.Outcome == events.OutcomeProvisioned {
			provisioned++
		}
	}
	if provisioned != 4 {
		t.Fatalf("%d provisioned results for 4 stores: a store provisioned twice", provisioned)
	}
}

// 50 tenants at once with two orchestrator replicas.
func TestFiftyTenantsTwoReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	s := startSystem(t, 4*time.Minute)
	s.startOrchestrator()
	s.startOrchestrator()
	const n = 50
	start := time.Now()
	for i := range n {
		s.request(events.SubjectTenantRequested, fmt.Sprintf(`{"tenant_id":"bulk-%02d"}`, i))
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.waitState(fmt.Sprintf("bulk-%02d", i), events.TenantActive, 5*time.Minute)
		}()
	}
	wg.Wait()
	t.Logf("%d tenants active in %s with two orchestrator replicas", n, time.Since(start).Round(time.Millisecond))
	for i := range n {
		if c := s.auditCount(events.AuditTenantProvisioned, fmt.Sprintf("bulk-%02d", i)); c != 1 {
			t.Errorf("bulk-%02d: %d TENANT_PROVISIONED", i, c)
		}
	}
}

// Issue 11's forged result, against the real agents and stores: anyone who
// can publish store.evt.postgres.provisioned (no authentication yet) sends
// one for an active tenant, with a new credential_id and a credential
// age-encrypted to the control-plane recipient (a public key) pointing the
// tenant at a host of the attacker's choosing. It names a saga that is not
// the tenant's: it is rejected and audited, and the sealed file is the
// same bytes as before.
func TestForgedResultIsRejected(t *testing.T) {
	s := startSystem(t, 60*time.Second)
	s.startOrchestrator()
	s.request(events.SubjectTenantRequested, `{"tenant_id":"acme"}`)
	rec := s.waitState("acme", events.TenantActive, 90*time.Second)
	raw0, _ := s.secretsFile("acme")

	section, _ := json.Marshal(map[string]any{"host": "evil.example", "port": 5432, "database": "tenant_acme", "user": "tenant_acme",
		"password": "attacker-chosen", "url": "postgres://tenant_acme:attacker-chosen@evil.example:5432/tenant_acme"})
	cred, err := secret.Seal(section, s.cp.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	for i, sagaID := range []string{"acme-g1", "acme-" + strings.Repeat("0", 16)} {
		forged := &events.StoreResult{TenantID: "acme", Generation: rec.Generation, SagaID: sagaID, Store: events.StorePostgres,
			Outcome: events.OutcomeProvisioned, Run: 9, Credential: cred, CredentialID: fmt.Sprintf("forged-%d", i),
			Verification: &events.Verification{Passed: true, Checks: []events.Check{{Name: "own_access", Passed: true}}},
			Resources:    map[string]string{"host": "evil.example"}, CompletedAt: time.Now().UTC()}
		data, err := events.Encode(forged)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.js.Publish(s.ctx, events.EventSubject(events.StorePostgres, events.OutcomeProvisioned), data); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for s.auditCount(events.AuditResultRejected, "acme") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("RESULT_REJECTED events: %d, want 2", s.auditCount(events.AuditResultRejected, "acme"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // anything the forgery could have set off has had its chance
	raw1, file := s.secretsFile("acme")
	if string(raw0) != string(raw1) {
		t.Fatal("the sealed file changed after a forged result")
	}
	if after := s.record("acme"); after.Stores[events.StorePostgres].CredentialID != rec.Stores[events.StorePostgres].CredentialID {
		t.Fatal("the record took the forged credential")
	}
	for _, d := range s.streamData(events.StreamAudit) {
		if strings.Contains(string(d), "attacker-chosen") || strings.Contains(string(d), "BEGIN AGE") {
			t.Fatal("an audit event holds the forged credential")
		}
	}
	s.useCredentials(file)
}
