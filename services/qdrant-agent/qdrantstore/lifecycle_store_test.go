package qdrantstore

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qdrant/go-client/qdrant"
	"google.golang.org/grpc/codes"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

func rotate(t *testing.T, e *env, tenant events.TenantID, from, to int) agent.RotateResponse {
	t.Helper()
	pw, _ := secret.Generate()
	resp, err := e.store.Rotate(testCtx(t), agent.RotateRequest{Tenant: tenant, Generation: 1, CurrentVersion: from, Version: to, Password: pw, Grace: time.Hour})
	if err != nil {
		t.Fatalf("Rotate %s v%d→v%d: %v", tenant, from, to, err)
	}
	return resp
}

func retire(t *testing.T, e *env, tenant events.TenantID, keep int) agent.RetireResponse {
	t.Helper()
	resp, err := e.store.Retire(testCtx(t), agent.RetireRequest{Tenant: tenant, Generation: 1, Keep: keep})
	if err != nil {
		t.Fatalf("Retire %s keep v%d: %v", tenant, keep, err)
	}
	return resp
}

func observe(t *testing.T, e *env, tenant events.TenantID, version int, cred agent.Credential, repair bool) agent.ObserveResponse {
	t.Helper()
	resp, err := e.store.Observe(testCtx(t), agent.ObserveRequest{Tenant: tenant, Generation: 1, CredentialVersion: version, Credential: cred, Repair: repair})
	if err != nil {
		t.Fatalf("Observe %s: %v", tenant, err)
	}
	return resp
}

func kinds(ds []agent.Drift) []string {
	var ks []string
	for _, d := range ds {
		ks = append(ks, d.Kind)
	}
	return ks
}

// failedChecks runs Verify and returns the names of the checks that failed.
func failedChecks(t *testing.T, e *env, tenant events.TenantID, cred agent.Credential) []string {
	t.Helper()
	v, err := e.store.Verify(testCtx(t), agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: cred})
	if err != nil {
		t.Fatalf("Verify %s: %v", tenant, err)
	}
	var failed []string
	for _, c := range v.Checks {
		if !c.Passed {
			failed = append(failed, c.Name)
			t.Logf("%s: %s", c.Name, c.Detail)
		}
	}
	return failed
}

// TestRotationWithAClientConnected: an application connected with the old
// token keeps upserting and querying on its open connection through
// Rotate, the Verify of both credentials, and until Retire, with no failed
// request; after Retire the same connection's next request is refused
// (Unauthenticated: Qdrant checks value_exists on every request, so an open
// gRPC connection carries no session that outlives the token), while the
// new token works.
func TestRotationWithAClientConnected(t *testing.T) {
	withQdrant(t, func(t *testing.T, e *env) {
		acme := events.MustTenantID("acme")
		old := provision(t, e, acme, 1).Credential
		c, as, err := tenantCall(testCtx(t), old)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		name := acme.QdrantCollection()
		vec := probeVector(testVectorSize)
		request := func(i int) error {
			if _, err := c.Upsert(as, &qdrant.UpsertPoints{CollectionName: name, Wait: qdrant.PtrOf(true), Points: []*qdrant.PointStruct{{
				Id: qdrant.NewIDNum(uint64(1000 + i%50)), Vectors: qdrant.NewVectorsDense(vec),
			}}}); err != nil {
				return fmt.Errorf("upsert #%d: %w", i, err)
			}
			if _, err := c.Query(as, &qdrant.QueryPoints{CollectionName: name, Query: qdrant.NewQueryDense(vec), Limit: qdrant.PtrOf(uint64(1))}); err != nil {
				return fmt.Errorf("query #%d: %w", i, err)
			}
			return nil
		}

		var done atomic.Int64
		stop := make(chan struct{})
		result := make(chan error, 1)
		go func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					result <- nil
					return
				default:
				}
				if err := request(i); err != nil {
					result <- err
					return
				}
				done.Add(1)
			}
		}()
		// waitFor lets the client make n more requests (or fail).
		waitFor := func(n int64) {
			t.Helper()
			target := done.Load() + n
			for done.Load() < target {
				select {
				case err := <-result:
					t.Fatalf("the client with the old token failed during the grace: %v", err)
				case <-time.After(5 * time.Millisecond):
				}
			}
		}

		waitFor(10)
		next := rotate(t, e, acme, 1, 2).Credential
		waitFor(10)
		verifyPasses(t, e, acme, next)
		verifyPasses(t, e, acme, old)
		waitFor(10)
		again := rotate(t, e, acme, 1, 2).Credential // redelivered: the newest v2 wins
		waitFor(10)
		close(stop)
		if err := <-result; err != nil {
			t.Fatalf("the client with the old token failed during the grace: %v", err)
		}
		t.Logf("the old token made %d request pairs during the grace, none failed", done.Load())

		wantRefused(t, acme, next, codes.Unauthenticated) // the superseded v2
		r := retire(t, e, acme, 2)
		if !slices.Equal(r.Retired, []int{1}) {
			t.Fatalf("Retired = %v, want [1]", r.Retired)
		}
		if err := request(-1); code(err) != codes.Unauthenticated {
			t.Fatalf("the open connection with the retired token: got %v, want Unauthenticated", err)
		}
		wantRefused(t, acme, old, codes.Unauthenticated)
		if err := ownAccess(testCtx(t), acme, again); err != nil {
			t.Fatalf("the new token after Retire: %v", err)
		}
		verifyPasses(t, e, acme, again)
		if f := failedChecks(t, e, acme, old); !slices.Contains(f, agent.CheckOwnAccess) || !slices.Contains(f, CheckNoOtherToken) {
			t.Fatalf("Verify with the retired token: failed %v, want own_access and no_other_token", f)
		}
		if r := retire(t, e, acme, 2); len(r.Retired) != 0 {
			t.Fatalf("Retire again retired %v, want nothing", r.Retired)
		}
	})
}

// TestVerifyDuringGraceAcceptsOnlyRecordedVersions: during a rotation both
// recorded versions pass no_other_token; a token record the marker does
// not vouch for — an extra version, a second record of a recorded version,
// a record of the right version for another generation — still fails it.
func TestVerifyDuringGraceAcceptsOnlyRecordedVersions(t *testing.T) {
	withQdrant(t, func(t *testing.T, e *env) {
		record := func(tenant events.TenantID, version, generation int64) {
			id := mustTokenID(t)
			e.putSystemPoint(t, id, map[string]any{
				keyKind: kindToken, keyTenant: tenant.String(), keyGeneration: generation, keyTokenID: id, keyVersion: version,
				keyCollection: tenant.QdrantCollection(), keyExpiresAt: time.Now().Add(time.Hour).Unix(),
			})
		}
		for i, tc := range []struct {
			name   string
			rotate bool
			brk    func(tenant events.TenantID)
		}{
			{"a version-2 record the marker does not list (no rotation)", false, func(tn events.TenantID) { record(tn, 2, 1) }},
			{"a third version during the grace", true, func(tn events.TenantID) { record(tn, 3, 1) }},
			{"a second record of the new version", true, func(tn events.TenantID) { record(tn, 2, 1) }},
			{"a second record of the old version", true, func(tn events.TenantID) { record(tn, 1, 1) }},
			{"the marker lists a version whose record is for another generation", true, func(tn events.TenantID) {
				pts, err := e.store.tokenRecords(e.adminCtx(testCtx(t)), tn)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range pts {
					if r.version == 2 {
						r.generation = 7
						if err := e.store.writeTokenRecord(e.adminCtx(testCtx(t)), r); err != nil {
							t.Fatal(err)
						}
					}
				}
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				tenant := events.MustTenantID(fmt.Sprintf("grace-%d", i))
				old := provision(t, e, tenant, 1).Credential
				creds := []agent.Credential{old}
				if tc.rotate {
					creds = append(creds, rotate(t, e, tenant, 1, 2).Credential)
				}
				for _, c := range creds {
					verifyPasses(t, e, tenant, c)
				}
				tc.brk(tenant)
				f := failedChecks(t, e, tenant, old)
				if !slices.Contains(f, CheckNoOtherToken) {
					t.Fatalf("Verify with the old credential: failed %v, want no_other_token", f)
				}
				// Observe names it and, with repair, removes it.
				got := observe(t, e, tenant, len(creds), creds[len(creds)-1], false)
				if len(got.Drift) == 0 {
					t.Fatal("Observe reported nothing")
				}
				t.Logf("drift: %v", kinds(got.Drift))
				// Repair with the newest credential, then with the old one:
				// neither credential is ever broken by it (a duplicate of a
				// recorded version is resolved only by its own credential),
				// and afterwards both verify.
				newest := creds[len(creds)-1]
				for j := len(creds) - 1; j >= 0; j-- {
					observe(t, e, tenant, j+1, creds[j], true)
					for _, c := range creds {
						if err := ownAccess(testCtx(t), tenant, c); err != nil {
							t.Fatalf("after Observe with repair, a credential of the tenant fails: %v", err)
						}
					}
				}
				if d := observe(t, e, tenant, len(creds), newest, false).Drift; len(d) != 0 {
					t.Fatalf("after repair: drift %v", kinds(d))
				}
				for _, c := range creds {
					verifyPasses(t, e, tenant, c)
				}
			})
		}
	})
}

// TestSuspendKeepsDataAndTheSameToken: Suspend refuses the token on an
// already open connection (Unauthenticated on its next request) and on a
// new one; the point written before is readable after Resume with the very
// same token; Verify passes again; a suspended tenant cannot be rotated;
// a suspended, rotated tenant deprovisions without a trace.
func TestSuspendKeepsDataAndTheSameToken(t *testing.T) {
	withQdrant(t, func(t *testing.T, e *env) {
		acme := events.MustTenantID("acme")
		cred := provision(t, e, acme, 1).Credential
		c, as, err := tenantCall(testCtx(t), cred)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		name := acme.QdrantCollection()
		point := &qdrant.UpsertPoints{CollectionName: name, Wait: qdrant.PtrOf(true), Points: []*qdrant.PointStruct{{
			Id: qdrant.NewIDNum(7), Vectors: qdrant.NewVectorsDense(probeVector(testVectorSize)), Payload: qdrant.NewValueMap(map[string]any{"doc": "before suspend"}),
		}}}
		if _, err := c.Upsert(as, point); err != nil {
			t.Fatalf("upsert before Suspend: %v", err)
		}
		read := func() ([]*qdrant.RetrievedPoint, error) {
			return c.Get(as, &qdrant.GetPoints{CollectionName: name, Ids: []*qdrant.PointId{qdrant.NewIDNum(7)}, WithPayload: qdrant.NewWithPayload(true)})
		}

		req := agent.SuspendRequest{Tenant: acme, Generation: 1}
		if err := e.store.Suspend(testCtx(t), req); err != nil {
			t.Fatalf("Suspend: %v", err)
		}
		if _, err := read(); code(err) != codes.Unauthenticated {
			t.Fatalf("read on the open connection after Suspend: got %v, want Unauthenticated", err)
		}
		wantRefused(t, acme, cred, codes.Unauthenticated)
		if d := observe(t, e, acme, 1, cred, false).Drift; len(d) != 0 {
			t.Fatalf("Observe of a suspended tenant reports drift: %v", kinds(d))
		}
		pw, _ := secret.Generate()
		_, err = e.store.Rotate(testCtx(t), agent.RotateRequest{Tenant: acme, Generation: 1, CurrentVersion: 1, Version: 2, Password: pw})
		var pe *agent.PermanentError
		if !errors.Is(err, ErrSuspended) || !errors.As(err, &pe) {
			t.Fatalf("Rotate of a suspended tenant: %v, want a permanent ErrSuspended", err)
		}

		if err := e.store.Resume(testCtx(t), req); err != nil {
			t.Fatalf("Resume: %v", err)
		}
		pts, err := read()
		if err != nil {
			t.Fatalf("read on the open connection after Resume: %v", err)
		}
		if len(pts) != 1 || pts[0].GetPayload()["doc"].GetStringValue() != "before suspend" {
			t.Fatalf("after Resume the point written before reads %v", pts)
		}
		verifyPasses(t, e, acme, cred)

		// Rotated, then suspended: both tokens refused; deprovision removes all.
		next := rotate(t, e, acme, 1, 2).Credential
		if err := e.store.Suspend(testCtx(t), req); err != nil {
			t.Fatalf("Suspend during the grace: %v", err)
		}
		wantRefused(t, acme, cred, codes.Unauthenticated)
		wantRefused(t, acme, next, codes.Unauthenticated)
		deprovision(t, e, acme, 1)
		if exists(t, e, acme) {
			t.Fatal("a suspended, rotated tenant left something behind")
		}
		if err := e.store.Resume(testCtx(t), req); err == nil {
			t.Fatal("Resume of a deprovisioned tenant succeeded")
		}
		wantRefused(t, acme, next, codes.Unauthenticated)
	})
}

// TestRetireNeverLeavesTheTenantWithoutCredential: Retire keeping a
// version that has no token fails and revokes nothing.
func TestRetireNeverLeavesTheTenantWithoutCredential(t *testing.T) {
	withQdrant(t, func(t *testing.T, e *env) {
		acme := events.MustTenantID("acme")
		cred := provision(t, e, acme, 1).Credential
		_, err := e.store.Retire(testCtx(t), agent.RetireRequest{Tenant: acme, Generation: 1, Keep: 2})
		var pe *agent.PermanentError
		if !errors.As(err, &pe) {
			t.Fatalf("Retire keeping an unknown version: %v, want a permanent error", err)
		}
		if err := ownAccess(testCtx(t), acme, cred); err != nil {
			t.Fatalf("after the refused Retire the credential fails: %v", err)
		}
		verifyPasses(t, e, acme, cred)
	})
}

// TestRotationInterruptedKeepsOldCredential: an agent that died after
// recording the new version on the marker but before writing its token
// leaves the old credential working and verified; the next Rotate
// converges.
func TestRotationInterruptedKeepsOldCredential(t *testing.T) {
	withQdrant(t, func(t *testing.T, e *env) {
		acme := events.MustTenantID("acme")
		old := provision(t, e, acme, 1).Credential
		if err := e.store.putMarkerVersions(e.adminCtx(testCtx(t)), acme, 1, []int{1, 2}); err != nil {
			t.Fatal(err)
		}
		verifyPasses(t, e, acme, old)
		next := rotate(t, e, acme, 1, 2).Credential
		verifyPasses(t, e, acme, next)
		verifyPasses(t, e, acme, old)
	})
}

// TestObserveReportsExpiringCredential: a credential within
// QDRANT_TOKEN_EXPIRY_WARNING of its exp is reported (for tenantctl
// doctor), never "repaired"; a rotation before the grace outlasts it
// warns; a fresh one is not reported.
func TestObserveReportsExpiringCredential(t *testing.T) {
	withQdrant(t, func(t *testing.T, e *env) {
		acme := events.MustTenantID("acme")
		cred := provision(t, e, acme, 1).Credential
		if d := observe(t, e, acme, 1, cred, false).Drift; len(d) != 0 {
			t.Fatalf("fresh credential: drift %v", kinds(d))
		}
		// Eleven months and a bit later (the default window is TTL/12).
		e.store.now = func() time.Time { return time.Now().Add(e.store.cfg.TokenTTL - 24*time.Hour) }
		defer func() { e.store.now = time.Now }()
		got := observe(t, e, acme, 1, cred, true)
		if !slices.Equal(kinds(got.Drift), []string{DriftCredentialExpiring}) || len(got.Repaired) != 0 {
			t.Fatalf("drift %v, repaired %v; want only credential_expiring, nothing repaired", kinds(got.Drift), kinds(got.Repaired))
		}
		if !strings.Contains(got.Drift[0].Detail, "expires at") {
			t.Fatalf("detail %q does not say when", got.Drift[0].Detail)
		}
		pw, _ := secret.Generate()
		r, err := e.store.Rotate(testCtx(t), agent.RotateRequest{Tenant: acme, Generation: 1, CurrentVersion: 1, Version: 2, Password: pw, Grace: 48 * time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(r.Warnings, func(w string) bool { return strings.Contains(w, "before the grace") }) {
			t.Fatalf("Rotate with a grace beyond the old token's exp did not warn: %v", r.Warnings)
		}
	})
}

// TestObserveRestoresOnlyTheTenantsOwnToken: a deleted revocation point is
// restored from the credential only when the credential is one the agent
// would issue (signed with the server's key, scoped to the collection); a
// credential with escalated, re-signed claims is reported and nothing is
// written for it.
func TestObserveRestoresOnlyTheTenantsOwnToken(t *testing.T) {
	withQdrant(t, func(t *testing.T, e *env) {
		acme := events.MustTenantID("acme")
		cred := provision(t, e, acme, 1).Credential
		e.deleteSystemPoint(t, qdrant.NewIDUUID(tokenIDOf(t, cred)))
		c := claimsOf(t, cred)
		c["access"] = "m"
		bad := withToken(t, cred, c, e.q.APIKey)
		got := observe(t, e, acme, 1, bad, true)
		if !slices.Contains(kinds(got.Drift), DriftCredentialInvalid) || len(got.Repaired) != 0 {
			t.Fatalf("escalated credential: drift %v, repaired %v", kinds(got.Drift), kinds(got.Repaired))
		}
		wantRefused(t, acme, cred, codes.Unauthenticated)
		got = observe(t, e, acme, 1, cred, true)
		if !slices.Equal(kinds(got.Repaired), []string{DriftRevocationPointMissing}) {
			t.Fatalf("repaired %v, want revocation_point_missing", kinds(got.Repaired))
		}
		verifyPasses(t, e, acme, cred)
	})
}

// TestObserveRepairsMarkerDuringGrace: a marker deleted during a
// rotation's grace is rebuilt with both versions (from the credential's
// version and the tenant's records), never by revoking one of the two
// tokens.
func TestObserveRepairsMarkerDuringGrace(t *testing.T) {
	withQdrant(t, func(t *testing.T, e *env) {
		acme := events.MustTenantID("acme")
		old := provision(t, e, acme, 1).Credential
		next := rotate(t, e, acme, 1, 2).Credential
		e.deleteSystemPoint(t, markerID(acme))
		got := observe(t, e, acme, 2, next, true)
		if !slices.Equal(kinds(got.Repaired), []string{DriftMarkerMissing}) {
			t.Fatalf("repaired %v (drift %v), want marker_missing only", kinds(got.Repaired), kinds(got.Drift))
		}
		for _, c := range []agent.Credential{old, next} {
			if err := ownAccess(testCtx(t), acme, c); err != nil {
				t.Fatalf("after the marker repair a credential fails: %v", err)
			}
			verifyPasses(t, e, acme, c)
		}
		m, err := e.store.getMarker(e.adminCtx(testCtx(t)), acme)
		if err != nil || m == nil || !slices.Equal(m.versions, []int{1, 2}) {
			t.Fatalf("rebuilt marker %+v (%v), want versions [1 2]", m, err)
		}
	})
}
