package storetest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// RunLifecycle checks the optional lifecycle interfaces of DESIGN.md §10
// (agent.Rotator, agent.Suspender, agent.Observer) against the harness's
// real server. A subtest whose interface the Store does not implement
// fails: every store implements all three.
//
// Subtests:
//   - Rotate: after Rotate both credentials work and Verify passes with
//     each; after Retire the old one is refused, the new one works and
//     Verify passes; Rotate and Retire again converge.
//   - DeprovisionAfterRotate: nothing is left and both credentials are
//     refused.
//   - SuspendResume: a suspended tenant's credential is refused, Resume
//     brings the same credential back and Verify passes; both are
//     idempotent; a suspended tenant deprovisions cleanly.
//   - Observe: a fresh tenant shows no drift; each Harness.Breakages entry
//     is reported, and a repairable one is repaired (Observe then shows no
//     drift and Verify passes).
func RunLifecycle(t *testing.T, newHarness func(t *testing.T) *Harness) {
	t.Helper()
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, s *suite)
	}{
		{"Rotate", testRotate},
		{"DeprovisionAfterRotate", testDeprovisionAfterRotate},
		{"SuspendResume", testSuspendResume},
		{"Observe", testObserve},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			if h == nil || h.Store == nil {
				t.Fatal("storetest: the harness must provide Store")
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

func (s *suite) rotator(t *testing.T) agent.Rotator {
	t.Helper()
	r, ok := s.h.Store.(agent.Rotator)
	if !ok {
		t.Fatalf("%T does not implement agent.Rotator", s.h.Store)
	}
	return r
}

func (s *suite) rotate(t *testing.T, tenant events.TenantID, gen uint64, from, to int) agent.Credential {
	t.Helper()
	pw, err := secret.Generate()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.rotator(t).Rotate(s.ctx, agent.RotateRequest{Tenant: tenant, Generation: gen, CurrentVersion: from, Version: to, Password: pw, Grace: time.Hour})
	if err != nil {
		t.Fatalf("Rotate(%s, v%d→v%d): %v", tenant, from, to, err)
	}
	if resp.Credential == nil {
		t.Fatalf("Rotate(%s) returned no credential", tenant)
	}
	if err := leakCheck(pw, agent.ProvisionResponse{Credential: resp.Credential, Warnings: resp.Warnings}); err != nil {
		t.Fatalf("Rotate(%s): %v", tenant, err)
	}
	return resp.Credential
}

func (s *suite) retire(t *testing.T, tenant events.TenantID, gen uint64, keep int) {
	t.Helper()
	if _, err := s.rotator(t).Retire(s.ctx, agent.RetireRequest{Tenant: tenant, Generation: gen, Keep: keep}); err != nil {
		t.Fatalf("Retire(%s, keep v%d): %v", tenant, keep, err)
	}
}

func testRotate(t *testing.T, s *suite) {
	s.need(t, "OwnAccess", "Exists")
	tenant := s.tenant(t, "rot")
	p := s.provision(t, tenant, 1)
	defer s.deprovision(t, tenant, 1)
	v2 := s.rotate(t, tenant, 1, 1, 2)
	s.ownAccess(t, tenant, p.cred(), "during the grace, the old credential")
	s.ownAccess(t, tenant, v2, "after Rotate, the new credential")
	mustPass(t, "Verify with the new credential during the grace", s.verify(t, tenant, 1, v2))
	mustPass(t, "Verify with the old credential during the grace", s.verify(t, tenant, 1, p.cred()))

	// A redelivered Rotate converges on a fresh secret for the same version.
	v2again := s.rotate(t, tenant, 1, 1, 2)
	s.ownAccess(t, tenant, v2again, "after Rotate again, the newest secret")
	s.ownAccess(t, tenant, p.cred(), "after Rotate again, the old credential")

	s.retire(t, tenant, 1, 2)
	s.noOwnAccess(t, tenant, p.cred(), "after Retire, the old credential")
	s.ownAccess(t, tenant, v2again, "after Retire, the new credential")
	mustPass(t, "Verify after Retire", s.verify(t, tenant, 1, v2again))
	s.retire(t, tenant, 1, 2)
	s.ownAccess(t, tenant, v2again, "after Retire again, the new credential")

	// The next rotation works from version 2.
	v3 := s.rotate(t, tenant, 1, 2, 3)
	s.retire(t, tenant, 1, 3)
	s.noOwnAccess(t, tenant, v2again, "after the second Retire, version 2")
	s.ownAccess(t, tenant, v3, "after the second Retire, version 3")
	mustPass(t, "Verify after the second rotation", s.verify(t, tenant, 1, v3))
}

func testDeprovisionAfterRotate(t *testing.T, s *suite) {
	s.need(t, "OwnAccess", "Exists")
	tenant := s.tenant(t, "rotdel")
	p := s.provision(t, tenant, 1)
	v2 := s.rotate(t, tenant, 1, 1, 2)
	s.deprovision(t, tenant, 1)
	s.noOwnAccess(t, tenant, p.cred(), "after Deprovision, credential version 1")
	s.noOwnAccess(t, tenant, v2, "after Deprovision, credential version 2")
	s.exists(t, tenant, false, "after Deprovision of a rotating tenant")
}

func testSuspendResume(t *testing.T, s *suite) {
	s.need(t, "OwnAccess", "Exists")
	sp, ok := s.h.Store.(agent.Suspender)
	if !ok {
		t.Fatalf("%T does not implement agent.Suspender", s.h.Store)
	}
	tenant := s.tenant(t, "sus")
	p := s.provision(t, tenant, 1)
	req := agent.SuspendRequest{Tenant: tenant, Generation: 1}
	for i := range 2 {
		if err := sp.Suspend(s.ctx, req); err != nil {
			t.Fatalf("Suspend #%d: %v", i+1, err)
		}
	}
	s.noOwnAccess(t, tenant, p.cred(), "after Suspend, the credential")
	s.exists(t, tenant, true, "after Suspend (data untouched)")
	for i := range 2 {
		if err := sp.Resume(s.ctx, req); err != nil {
			t.Fatalf("Resume #%d: %v", i+1, err)
		}
	}
	s.ownAccess(t, tenant, p.cred(), "after Resume, the same credential")
	mustPass(t, "Verify after Resume", s.verify(t, tenant, 1, p.cred()))

	if err := sp.Suspend(s.ctx, req); err != nil {
		t.Fatalf("Suspend before Deprovision: %v", err)
	}
	s.deprovision(t, tenant, 1)
	s.exists(t, tenant, false, "after Deprovision of a suspended tenant")
}

func testObserve(t *testing.T, s *suite) {
	s.need(t, "OwnAccess", "Exists")
	ob, ok := s.h.Store.(agent.Observer)
	if !ok {
		t.Fatalf("%T does not implement agent.Observer", s.h.Store)
	}
	if len(s.h.Breakages) < 3 {
		t.Fatalf("storetest: Harness.Breakages has %d entries; give at least three kinds of drift (inward and outward)", len(s.h.Breakages))
	}
	observe := func(t *testing.T, tenant events.TenantID, cred agent.Credential, repair bool) agent.ObserveResponse {
		t.Helper()
		resp, err := ob.Observe(s.ctx, agent.ObserveRequest{Tenant: tenant, Generation: 1, CredentialVersion: 1, Credential: cred, Repair: repair})
		if err != nil {
			t.Fatalf("Observe(%s, repair=%v): %v", tenant, repair, err)
		}
		return resp
	}
	tenant := s.tenant(t, "obs")
	p := s.provision(t, tenant, 1)
	if d := observe(t, tenant, p.cred(), false).Drift; len(d) != 0 {
		t.Fatalf("Observe of a freshly provisioned tenant reports drift: %s", driftText(d))
	}
	s.deprovision(t, tenant, 1)

	for _, b := range s.h.Breakages {
		t.Run(b.Name, func(t *testing.T) {
			tenant := s.tenant(t, "drift")
			p := s.provision(t, tenant, 1)
			defer s.deprovision(t, tenant, 1)
			if err := b.Break(s.ctx, tenant, p.cred()); err != nil {
				t.Fatalf("break %q: %v", b.Name, err)
			}
			got := observe(t, tenant, p.cred(), false)
			if len(got.Drift) == 0 {
				t.Fatalf("Observe did not report %q", b.Name)
			}
			if len(got.Repaired) != 0 {
				t.Fatalf("Observe without Repair repaired something: %s", driftText(got.Repaired))
			}
			if err := noSecret(driftText(got.Drift), p.cred()); err != nil {
				t.Fatal(err)
			}
			if !b.Repairable {
				for _, d := range got.Drift {
					if d.DataLost {
						return
					}
				}
				t.Fatalf("%q loses data but no drift says DataLost: %s", b.Name, driftText(got.Drift))
			}
			rep := observe(t, tenant, p.cred(), true)
			if len(rep.Repaired) == 0 {
				t.Fatalf("Observe with Repair repaired nothing of %q (drift: %s)", b.Name, driftText(rep.Drift))
			}
			if d := observe(t, tenant, p.cred(), false).Drift; len(d) != 0 {
				t.Fatalf("after repair of %q, Observe still reports: %s", b.Name, driftText(d))
			}
			mustPass(t, "Verify after repair of "+b.Name, s.verify(t, tenant, 1, p.cred()))
		})
	}
}

func driftText(ds []agent.Drift) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = fmt.Sprintf("%s %s: %s", d.Kind, d.Resource, d.Detail)
	}
	return strings.Join(parts, "; ")
}

// noSecret fails when text holds any secret value of cred.
func noSecret(text string, cred agent.Credential) error {
	for k, v := range cred {
		if sv, ok := v.(secret.String); ok && sv.Reveal() != "" && strings.Contains(text, sv.Reveal()) {
			return fmt.Errorf("drift report contains the secret %q of the credential", k)
		}
	}
	return nil
}
