package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/testkit"
)

// LifecycleAgentHarness is what RunLifecycleAgent needs besides a Harness
// (Store, OwnAccess, Breakages): a way to write data as the tenant and to
// read it back, to show that suspend and resume leave data intact.
type LifecycleAgentHarness struct {
	*Harness
	// PutData writes a datum into the tenant's slice with cred;
	// DataIntact reads it back with cred and returns nil if it is there.
	PutData    func(ctx context.Context, tenant events.TenantID, cred agent.Credential) error
	DataIntact func(ctx context.Context, tenant events.TenantID, cred agent.Credential) error
	// FailVerify are drifts the store's Verify catches with a freshly
	// rotated credential, tried (before the repairable Breakages) by
	// RotateFailingVerification. Optional.
	FailVerify []Breakage
}

// RunLifecycleAgent drives the lifecycle commands (DESIGN.md §10) through
// the real agent runtime (agent.Run on a fresh NATS server per subtest)
// into h.Store on its real server, and checks what the store and the
// replies then hold. Every subtest ends by checking that no secret the
// runtime generated or the store returned appears in any message or log
// line.
//
// Subtests:
//   - RotateRetire: rotated (version 2, verified, sealed) → both
//     credentials work; retired → the old one is refused.
//   - SuspendResume: suspended → login refused; resumed → the same
//     credential works and the data written before is intact.
//   - Observe: a drift made behind the store's back (the first repairable
//     Breakage) is reported by observe, repaired by observe with repair;
//     an observe of a tenant never provisioned is answered observed, with
//     drift.
//   - RotateFailingVerification: with the first repairable Breakage that
//     Verify catches made, a rotate is answered rotate_failed
//     (verification_failed, with the checks): the old credential still
//     works and the new one Rotate made was removed again.
//   - ExpiredRotate: a rotate received after its deadline is answered
//     rotate_failed (expired); Rotate was never called and the tenant still
//     has exactly its one credential.
//   - InvalidRotate: a rotate whose version is not above credential_version
//     is answered rotate_failed (invalid) without any store call.
//   - KilledDuringRotate: the agent is killed (its NATS connection cut) in
//     the middle of a rotation — inside Verify after the store made the
//     new credential, or before Rotate reached the store — and another
//     replica gets the redelivery: it answers rotated (Run >= 2) with a
//     verified credential that works, the old credential still works, and
//     the half-made credential of the killed run does not.
func RunLifecycleAgent(t *testing.T, newHarness func(t *testing.T) *LifecycleAgentHarness) {
	t.Helper()
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, l *lifeRun)
	}{
		{"RotateRetire", testAgentRotateRetire},
		{"SuspendResume", testAgentSuspendResume},
		{"Observe", testAgentObserve},
		{"RotateFailingVerification", testAgentRotateFailingVerification},
		{"ExpiredRotate", testAgentExpiredRotate},
		{"InvalidRotate", testAgentInvalidRotate},
		{"KilledDuringRotate/InVerify", func(t *testing.T, l *lifeRun) { testAgentKilledDuringRotate(t, l, "verify") }},
		{"KilledDuringRotate/BeforeRotate", func(t *testing.T, l *lifeRun) { testAgentKilledDuringRotate(t, l, "rotate") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			if h == nil || h.Harness == nil || h.Store == nil || h.OwnAccess == nil {
				t.Fatal("storetest: the harness must provide Store and OwnAccess")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			rec := newLifeRecorder(h.Store)
			n := testkit.StartNATS(t)
			l := &lifeRun{h: h, ctx: ctx, rec: rec, n: n}
			l.a = RunAgent(t, n, rec)
			tc.fn(t, l)
			for _, a := range append([]*Agent{l.a}, l.more...) {
				secrets := rec.secrets()
				if len(secrets) == 0 {
					t.Fatal("storetest: recorded no secret; the leak check would be empty")
				}
				a.AssertNoSecret(t, secrets...)
			}
		})
	}
}

// lifeRun is one subtest's agent and store.
type lifeRun struct {
	h    *LifecycleAgentHarness
	ctx  context.Context
	rec  *lifeRecorder
	n    *testkit.NATS
	a    *Agent
	more []*Agent // further replicas a subtest started
}

func (l *lifeRun) tenant(t *testing.T, label string) events.TenantID {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return events.MustTenantID(label + "-" + hex.EncodeToString(b[:]))
}

// command is a lifecycle command of generation 1; attempt tells repeated
// commands apart (as the orchestrator's registry does).
func (l *lifeRun) command(tenant events.TenantID, action events.Action, attempt int, mods ...func(*events.StoreCommand)) *events.StoreCommand {
	c := l.a.NewCommand(tenant, 1, action)
	c.Attempt = attempt
	for _, f := range mods {
		f(c)
	}
	return c
}

// run sends cmd and waits for its answer.
func (l *lifeRun) run(t *testing.T, cmd *events.StoreCommand) Result {
	t.Helper()
	after := l.a.Cursor(l.ctx, t)
	l.a.Send(l.ctx, t, cmd)
	tenant := events.TenantID(cmd.TenantID)
	return l.a.Await(l.ctx, t, after, For(tenant, cmd.Generation, cmd.Action.SuccessOutcome(), cmd.Action.FailureOutcome()))
}

func (l *lifeRun) want(t *testing.T, r Result, o events.Outcome) {
	t.Helper()
	if r.Outcome != o {
		t.Fatalf("%s answered %s (%s): %s; want %s", r.Outcome.Action(), r.Outcome, r.Reason, r.Error, o)
	}
}

func (l *lifeRun) rotate(t *testing.T, tenant events.TenantID, from, to, attempt int) (Result, agent.Credential) {
	t.Helper()
	r := l.run(t, l.command(tenant, events.ActionRotate, attempt, func(c *events.StoreCommand) {
		c.CredentialVersion, c.Version, c.GraceSeconds = from, to, 3600
	}))
	l.want(t, r, events.OutcomeRotated)
	l.checkRotated(t, r, to)
	return r, CredentialFromSealed(l.a.Open(t, r.StoreResult))
}

func (l *lifeRun) checkRotated(t *testing.T, r Result, version int) {
	t.Helper()
	if r.CredentialVersion != version {
		t.Errorf("rotated credential_version %d, want %d", r.CredentialVersion, version)
	}
	if r.Verification == nil || !r.Verification.Passed || len(agent.MissingChecks(r.Verification.Checks)) > 0 {
		t.Errorf("rotated without a passed verification of every required check: %+v", r.Verification)
	}
}

func (l *lifeRun) ownAccess(t *testing.T, tenant events.TenantID, cred agent.Credential, what string) {
	t.Helper()
	if err := l.h.OwnAccess(l.ctx, tenant, cred); err != nil {
		t.Fatalf("%s: own access refused: %v", what, err)
	}
}

func (l *lifeRun) refused(t *testing.T, tenant events.TenantID, cred agent.Credential, what string) {
	t.Helper()
	if err := l.h.OwnAccess(l.ctx, tenant, cred); err == nil {
		t.Fatalf("%s: the credential still works; it must be refused", what)
	}
}

func (l *lifeRun) provision(t *testing.T, tenant events.TenantID) agent.Credential {
	t.Helper()
	_, cred := l.a.Provision(l.ctx, t, tenant, 1)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := l.rec.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1}); err != nil {
			t.Errorf("clean-up deprovision of %s: %v", tenant, err)
		}
	})
	return CredentialFromSealed(cred)
}

func testAgentRotateRetire(t *testing.T, l *lifeRun) {
	tenant := l.tenant(t, "rot")
	v1 := l.provision(t, tenant)
	_, v2 := l.rotate(t, tenant, 1, 2, 0)
	if v1.Secret(secretKey(v1)).Reveal() == v2.Secret(secretKey(v2)).Reveal() {
		t.Fatal("the rotated credential has the old secret")
	}
	l.ownAccess(t, tenant, v1, "during the grace, credential version 1")
	l.ownAccess(t, tenant, v2, "after rotated, credential version 2")

	r := l.run(t, l.command(tenant, events.ActionRetire, 0, func(c *events.StoreCommand) { c.CredentialVersion = 2 }))
	l.want(t, r, events.OutcomeRetired)
	if r.CredentialVersion != 2 || !containsInt(r.Retired, 1) {
		t.Errorf("retired: credential_version %d, retired %v; want 2 and [1]", r.CredentialVersion, r.Retired)
	}
	l.refused(t, tenant, v1, "after retired, credential version 1")
	l.ownAccess(t, tenant, v2, "after retired, credential version 2")
	if got := l.rec.count("rotate"); got != 1 {
		t.Errorf("Rotate called %d times, want 1", got)
	}
}

func testAgentSuspendResume(t *testing.T, l *lifeRun) {
	if l.h.PutData == nil || l.h.DataIntact == nil {
		t.Fatal("storetest: SuspendResume needs PutData and DataIntact")
	}
	tenant := l.tenant(t, "sus")
	cred := l.provision(t, tenant)
	if err := l.h.PutData(l.ctx, tenant, cred); err != nil {
		t.Fatalf("write data before suspend: %v", err)
	}
	l.want(t, l.run(t, l.command(tenant, events.ActionSuspend, 0)), events.OutcomeSuspended)
	l.refused(t, tenant, cred, "after suspended")
	l.want(t, l.run(t, l.command(tenant, events.ActionResume, 0)), events.OutcomeResumed)
	l.ownAccess(t, tenant, cred, "after resumed, the same credential")
	if err := l.h.DataIntact(l.ctx, tenant, cred); err != nil {
		t.Errorf("after suspend and resume the data written before is not intact: %v", err)
	}
}

func testAgentObserve(t *testing.T, l *lifeRun) {
	b := l.repairable(t)
	observe := func(tenant events.TenantID, repair bool, attempt int) Result {
		t.Helper()
		r := l.run(t, l.command(tenant, events.ActionObserve, attempt, func(c *events.StoreCommand) { c.CredentialVersion, c.Repair = 1, repair }))
		l.want(t, r, events.OutcomeObserved)
		return r
	}
	tenant := l.tenant(t, "obs")
	cred := l.provision(t, tenant)
	if r := observe(tenant, false, 0); len(r.Drift) != 0 {
		t.Fatalf("observe of a fresh tenant reports drift: %s", driftText(r.Drift))
	}
	if err := b.Break(l.ctx, tenant, cred); err != nil {
		t.Fatalf("break %q: %v", b.Name, err)
	}
	r := observe(tenant, false, 1)
	if len(r.Drift) == 0 || len(r.Repaired) != 0 {
		t.Fatalf("after %q observe reported drift %q, repaired %q; want drift and no repair", b.Name, driftText(r.Drift), driftText(r.Repaired))
	}
	r = observe(tenant, true, 2)
	if len(r.Repaired) == 0 {
		t.Fatalf("observe with repair repaired nothing of %q (drift: %s)", b.Name, driftText(r.Drift))
	}
	if r := observe(tenant, false, 3); len(r.Drift) != 0 {
		t.Fatalf("after the repair of %q observe still reports %s", b.Name, driftText(r.Drift))
	}
	l.ownAccess(t, tenant, cred, "after the repair")

	never := l.tenant(t, "never")
	r = observe(never, false, 0)
	if len(r.Drift) == 0 {
		t.Errorf("observe of a tenant the store never saw reports no drift")
	}
	t.Logf("observe of a tenant never provisioned: %s", driftText(r.Drift))
}

func testAgentRotateFailingVerification(t *testing.T, l *lifeRun) {
	// The first repairable Breakage that the store's Verify catches; the
	// others (Observe catches them, Verify need not) rotate normally.
	for i, b := range append(append([]Breakage(nil), l.h.FailVerify...), l.h.Breakages...) {
		if !b.Repairable {
			continue
		}
		tenant := l.tenant(t, fmt.Sprintf("rvf%d", i))
		v1 := l.provision(t, tenant)
		if err := b.Break(l.ctx, tenant, v1); err != nil {
			t.Fatalf("break %q: %v", b.Name, err)
		}
		before := len(l.rec.rotated())
		retires := l.rec.count("retire")
		r := l.run(t, l.command(tenant, events.ActionRotate, 0, func(c *events.StoreCommand) { c.CredentialVersion, c.Version, c.GraceSeconds = 1, 2, 3600 }))
		if r.Outcome == events.OutcomeRotated {
			t.Logf("with %q the new credential passes Verify: rotated", b.Name)
			continue
		}
		l.want(t, r, events.OutcomeRotateFailed)
		if r.Reason != events.ReasonVerifyFailed || r.Verification == nil || r.Verification.Passed || r.Credential != "" {
			t.Fatalf("after %q: reason %q (%s), verification %+v, credential sent: %v; want verification_failed with the failed checks and no credential",
				b.Name, r.Reason, r.Error, r.Verification, r.Credential != "")
		}
		if n := l.rec.count("retire") - retires; n != 1 {
			t.Errorf("Retire called %d times, want once (to remove the new credential)", n)
		}
		rotated := l.rec.rotated()
		if len(rotated) != before+1 {
			t.Fatalf("Rotate returned %d credentials, want 1", len(rotated)-before)
		}
		l.refused(t, tenant, rotated[before], "after rotate_failed, the unverified credential version 2")
		l.ownAccess(t, tenant, v1, "after rotate_failed, credential version 1")
		t.Logf("with %q: rotate_failed (verification_failed), the new credential removed", b.Name)
		return
	}
	t.Fatal("no repairable Breakage made the new credential fail Verify; the harness needs one that Verify catches")
}

func (l *lifeRun) repairable(t *testing.T) *Breakage {
	t.Helper()
	for i := range l.h.Breakages {
		if l.h.Breakages[i].Repairable {
			return &l.h.Breakages[i]
		}
	}
	t.Fatal("storetest: the harness needs a repairable Breakage")
	return nil
}

func testAgentExpiredRotate(t *testing.T, l *lifeRun) {
	tenant := l.tenant(t, "exp")
	v1 := l.provision(t, tenant)
	r := l.run(t, l.command(tenant, events.ActionRotate, 0, func(c *events.StoreCommand) {
		c.CredentialVersion, c.Version = 1, 2
		c.IssuedAt, c.Deadline = time.Now().Add(-time.Minute), time.Now().Add(-time.Second)
	}))
	l.want(t, r, events.OutcomeRotateFailed)
	if r.Reason != events.ReasonExpired {
		t.Errorf("reason %q, want expired", r.Reason)
	}
	if n := l.rec.count("rotate") + l.rec.count("retire"); n != 0 {
		t.Errorf("the store got %d rotate/retire calls for an expired command", n)
	}
	l.ownAccess(t, tenant, v1, "after an expired rotate, credential version 1")
	// Nothing but version 1 exists: retiring all others retires none.
	rr := l.run(t, l.command(tenant, events.ActionRetire, 0, func(c *events.StoreCommand) { c.CredentialVersion = 1 }))
	l.want(t, rr, events.OutcomeRetired)
	if len(rr.Retired) != 0 {
		t.Errorf("retire after an expired rotate retired %v: the expired rotate touched the store", rr.Retired)
	}
}

func testAgentInvalidRotate(t *testing.T, l *lifeRun) {
	tenant := l.tenant(t, "inv")
	v1 := l.provision(t, tenant)
	calls := l.rec.total()
	// events.Encode refuses such a command: send its JSON as it is.
	cmd := l.command(tenant, events.ActionRotate, 0, func(c *events.StoreCommand) { c.CredentialVersion, c.Version = 2, 2 })
	data, err := json.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	after := l.a.Cursor(l.ctx, t)
	l.a.SendRaw(l.ctx, t, events.CommandSubject(cmd.Store, cmd.Action), data, events.CommandMsgID(cmd))
	r := l.a.Await(l.ctx, t, after, For(tenant, 1, events.OutcomeRotated, events.OutcomeRotateFailed))
	l.want(t, r, events.OutcomeRotateFailed)
	if r.Reason != events.ReasonInvalid {
		t.Errorf("reason %q, want invalid", r.Reason)
	}
	if got := l.rec.total(); got != calls {
		t.Errorf("an invalid rotate made %d store calls", got-calls)
	}
	// Terminated, not handed back: nothing pending, nothing redelivered.
	for {
		c, err := l.a.JS.Consumer(l.ctx, events.StreamStoreCommands, events.AgentConsumer(l.a.Kind))
		if err != nil {
			t.Fatalf("agent consumer: %v", err)
		}
		ci, err := c.Info(l.ctx)
		if err != nil {
			t.Fatalf("agent consumer info: %v", err)
		}
		if ci.NumRedelivered != 0 {
			t.Fatalf("the invalid rotate was redelivered (%d redelivered)", ci.NumRedelivered)
		}
		if ci.NumAckPending == 0 && ci.NumPending == 0 {
			break
		}
		select {
		case <-l.ctx.Done():
			t.Fatalf("the invalid rotate is still pending: %d pending ack", ci.NumAckPending)
		case <-time.After(20 * time.Millisecond):
		}
	}
	l.ownAccess(t, tenant, v1, "after an invalid rotate, credential version 1")
}

func testAgentKilledDuringRotate(t *testing.T, l *lifeRun, at string) {
	tenant := l.tenant(t, "kill")
	v1 := l.provision(t, tenant)
	started, release := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	var killed atomic.Bool
	l.rec.setHold(func(ctx context.Context, call string, req events.TenantID) error {
		if call != at || req != tenant || !first.CompareAndSwap(false, true) {
			return nil
		}
		close(started)
		select {
		case <-release:
		case <-ctx.Done():
		}
		if at == "rotate" && killed.Load() {
			// The process died before its Rotate reached the store.
			return errors.New("storetest: killed before the store call")
		}
		return nil
	})
	a := l.a
	cmd := l.command(tenant, events.ActionRotate, 0, func(c *events.StoreCommand) { c.CredentialVersion, c.Version, c.GraceSeconds = 1, 2, 3600 })
	after := a.Cursor(l.ctx, t)
	a.Send(l.ctx, t, cmd)
	select {
	case <-started:
	case <-l.ctx.Done():
		t.Fatalf("the rotation did not reach %s", at)
	}
	b := RunAgent(t, l.n, l.rec, WithIdentity(a.Identity), WithName(string(a.Kind)+"-agent-2"))
	l.more = append(l.more, b)
	killed.Store(true)
	a.Kill()
	close(release)

	r := b.Await(l.ctx, t, after, For(tenant, 1, events.OutcomeRotated, events.OutcomeRotateFailed))
	l.want(t, r, events.OutcomeRotated)
	l.checkRotated(t, r, 2)
	if r.Run < 2 {
		t.Errorf("answered with Run %d, want >= 2 (the redelivery)", r.Run)
	}
	v2 := CredentialFromSealed(b.Open(t, r.StoreResult))
	l.ownAccess(t, tenant, v2, "after the redelivered rotation, credential version 2")
	l.ownAccess(t, tenant, v1, "after the redelivered rotation, credential version 1")
	rotated := l.rec.rotated()
	if at == "verify" {
		if len(rotated) < 2 {
			t.Fatalf("Rotate returned %d credentials, want the killed run's and the redelivery's", len(rotated))
		}
		l.refused(t, tenant, rotated[0], "the killed run's half-made credential version 2")
	}
	// The rotation completes: retiring version 1 leaves version 2 alone.
	rr := l.run(t, l.command(tenant, events.ActionRetire, 0, func(c *events.StoreCommand) { c.CredentialVersion = 2 }))
	l.want(t, rr, events.OutcomeRetired)
	l.refused(t, tenant, v1, "after retired, credential version 1")
	l.ownAccess(t, tenant, v2, "after retired, credential version 2")
}

func containsInt(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// secretKeys are the credential keys (DESIGN.md §6) whose values are
// secrets.
var secretKeys = map[string]bool{"password": true, "secret_key": true, "api_key": true, "url": true}

// secretKey names the main secret of a credential.
func secretKey(c agent.Credential) string {
	for _, k := range []string{"password", "secret_key", "api_key"} {
		if _, ok := c[k]; ok {
			return k
		}
	}
	return ""
}

// CredentialFromSealed turns an opened sealed credential (JSON values)
// back into an agent.Credential: the secret keys of DESIGN.md §6 become
// secret.String, whole numbers int.
func CredentialFromSealed(m map[string]any) agent.Credential {
	c := make(agent.Credential, len(m))
	for k, v := range m {
		switch x := v.(type) {
		case string:
			if secretKeys[k] {
				c[k] = secret.String(x)
				continue
			}
		case float64:
			if x == math.Trunc(x) {
				c[k] = int(x)
				continue
			}
		}
		c[k] = v
	}
	return c
}

// lifeRecorder wraps a Store that implements the lifecycle interfaces: it
// counts calls, remembers every secret that passes, the credentials Rotate
// returned, and can hold a call (hold) to let a test kill the agent in it.
type lifeRecorder struct {
	next agent.Store

	mu      sync.Mutex
	calls   map[string]int
	seen    []string
	creds   []agent.Credential
	holdFor func(ctx context.Context, call string, tenant events.TenantID) error
}

var (
	_ agent.Store     = (*lifeRecorder)(nil)
	_ agent.Rotator   = (*lifeRecorder)(nil)
	_ agent.Suspender = (*lifeRecorder)(nil)
	_ agent.Observer  = (*lifeRecorder)(nil)
)

func newLifeRecorder(next agent.Store) *lifeRecorder {
	return &lifeRecorder{next: next, calls: map[string]int{}}
}

func (r *lifeRecorder) setHold(f func(ctx context.Context, call string, tenant events.TenantID) error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.holdFor = f
}

func (r *lifeRecorder) enter(ctx context.Context, call string, tenant events.TenantID) error {
	r.mu.Lock()
	r.calls[call]++
	hold := r.holdFor
	r.mu.Unlock()
	if hold != nil {
		return hold(ctx, call, tenant)
	}
	return nil
}

func (r *lifeRecorder) count(call string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[call]
}

func (r *lifeRecorder) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.calls {
		n += c
	}
	return n
}

func (r *lifeRecorder) add(vals ...secret.String) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range vals {
		if v := s.Reveal(); len(v) >= 8 {
			r.seen = append(r.seen, v)
		}
	}
}

func (r *lifeRecorder) addCredential(c agent.Credential) {
	for _, v := range c {
		if s, ok := v.(secret.String); ok {
			r.add(s)
		}
	}
}

func (r *lifeRecorder) secrets() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...)
}

func (r *lifeRecorder) rotated() []agent.Credential {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]agent.Credential(nil), r.creds...)
}

func (r *lifeRecorder) Kind() events.Store { return r.next.Kind() }

func (r *lifeRecorder) Ping(ctx context.Context) error { return r.next.Ping(ctx) }

func (r *lifeRecorder) Provision(ctx context.Context, req agent.ProvisionRequest) (agent.ProvisionResponse, error) {
	r.add(req.Password)
	if err := r.enter(ctx, "provision", req.Tenant); err != nil {
		return agent.ProvisionResponse{}, err
	}
	resp, err := r.next.Provision(ctx, req)
	r.addCredential(resp.Credential)
	return resp, err
}

func (r *lifeRecorder) Verify(ctx context.Context, req agent.VerifyRequest) (agent.VerifyResponse, error) {
	r.addCredential(req.Credential)
	if err := r.enter(ctx, "verify", req.Tenant); err != nil {
		return agent.VerifyResponse{}, err
	}
	return r.next.Verify(ctx, req)
}

func (r *lifeRecorder) Deprovision(ctx context.Context, req agent.DeprovisionRequest) (agent.DeprovisionResponse, error) {
	if err := r.enter(ctx, "deprovision", req.Tenant); err != nil {
		return agent.DeprovisionResponse{}, err
	}
	return r.next.Deprovision(ctx, req)
}

func (r *lifeRecorder) Rotate(ctx context.Context, req agent.RotateRequest) (agent.RotateResponse, error) {
	r.add(req.Password)
	if err := r.enter(ctx, "rotate", req.Tenant); err != nil {
		return agent.RotateResponse{}, err
	}
	rot, ok := r.next.(agent.Rotator)
	if !ok {
		return agent.RotateResponse{}, fmt.Errorf("storetest: %T does not implement agent.Rotator", r.next)
	}
	resp, err := rot.Rotate(ctx, req)
	r.addCredential(resp.Credential)
	if err == nil {
		r.mu.Lock()
		r.creds = append(r.creds, resp.Credential)
		r.mu.Unlock()
	}
	return resp, err
}

func (r *lifeRecorder) Retire(ctx context.Context, req agent.RetireRequest) (agent.RetireResponse, error) {
	if err := r.enter(ctx, "retire", req.Tenant); err != nil {
		return agent.RetireResponse{}, err
	}
	rot, ok := r.next.(agent.Rotator)
	if !ok {
		return agent.RetireResponse{}, fmt.Errorf("storetest: %T does not implement agent.Rotator", r.next)
	}
	return rot.Retire(ctx, req)
}

func (r *lifeRecorder) suspender() (agent.Suspender, error) {
	s, ok := r.next.(agent.Suspender)
	if !ok {
		return nil, fmt.Errorf("storetest: %T does not implement agent.Suspender", r.next)
	}
	return s, nil
}

func (r *lifeRecorder) Suspend(ctx context.Context, req agent.SuspendRequest) error {
	if err := r.enter(ctx, "suspend", req.Tenant); err != nil {
		return err
	}
	s, err := r.suspender()
	if err != nil {
		return err
	}
	return s.Suspend(ctx, req)
}

func (r *lifeRecorder) Resume(ctx context.Context, req agent.SuspendRequest) error {
	if err := r.enter(ctx, "resume", req.Tenant); err != nil {
		return err
	}
	s, err := r.suspender()
	if err != nil {
		return err
	}
	return s.Resume(ctx, req)
}

func (r *lifeRecorder) Observe(ctx context.Context, req agent.ObserveRequest) (agent.ObserveResponse, error) {
	if err := r.enter(ctx, "observe", req.Tenant); err != nil {
		return agent.ObserveResponse{}, err
	}
	o, ok := r.next.(agent.Observer)
	if !ok {
		return agent.ObserveResponse{}, fmt.Errorf("storetest: %T does not implement agent.Observer", r.next)
	}
	return o.Observe(ctx, req)
}
