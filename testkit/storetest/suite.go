package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// ConcurrentTenants is how many tenants the concurrency subtest provisions
// at once.
const ConcurrentTenants = 20

// Run checks the whole agent.Store contract against the harness's real
// server. newHarness is called once per subtest, with the subtest's t: it
// may start a fresh server each time or share one (every subtest uses its
// own random tenant IDs and deprovisions them when it ends).
//
// Subtests:
//   - Provision: the new credential reaches the tenant's own slice.
//   - ProvisionAgain: a second Provision of the same generation (a
//     redelivered command, with a new password) succeeds with the same
//     resources, and the new credential works.
//   - Verify: all checks pass, and agent.RequiredChecks are among them.
//   - Deprovision: nothing of the tenant is left, the old credential is
//     refused and does not pass Verify.
//   - DeprovisionAgain, DeprovisionNeverProvisioned: both succeed.
//   - ProvisionAfterDeprovision: the next generation's credential works,
//     the previous one does not.
//   - TenantsIsolated: two tenants are each denied the other's slice.
//   - ForeignResourceNeverAdopted: a resource with the tenant's name that
//     tenantprov did not create makes Provision fail with agent.ErrConflict
//     (permanent, reason "conflict"); Deprovision then succeeds and leaves
//     it exactly as it was.
//   - Concurrent: ConcurrentTenants tenants provisioned, checked and
//     deprovisioned at once.
//   - InterruptedProvisionConverges: after an agent died mid-Provision,
//     the redelivered command converges (Verify passes) and Deprovision
//     leaves nothing.
//   - InterruptedProvisionRolledBack: after an agent died mid-Provision,
//     Deprovision alone (the saga's compensation) leaves nothing.
//
// In every subtest, no text the Store returns besides the credential
// (resources, warnings, check details, errors) may contain the password,
// and a credential value holding the password must be a secret.String.
func Run(t *testing.T, newHarness func(t *testing.T) *Harness) {
	t.Helper()
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, s *suite)
	}{
		{"Provision", testProvision},
		{"ProvisionAgain", testProvisionAgain},
		{"Verify", testVerify},
		{"Deprovision", testDeprovision},
		{"DeprovisionAgain", testDeprovisionAgain},
		{"DeprovisionNeverProvisioned", testDeprovisionNeverProvisioned},
		{"ProvisionAfterDeprovision", testProvisionAfterDeprovision},
		{"TenantsIsolated", testTenantsIsolated},
		{"ForeignResourceNeverAdopted", testForeignResource},
		{"Concurrent", testConcurrent},
		{"InterruptedProvisionConverges", testInterruptedConverges},
		{"InterruptedProvisionRolledBack", testInterruptedRolledBack},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			if h == nil || h.Store == nil {
				t.Fatal("storetest: the harness must provide Store (the agent.Store under test, wired to a real server)")
			}
			if !h.Store.Kind().Valid() {
				t.Fatalf("storetest: Store.Kind() = %q, want one of %v", h.Store.Kind(), events.Stores())
			}
			timeout := h.Timeout
			if timeout <= 0 {
				timeout = DefaultTimeout
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			tc.fn(t, &suite{h: h, ctx: ctx, gens: map[events.TenantID]uint64{}})
		})
	}
}

// suite is one subtest's state.
type suite struct {
	h   *Harness
	ctx context.Context

	mu   sync.Mutex
	gens map[events.TenantID]uint64 // latest generation used per tenant
}

func (s *suite) used(id events.TenantID, gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen > s.gens[id] {
		s.gens[id] = gen
	}
}

func (s *suite) latest(id events.TenantID) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(s.gens[id], 1)
}

// need fails the subtest unless the harness provides every named probe.
func (s *suite) need(t *testing.T, probes ...string) {
	t.Helper()
	have := map[string]bool{
		"OwnAccess":     s.h.OwnAccess != nil,
		"CrossAccess":   s.h.CrossAccess != nil,
		"Exists":        s.h.Exists != nil,
		"CreateForeign": s.h.CreateForeign != nil,
		"ForeignIntact": s.h.ForeignIntact != nil,
		"Interrupt":     s.h.Interrupt != nil,
	}
	var missing []string
	for _, p := range probes {
		if !have[p] {
			missing = append(missing, "Harness."+p)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("storetest: the harness must provide %s for this subtest (see the field docs in testkit/storetest/harness.go); it is a probe against the real server, not optional", strings.Join(missing, ", "))
	}
}

// tenant returns a fresh tenant ID for this subtest and deprovisions it
// (with the latest generation used) when the subtest ends.
func (s *suite) tenant(t *testing.T, label string) events.TenantID {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	id, err := events.ParseTenantID("st-" + label + "-" + hex.EncodeToString(b[:]))
	if err != nil {
		t.Fatalf("storetest: tenant label %q: %v", label, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := s.h.Store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: id, Generation: s.latest(id), SagaID: "storetest-cleanup"}); err != nil {
			t.Errorf("cleanup: Deprovision(%s): %v", id, err)
		}
	})
	return id
}

// provisioned is what one successful Provision produced.
type provisioned struct {
	resp     agent.ProvisionResponse
	password secret.String
}

func (p provisioned) cred() agent.Credential { return p.resp.Credential }

func (s *suite) tryProvision(tenant events.TenantID, gen uint64) (provisioned, error) {
	s.used(tenant, gen)
	pw, err := secret.Generate()
	if err != nil {
		return provisioned{}, err
	}
	resp, err := s.h.Store.Provision(s.ctx, agent.ProvisionRequest{
		Tenant: tenant, Generation: gen, SagaID: fmt.Sprintf("storetest-%s-g%d", tenant, gen), Password: pw,
	})
	p := provisioned{resp: resp, password: pw}
	if err != nil {
		return p, fmt.Errorf("Provision(%s, generation %d): %w", tenant, gen, err)
	}
	if len(resp.Credential) == 0 {
		return p, fmt.Errorf("Provision(%s, generation %d) returned no credential", tenant, gen)
	}
	if len(resp.Resources) == 0 {
		return p, fmt.Errorf("Provision(%s, generation %d) returned no resources (the registry records them)", tenant, gen)
	}
	return p, leakCheck(pw, resp)
}

// provision provisions tenant or fails the test.
func (s *suite) provision(t *testing.T, tenant events.TenantID, gen uint64) provisioned {
	t.Helper()
	p, err := s.tryProvision(tenant, gen)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// leakCheck enforces that the password travels only inside the credential
// and only as a secret.String.
func leakCheck(pw secret.String, resp agent.ProvisionResponse) error {
	var errs []error
	plain := pw.Reveal()
	for k, v := range resp.Resources {
		if strings.Contains(v, plain) {
			errs = append(errs, fmt.Errorf("resource %q holds the password; resources are recorded in plain text", k))
		}
	}
	for _, w := range resp.Warnings {
		if strings.Contains(w, plain) {
			errs = append(errs, errors.New("a warning holds the password"))
		}
	}
	for k, v := range resp.Credential {
		if _, isSecret := v.(secret.String); isSecret {
			continue
		}
		if strings.Contains(fmt.Sprint(v), plain) {
			errs = append(errs, fmt.Errorf("credential key %q holds the password in a plain %T; use secret.String", k, v))
		}
	}
	return errors.Join(errs...)
}

func (s *suite) verify(t *testing.T, tenant events.TenantID, gen uint64, cred agent.Credential) agent.VerifyResponse {
	t.Helper()
	resp, err := s.h.Store.Verify(s.ctx, agent.VerifyRequest{Tenant: tenant, Generation: gen, Credential: cred})
	if err != nil {
		t.Fatalf("Verify(%s, generation %d): %v", tenant, gen, err)
	}
	return resp
}

// verifyProblems lists why resp does not pass the verification gate
// (nothing when it passes).
func verifyProblems(resp agent.VerifyResponse) []string {
	var problems []string
	for _, c := range resp.Checks {
		if !c.Passed {
			problems = append(problems, fmt.Sprintf("check %q failed: %s", c.Name, c.Detail))
		}
	}
	for _, m := range agent.MissingChecks(resp.Checks) {
		problems = append(problems, fmt.Sprintf("required check %q not reported", m))
	}
	if len(problems) == 0 && !resp.Passed() {
		problems = append(problems, "no checks reported")
	}
	return problems
}

// mustPass fails the test unless every check passed and every required
// check was reported.
func mustPass(t *testing.T, what string, resp agent.VerifyResponse) {
	t.Helper()
	if problems := verifyProblems(resp); len(problems) > 0 {
		t.Fatalf("%s: verification did not pass:\n  %s", what, strings.Join(problems, "\n  "))
	}
}

func (s *suite) deprovision(t *testing.T, tenant events.TenantID, gen uint64) agent.DeprovisionResponse {
	t.Helper()
	resp, err := s.h.Store.Deprovision(s.ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: gen, SagaID: fmt.Sprintf("storetest-%s-g%d", tenant, gen)})
	if err != nil {
		t.Fatalf("Deprovision(%s, generation %d): %v", tenant, gen, err)
	}
	return resp
}

func (s *suite) ownAccess(t *testing.T, tenant events.TenantID, cred agent.Credential, what string) {
	t.Helper()
	if err := s.h.OwnAccess(s.ctx, tenant, cred); err != nil {
		t.Fatalf("%s: the tenant's own access with its credential failed: %v", what, err)
	}
}

func (s *suite) noOwnAccess(t *testing.T, tenant events.TenantID, cred agent.Credential, what string) {
	t.Helper()
	if err := s.h.OwnAccess(s.ctx, tenant, cred); err == nil {
		t.Fatalf("%s: the credential still reads and writes the tenant's slice; it must be refused", what)
	}
}

func (s *suite) exists(t *testing.T, tenant events.TenantID, want bool, what string) {
	t.Helper()
	got, err := s.h.Exists(s.ctx, tenant)
	if err != nil {
		t.Fatalf("%s: Exists(%s): %v", what, tenant, err)
	}
	if got != want {
		if want {
			t.Fatalf("%s: Exists(%s) = false, want the tenant's resources to exist", what, tenant)
		}
		t.Fatalf("%s: Exists(%s) = true, want nothing of the tenant left in the store", what, tenant)
	}
}

func testProvision(t *testing.T, s *suite) {
	s.need(t, "OwnAccess", "Exists")
	id := s.tenant(t, "prov")
	s.exists(t, id, false, "before Provision")
	p := s.provision(t, id, 1)
	s.exists(t, id, true, "after Provision")
	s.ownAccess(t, id, p.cred(), "after Provision")
}

func testProvisionAgain(t *testing.T, s *suite) {
	s.need(t, "OwnAccess", "Exists")
	id := s.tenant(t, "again")
	first := s.provision(t, id, 1)
	second := s.provision(t, id, 1)
	if !maps.Equal(first.resp.Resources, second.resp.Resources) {
		t.Fatalf("Provision again changed the resources:\n first: %v\nsecond: %v", first.resp.Resources, second.resp.Resources)
	}
	s.exists(t, id, true, "after Provision again")
	s.ownAccess(t, id, second.cred(), "with the credential of the second Provision")
	mustPass(t, "after Provision again", s.verify(t, id, 1, second.cred()))
}

func testVerify(t *testing.T, s *suite) {
	id := s.tenant(t, "verify")
	p := s.provision(t, id, 1)
	resp := s.verify(t, id, 1, p.cred())
	mustPass(t, "Verify after Provision", resp)
	for _, c := range resp.Checks {
		if strings.Contains(c.Detail, p.password.Reveal()) {
			t.Errorf("check %q's detail holds the password", c.Name)
		}
	}
}

func testDeprovision(t *testing.T, s *suite) {
	s.need(t, "OwnAccess", "Exists")
	id := s.tenant(t, "deprov")
	p := s.provision(t, id, 1)
	s.deprovision(t, id, 1)
	s.exists(t, id, false, "after Deprovision")
	s.noOwnAccess(t, id, p.cred(), "the deprovisioned tenant's credential")
	resp, err := s.h.Store.Verify(s.ctx, agent.VerifyRequest{Tenant: id, Generation: 1, Credential: p.cred()})
	if err == nil && resp.Passed() {
		t.Fatal("Verify passes for a deprovisioned tenant; its checks must fail (or Verify must return an error)")
	}
}

func testDeprovisionAgain(t *testing.T, s *suite) {
	s.need(t, "Exists")
	id := s.tenant(t, "deagain")
	s.provision(t, id, 1)
	s.deprovision(t, id, 1)
	s.deprovision(t, id, 1)
	s.exists(t, id, false, "after Deprovision twice")
}

func testDeprovisionNeverProvisioned(t *testing.T, s *suite) {
	s.need(t, "Exists")
	id := s.tenant(t, "never")
	s.deprovision(t, id, 1)
	s.exists(t, id, false, "after Deprovision of a tenant never provisioned")
}

func testProvisionAfterDeprovision(t *testing.T, s *suite) {
	s.need(t, "OwnAccess", "Exists")
	id := s.tenant(t, "reprov")
	old := s.provision(t, id, 1)
	s.deprovision(t, id, 1)
	s.exists(t, id, false, "after Deprovision")
	fresh := s.provision(t, id, 2)
	s.ownAccess(t, id, fresh.cred(), "generation 2's credential")
	s.noOwnAccess(t, id, old.cred(), "generation 1's credential after generation 2 was provisioned")
	mustPass(t, "generation 2", s.verify(t, id, 2, fresh.cred()))
}

func testTenantsIsolated(t *testing.T, s *suite) {
	s.need(t, "OwnAccess", "CrossAccess")
	a, b := s.tenant(t, "iso-a"), s.tenant(t, "iso-b")
	pa, pb := s.provision(t, a, 1), s.provision(t, b, 1)
	if err := s.h.CrossAccess(s.ctx, pa.cred(), b); err != nil {
		t.Errorf("%s's credential reaches %s's slice: %v", a, b, err)
	}
	if err := s.h.CrossAccess(s.ctx, pb.cred(), a); err != nil {
		t.Errorf("%s's credential reaches %s's slice: %v", b, a, err)
	}
	s.ownAccess(t, a, pa.cred(), "tenant a after the cross-access attempts")
	s.ownAccess(t, b, pb.cred(), "tenant b after the cross-access attempts")
}

func testForeignResource(t *testing.T, s *suite) {
	s.need(t, "CreateForeign", "ForeignIntact")
	id := s.tenant(t, "foreign")
	if err := s.h.CreateForeign(s.ctx, id); err != nil {
		t.Fatalf("CreateForeign(%s): %v", id, err)
	}
	if err := s.h.ForeignIntact(s.ctx, id); err != nil {
		t.Fatalf("ForeignIntact right after CreateForeign: %v (the probe itself is wrong)", err)
	}
	p, err := s.tryProvision(id, 1)
	if err == nil {
		t.Fatalf("Provision over a foreign resource succeeded (resources %v); it must fail with agent.ErrConflict", p.resp.Resources)
	}
	if !errors.Is(err, agent.ErrConflict) {
		t.Fatalf("Provision over a foreign resource: error %v does not match agent.ErrConflict", err)
	}
	if permanent, reason := agent.Classify(err); !permanent || reason != events.ReasonConflict {
		t.Fatalf("Classify(conflict) = permanent %v, reason %q; want permanent, %q", permanent, reason, events.ReasonConflict)
	}
	if strings.Contains(err.Error(), p.password.Reveal()) {
		t.Error("the conflict error holds the password")
	}
	if err := s.h.ForeignIntact(s.ctx, id); err != nil {
		t.Fatalf("the failed Provision changed the foreign resource: %v", err)
	}
	resp := s.deprovision(t, id, 1)
	if err := s.h.ForeignIntact(s.ctx, id); err != nil {
		t.Fatalf("Deprovision changed the foreign resource: %v", err)
	}
	if len(resp.Skipped) == 0 {
		t.Logf("note: Deprovision left the foreign resource alone but did not name it in Skipped")
	}
}

func testConcurrent(t *testing.T, s *suite) {
	s.need(t, "OwnAccess", "Exists")
	ids := make([]events.TenantID, ConcurrentTenants)
	for i := range ids {
		ids[i] = s.tenant(t, fmt.Sprintf("con%02d", i))
	}
	creds := make([]agent.Credential, len(ids))
	errs := make([]error, len(ids))
	parallel := func(f func(i int) error) {
		var wg sync.WaitGroup
		for i := range ids {
			wg.Go(func() { errs[i] = f(i) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
	}
	parallel(func(i int) error {
		p, err := s.tryProvision(ids[i], 1)
		creds[i] = p.cred()
		return err
	})
	parallel(func(i int) error {
		if err := s.h.OwnAccess(s.ctx, ids[i], creds[i]); err != nil {
			return fmt.Errorf("%s: own access: %w", ids[i], err)
		}
		return nil
	})
	parallel(func(i int) error {
		resp, err := s.h.Store.Verify(s.ctx, agent.VerifyRequest{Tenant: ids[i], Generation: 1, Credential: creds[i]})
		if err != nil {
			return fmt.Errorf("%s: Verify: %w", ids[i], err)
		}
		if problems := verifyProblems(resp); len(problems) > 0 {
			return fmt.Errorf("%s: verification did not pass: %s", ids[i], strings.Join(problems, "; "))
		}
		return nil
	})
	parallel(func(i int) error {
		_, err := s.h.Store.Deprovision(s.ctx, agent.DeprovisionRequest{Tenant: ids[i], Generation: 1, SagaID: "storetest-concurrent"})
		return err
	})
	left := slices.DeleteFunc(slices.Clone(ids), func(id events.TenantID) bool {
		ok, err := s.h.Exists(s.ctx, id)
		if err != nil {
			t.Errorf("Exists(%s): %v", id, err)
		}
		return !ok
	})
	if len(left) > 0 {
		t.Fatalf("after concurrent Deprovision, resources remain for %v", left)
	}
}

func testInterruptedConverges(t *testing.T, s *suite) {
	s.need(t, "Interrupt", "OwnAccess", "Exists")
	id := s.tenant(t, "intr")
	s.interrupt(t, id)
	// The redelivered command comes with a new password: the runtime
	// generates one per delivery.
	p := s.provision(t, id, 1)
	mustPass(t, "Provision after an interrupted one", s.verify(t, id, 1, p.cred()))
	s.ownAccess(t, id, p.cred(), "after Provision converged")
	s.deprovision(t, id, 1)
	s.exists(t, id, false, "after Deprovision of a converged tenant")
}

func testInterruptedRolledBack(t *testing.T, s *suite) {
	s.need(t, "Interrupt", "Exists")
	id := s.tenant(t, "intrb")
	s.interrupt(t, id)
	s.deprovision(t, id, 1)
	s.exists(t, id, false, "after Deprovision of an interrupted Provision")
}

func (s *suite) interrupt(t *testing.T, id events.TenantID) {
	t.Helper()
	pw, err := secret.Generate()
	if err != nil {
		t.Fatal(err)
	}
	s.used(id, 1)
	if err := s.h.Interrupt(s.ctx, id, 1, pw); err != nil {
		t.Fatalf("Interrupt(%s): %v", id, err)
	}
	ok, err := s.h.Exists(s.ctx, id)
	if err != nil {
		t.Fatalf("Exists(%s) after Interrupt: %v", id, err)
	}
	if !ok {
		t.Fatalf("after Interrupt, Exists(%s) = false: the probe must leave some of the tenant's resources behind", id)
	}
}
