package saga

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// The lifecycle's decision table (DESIGN.md §10), without any server.

var lpolicy = func() Policy {
	p := policy
	p.Lifecycle = LifecyclePolicy{GraceDefault: time.Hour, GraceMax: 24 * time.Hour, RetainMax: 48 * time.Hour}
	return p
}()

func lstep(t *testing.T, rec *events.TenantRecord, ev Event, at time.Time) *events.TenantRecord {
	t.Helper()
	next, d := Step(lpolicy, rec, ev, at)
	if next == nil {
		t.Fatalf("%s changed nothing (%+v)", ev.Kind, d)
	}
	if err := next.Validate(); err != nil {
		t.Fatalf("%s: invalid record: %v", ev.Kind, err)
	}
	return next
}

func rotateReq(seq uint64, grace string, stores ...events.Store) Event {
	return Event{Kind: EvRotateRequested, Seq: seq, Rotate: &events.RotateRequested{TenantID: "acme", Grace: grace, Stores: stores}}
}

func lifecycleReq(kind EventKind, seq uint64) Event {
	return Event{Kind: kind, Seq: seq, Lifecycle: &events.LifecycleRequested{TenantID: "acme"}}
}

func retainReq(seq uint64, retain string) Event {
	return Event{Kind: EvDeprovisionRequested, Seq: seq, Deprovision: &events.DeprovisionRequested{TenantID: "acme", Retain: retain}}
}

// lres answers the store's current lifecycle command of rec.
func lres(rec *events.TenantRecord, store events.Store, outcome events.Outcome, run, seq uint64) Event {
	st := rec.Stores[store].Step
	res := &events.StoreResult{TenantID: "acme", Generation: rec.Generation, SagaID: rec.SagaID, Store: store, Outcome: outcome,
		Attempt: st.Attempt, Run: run, CompletedAt: t0}
	switch outcome {
	case events.OutcomeRotated:
		res.Credential = "-----BEGIN AGE ENCRYPTED FILE-----\n..."
		res.CredentialID = fmt.Sprintf("rot-%d", seq)
		res.CredentialVersion = st.Version
		res.Verification = &events.Verification{Passed: true}
	case events.OutcomeRetired:
		res.CredentialVersion = st.Version
	}
	if !(outcome == st.Action.SuccessOutcome()) {
		res.Reason, res.Error = events.ReasonStoreError, "scripted"
	}
	return Event{Kind: EvResult, Seq: seq, Result: res, SubjectStore: store}
}

// answerAll answers every store's pending command of the running phase.
func answerAll(t *testing.T, rec *events.TenantRecord, at time.Time, seq uint64, outcome func(store events.Store, a events.Action) events.Outcome) *events.TenantRecord {
	t.Helper()
	for i, store := range events.Stores() {
		s := rec.Stores[store].Step
		if s == nil || s.State != events.StepSent {
			continue
		}
		o := outcome(store, s.Action)
		if o == "" {
			continue // silent
		}
		rec = lstep(t, rec, lres(rec, store, o, 1, seq+uint64(i)), at)
	}
	return rec
}

func succeedAll(_ events.Store, a events.Action) events.Outcome { return a.SuccessOutcome() }

// commandsIn returns the store commands rec's outbox holds for action.
func commandsIn(t *testing.T, rec *events.TenantRecord, action events.Action) []*events.StoreCommand {
	t.Helper()
	var out []*events.StoreCommand
	for _, e := range rec.Outbox {
		if e.Kind != events.EffectCommand || !strings.HasSuffix(e.Subject, "."+string(action)) {
			continue
		}
		cmd, err := events.DecodeStoreCommand(e.Payload)
		if err != nil {
			t.Fatalf("command in outbox: %v", err)
		}
		out = append(out, cmd)
	}
	return out
}

func auditsIn(rec *events.TenantRecord, typ events.AuditType) []*events.AuditEvent {
	var out []*events.AuditEvent
	for _, e := range rec.Outbox {
		if e.Kind == events.EffectAudit && e.Subject == events.AuditSubject(typ) {
			var ev events.AuditEvent
			_ = json.Unmarshal(e.Payload, &ev)
			out = append(out, &ev)
		}
	}
	return out
}

func outcomesIn(rec *events.TenantRecord) []events.Outcome {
	var out []events.Outcome
	for _, e := range rec.Outbox {
		if e.Kind == events.EffectOutcome {
			var ev events.TenantOutcomeEvent
			_ = json.Unmarshal(e.Payload, &ev)
			out = append(out, ev.Outcome)
		}
	}
	return out
}

// sealNow completes the pending seal of rec as the executor would.
func sealNow(t *testing.T, rec *events.TenantRecord, at time.Time) *events.TenantRecord {
	t.Helper()
	seal := effect(rec, events.EffectPutSecrets)
	if seal == nil {
		t.Fatalf("no seal pending; state %s", rec.State)
	}
	return lstep(t, rec, Event{Kind: EvObjectObserved, EffectID: seal.ID, Object: ObjectState{Present: true, SealID: seal.Seal.ID, SHA256: "ef", Version: at}}, at)
}

// lfixtures are the lifecycle states reached the way the saga reaches them.
func lfixtures(t *testing.T) map[string]*events.TenantRecord {
	t.Helper()
	f := fixtures(t)
	at := t0.Add(2 * time.Hour)
	f["rotating"] = executed(lstep(t, f["active"], rotateReq(30, ""), at))
	f["suspending"] = executed(lstep(t, f["active"], lifecycleReq(EvSuspendRequested, 30), at))
	f["suspended"] = executed(answerAll(t, f["suspending"], at, 400, succeedAll))
	f["resuming"] = executed(lstep(t, f["suspended"], lifecycleReq(EvResumeRequested, 31), at))
	f["retaining"] = executed(lstep(t, f["active"], retainReq(30, "24h"), at))
	f["retained"] = executed(answerAll(t, f["retaining"], at, 400, succeedAll))
	f["restoring"] = executed(lstep(t, f["retained"], lifecycleReq(EvRestoreRequested, 31), at))
	return f
}

// Every lifecycle request against every state: the state it ends in, "="
// for no change, "rejectreq" for tenant.rejected.
func TestLifecycleRequestTable(t *testing.T) {
	reqs := []struct {
		name string
		ev   Event
	}{
		{"rotate", rotateReq(100, "")},
		{"rotate grace too long", rotateReq(100, "25h")},
		{"rotate redelivered", rotateReq(30, "")},
		{"suspend", lifecycleReq(EvSuspendRequested, 100)},
		{"resume", lifecycleReq(EvResumeRequested, 100)},
		{"restore", lifecycleReq(EvRestoreRequested, 100)},
		{"retain", retainReq(100, "24h")},
		{"retain too long", retainReq(100, "49h")},
		{"retain zero", retainReq(100, "0s")},
		{"deprovision", deprovisionReq(100)},
	}
	want := map[string][]string{
		//              rotate       grace>max    redelivered  suspend       resume        restore       retain        retain>max   retain 0     deprovision
		"none":           {"rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq"},
		"provisioning":   {"rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq"},
		"active":         {"rotating", "rejectreq", "rotating", "suspending", "=", "rejectreq", "retaining", "rejectreq", "rejectreq", "deprovisioning"},
		"rolling_back":   {"rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq"},
		"failed":         {"rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "=", "rejectreq", "rejectreq", "="},
		"deprovisioning": {"rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "=", "rejectreq", "rejectreq", "="},
		"deprovisioned":  {"rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "=", "rejectreq", "rejectreq", "="},
		"rotating":       {"rejectreq", "rejectreq", "=", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq"},
		"suspending":     {"rejectreq", "rejectreq", "=", "=", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq"},
		"suspended":      {"rejectreq", "rejectreq", "=", "=", "resuming", "rejectreq", "retained", "rejectreq", "rejectreq", "deprovisioning"},
		"resuming":       {"rejectreq", "rejectreq", "=", "rejectreq", "=", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq"},
		"retaining":      {"rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq"},
		"retained":       {"rejectreq", "rejectreq", "rejectreq", "rejectreq", "rejectreq", "restoring", "=", "rejectreq", "rejectreq", "deprovisioning"},
		"restoring":      {"rejectreq", "rejectreq", "=", "rejectreq", "rejectreq", "=", "rejectreq", "rejectreq", "rejectreq", "rejectreq"},
	}
	f := lfixtures(t)
	for state, row := range want {
		for i, r := range reqs {
			t.Run(state+"/"+r.name, func(t *testing.T) {
				cur := f[state]
				next, d := Step(lpolicy, cur, r.ev, t0.Add(3*time.Hour))
				got := "="
				switch {
				case d.RejectRequest != "":
					got = "rejectreq"
					if next != nil {
						t.Errorf("a rejected request changed the record")
					}
				case next != nil:
					got = string(next.State)
					if err := next.Validate(); err != nil {
						t.Fatal(err)
					}
				}
				if got != row[i] {
					t.Errorf("got %s, want %s (%+v)", got, row[i], d)
				}
			})
		}
	}
}

// A rotation of every store: commands from version 1 to 2 with the grace,
// the new credentials sealed (with their versions), CREDENTIALS_ROTATED,
// tenant.rotated, active, and the retire scheduled in the record; at the
// due time (not before) retire keeping version 2, then CREDENTIALS_RETIRED.
func TestLifecycleRotateSealsThenRetiresWhenDue(t *testing.T) {
	f := lfixtures(t)
	at := t0.Add(3 * time.Hour)
	rec := lstep(t, f["active"], rotateReq(100, "2h"), at)
	cmds := commandsIn(t, rec, events.ActionRotate)
	if len(cmds) != 4 || rec.State != events.TenantRotating {
		t.Fatalf("state %s, %d rotate commands", rec.State, len(cmds))
	}
	for _, c := range cmds {
		if c.CredentialVersion != 1 || c.Version != 2 || c.GraceSeconds != 7200 || c.Attempt != 1 {
			t.Errorf("rotate command %+v", c)
		}
	}
	rec = answerAll(t, executed(rec), at, 600, succeedAll)
	seal := effect(rec, events.EffectPutSecrets)
	if seal == nil || rec.State != events.TenantRotating {
		t.Fatalf("no seal after every store rotated (state %s)", rec.State)
	}
	for store, r := range seal.Seal.Results {
		if r.CredentialVersion != 2 || !strings.HasPrefix(r.CredentialID, "rot-") {
			t.Errorf("%s sealed %+v, want the rotated credential", store, r)
		}
	}
	rec = sealNow(t, rec, at)
	if rec.State != events.TenantActive || rec.Lifecycle != nil {
		t.Fatalf("after the seal: %s", rec.State)
	}
	if len(auditsIn(rec, events.AuditCredentialsRotated)) != 1 || len(auditsIn(rec, events.AuditCredentialsRotationFailed)) != 0 {
		t.Errorf("audits: %d rotated", len(auditsIn(rec, events.AuditCredentialsRotated)))
	}
	if o := outcomesIn(rec); len(o) != 1 || o[0] != events.TenantOutcomeRotated {
		t.Errorf("outcomes %v", o)
	}
	if sc := rec.Scheduled; sc == nil || sc.Kind != events.LifecycleRetire || !sc.DueAt.Equal(at.Add(2*time.Hour)) || len(sc.Stores) != 4 {
		t.Fatalf("scheduled %+v", rec.Scheduled)
	}
	for _, store := range events.Stores() {
		if v := rec.Stores[store].CredentialVersion; v != 2 {
			t.Errorf("%s credential version %d", store, v)
		}
	}
	rec = executed(rec)
	if next, _ := Step(lpolicy, rec, Event{Kind: EvTick}, at.Add(time.Hour)); next != nil {
		t.Fatalf("tick before the due time changed the record: %s", next.State)
	}
	rec = lstep(t, rec, Event{Kind: EvTick}, at.Add(2*time.Hour+time.Second))
	retire := commandsIn(t, rec, events.ActionRetire)
	if rec.State != events.TenantRotating || len(retire) != 4 {
		t.Fatalf("due retire: state %s, %d commands", rec.State, len(retire))
	}
	for _, c := range retire {
		if c.CredentialVersion != 2 || c.Attempt != 2 {
			t.Errorf("retire command %+v", c)
		}
	}
	rec = answerAll(t, executed(rec), at.Add(3*time.Hour), 700, succeedAll)
	if rec.State != events.TenantActive || rec.Scheduled != nil || rec.Announced != events.TenantActive {
		t.Fatalf("after retire: %s scheduled %+v", rec.State, rec.Scheduled)
	}
	if len(auditsIn(rec, events.AuditCredentialsRetired)) != 1 {
		t.Errorf("no CREDENTIALS_RETIRED")
	}
	if o := outcomesIn(rec); len(o) != 1 || o[0] != events.TenantOutcomeRetired {
		t.Errorf("outcomes %v", o)
	}
}

// One store's rotate fails (or never answers): it keeps its old
// credential, the others are sealed as rotated, CREDENTIALS_ROTATION_FAILED
// names it, the tenant is active again, and only the rotated stores are
// retired later.
func TestLifecycleRotateOneStoreFailsStaysActive(t *testing.T) {
	for _, how := range []string{"rotate_failed", "deadline"} {
		t.Run(how, func(t *testing.T) {
			f := lfixtures(t)
			at := t0.Add(3 * time.Hour)
			active := f["active"]
			oldPG := *active.Stores[events.StorePostgres]
			rec := executed(lstep(t, active, rotateReq(100, ""), at))
			rec = answerAll(t, rec, at, 600, func(s events.Store, a events.Action) events.Outcome {
				if s == events.StorePostgres {
					if how == "deadline" {
						return ""
					}
					return events.OutcomeRotateFailed
				}
				return a.SuccessOutcome()
			})
			if how == "deadline" {
				if effect(rec, events.EffectPutSecrets) != nil {
					t.Fatal("sealed before postgres answered or timed out")
				}
				rec = lstep(t, rec, Event{Kind: EvTick}, at.Add(2*time.Minute))
			}
			seal := effect(rec, events.EffectPutSecrets)
			if seal == nil {
				t.Fatalf("no seal; state %s", rec.State)
			}
			if r := seal.Seal.Results[events.StorePostgres]; r.Seq != oldPG.CredentialSeq || r.CredentialID != oldPG.CredentialID {
				t.Errorf("postgres sealed %+v, want its old credential %d", r, oldPG.CredentialSeq)
			}
			if r := seal.Seal.Results[events.StoreRedis]; r.CredentialVersion != 2 {
				t.Errorf("redis sealed %+v", r)
			}
			rec = sealNow(t, rec, at.Add(3*time.Minute))
			if rec.State != events.TenantActive {
				t.Fatalf("state %s", rec.State)
			}
			failed := auditsIn(rec, events.AuditCredentialsRotationFailed)
			if len(failed) != 1 || failed[0].Store != events.StorePostgres || !strings.Contains(string(failed[0].Details), "reason") {
				t.Fatalf("CREDENTIALS_ROTATION_FAILED: %+v", failed)
			}
			if len(auditsIn(rec, events.AuditCredentialsRotated)) != 1 {
				t.Error("no CREDENTIALS_ROTATED for the stores that rotated")
			}
			if v := rec.Stores[events.StorePostgres].CredentialVersion; v > 1 {
				t.Errorf("postgres credential version %d", v)
			}
			// A store given up at the deadline may hold a half-made new
			// credential: its retire is scheduled with the others
			// (keeping its current version). One that answered
			// rotate_failed removed it itself.
			if sc := rec.Scheduled; how == "deadline" && (sc == nil || len(sc.Stores) != 4) {
				t.Errorf("scheduled %+v, want every store", sc)
			} else if sc := rec.Scheduled; how != "deadline" && (sc == nil || len(sc.Stores) != 3 || strings.Contains(fmt.Sprint(sc.Stores), "postgres")) {
				t.Errorf("scheduled %+v", sc)
			}
			// A late rotated of postgres after the rotation settled is
			// not applied: the file keeps postgres's old credential.
			late := lres(rec, events.StorePostgres, events.OutcomeRotated, 2, 900)
			next, d := Step(lpolicy, executed(rec), late, at.Add(4*time.Minute))
			if next != nil && effect(next, events.EffectPutSecrets) != nil {
				t.Errorf("late rotated re-sealed: %+v", d)
			}
		})
	}
}

// The deadline of a rotate: every store silent → each counts as failed, the
// tenant settles active with nothing sealed; one silent store → the others
// are sealed once it timed out.
func TestLifecycleRotateDeadline(t *testing.T) {
	f := lfixtures(t)
	at := t0.Add(3 * time.Hour)
	rec := executed(lstep(t, f["active"], rotateReq(100, ""), at))
	rec = lstep(t, rec, Event{Kind: EvTick}, at.Add(2*time.Minute)) // every store past its deadline
	if rec.Stores[events.StoreRedis].Step.State != events.StepFailed {
		t.Fatalf("redis step %+v", rec.Stores[events.StoreRedis].Step)
	}
	if effect(rec, events.EffectPutSecrets) != nil || rec.State != events.TenantActive {
		// every store failed: settled active, nothing sealed
		t.Fatalf("state %s", rec.State)
	}
	// Now with one store still pending: only redis timed out.
	rec = executed(lstep(t, f["active"], rotateReq(100, ""), at))
	for i, store := range []events.Store{events.StoreMinIO, events.StorePostgres, events.StoreQdrant} {
		rec = lstep(t, rec, lres(rec, store, events.OutcomeRotated, 1, uint64(600+i)), at)
	}
	rec = lstep(t, rec, Event{Kind: EvTick}, at.Add(2*time.Minute))
	if effect(rec, events.EffectPutSecrets) == nil {
		t.Fatal("no seal once redis timed out")
	}
}

// Every store fails: tenant.rotation_failed, still active, nothing sealed
// or scheduled.
func TestLifecycleRotateAllFail(t *testing.T) {
	f := lfixtures(t)
	at := t0.Add(3 * time.Hour)
	rec := executed(lstep(t, f["active"], rotateReq(100, "", events.StoreRedis, events.StoreMinIO, events.StoreRedis), at))
	if n := len(commandsIn(t, lstep(t, f["active"], rotateReq(100, "", events.StoreRedis, events.StoreMinIO, events.StoreRedis), at), events.ActionRotate)); n != 2 {
		t.Fatalf("%d rotate commands for two named stores", n)
	}
	rec = answerAll(t, rec, at, 600, func(events.Store, events.Action) events.Outcome { return events.OutcomeRotateFailed })
	if rec.State != events.TenantActive || effect(rec, events.EffectPutSecrets) != nil || rec.Scheduled != nil {
		t.Fatalf("state %s", rec.State)
	}
	if o := outcomesIn(rec); len(o) != 1 || o[0] != events.TenantOutcomeRotationFailed {
		t.Errorf("outcomes %v", o)
	}
	if n := len(auditsIn(rec, events.AuditCredentialsRotationFailed)); n != 2 {
		t.Errorf("%d CREDENTIALS_ROTATION_FAILED", n)
	}
}

// A second rotation while the first one's grace runs retires the first's
// old credentials before rotating again.
func TestLifecycleRotateDuringGraceRetiresFirst(t *testing.T) {
	f := lfixtures(t)
	at := t0.Add(3 * time.Hour)
	rec := executed(lstep(t, f["active"], rotateReq(100, ""), at))
	rec = executed(sealNow(t, answerAll(t, rec, at, 600, succeedAll), at))
	rec = lstep(t, rec, rotateReq(101, "0s"), at.Add(time.Minute))
	if n := len(commandsIn(t, rec, events.ActionRetire)); n != 4 || len(commandsIn(t, rec, events.ActionRotate)) != 0 {
		t.Fatalf("%d retire commands first", n)
	}
	rec = answerAll(t, executed(rec), at, 700, succeedAll)
	if rec.Scheduled != nil {
		t.Fatal("the pending retire is still scheduled")
	}
	cmds := commandsIn(t, rec, events.ActionRotate)
	if len(cmds) != 4 || cmds[0].CredentialVersion != 2 || cmds[0].Version != 3 {
		t.Fatalf("second rotation commands %+v", cmds)
	}
	rec = executed(sealNow(t, answerAll(t, executed(rec), at, 800, succeedAll), at))
	// Grace 0: retired at once, keeping version 3.
	if rec.State != events.TenantRotating {
		t.Fatalf("state %s", rec.State)
	}
	for _, store := range events.Stores() {
		if s := rec.Stores[store].Step; s.Action != events.ActionRetire || s.Version != 3 {
			t.Fatalf("%s step %+v", store, s)
		}
	}
	rec = answerAll(t, rec, at, 900, succeedAll)
	if rec.State != events.TenantActive || rec.Scheduled != nil {
		t.Fatalf("state %s", rec.State)
	}
}

// Suspend and resume: a failing store is retried with backoff until it
// answers; the tenant is never settled half-suspended.
func TestLifecycleSuspendRetriesThenResume(t *testing.T) {
	f := lfixtures(t)
	at := t0.Add(3 * time.Hour)
	rec := executed(lstep(t, f["active"], lifecycleReq(EvSuspendRequested, 100), at))
	rec = answerAll(t, rec, at, 600, func(s events.Store, a events.Action) events.Outcome {
		if s == events.StoreQdrant {
			return events.OutcomeSuspendFailed
		}
		return a.SuccessOutcome()
	})
	if rec.State != events.TenantSuspending || rec.LastError == "" {
		t.Fatalf("state %s last error %q", rec.State, rec.LastError)
	}
	rec = executed(rec)
	if next, _ := Step(lpolicy, rec, Event{Kind: EvTick}, at.Add(time.Second)); next != nil {
		t.Fatal("retried before the backoff")
	}
	rec = lstep(t, rec, Event{Kind: EvTick}, at.Add(6*time.Second))
	retry := commandsIn(t, rec, events.ActionSuspend)
	if len(retry) != 1 || retry[0].Store != events.StoreQdrant || retry[0].Attempt != 2 {
		t.Fatalf("retry %+v", retry)
	}
	// The slow success of the first attempt counts as well as the retry's.
	first := lres(rec, events.StoreQdrant, events.OutcomeSuspended, 2, 650)
	first.Result.Attempt = 1
	rec = lstep(t, executed(rec), first, at.Add(7*time.Second))
	if rec.State != events.TenantSuspended || len(auditsIn(rec, events.AuditTenantSuspended)) != 1 {
		t.Fatalf("state %s", rec.State)
	}
	// The late failure of the retry changes nothing.
	if next, d := Step(lpolicy, executed(rec), lres(rec, events.StoreQdrant, events.OutcomeSuspendFailed, 1, 651), at.Add(8*time.Second)); next != nil && next.State != events.TenantSuspended {
		t.Fatalf("late failure: %s %+v", next.State, d)
	}
	rec = lstep(t, executed(rec), lifecycleReq(EvResumeRequested, 101), at.Add(time.Minute))
	if n := len(commandsIn(t, rec, events.ActionResume)); n != 4 {
		t.Fatalf("%d resume commands", n)
	}
	rec = answerAll(t, executed(rec), at.Add(time.Minute), 700, succeedAll)
	if rec.State != events.TenantActive || len(auditsIn(rec, events.AuditTenantResumed)) != 1 {
		t.Fatalf("state %s", rec.State)
	}
	if o := outcomesIn(rec); len(o) != 1 || o[0] != events.TenantOutcomeResumed {
		t.Errorf("outcomes %v", o)
	}
}

// Retention: suspend every store → retained, purge scheduled in the
// record; at the due time the purge deprovisions every store and ends with
// TENANT_PURGED and TENANT_DEPROVISIONED.
func TestLifecycleRetainThenPurgeWhenDue(t *testing.T) {
	f := lfixtures(t)
	at := t0.Add(3 * time.Hour)
	rec := f["retained"]
	if rec.State != events.TenantRetained || rec.Scheduled == nil || rec.Scheduled.Kind != events.LifecyclePurge {
		t.Fatalf("retained fixture: %s %+v", rec.State, rec.Scheduled)
	}
	due := rec.Scheduled.DueAt
	if !due.Equal(t0.Add(2*time.Hour + 24*time.Hour)) {
		t.Errorf("purge due %s", due)
	}
	if next, _ := Step(lpolicy, rec, Event{Kind: EvTick}, due.Add(-time.Second)); next != nil {
		t.Fatal("purged before the retention ended")
	}
	rec = lstep(t, rec, Event{Kind: EvTick}, due.Add(time.Second))
	if rec.State != events.TenantDeprovisioning || len(commandsIn(t, rec, events.ActionDeprovision)) != 4 || rec.Scheduled != nil {
		t.Fatalf("purge: %s", rec.State)
	}
	rec = executed(rec)
	for i, store := range events.Stores() {
		rec = lstep(t, rec, result(store, 1, saga1, events.OutcomeDeprovisioned, rec.Stores[store].Attempt, 1, uint64(800+i)), at)
	}
	if rec.State != events.TenantDeprovisioned || len(auditsIn(rec, events.AuditTenantPurged)) != 1 || len(auditsIn(rec, events.AuditTenantDeprovisioned)) != 1 {
		t.Fatalf("state %s", rec.State)
	}
	if effect(rec, events.EffectDeleteSecrets) == nil {
		t.Error("the sealed file is not deleted")
	}
	// A restore after the purge started is rejected.
	if _, d := Step(lpolicy, rec, lifecycleReq(EvRestoreRequested, 900), at); d.RejectRequest == "" {
		t.Error("restore after the purge was not rejected")
	}
}

// Restore: resume every store, rotate with no grace, seal, retire the old
// credentials, active with TENANT_RESTORED; the purge is off.
func TestLifecycleRestore(t *testing.T) {
	f := lfixtures(t)
	at := t0.Add(4 * time.Hour)
	rec := f["restoring"]
	if rec.Scheduled != nil {
		t.Fatal("the purge is still scheduled during a restore")
	}
	if n := len(commandsIn(t, lstep(t, f["retained"], lifecycleReq(EvRestoreRequested, 31), at), events.ActionResume)); n != 4 {
		t.Fatalf("%d resume commands", n)
	}
	rec = answerAll(t, rec, at, 600, succeedAll)
	cmds := commandsIn(t, rec, events.ActionRotate)
	if len(cmds) != 4 || cmds[0].GraceSeconds != 0 {
		t.Fatalf("rotate commands %+v", cmds)
	}
	rec = sealNow(t, answerAll(t, executed(rec), at, 700, succeedAll), at)
	if n := len(commandsIn(t, rec, events.ActionRetire)); n != 4 || rec.State != events.TenantRestoring {
		t.Fatalf("%d retire commands, state %s", n, rec.State)
	}
	rec = answerAll(t, executed(rec), at, 800, succeedAll)
	if rec.State != events.TenantActive || len(auditsIn(rec, events.AuditTenantRestored)) != 1 || rec.Scheduled != nil {
		t.Fatalf("state %s", rec.State)
	}
	if o := outcomesIn(rec); len(o) != 2 || o[1] != events.TenantOutcomeRestored {
		t.Errorf("outcomes %v", o)
	}
}

// Lifecycle results are bound to the generation, saga, store and command
// attempt in flight; of two runs only a later one counts.
func TestLifecycleResultsBound(t *testing.T) {
	f := lfixtures(t)
	at := t0.Add(3 * time.Hour)
	rec := f["rotating"]
	ok := lres(rec, events.StoreRedis, events.OutcomeRotated, 1, 600)
	edit := func(fn func(e *Event)) Event {
		e := lres(rec, events.StoreRedis, events.OutcomeRotated, 1, 601)
		fn(&e)
		return e
	}
	cases := map[string]struct {
		ev   Event
		code string
	}{
		"wrong saga":           {edit(func(e *Event) { e.Result.SagaID = "forged" }), rejectSaga},
		"wrong generation":     {edit(func(e *Event) { e.Result.Generation = 2 }), rejectGeneration},
		"other store subject":  {edit(func(e *Event) { e.SubjectStore = events.StoreMinIO }), rejectStore},
		"attempt never sent":   {edit(func(e *Event) { e.Result.Attempt = 9 }), rejectAttempt},
		"wrong version":        {edit(func(e *Event) { e.Result.CredentialVersion = 5 }), rejectConflict},
		"action not in flight": {edit(func(e *Event) { e.Result.Outcome = events.OutcomeRetired }), rejectStale},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			next, d := Step(lpolicy, rec, c.ev, at)
			if next != nil || d.RejectCode != c.code {
				t.Fatalf("got %+v (changed %v), want %s", d, next != nil, c.code)
			}
		})
	}
	applied := lstep(t, rec, ok, at)
	if next, d := Step(lpolicy, applied, ok, at); next != nil || d.Note == "" {
		t.Errorf("redelivered result: %+v", d)
	}
	stale := lres(rec, events.StoreRedis, events.OutcomeRotated, 1, 603)
	if next, d := Step(lpolicy, applied, stale, at); next != nil || d.RejectCode != rejectStale {
		t.Errorf("same run, other message: %+v", d)
	}
	// A provision result while the tenant is suspended is never applied.
	sus := f["suspended"]
	if next, d := Step(lpolicy, sus, result(events.StorePostgres, 1, saga1, events.OutcomeProvisioned, 0, 5, 950), at); next != nil || d.RejectCode != rejectStale {
		t.Errorf("provision while suspended: %+v", d)
	}
}

// The same request_id sent again (another stream message) changes nothing.
func TestLifecycleRequestIDIdempotent(t *testing.T) {
	f := lfixtures(t)
	at := t0.Add(3 * time.Hour)
	ev := lifecycleReq(EvSuspendRequested, 100)
	ev.Lifecycle.RequestID = "req-1"
	rec := executed(answerAll(t, executed(lstep(t, f["active"], ev, at)), at, 600, succeedAll))
	rec = executed(answerAll(t, executed(lstep(t, rec, lifecycleReq(EvResumeRequested, 101), at)), at, 700, succeedAll))
	again := lifecycleReq(EvSuspendRequested, 102)
	again.Lifecycle.RequestID = "req-1"
	if next, d := Step(lpolicy, rec, again, at); next != nil || d.Note == "" {
		t.Fatalf("request_id repeated: %+v", d)
	}
}

// Two executors put the same seal (SOPS encrypts afresh: other bytes); the
// second put is observed while the tenant is still restoring. The record
// follows the stored bytes, as it does for an active tenant.
func TestLifecycleSecondPutOfTheSameSealIsRecorded(t *testing.T) {
	f := lfixtures(t)
	at := t0.Add(4 * time.Hour)
	rec := answerAll(t, f["restoring"], at, 600, succeedAll)
	rec = answerAll(t, executed(rec), at, 700, succeedAll)
	seal := effect(rec, events.EffectPutSecrets)
	rec = sealNow(t, rec, at)
	if rec.State != events.TenantRestoring {
		t.Fatalf("state %s", rec.State)
	}
	rec = lstep(t, executed(rec), Event{Kind: EvObjectObserved, EffectID: seal.ID, Object: ObjectState{Present: true, SealID: seal.Seal.ID, SHA256: "second", Version: at.Add(time.Second)}}, at.Add(time.Second))
	if rec.Secrets.SHA256 != "second" {
		t.Fatalf("record keeps digest %s of a put that was overwritten", rec.Secrets.SHA256)
	}
}

// A rotation whose seal cannot be built (a store not verified) never waits
// for it: every store falls back to its previous, still working
// credential, audited as failed.
func TestLifecycleRotateWithoutASealFallsBack(t *testing.T) {
	f := lfixtures(t)
	at := t0.Add(3 * time.Hour)
	active := cloneRecord(f["active"])
	active.Stores[events.StoreQdrant].Verified = false
	before := *active.Stores[events.StoreRedis]
	rec := answerAll(t, executed(lstep(t, active, rotateReq(100, ""), at)), at, 600, succeedAll)
	if rec.State != events.TenantActive || effect(rec, events.EffectPutSecrets) != nil || rec.Scheduled != nil {
		t.Fatalf("state %s", rec.State)
	}
	if st := rec.Stores[events.StoreRedis]; st.CredentialSeq != before.CredentialSeq || st.CredentialID != before.CredentialID {
		t.Errorf("redis credential %d/%s, want the previous %d/%s", st.CredentialSeq, st.CredentialID, before.CredentialSeq, before.CredentialID)
	}
	if n := len(auditsIn(rec, events.AuditCredentialsRotationFailed)); n != 4 {
		t.Errorf("%d CREDENTIALS_ROTATION_FAILED, want 4", n)
	}
	if o := outcomesIn(rec); len(o) != 1 || o[0] != events.TenantOutcomeRotationFailed {
		t.Errorf("outcomes %v", o)
	}
}

// A re-run of a resume that finishes after the suspend that followed it
// was answered is rejected, and never silently: the record says so.
func TestLifecycleLateResumeAfterSuspendIsFlagged(t *testing.T) {
	f := lfixtures(t)
	at := t0.Add(3 * time.Hour)
	rec := executed(answerAll(t, f["resuming"], at, 600, succeedAll))
	resumeCmd := *rec.Stores[events.StoreRedis].Step
	rec = executed(answerAll(t, executed(lstep(t, rec, lifecycleReq(EvSuspendRequested, 40), at)), at, 700, succeedAll))
	late := lres(rec, events.StoreRedis, events.OutcomeResumed, 2, 800)
	late.Result.Outcome, late.Result.Attempt = events.OutcomeResumed, resumeCmd.Attempt
	next, d := Step(lpolicy, rec, late, at)
	if d.RejectCode != rejectStale || next == nil || !strings.Contains(next.LastError, "redis") || next.State != events.TenantSuspended {
		t.Fatalf("late resume: %+v (changed %v)", d, next != nil)
	}
	// One that ran before the suspend's answer is just stale.
	early := lres(rec, events.StoreRedis, events.OutcomeResumed, 2, 650)
	early.Result.Attempt = resumeCmd.Attempt
	if next, d := Step(lpolicy, rec, early, at); next != nil || d.RejectCode != rejectStale {
		t.Fatalf("early resume: %+v", d)
	}
}

// A lifecycle operation is counted as its own kind, never as a second
// provisioning when the tenant is active again.
func TestLifecycleMetrics(t *testing.T) {
	s := &Saga{log: zap.NewNop(), metrics: newMetrics(nil), now: func() time.Time { return t0 }}
	f := lfixtures(t)
	rotating := f["rotating"]
	s.observe(context.Background(), f["active"], rotating)
	done := cloneRecord(rotating)
	done.State, done.Lifecycle = events.TenantActive, nil
	s.observe(context.Background(), rotating, done)
	for _, c := range []struct {
		kind, state string
		want        float64
	}{{"rotate", "started", 1}, {"rotate", "active", 1}, {"provision", "active", 0}} {
		if got := testutil.ToFloat64(s.metrics.sagas.WithLabelValues(c.kind, c.state)); got != c.want {
			t.Errorf("sagas{%s,%s} = %v, want %v", c.kind, c.state, got, c.want)
		}
	}
}
