package saga

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// The saga's decision table, tested without any server: every tenant state
// against every kind of event, then the sequences behind the issue's
// interleavings.

var (
	t0     = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	policy = Policy{SagaTimeout: time.Minute, RetryMin: 5 * time.Second, RetryMax: time.Minute, KeepPast: 4}
)

const saga1 = "acme-s1"

func must(t *testing.T, rec *events.TenantRecord, ev Event, at time.Time) *events.TenantRecord {
	t.Helper()
	next, d := Step(policy, rec, ev, at)
	if next == nil {
		t.Fatalf("%s changed nothing (%+v)", ev.Kind, d)
	}
	if err := next.Validate(); err != nil {
		t.Fatalf("%s: invalid record: %v", ev.Kind, err)
	}
	return next
}

func provisionReq(seq uint64, saga string) Event {
	return Event{Kind: EvProvisionRequested, Seq: seq, SagaID: saga, Provision: &events.TenantRequested{TenantID: "acme"}}
}

func deprovisionReq(seq uint64) Event {
	return Event{Kind: EvDeprovisionRequested, Seq: seq, Deprovision: &events.DeprovisionRequested{TenantID: "acme"}}
}

func result(store events.Store, gen uint64, saga string, outcome events.Outcome, attempt int, run, seq uint64) Event {
	res := &events.StoreResult{TenantID: "acme", Generation: gen, SagaID: saga, Store: store, Outcome: outcome, Attempt: attempt, Run: run, CompletedAt: t0}
	switch outcome {
	case events.OutcomeProvisioned:
		res.Credential = "-----BEGIN AGE ENCRYPTED FILE-----\n..."
		res.CredentialID = fmt.Sprintf("cred-%d", seq)
		res.Verification = &events.Verification{Passed: true}
	case events.OutcomeProvisionFailed, events.OutcomeDeprovisionFailed:
		res.Reason = events.ReasonStoreError
	}
	return Event{Kind: EvResult, Seq: seq, Result: res, SubjectStore: store}
}

func expired(ev Event) Event { ev.Result.Reason = events.ReasonExpired; return ev }

// executed empties the outbox, as the executors would.
func executed(rec *events.TenantRecord) *events.TenantRecord {
	c := cloneRecord(rec)
	c.Outbox = nil
	return c
}

func effect(rec *events.TenantRecord, kind events.EffectKind) *events.Effect {
	for _, e := range rec.Outbox {
		if e.Kind == kind {
			return e
		}
	}
	return nil
}

func fixtures(t *testing.T) map[string]*events.TenantRecord {
	t.Helper()
	f := map[string]*events.TenantRecord{"none": nil}
	prov := executed(must(t, nil, provisionReq(10, saga1), t0))
	f["provisioning"] = prov
	rec := prov
	for i, store := range events.Stores() {
		rec = must(t, rec, result(store, 1, saga1, events.OutcomeProvisioned, 0, 1, uint64(101+i)), t0.Add(time.Second))
	}
	seal := effect(rec, events.EffectPutSecrets)
	active := executed(must(t, rec, Event{Kind: EvObjectObserved, EffectID: seal.ID, Object: ObjectState{Present: true, SealID: seal.Seal.ID, SHA256: "ab"}}, t0.Add(2*time.Second)))
	f["active"] = active
	rb := executed(must(t, prov, result(events.StoreQdrant, 1, saga1, events.OutcomeProvisionFailed, 0, 1, 103), t0.Add(time.Second)))
	f["rolling_back"] = rb
	rec = rb
	for i, store := range events.Stores() {
		rec = must(t, rec, result(store, 1, saga1, events.OutcomeDeprovisioned, 1, 1, uint64(201+i)), t0.Add(2*time.Second))
	}
	f["failed"] = executed(rec)
	dep := executed(must(t, active, deprovisionReq(20), t0.Add(time.Hour)))
	f["deprovisioning"] = dep
	rec = dep
	for i, store := range events.Stores() {
		rec = must(t, rec, result(store, 1, saga1, events.OutcomeDeprovisioned, 1, 1, uint64(301+i)), t0.Add(time.Hour+time.Second))
	}
	f["deprovisioned"] = executed(rec)
	return f
}

// Expectations: a tenant state the record ends in (it changed), "=" for no
// change, "reject:<code>" for a dropped result, "rejectreq" for a request
// answered with tenant.rejected.
func TestStepTable(t *testing.T) {
	pg := events.StorePostgres
	evs := []struct {
		name string
		ev   Event
	}{
		{"request new", provisionReq(50, "acme-s2")},
		{"request redelivered", provisionReq(10, "acme-s9")},
		{"deprovision new", deprovisionReq(60)},
		{"deprovision older than generation", deprovisionReq(5)},
		{"provisioned newer run", result(pg, 1, saga1, events.OutcomeProvisioned, 0, 2, 500)},
		{"provisioned stale run", result(pg, 1, saga1, events.OutcomeProvisioned, 0, 0, 501)},
		{"provisioned same run redelivered", result(pg, 1, saga1, events.OutcomeProvisioned, 0, 1, 102)},
		{"provisioned wrong saga", result(pg, 1, "forged", events.OutcomeProvisioned, 0, 2, 502)},
		{"provisioned future generation", result(pg, 2, saga1, events.OutcomeProvisioned, 0, 1, 503)},
		{"provisioned on another store's subject", func() Event {
			e := result(pg, 1, saga1, events.OutcomeProvisioned, 0, 2, 504)
			e.SubjectStore = events.StoreRedis
			return e
		}()},
		{"provisioned attempt never sent", result(pg, 1, saga1, events.OutcomeProvisioned, 3, 1, 505)},
		{"provision_failed newer run", result(pg, 1, saga1, events.OutcomeProvisionFailed, 0, 2, 506)},
		{"provision_failed expired", expired(result(pg, 1, saga1, events.OutcomeProvisionFailed, 0, 2, 507))},
		{"deprovisioned attempt 1", result(pg, 1, saga1, events.OutcomeDeprovisioned, 1, 1, 508)},
		{"deprovisioned attempt never sent", result(pg, 1, saga1, events.OutcomeDeprovisioned, 9, 1, 509)},
		{"deprovision_failed attempt 1", result(pg, 1, saga1, events.OutcomeDeprovisionFailed, 1, 1, 510)},
		{"tick an hour later", Event{Kind: EvTick}},
		{"object observed absent", Event{Kind: EvObjectObserved, EffectID: "999"}},
		{"object observed present", Event{Kind: EvObjectObserved, EffectID: "999", Object: ObjectState{Present: true, SealID: "stranger", SHA256: "cd"}}},
		{"effect done unknown", Event{Kind: EvEffectDone, EffectID: "999"}},
		{"seal failed unknown", Event{Kind: EvSealFailed, EffectID: "999", Reason: "x"}},
	}
	want := map[string][]string{
		//               req new         req redeliv deprov new     deprov old  prov run2                   prov stale           prov same           wrong saga     future gen           other subject              attempt unsent        failed run2        expired            deprov a1         deprov a9             deprov_failed a1     tick               observed absent    observed present   done unknown
		"none":           {"provisioning", "provisioning", "rejectreq", "rejectreq", "reject:unknown_tenant", "reject:unknown_tenant", "reject:unknown_tenant", "reject:unknown_tenant", "reject:unknown_tenant", "reject:store_mismatch", "reject:unknown_tenant", "reject:unknown_tenant", "reject:unknown_tenant", "reject:unknown_tenant", "reject:unknown_tenant", "reject:unknown_tenant", "=", "=", "=", "=", "="},
		"provisioning":   {"=", "=", "rejectreq", "=", "provisioning", "provisioning", "provisioning", "reject:saga", "reject:generation", "reject:store_mismatch", "reject:attempt", "rolling_back", "rolling_back", "reject:attempt", "reject:attempt", "reject:attempt", "rolling_back", "=", "=", "=", "="},
		"active":         {"=", "=", "deprovisioning", "=", "active", "reject:stale_run", "=", "reject:saga", "reject:generation", "reject:store_mismatch", "reject:attempt", "active", "active", "reject:attempt", "reject:attempt", "reject:attempt", "=", "active", "active", "=", "="},
		"rolling_back":   {"rejectreq", "=", "rejectreq", "=", "rolling_back", "rolling_back", "rolling_back", "reject:saga", "reject:generation", "reject:store_mismatch", "reject:attempt", "rolling_back", "rolling_back", "rolling_back", "reject:attempt", "rolling_back", "rolling_back", "=", "rolling_back", "=", "="},
		"failed":         {"provisioning", "=", "=", "=", "failed", "failed", "failed", "reject:saga", "reject:generation", "reject:store_mismatch", "reject:attempt", "failed", "failed", "=", "reject:attempt", "=", "=", "=", "failed", "=", "="},
		"deprovisioning": {"rejectreq", "=", "=", "=", "deprovisioning", "reject:stale_run", "=", "reject:saga", "reject:generation", "reject:store_mismatch", "reject:attempt", "deprovisioning", "deprovisioning", "deprovisioning", "reject:attempt", "deprovisioning", "deprovisioning", "=", "=", "=", "="},
		"deprovisioned":  {"provisioning", "=", "=", "=", "deprovisioned", "reject:stale_run", "=", "reject:saga", "reject:generation", "reject:store_mismatch", "reject:attempt", "deprovisioned", "deprovisioned", "=", "reject:attempt", "=", "=", "=", "deprovisioned", "=", "="},
	}
	fx := fixtures(t)
	for state, row := range want {
		if len(row) != len(evs) {
			t.Fatalf("%s: %d expectations for %d events", state, len(row), len(evs))
		}
		for i, e := range evs {
			t.Run(state+"/"+e.name, func(t *testing.T) {
				cur := fx[state]
				if cur == nil && e.ev.Kind == EvProvisionRequested && e.ev.Seq == 10 {
					// nothing to redeliver onto: it is a first request
				}
				next, d := Step(policy, cur, e.ev, t0.Add(2*time.Hour))
				got := "="
				switch {
				case d.RejectResult != "":
					got = "reject:" + d.RejectCode
					if next != nil {
						t.Errorf("a rejected result changed the record")
					}
				case d.RejectRequest != "":
					got = "rejectreq"
				case next != nil:
					got = string(next.State)
					if err := next.Validate(); err != nil {
						t.Errorf("invalid record: %v", err)
					}
				}
				if got != row[i] {
					t.Errorf("got %s, want %s (note %q)", got, row[i], d.Note)
				}
				if cur != nil && next != nil && next.EffectSeq < cur.EffectSeq {
					t.Errorf("effect sequence went back")
				}
			})
		}
	}
}

// Step never modifies its input.
func TestStepDoesNotModifyInput(t *testing.T) {
	fx := fixtures(t)
	before, _ := json.Marshal(fx["active"])
	Step(policy, fx["active"], result(events.StorePostgres, 1, saga1, events.OutcomeProvisionFailed, 0, 2, 600), t0)
	Step(policy, fx["active"], deprovisionReq(70), t0)
	after, _ := json.Marshal(fx["active"])
	if string(before) != string(after) {
		t.Fatal("Step modified the record it was given")
	}
}

func TestStepProvisionWritesStartAuditAndCommandsToOutbox(t *testing.T) {
	rec := must(t, nil, provisionReq(10, saga1), t0)
	var kinds []string
	ids := map[string]bool{}
	for _, e := range rec.Outbox {
		kinds = append(kinds, string(e.Kind)+" "+e.Subject)
		if ids[e.ID] || ids[e.MsgID] {
			t.Fatalf("effect IDs repeat: %v", kinds)
		}
		ids[e.ID], ids[e.MsgID] = true, true
	}
	wantKinds := "audit audit.TENANT_PROVISIONING_STARTED|command store.cmd.minio.provision|command store.cmd.postgres.provision|command store.cmd.qdrant.provision|command store.cmd.redis.provision"
	if strings.Join(kinds, "|") != wantKinds {
		t.Fatalf("outbox %v", kinds)
	}
	var cmd events.StoreCommand
	if err := json.Unmarshal(rec.Outbox[1].Payload, &cmd); err != nil || cmd.SagaID != saga1 || !cmd.Deadline.Equal(t0.Add(time.Minute)) {
		t.Fatalf("command %+v (%v)", cmd, err)
	}
}

// Sealing and activation: the put is an effect; the tenant becomes active
// only when the object is observed holding that seal.
func TestStepSealThenActivate(t *testing.T) {
	rec := executed(must(t, nil, provisionReq(10, saga1), t0))
	for i, store := range events.Stores() {
		rec = must(t, rec, result(store, 1, saga1, events.OutcomeProvisioned, 0, 1, uint64(101+i)), t0)
	}
	seal := effect(rec, events.EffectPutSecrets)
	if seal == nil || len(seal.Seal.Results) != 4 || seal.Seal.Results[events.StoreRedis].Seq != 104 || rec.Deadline != nil {
		t.Fatalf("seal effect %+v, deadline %v", seal, rec.Deadline)
	}
	// Another seal's file is in the object store: not done.
	if next, _ := Step(policy, rec, Event{Kind: EvObjectObserved, EffectID: seal.ID, Object: ObjectState{Present: true, SealID: "other"}}, t0); next != nil {
		t.Fatalf("observing another seal changed the record to %s", next.State)
	}
	rec = must(t, rec, Event{Kind: EvObjectObserved, EffectID: seal.ID, Object: ObjectState{Present: true, SealID: seal.Seal.ID, SHA256: "ab"}}, t0)
	if rec.State != events.TenantActive || rec.Secrets == nil || rec.Secrets.SealID != seal.Seal.ID || effect(rec, events.EffectPutSecrets) != nil {
		t.Fatalf("state %s secrets %+v", rec.State, rec.Secrets)
	}
	var got []string
	for _, e := range rec.Outbox {
		got = append(got, e.Subject)
	}
	if !strings.HasSuffix(strings.Join(got, " "), "audit.SECRETS_SEALED audit.TENANT_PROVISIONED tenant.provisioned") {
		t.Fatalf("announcements %v", got)
	}
	out := effect(rec, events.EffectOutcome)
	rec = must(t, rec, Event{Kind: EvEffectDone, EffectID: out.ID}, t0)
	if rec.Announced != events.TenantActive {
		t.Fatalf("announced %q", rec.Announced)
	}
}

// Interleaving 3: two provisioned results of one store applied in Run
// order whatever order they arrive in; the older one is rejected.
func TestStepResultsAppliedInRunOrder(t *testing.T) {
	fx := fixtures(t)
	pg := events.StorePostgres
	rec := must(t, fx["provisioning"], result(pg, 1, saga1, events.OutcomeProvisioned, 0, 2, 120), t0)
	if _, d := Step(policy, rec, result(pg, 1, saga1, events.OutcomeProvisioned, 0, 1, 110), t0); d.RejectCode != rejectStale {
		t.Fatalf("older run after a newer one: %+v", d)
	}
	if st := rec.Stores[pg]; st.CredentialID != "cred-120" || st.CredentialSeq != 120 {
		t.Fatalf("credential %s seq %d", st.CredentialID, st.CredentialSeq)
	}
	// A re-run's provision_failed after a provisioned: the password
	// changed, the store is in an unknown state: roll back.
	rec = must(t, rec, result(pg, 1, saga1, events.OutcomeProvisionFailed, 0, 3, 130), t0)
	if rec.State != events.TenantRollingBack {
		t.Fatalf("state %s, want rolling_back", rec.State)
	}
}

// Interleaving 3, active tenant: a newer provisioned re-seals; a newer
// provision_failed re-provisions the store, but only after the failed
// command's deadline.
func TestStepActiveReRuns(t *testing.T) {
	fx := fixtures(t)
	pg := events.StorePostgres
	rec := must(t, fx["active"], result(pg, 1, saga1, events.OutcomeProvisioned, 0, 2, 600), t0.Add(3*time.Second))
	if s := effect(rec, events.EffectPutSecrets); rec.State != events.TenantActive || s == nil || s.Seal.Results[pg].Seq != 600 {
		t.Fatalf("no re-seal with the newer credential: %+v", s)
	}
	rec = executed(must(t, fx["active"], result(pg, 1, saga1, events.OutcomeProvisionFailed, 0, 2, 601), t0.Add(3*time.Second)))
	st := rec.Stores[pg]
	if rec.State != events.TenantActive || st.State != events.StorePending || st.ProvisionAttempt != 1 {
		t.Fatalf("state %s store %s attempt %d", rec.State, st.State, st.ProvisionAttempt)
	}
	if next, _ := Step(policy, rec, Event{Kind: EvTick}, t0.Add(30*time.Second)); next != nil {
		t.Fatal("re-provision sent before the failed command's deadline")
	}
	rec = must(t, rec, Event{Kind: EvTick}, t0.Add(2*time.Minute))
	c := effect(rec, events.EffectCommand)
	if c == nil || c.MsgID != "cmd:acme:g1:postgres:provision:a1" {
		t.Fatalf("re-provision command %+v", c)
	}
	rec = must(t, executed(rec), result(pg, 1, saga1, events.OutcomeProvisioned, 1, 1, 700), t0.Add(2*time.Minute))
	if s := effect(rec, events.EffectPutSecrets); s == nil || s.Seal.Results[pg].Seq != 700 || rec.Stores[pg].State != events.StoreProvisioned {
		t.Fatalf("repaired store not re-sealed: %+v", s)
	}
}

// Interleaving 5: the audit event of a late provision_failed is a fact of
// its own, not a duplicate of an earlier one.
func TestStepAuditEventIDsNeverRepeat(t *testing.T) {
	fx := fixtures(t)
	rec := fx["provisioning"]
	seen := map[string]string{}
	check := func(r *events.TenantRecord) {
		for _, e := range r.Outbox {
			if e.Kind != events.EffectAudit {
				continue
			}
			if prev, ok := seen[e.MsgID]; ok && prev != string(e.Payload) {
				t.Fatalf("audit event ID %s reused for another fact", e.MsgID)
			}
			seen[e.MsgID] = string(e.Payload)
		}
	}
	steps := []Event{
		result(events.StoreQdrant, 1, saga1, events.OutcomeProvisionFailed, 0, 1, 103),
		result(events.StoreRedis, 1, saga1, events.OutcomeProvisionFailed, 0, 1, 104),
		result(events.StoreRedis, 1, saga1, events.OutcomeProvisionFailed, 0, 2, 105),
		result(events.StoreRedis, 1, saga1, events.OutcomeDeprovisionFailed, 3, 1, 106),
		result(events.StoreRedis, 1, saga1, events.OutcomeDeprovisioned, 3, 2, 107),
	}
	for _, ev := range steps {
		rec = must(t, rec, ev, t0)
		check(rec)
		rec = executed(rec)
	}
	n := 0
	for id := range seen {
		if strings.Contains(id, "STORE_PROVISION_FAILED") && strings.Contains(id, ":redis:") {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("redis STORE_PROVISION_FAILED events %d, want 2 (one per run)", n)
	}
}

// Interleaving 7: a retry after the backoff does not discard a slow
// success of the attempt before it; a provision that ran after the round
// began starts a new round, whose completion alone counts.
func TestStepAttemptAndRound(t *testing.T) {
	fx := fixtures(t)
	rb := fx["rolling_back"]
	rec := executed(must(t, rb, Event{Kind: EvTick}, t0.Add(10*time.Minute)))
	if st := rec.Stores[events.StoreMinIO]; st.Attempt != 2 || st.Round != 1 {
		t.Fatalf("after a retry: attempt %d round %d", st.Attempt, st.Round)
	}
	done := must(t, rec, result(events.StoreMinIO, 1, saga1, events.OutcomeDeprovisioned, 1, 1, 900), t0.Add(10*time.Minute))
	if done.Stores[events.StoreMinIO].State != events.StoreDeprovisioned {
		t.Fatal("a slow success of attempt 1 was discarded after attempt 2 was sent")
	}
	late := must(t, rec, result(events.StoreMinIO, 1, saga1, events.OutcomeProvisioned, 0, 1, 901), t0.Add(10*time.Minute))
	if st := late.Stores[events.StoreMinIO]; st.Round != 3 || st.State != events.StoreDeprovisioning {
		t.Fatalf("late provisioned: round %d state %s", st.Round, st.State)
	}
	if _, d := Step(policy, late, result(events.StoreMinIO, 1, saga1, events.OutcomeDeprovisioned, 2, 1, 899), t0); d.RejectCode != rejectStale {
		t.Fatalf("a deprovision that ran before the late provision completed the new round: %+v", d)
	}
	if next, _ := Step(policy, late, result(events.StoreMinIO, 1, saga1, events.OutcomeDeprovisioned, 2, 1, 902), t0); next == nil || next.Stores[events.StoreMinIO].State != events.StoreDeprovisioned {
		t.Fatal("a deprovision that ran after the late provision did not complete the round")
	}
}

// Interleaving 2: a late provision of an earlier generation is compensated
// with that generation's saga; a result naming another saga is rejected.
func TestStepLateResultOfPastGeneration(t *testing.T) {
	fx := fixtures(t)
	g2 := executed(must(t, fx["failed"], provisionReq(50, "acme-s2"), t0.Add(time.Hour)))
	rec := must(t, g2, result(events.StoreRedis, 1, saga1, events.OutcomeProvisioned, 0, 2, 950), t0.Add(time.Hour))
	c := effect(rec, events.EffectCommand)
	var cmd events.StoreCommand
	if c == nil || json.Unmarshal(c.Payload, &cmd) != nil || cmd.Generation != 1 || cmd.SagaID != saga1 || cmd.Action != events.ActionDeprovision {
		t.Fatalf("compensation command %+v", cmd)
	}
	if rec.Stores[events.StoreRedis].State != events.StorePending {
		t.Fatal("generation 2's store was touched")
	}
	if _, d := Step(policy, g2, result(events.StoreRedis, 1, "acme-forged", events.OutcomeProvisioned, 0, 2, 951), t0); d.RejectCode != rejectSaga {
		t.Fatalf("forged past-generation result: %+v", d)
	}
	// The compensation completes on the past generation's own record.
	rec = must(t, executed(rec), result(events.StoreRedis, 1, saga1, events.OutcomeDeprovisioned, cmd.Attempt, 1, 952), t0.Add(time.Hour))
	if rec.Past[0].Stores[events.StoreRedis].State != events.StoreDeprovisioned || unsettledPast(rec) {
		t.Fatal("past generation's compensation not completed")
	}
}

func unsettledPast(rec *events.TenantRecord) bool {
	for _, pg := range rec.Past {
		for _, st := range pg.Stores {
			if st.State == events.StoreDeprovisioning {
				return true
			}
		}
	}
	return false
}

// Interleaving 6: a rollback drops a pending seal and deletes whatever
// was put; a tenant ending failed or deprovisioned has its file deleted;
// a put observed after that is deleted again.
func TestStepSealedObjectNeverOrphaned(t *testing.T) {
	fx := fixtures(t)
	rec := fx["provisioning"]
	for i, store := range events.Stores() {
		rec = must(t, rec, result(store, 1, saga1, events.OutcomeProvisioned, 0, 1, uint64(101+i)), t0)
	}
	seal := effect(rec, events.EffectPutSecrets)
	rb := must(t, rec, result(events.StoreQdrant, 1, saga1, events.OutcomeProvisioned, 0, 2, 140), t0) // newer seal replaces the pending one
	if s := effect(rb, events.EffectPutSecrets); s == nil || s.ID == seal.ID {
		t.Fatal("a newer credential did not replace the pending seal")
	}
	rb = must(t, rec, Event{Kind: EvSealFailed, EffectID: seal.ID, Reason: "bad"}, t0)
	if rb.State != events.TenantRollingBack || effect(rb, events.EffectPutSecrets) != nil || effect(rb, events.EffectDeleteSecrets) == nil {
		t.Fatalf("rollback kept the seal or did not delete: %+v", rb.Outbox)
	}
	// The seal's put landed after the delete: observed present -> delete again.
	late := must(t, executed(rb), Event{Kind: EvObjectObserved, EffectID: seal.ID, Object: ObjectState{Present: true, SealID: seal.Seal.ID}}, t0)
	if effect(late, events.EffectDeleteSecrets) == nil {
		t.Fatal("a put landing after the rollback's delete is not deleted")
	}
	for _, state := range []string{"failed", "deprovisioned"} {
		if next, _ := Step(policy, fx[state], Event{Kind: EvObjectObserved, Object: ObjectState{Present: true}}, t0); next == nil || effect(next, events.EffectDeleteSecrets) == nil {
			t.Fatalf("%s tenant's object left in place", state)
		}
	}
	// An active tenant whose file was deleted under it re-seals.
	if next, _ := Step(policy, fx["active"], Event{Kind: EvObjectObserved, Object: ObjectState{}}, t0); next == nil || effect(next, events.EffectPutSecrets) == nil {
		t.Fatal("active tenant's missing file not re-sealed")
	}
}

// Interleaving 4: requests are tied to the generation they target.
func TestStepRequestsBoundToGeneration(t *testing.T) {
	fx := fixtures(t)
	if next, _ := Step(policy, fx["failed"], provisionReq(10, "acme-s9"), t0); next != nil {
		t.Fatal("a redelivered request that ended in failure started a new generation")
	}
	g2 := must(t, fx["deprovisioned"], provisionReq(50, "acme-s2"), t0)
	active2 := g2
	active2.State = events.TenantActive
	if next, d := Step(policy, active2, deprovisionReq(20), t0); next != nil {
		t.Fatalf("a redelivered deprovision of generation 1 deprovisioned generation 2 (%+v)", d)
	}
	if next, _ := Step(policy, active2, deprovisionReq(51), t0); next == nil || next.State != events.TenantDeprovisioning {
		t.Fatal("a new deprovision request was not applied")
	}
}

// Observations of the sealed object apply in the order of the object's
// versions: a late observation of an older put never undoes a newer one.
func TestStepObservationsApplyInObjectOrder(t *testing.T) {
	fx := fixtures(t)
	v1, v2 := t0.Add(time.Second), t0.Add(2*time.Second)
	active := fx["active"]
	seal := active.Secrets.SealID
	newer := must(t, active, Event{Kind: EvObjectObserved, Object: ObjectState{Present: true, SealID: seal, SHA256: "d2", Version: v2}}, t0)
	if newer.Secrets.SHA256 != "d2" {
		t.Fatalf("digest %s, want the re-put's d2", newer.Secrets.SHA256)
	}
	if next, _ := Step(policy, newer, Event{Kind: EvObjectObserved, Object: ObjectState{Present: true, SealID: seal, SHA256: "d1", Version: v1}}, t0); next != nil {
		t.Fatalf("an older observation changed the digest to %s", next.Secrets.SHA256)
	}
}

// A re-seal of an active tenant that cannot be built keeps the file the
// tenant has and says why; during provisioning it rolls back.
func TestStepSealFailure(t *testing.T) {
	fx := fixtures(t)
	rec := must(t, fx["active"], result(events.StorePostgres, 1, saga1, events.OutcomeProvisioned, 0, 2, 600), t0)
	seal := effect(rec, events.EffectPutSecrets)
	rec = must(t, rec, Event{Kind: EvSealFailed, EffectID: seal.ID, Reason: "result gone"}, t0)
	if rec.State != events.TenantActive || effect(rec, events.EffectPutSecrets) != nil || !strings.Contains(rec.LastError, "result gone") {
		t.Fatalf("state %s last error %q", rec.State, rec.LastError)
	}
}

// Past its deadline a provisioning saga waits on while the agents of every
// store that has not answered beat (events.AgentProgress), up to the hard
// cap its commands carry; a silent store's agent fails it at the deadline.
func TestStepDeadlineExtension(t *testing.T) {
	p := policy
	p.MaxTimeout, p.ProgressWindow = 10*time.Minute, 15*time.Second
	prov, _ := Step(p, nil, provisionReq(10, saga1), t0)
	prov = executed(prov)
	// minio and postgres answered; qdrant and redis are pending.
	for i, store := range []events.Store{events.StoreMinIO, events.StorePostgres} {
		next, _ := Step(p, prov, result(store, 1, saga1, events.OutcomeProvisioned, 0, 1, uint64(101+i)), t0.Add(time.Second))
		prov = executed(next)
	}
	if got := *prov.Deadline; !got.Equal(t0.Add(time.Minute)) {
		t.Fatalf("deadline %v, want SAGA_TIMEOUT after the request", got)
	}
	first, _ := Step(p, nil, provisionReq(10, saga1), t0)
	for _, e := range first.Outbox {
		if e.Kind != events.EffectCommand {
			continue
		}
		var cmd events.StoreCommand
		if err := json.Unmarshal(e.Payload, &cmd); err != nil {
			t.Fatal(err)
		}
		if !cmd.Deadline.Equal(t0.Add(10 * time.Minute)) {
			t.Fatalf("%s command deadline %v, want the hard cap (SAGA_MAX_TIMEOUT) %v", cmd.Store, cmd.Deadline, t0.Add(10*time.Minute))
		}
	}

	past := t0.Add(61 * time.Second)
	fresh := past.Add(-3 * time.Second)
	stale := past.Add(-20 * time.Second)
	listening := t0.Add(-time.Hour)
	beats := func(since time.Time, last map[events.Store]time.Time) *Progress {
		return &Progress{Since: since, Last: last}
	}
	cases := []struct {
		name     string
		policy   Policy
		progress *Progress
		at       time.Time
		want     events.TenantState // "" for no change
		deadline time.Time          // when extended
		reason   string             // substring of the rollback reason
	}{
		{"before the deadline", p, nil, t0.Add(59 * time.Second), "", time.Time{}, ""},
		{"no evidence at all", p, nil, past, events.TenantRollingBack, time.Time{}, "no answer from: qdrant, redis"},
		{"every pending store beats", p, beats(listening, map[events.Store]time.Time{events.StoreQdrant: fresh, events.StoreRedis: fresh}), past,
			events.TenantProvisioning, past.Add(15 * time.Second), ""},
		{"only answered stores' heartbeats matter", p, beats(listening, map[events.Store]time.Time{events.StoreQdrant: fresh, events.StoreRedis: fresh, events.StoreMinIO: stale}), past,
			events.TenantProvisioning, past.Add(15 * time.Second), ""},
		{"one pending store is silent", p, beats(listening, map[events.Store]time.Time{events.StoreQdrant: fresh, events.StoreRedis: stale}), past,
			events.TenantRollingBack, time.Time{}, "no heartbeat within 15s from the agents of: redis"},
		{"one pending store never beat", p, beats(listening, map[events.Store]time.Time{events.StoreQdrant: fresh}), past,
			events.TenantRollingBack, time.Time{}, "agents of: redis"},
		{"observer just started: cannot know yet", p, beats(past.Add(-5*time.Second), nil), past,
			events.TenantProvisioning, past.Add(15 * time.Second), ""},
		{"hard cap reached although beating", p, beats(listening, map[events.Store]time.Time{events.StoreQdrant: t0.Add(10 * time.Minute), events.StoreRedis: t0.Add(10 * time.Minute)}), t0.Add(10*time.Minute + time.Second),
			events.TenantRollingBack, time.Time{}, "SAGA_MAX_TIMEOUT"},
		{"extension stops at the hard cap", p, beats(listening, map[events.Store]time.Time{events.StoreQdrant: t0.Add(595 * time.Second), events.StoreRedis: t0.Add(595 * time.Second)}), t0.Add(595 * time.Second),
			events.TenantProvisioning, t0.Add(10 * time.Minute), ""},
		{"extension disabled", policy, beats(listening, map[events.Store]time.Time{events.StoreQdrant: fresh, events.StoreRedis: fresh}), past,
			events.TenantRollingBack, time.Time{}, "no answer from"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			next, d := Step(c.policy, prov, Event{Kind: EvTick, Progress: c.progress}, c.at)
			if c.want == "" {
				if next != nil {
					t.Fatalf("changed the record to %s", next.State)
				}
				return
			}
			if next == nil {
				t.Fatalf("changed nothing (%+v), want %s", d, c.want)
			}
			if err := next.Validate(); err != nil {
				t.Fatal(err)
			}
			if next.State != c.want {
				t.Fatalf("state %s (reason %q), want %s", next.State, next.Reason, c.want)
			}
			if c.want == events.TenantProvisioning {
				if next.Deadline == nil || !next.Deadline.Equal(c.deadline) {
					t.Fatalf("deadline %v, want %v", next.Deadline, c.deadline)
				}
				if len(next.Outbox) != 0 {
					t.Fatalf("an extension emitted effects: %+v", next.Outbox)
				}
				// Looked at again when the extension runs out.
				if again, _ := Step(c.policy, next, Event{Kind: EvTick, Progress: c.progress}, c.at.Add(time.Second)); again != nil {
					t.Fatalf("extended deadline not kept: %s", again.State)
				}
				return
			}
			if !strings.Contains(next.Reason, c.reason) {
				t.Fatalf("reason %q, want it to contain %q", next.Reason, c.reason)
			}
		})
	}
}

// A deprovision whose latest attempt is unanswered is not sent again while
// its store's agents beat: it waits in their queue or runs. A failed
// attempt, or silent agents, get the resend after the backoff as before.
func TestStepNoResendWhileAgentsWork(t *testing.T) {
	p := policy
	p.MaxTimeout, p.ProgressWindow = 10*time.Minute, 15*time.Second
	dep := fixtures(t)["deprovisioning"]     // every store: deprovision attempt 1 sent at t0+1h
	at := t0.Add(time.Hour + 10*time.Second) // past the 5 s backoff
	fresh, stale, listening := at.Add(-2*time.Second), at.Add(-time.Minute), at.Add(-time.Hour)
	all := func(ts time.Time) map[events.Store]time.Time {
		m := map[events.Store]time.Time{}
		for _, s := range events.Stores() {
			m[s] = ts
		}
		return m
	}
	failedMinIO := executed(must(t, dep, result(events.StoreMinIO, 1, saga1, events.OutcomeDeprovisionFailed, 1, 1, 900), t0.Add(time.Hour+time.Second)))
	redisStale := all(fresh)
	redisStale[events.StoreRedis] = stale
	cases := []struct {
		name     string
		rec      *events.TenantRecord
		policy   Policy
		progress *Progress
		resent   []events.Store
	}{
		{"no evidence: resend all", dep, p, nil, events.Stores()},
		{"extension off: resend all", dep, policy, &Progress{Since: listening, Last: all(fresh)}, events.Stores()},
		{"every store's agents beat: wait", dep, p, &Progress{Since: listening, Last: all(fresh)}, nil},
		{"observer just started: wait", dep, p, &Progress{Since: at.Add(-time.Second)}, nil},
		{"redis's agents silent: resend redis", dep, p, &Progress{Since: listening, Last: redisStale}, []events.Store{events.StoreRedis}},
		{"minio answered failed: resend minio", failedMinIO, p, &Progress{Since: listening, Last: all(fresh)}, []events.Store{events.StoreMinIO}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			next, _ := Step(c.policy, c.rec, Event{Kind: EvTick, Progress: c.progress}, at)
			var got []events.Store
			if next != nil {
				for _, e := range next.Outbox {
					if e.Kind != events.EffectCommand {
						continue
					}
					var cmd events.StoreCommand
					if err := json.Unmarshal(e.Payload, &cmd); err != nil {
						t.Fatal(err)
					}
					if cmd.Action != events.ActionDeprovision || cmd.Attempt != 2 {
						t.Errorf("command %s %s attempt %d, want a deprovision attempt 2", cmd.Store, cmd.Action, cmd.Attempt)
					}
					got = append(got, cmd.Store)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(c.resent) {
				t.Fatalf("resent to %v, want %v", got, c.resent)
			}
		})
	}
}
