package saga

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getsops/sops/v3/cmd/sops/formats"
	"github.com/getsops/sops/v3/decrypt"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/testkit"
)

// The interleavings of issue 12 (and the forged result of issue 11), each
// staged with scripted agents on real JetStream, on one node and on the
// 3-node cluster.

func (h *harness) waitFor(id string, within time.Duration, what string, cond func(*events.TenantRecord) bool) *events.TenantRecord {
	h.t.Helper()
	deadline := time.Now().Add(within)
	var rec *events.TenantRecord
	for time.Now().Before(deadline) {
		if rec = h.record(id); rec != nil && cond(rec) {
			return rec
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := json.MarshalIndent(rec, "", "  ")
	h.t.Fatalf("tenant %s: %s did not happen within %s; record:\n%s", id, what, within, b)
	return nil
}

// waitSettled waits for state with every effect executed.
func (h *harness) waitSettled(id string, want events.TenantState, within time.Duration) *events.TenantRecord {
	h.t.Helper()
	return h.waitFor(id, within, "settled "+string(want), func(r *events.TenantRecord) bool {
		return r.State == want && r.Announced == want && len(r.Outbox) == 0
	})
}

// object returns the digest and seal of tenant id's stored secrets file
// ("", "" when there is none).
func (h *harness) object(id string) (digest, sealID string) {
	h.t.Helper()
	obj, err := h.js.ObjectStore(h.ctx, events.ObjectStoreSecrets)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := obj.GetInfo(h.ctx, id+".sops.yaml")
	if err != nil {
		return "", ""
	}
	sum, err := digestHex(info.Digest)
	if err != nil {
		h.t.Fatal(err)
	}
	return sum, info.Metadata[metaSealID]
}

// sealed returns tenant id's stored secrets file decrypted, with its
// digest and seal.
func (h *harness) sealed(id string) (digest, sealID, plain string) {
	h.t.Helper()
	obj, err := h.js.ObjectStore(h.ctx, events.ObjectStoreSecrets)
	if err != nil {
		h.t.Fatal(err)
	}
	raw, err := obj.GetBytes(h.ctx, id+".sops.yaml")
	if err != nil {
		return "", "", ""
	}
	h.t.Setenv("SOPS_AGE_KEY", h.identity.String())
	out, err := decrypt.DataWithFormat(raw, formats.Yaml)
	if err != nil {
		h.t.Fatalf("sops decrypt: %v", err)
	}
	digest, sealID = h.object(id)
	return digest, sealID, string(out)
}

func (h *harness) audits(t events.AuditType, tenant string) []*events.AuditEvent {
	var out []*events.AuditEvent
	for _, m := range h.streamMessages(events.StreamAudit, events.AuditSubject(t)) {
		if ev, err := events.DecodeAuditEvent(m.Data()); err == nil && ev.TenantID == tenant {
			out = append(out, ev)
		}
	}
	return out
}

func (h *harness) waitAudits(t events.AuditType, tenant string, n int) []*events.AuditEvent {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		evs := h.audits(t, tenant)
		if len(evs) >= n {
			return evs
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s audit events for %s: %d, want %d", t, tenant, len(evs), n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func silent(*events.StoreCommand) (events.Outcome, bool) { return "", false }

// onlyProvision makes b apply to provision commands; deprovisions succeed.
func onlyProvision(b behaviour) behaviour {
	return func(cmd *events.StoreCommand) (events.Outcome, bool) {
		if cmd.Action == events.ActionProvision {
			return b(cmd)
		}
		return "", true
	}
}

func failing(cmd *events.StoreCommand) (events.Outcome, bool) {
	if cmd.Action == events.ActionProvision {
		return events.OutcomeProvisionFailed, true
	}
	return "", true
}

// consistent checks that the record describes the object store: same
// digest, same seal.
func (h *harness) consistent(id string) string {
	h.t.Helper()
	start := time.Now()
	var digest, sealID string
	rec := h.waitFor(id, 20*time.Second, "sealed file and record agree", func(r *events.TenantRecord) bool {
		digest, sealID = h.object(id)
		if time.Since(start) > 19*time.Second {
			h.t.Logf("object: seal %q digest %s", sealID, digest)
		}
		return len(r.Outbox) == 0 && r.Secrets != nil && r.Secrets.SHA256 == digest && r.Secrets.SealID == sealID
	})
	_, _, plain := h.sealed(id)
	_ = rec
	return plain
}

// Issue 11: a forged store.evt.postgres.provisioned for an active tenant —
// a new credential_id, a credential age-encrypted to the control-plane
// recipient (a public key) — naming another saga, or a run older than the
// one applied, is not applied: the sealed file stays as it was. A genuine
// re-run (same saga, higher run) is re-sealed.
func TestForgedResultIsNotApplied(t *testing.T) {
	eachTopology(t, func(t *testing.T, h *harness) {
		h.startSaga()
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"acme"}`)
		before := h.waitSettled("acme", events.TenantActive, 30*time.Second)
		h.consistent("acme")
		_, seal0 := h.object("acme")
		cmd := h.agents.commands(events.StorePostgres, events.ActionProvision)[0]

		forged := *cmd
		forged.SagaID = "acme-g1" // the old, guessable form; or any other
		fake := h.agents.answer(&forged, events.OutcomeProvisioned, 7, func(r *events.StoreResult) {
			r.Resources = map[string]string{"host": "evil.example"}
		})
		stale := h.agents.answer(cmd, events.OutcomeProvisioned, 0, nil) // right saga, run older than applied
		rejected := h.waitAudits(events.AuditResultRejected, "acme", 2)
		for _, ev := range rejected {
			for _, pw := range []string{h.agents.byCred[fake.CredentialID], h.agents.byCred[stale.CredentialID]} {
				if strings.Contains(string(ev.Details), pw) || strings.Contains(string(ev.Details), "BEGIN AGE") {
					t.Fatalf("RESULT_REJECTED details hold the credential: %s", ev.Details)
				}
			}
		}
		if got := testutil.ToFloat64(h.sagas[0].metrics.resultsRejected.WithLabelValues(rejectSaga)) + testutil.ToFloat64(h.sagas[0].metrics.resultsRejected.WithLabelValues(rejectStale)); got < 2 {
			t.Fatalf("rejected results counted %v, want 2", got)
		}
		time.Sleep(time.Second)
		after := h.record("acme")
		_, seal1, plain := h.sealed("acme")
		if seal1 != seal0 || after.Secrets.SealID != before.Secrets.SealID || after.Stores[events.StorePostgres].CredentialID != before.Stores[events.StorePostgres].CredentialID {
			t.Fatal("a forged result was applied: the sealed file or the record changed")
		}
		if strings.Contains(plain, "evil.example") || strings.Contains(plain, h.agents.byCred[fake.CredentialID]) {
			t.Fatal("the sealed file holds the forged credential")
		}

		genuine := h.agents.answer(cmd, events.OutcomeProvisioned, 2, nil)
		h.waitFor("acme", 20*time.Second, "re-sealed with the re-run's credential", func(r *events.TenantRecord) bool {
			return r.Stores[events.StorePostgres].CredentialID == genuine.CredentialID && r.Secrets != nil && r.Secrets.SealID != seal0
		})
		if plain := h.consistent("acme"); !strings.Contains(plain, h.agents.byCred[genuine.CredentialID]) {
			t.Fatal("the re-run's credential is not in the sealed file")
		}
	})
}

// Interleaving 2: a provision of generation 1 that runs after generation
// 1 was rolled back and generation 2 began is compensated, with
// generation 1's saga; generation 2 is not touched.
func TestLateProvisionOfEarlierGenerationIsCompensated(t *testing.T) {
	eachTopology(t, func(t *testing.T, h *harness) {
		h.startSaga()
		h.agents.set(events.StoreRedis, onlyProvision(silent)) // the agent dies with provision(g1)
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"late"}`)
		h.waitSettled("late", events.TenantFailed, 30*time.Second)
		h.agents.set(events.StoreRedis, succeed)
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"late"}`)
		g2 := h.waitSettled("late", events.TenantActive, 30*time.Second)
		if g2.Generation != 2 {
			t.Fatalf("generation %d", g2.Generation)
		}
		g1cmd := h.agents.commands(events.StoreRedis, events.ActionProvision)[0]
		if g1cmd.Generation != 1 {
			t.Fatalf("first redis command is generation %d", g1cmd.Generation)
		}
		before := len(h.agents.commands(events.StoreRedis, events.ActionDeprovision))
		h.agents.answer(g1cmd, events.OutcomeProvisioned, 2, nil) // the redelivered provision(g1) ran now
		rec := h.waitFor("late", 20*time.Second, "generation 1's late redis provision compensated", func(r *events.TenantRecord) bool {
			return len(r.Past) > 0 && r.Past[0].Stores[events.StoreRedis].Round > 1 && r.Past[0].Stores[events.StoreRedis].State == events.StoreDeprovisioned
		})
		var sent *events.StoreCommand
		for _, c := range h.agents.commands(events.StoreRedis, events.ActionDeprovision)[before:] {
			sent = c
		}
		if sent == nil || sent.Generation != 1 || sent.SagaID != g1cmd.SagaID {
			t.Fatalf("compensation command %+v", sent)
		}
		if rec.State != events.TenantActive || rec.Generation != 2 || rec.Stores[events.StoreRedis].State != events.StoreProvisioned {
			t.Fatalf("generation 2 touched: %s g%d redis %s", rec.State, rec.Generation, rec.Stores[events.StoreRedis].State)
		}
	})
}

// Interleaving 3: two provisioned results of one store, the later run
// arriving first: the later run's credential is sealed, the earlier run
// is rejected.
func TestResultsAppliedInRunOrder(t *testing.T) {
	eachTopology(t, func(t *testing.T, h *harness) {
		h.startSaga()
		h.agents.set(events.StorePostgres, onlyProvision(silent))
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"order"}`)
		h.waitFor("order", 20*time.Second, "postgres commanded", func(*events.TenantRecord) bool {
			return len(h.agents.commands(events.StorePostgres, events.ActionProvision)) == 1
		})
		cmd := h.agents.commands(events.StorePostgres, events.ActionProvision)[0]
		r2 := h.agents.answer(cmd, events.OutcomeProvisioned, 2, nil)
		h.waitFor("order", 20*time.Second, "run 2 applied", func(r *events.TenantRecord) bool { return r.Stores[events.StorePostgres].Run == 2 })
		r1 := h.agents.answer(cmd, events.OutcomeProvisioned, 1, nil)
		h.waitSettled("order", events.TenantActive, 30*time.Second)
		h.waitAudits(events.AuditResultRejected, "order", 1)
		plain := h.consistent("order")
		if !strings.Contains(plain, h.agents.byCred[r2.CredentialID]) || strings.Contains(plain, h.agents.byCred[r1.CredentialID]) {
			t.Fatal("the older run's credential was sealed")
		}
	})
}

// Interleaving 3: a re-run that fails after an earlier run of the same
// command succeeded changed the password: while provisioning, the tenant
// is rolled back (the reason names the store); once active, the store is
// re-provisioned and re-sealed.
func TestFailedReRunAfterProvisioned(t *testing.T) {
	eachTopology(t, func(t *testing.T, h *harness) {
		h.startSaga()
		h.agents.set(events.StorePostgres, onlyProvision(silent))
		h.agents.set(events.StoreRedis, onlyProvision(silent))
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"rerun"}`)
		h.waitFor("rerun", 20*time.Second, "postgres commanded", func(*events.TenantRecord) bool {
			return len(h.agents.commands(events.StorePostgres, events.ActionProvision)) == 1
		})
		cmd := h.agents.commands(events.StorePostgres, events.ActionProvision)[0]
		h.agents.answer(cmd, events.OutcomeProvisioned, 1, nil)
		h.waitFor("rerun", 20*time.Second, "run 1 applied", func(r *events.TenantRecord) bool { return r.Stores[events.StorePostgres].Run == 1 })
		h.agents.answer(cmd, events.OutcomeProvisionFailed, 2, nil)
		rec := h.waitSettled("rerun", events.TenantFailed, 30*time.Second)
		if !strings.Contains(rec.Reason, "postgres") {
			t.Fatalf("reason %q: the failed re-run was not what rolled back", rec.Reason)
		}

		// Active: re-provisioned after the failed command's deadline.
		h.agents.set(events.StorePostgres, succeed)
		h.agents.set(events.StoreRedis, succeed)
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"rerun"}`)
		h.waitSettled("rerun", events.TenantActive, 30*time.Second)
		var g2 *events.StoreCommand
		for _, c := range h.agents.commands(events.StorePostgres, events.ActionProvision) {
			if c.Generation == 2 {
				g2 = c
			}
		}
		h.agents.answer(g2, events.OutcomeProvisionFailed, 2, nil)
		h.waitFor("rerun", 30*time.Second, "postgres re-provisioned", func(r *events.TenantRecord) bool {
			st := r.Stores[events.StorePostgres]
			return r.State == events.TenantActive && st.ProvisionAttempt == 1 && st.State == events.StoreProvisioned && len(r.Outbox) == 0
		})
		plain := h.consistent("rerun")
		h.agents.mu.Lock()
		pw := h.agents.secrets["postgres/rerun"]
		h.agents.mu.Unlock()
		if !strings.Contains(plain, pw) {
			t.Fatal("the re-provisioned credential is not sealed")
		}
	})
}

// Interleaving 3: two replicas sealing different credentials at once: the
// record always ends describing the stored file (digest and seal), and the
// file holds the newest credential.
func TestConcurrentSealsRecordTheStoredFile(t *testing.T) {
	eachTopology(t, func(t *testing.T, h *harness) {
		h.startSaga()
		h.startSaga()
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"seals"}`)
		h.waitSettled("seals", events.TenantActive, 30*time.Second)
		cmd := h.agents.commands(events.StoreMinIO, events.ActionProvision)[0]
		var last *events.StoreResult
		for run := uint64(2); run <= 6; run++ {
			last = h.agents.answer(cmd, events.OutcomeProvisioned, run, nil)
		}
		h.waitFor("seals", 30*time.Second, "newest credential applied", func(r *events.TenantRecord) bool {
			return r.Stores[events.StoreMinIO].CredentialID == last.CredentialID
		})
		if plain := h.consistent("seals"); !strings.Contains(plain, h.agents.byCred[last.CredentialID]) {
			t.Fatal("the sealed file does not hold the newest credential")
		}
	})
}

// Interleaving 4: requests redelivered after their saga ended (a consumer
// recreated from the start of the stream) start nothing and end nothing:
// not a second saga after a fast failure, not a deprovision of a newer
// generation.
func TestRedeliveredRequestsAreBoundToTheirGeneration(t *testing.T) {
	eachTopology(t, func(t *testing.T, h *harness) {
		stop := h.startSaga()
		redeliverAll := func() {
			stop()
			if err := h.js.DeleteConsumer(h.ctx, events.StreamTenants, events.ConsumerOrchestratorRequests); err != nil {
				t.Fatal(err)
			}
			stop = h.startSaga()
			time.Sleep(2 * time.Second) // every request is redelivered and handled
		}
		h.agents.set(events.StoreQdrant, failing)
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"redo"}`)
		h.waitSettled("redo", events.TenantFailed, 30*time.Second)
		redeliverAll()
		if rec := h.record("redo"); rec.Generation != 1 || rec.State != events.TenantFailed {
			t.Fatalf("a redelivered request started generation %d (%s)", rec.Generation, rec.State)
		}

		h.agents.set(events.StoreQdrant, succeed)
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"redo"}`)
		h.waitSettled("redo", events.TenantActive, 30*time.Second)
		h.publish(events.SubjectTenantDeprovisionRequested, `{"tenant_id":"redo"}`)
		h.waitSettled("redo", events.TenantDeprovisioned, 30*time.Second)
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"redo"}`)
		h.waitSettled("redo", events.TenantActive, 30*time.Second)
		provisions := len(h.agents.commands(events.StoreMinIO, events.ActionProvision))
		redeliverAll()
		rec := h.record("redo")
		if rec.Generation != 3 || rec.State != events.TenantActive {
			t.Fatalf("after redelivery: generation %d %s, want 3 active", rec.Generation, rec.State)
		}
		for _, c := range h.agents.commands(events.StoreMinIO, events.ActionDeprovision) {
			if c.Generation == 3 {
				t.Fatal("a redelivered deprovision request deprovisioned generation 3")
			}
		}
		if n := len(h.agents.commands(events.StoreMinIO, events.ActionProvision)); n != provisions {
			t.Fatalf("redelivered requests sent %d more provisions", n-provisions)
		}
	})
}

// Interleaving 5: a replica that dies right after its registry writes
// leaves every effect in the record; another replica executes them: no
// audit event or outcome lost, none twice.
func TestEffectsLeftByADeadReplicaAreExecuted(t *testing.T) {
	eachTopology(t, func(t *testing.T, h *harness) {
		stop := h.startSaga()
		h.sagas[0].crashAfterWrite.Store(true)
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"crash"}`)
		h.waitFor("crash", 20*time.Second, "registered", func(r *events.TenantRecord) bool { return len(r.Outbox) > 0 })
		stop()
		if n := len(h.audits(events.AuditTenantProvisioningStarted, "crash")); n != 0 {
			t.Fatalf("the dead replica published %d start events", n)
		}
		h.startSaga()
		h.waitSettled("crash", events.TenantActive, 30*time.Second)
		for _, typ := range []events.AuditType{events.AuditTenantProvisioningStarted, events.AuditSecretsSealed, events.AuditTenantProvisioned} {
			if n := len(h.audits(typ, "crash")); n != 1 {
				t.Errorf("%s events: %d, want 1", typ, n)
			}
		}
		if n := len(h.streamMessages(events.StreamTenants, events.SubjectTenantProvisioned)); n != 1 {
			t.Errorf("tenant.provisioned: %d", n)
		}
	})
}

// Interleaving 6: nothing leaves a sealed file behind a tenant that ended
// failed, not even one put before the rollback.
func TestNoSealedFileOutlivesAFailedTenant(t *testing.T) {
	eachTopology(t, func(t *testing.T, h *harness) {
		obj, err := h.js.ObjectStore(h.ctx, events.ObjectStoreSecrets)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := obj.PutBytes(h.ctx, "orphan.sops.yaml", []byte("left by a put that landed late")); err != nil {
			t.Fatal(err)
		}
		h.startSaga()
		h.agents.set(events.StoreQdrant, failing)
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"orphan"}`)
		h.waitSettled("orphan", events.TenantFailed, 30*time.Second)
		if _, err := obj.GetInfo(h.ctx, "orphan.sops.yaml"); err == nil {
			t.Fatal("a sealed file outlives the failed tenant")
		}
	})
}

// Interleaving 7: a compensation retried after its backoff does not
// discard the slow success of the attempt before it.
func TestSlowDeprovisionSuccessIsNotDiscarded(t *testing.T) {
	eachTopology(t, func(t *testing.T, h *harness) {
		h.startSaga()
		h.agents.set(events.StoreQdrant, failing)
		h.agents.set(events.StoreRedis, func(cmd *events.StoreCommand) (events.Outcome, bool) {
			if cmd.Action == events.ActionDeprovision {
				if cmd.Attempt == 1 {
					time.Sleep(4 * h.cfg.RetryMin) // slow: retries are sent meanwhile
					return "", true
				}
				return "", false // later attempts are lost
			}
			return "", true
		})
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"slowdel"}`)
		rec := h.waitSettled("slowdel", events.TenantFailed, 30*time.Second)
		if st := rec.Stores[events.StoreRedis]; st.Attempt < 2 || st.State != events.StoreDeprovisioned {
			t.Fatalf("redis attempt %d state %s; want a retry sent and attempt 1's success applied", st.Attempt, st.State)
		}
	})
}

// Interleaving 8: tenant.requested while the tenant is rolling back or
// deprovisioning gets tenant.rejected (with a reason) and an audit event.
func TestRequestDuringRollbackOrDeprovisioningIsRejected(t *testing.T) {
	eachTopology(t, func(t *testing.T, h *harness) {
		h.startSaga()
		var mu sync.Mutex
		hold := true
		held := func(cmd *events.StoreCommand) (events.Outcome, bool) {
			if cmd.Action == events.ActionProvision {
				return "", true
			}
			mu.Lock()
			defer mu.Unlock()
			return "", !hold
		}
		h.agents.set(events.StoreQdrant, failing)
		h.agents.set(events.StoreRedis, held)
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"busy"}`)
		h.waitFor("busy", 20*time.Second, "rolling back", func(r *events.TenantRecord) bool { return r.State == events.TenantRollingBack })
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"busy","request_id":"during-rollback"}`)
		rejections := func(n int) []*events.TenantOutcomeEvent {
			deadline := time.Now().Add(20 * time.Second)
			for {
				var out []*events.TenantOutcomeEvent
				for _, m := range h.streamMessages(events.StreamTenants, events.SubjectTenantRejected) {
					if ev, err := events.DecodeTenantOutcomeEvent(m.Data()); err == nil && ev.TenantID == "busy" {
						out = append(out, ev)
					}
				}
				if len(out) >= n {
					return out
				}
				if time.Now().After(deadline) {
					t.Fatalf("tenant.rejected for busy: %d, want %d", len(out), n)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		if r := rejections(1); !strings.Contains(r[0].Reason, "rolling_back") {
			t.Fatalf("reason %q", r[0].Reason)
		}
		mu.Lock()
		hold = false
		mu.Unlock()
		h.waitSettled("busy", events.TenantFailed, 30*time.Second)

		h.agents.set(events.StoreQdrant, succeed)
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"busy"}`)
		h.waitSettled("busy", events.TenantActive, 30*time.Second)
		mu.Lock()
		hold = true
		mu.Unlock()
		h.publish(events.SubjectTenantDeprovisionRequested, `{"tenant_id":"busy"}`)
		h.waitFor("busy", 20*time.Second, "deprovisioning", func(r *events.TenantRecord) bool { return r.State == events.TenantDeprovisioning })
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"busy","request_id":"during-deprovisioning"}`)
		if r := rejections(2); !strings.Contains(r[1].Reason, "deprovisioning") {
			t.Fatalf("reason %q", r[1].Reason)
		}
		h.waitAudits(events.AuditTenantRequestRejected, "busy", 2)
		mu.Lock()
		hold = false
		mu.Unlock()
		h.waitSettled("busy", events.TenantDeprovisioned, 30*time.Second)
	})
}

// The production topology losing a node, then the meta leader, while two
// orchestrator replicas provision tenants: every tenant becomes active
// exactly once.
func TestClusterNodeLossDuringProvisioning(t *testing.T) {
	h := newHarnessOn(t, topologies[1])
	h.cfg.SagaTimeout = time.Minute // DESIGN's default: a failover is not a failure
	h.startSaga()
	h.startSaga()
	const n = 6
	for i := range n {
		h.publish(events.SubjectTenantRequested, fmt.Sprintf(`{"tenant_id":"loss-%d"}`, i))
	}
	h.waitSettled("loss-0", events.TenantActive, 60*time.Second)
	leader := h.cluster.WaitForMetaLeader(t)
	var victim *testkit.NATS
	for _, node := range h.cluster.Nodes {
		if node != leader {
			victim = node
			break
		}
	}
	victim.Shutdown()
	for i := n; i < 2*n; i++ {
		h.publish(events.SubjectTenantRequested, fmt.Sprintf(`{"tenant_id":"loss-%d"}`, i))
	}
	victim.Restart(t)
	leader = h.cluster.WaitForMetaLeader(t)
	leader.Shutdown()
	for i := range 2 * n {
		h.waitSettled(fmt.Sprintf("loss-%d", i), events.TenantActive, 2*time.Minute)
	}
	leader.Restart(t)
	h.cluster.WaitForMetaLeader(t)
	h.waitStreamLeader(events.StreamAudit, time.Minute) // read next, once
	provisioned := map[string]int{}
	for _, m := range h.streamMessages(events.StreamAudit, events.AuditSubject(events.AuditTenantProvisioned)) {
		if ev, err := events.DecodeAuditEvent(m.Data()); err == nil {
			provisioned[ev.TenantID]++
		}
	}
	for i := range 2 * n {
		id := fmt.Sprintf("loss-%d", i)
		if got := provisioned[id]; got != 1 {
			t.Errorf("%s: TENANT_PROVISIONED %d times", id, got)
		}
	}
}

// waitStreamLeader waits until stream answers with a leader (after a
// cluster restart its replicas elect one a while after the meta leader).
func (h *harness) waitStreamLeader(stream string, within time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
		st, err := h.js.Stream(ctx, stream)
		var info *jetstream.StreamInfo
		if err == nil {
			info, err = st.Info(ctx)
		}
		cancel()
		if err == nil && (info.Cluster == nil || info.Cluster.Leader != "") {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("stream %s has no leader within %s: %v", stream, within, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
