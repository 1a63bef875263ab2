package miniostore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/minio/madmin-go/v3"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/signer"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// The shared tenant policy reaches the bucket named like the requesting
// user. These tests are what that rests on: the user's name cannot be
// chosen by the request, the policy is put back whenever it differs, and a
// tenant of the per-tenant layout is moved onto it.

// signedGet sends a GET of path (with query) to MinIO, signed (SigV4) with
// cred, with extra headers, and returns the status and body.
func (e *env) signedGet(t *testing.T, ctx context.Context, cred agent.Credential, path string, query url.Values, header http.Header) (int, string) {
	t.Helper()
	u := url.URL{Scheme: "http", Host: e.minio.Endpoint, Path: path, RawQuery: query.Encode()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	empty := sha256.Sum256(nil)
	req.Header.Set("X-Amz-Content-Sha256", hex.EncodeToString(empty[:]))
	req = signer.SignV4(*req, cred.String(CredAccessKey), cred.Secret(CredSecretKey).Reveal(), "", e.store.serverRegion())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, string(b)
}

// TestTenantCannotForgeItsUsername: MinIO adds a request's query
// parameters and headers to the values policy variables are taken from;
// a tenant naming another tenant's user there must still be refused that
// tenant's bucket and objects (MinIO substitutes ${aws:username} with the
// first value, its own). The same requests on the tenant's own bucket
// succeed, so the refusals are the policy's, not a signing error.
func TestTenantCannotForgeItsUsername(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	attacker, victim := events.MustTenantID("forger"), events.MustTenantID("forged")
	cred := e.provision(t, attacker, 1).Credential
	vcred := e.provision(t, victim, 1).Credential
	vc, err := tenantClient(vcred)
	if err != nil {
		t.Fatal(err)
	}
	const object = "secret.txt"
	if _, err := vc.PutObject(ctx, victim.MinIOBucket(), object, strings.NewReader("victim data"), 11, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	ac, err := tenantClient(cred)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ac.PutObject(ctx, attacker.MinIOBucket(), object, strings.NewReader("own data"), 8, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}

	forged := []struct {
		name   string
		query  url.Values
		header http.Header
	}{
		{"query username", url.Values{"username": {victim.MinIOUser()}}, nil},
		{"query aws:username", url.Values{"aws:username": {victim.MinIOUser()}}, nil},
		{"header username", nil, http.Header{"username": {victim.MinIOUser()}}},
		{"query and header", url.Values{"username": {victim.MinIOUser()}, "userid": {victim.MinIOUser()}}, http.Header{"X-Amz-Meta-Username": {victim.MinIOUser()}}},
	}
	for _, f := range forged {
		t.Run(f.name, func(t *testing.T) {
			list := url.Values{"list-type": {"2"}}
			for k, v := range f.query {
				list[k] = v
			}
			for _, tc := range []struct {
				what  string
				path  string
				query url.Values
			}{
				{"list", "/" + victim.MinIOBucket(), list},
				{"get", "/" + victim.MinIOBucket() + "/" + object, f.query},
			} {
				code, body := e.signedGet(t, ctx, cred, tc.path, tc.query, f.header)
				if code != http.StatusForbidden || !strings.Contains(body, codeAccessDenied) || strings.Contains(body, "victim data") {
					t.Errorf("%s of %s as %s with %s: %d %s, want 403 AccessDenied", tc.what, tc.path, attacker.MinIOUser(), f.name, code, body)
				}
				own := strings.Replace(tc.path, victim.MinIOBucket(), attacker.MinIOBucket(), 1)
				if code, body := e.signedGet(t, ctx, cred, own, tc.query, f.header); code != http.StatusOK {
					t.Errorf("%s of own %s with %s: %d %s, want 200 (the request is signed correctly)", tc.what, own, f.name, code, body)
				}
			}
		})
	}
}

// TestTenantPolicyIsPutBack: the shared policy widened by someone is
// written back as TenantPolicy by the next Provision (of any tenant); a
// mapping refused because the policy is missing writes it and asks again.
func TestTenantPolicyIsPutBack(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	first := events.MustTenantID("first")
	e.provision(t, first, 1)
	wide := []byte(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:*"],"Resource":["arn:aws:s3:::*"]}]}`)
	if err := e.admin.AddCannedPolicy(ctx, events.MinIOTenantPolicy, wide); err != nil {
		t.Fatal(err)
	}
	second := events.MustTenantID("second")
	cred := e.provision(t, second, 1).Credential
	info, err := e.admin.InfoCannedPolicyV2(ctx, events.MinIOTenantPolicy)
	if err != nil || !e.store.tenantPolicyExact(info.Policy) {
		t.Fatalf("shared policy after the next Provision: %s (err %v), want TenantPolicy", info.Policy, err)
	}
	e.mustVerify(t, second, cred, "after the shared policy was put back")

	// Missing when the user is mapped: MinIO refuses the mapping; the
	// policy is written and the mapping asked again.
	for _, tn := range []events.TenantID{first, second} {
		if _, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tn, Generation: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.admin.AddUser(ctx, "tenant-third", "third-secret-12345"); err != nil {
		t.Fatal(err)
	}
	if err := e.admin.RemoveCannedPolicy(ctx, events.MinIOTenantPolicy); err != nil {
		t.Fatalf("remove the unused shared policy: %v", err)
	}
	e.calls.reset()
	if err := e.store.mapTenantPolicy(ctx, "test.attach", "third"); err != nil {
		t.Fatalf("mapping with the shared policy missing: %v", err)
	}
	if got, want := e.calls.calls(), []string{"test.attach", "policy.info", "policy.add", "test.attach"}; !slices.Equal(got, want) {
		t.Errorf("calls %v, want %v (refused, policy written, asked again)", got, want)
	}
	ui, err := e.admin.GetUserInfo(ctx, "tenant-third")
	if err != nil || ui.PolicyName != events.MinIOTenantPolicy {
		t.Fatalf("user tenant-third: %+v (err %v), want %s", ui, err, events.MinIOTenantPolicy)
	}
}

// TestLegacyTenantIsMigrated: a tenant an agent before the shared policy
// provisioned (its own policy tenant-<id>-rw, mapped to its user, claimed
// by its record) fails policy_exact and nothing else; Observe reports it
// and, repairing, moves it onto the shared policy; a redelivered
// Provision does the same; Deprovision removes the legacy policy, and
// never the shared one.
func TestLegacyTenantIsMigrated(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	migrated := func(t *testing.T, tn events.TenantID, cred agent.Credential) {
		t.Helper()
		found, err := e.resources(ctx, tn)
		if err != nil || !slices.Equal(found, []string{"bucket", "user", "policy", "record"}) {
			t.Fatalf("%s after migration: %v (err %v), want bucket, user with the shared policy, record", tn, found, err)
		}
		rec, err := e.store.readRecord(ctx, tn)
		if err != nil || rec == nil || rec.Policy != events.MinIOTenantPolicy || rec.BucketCreated.IsZero() {
			t.Fatalf("%s record after migration: %+v (err %v)", tn, rec, err)
		}
		e.mustVerify(t, tn, cred, "after migration")
	}

	t.Run("observe", func(t *testing.T) {
		tn := events.MustTenantID("legacy-obs")
		cred := e.provision(t, tn, 1).Credential
		e.makeLegacy(t, ctx, tn)
		checks := e.checksByName(t, ctx, tn, cred, "on the legacy policy")
		for name, c := range checks {
			if c.Passed == (name == CheckPolicyExact) {
				t.Errorf("on the legacy policy, %s passed=%v: %s", name, c.Passed, c.Detail)
			}
		}
		obs, err := e.store.Observe(ctx, agent.ObserveRequest{Tenant: tn, Generation: 1})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(obs.Drift, func(d agent.Drift) bool {
			return d.Kind == DriftGrantChanged && d.Resource == tn.MinIOLegacyPolicy()
		}) || len(obs.Repaired) > 0 {
			t.Fatalf("Observe of a legacy tenant: drift %+v, repaired %+v", obs.Drift, obs.Repaired)
		}
		if found, _ := e.resources(ctx, tn); !slices.Contains(found, "legacy policy") {
			t.Fatalf("Observe without repair changed something: %v", found)
		}
		if _, err := e.store.Observe(ctx, agent.ObserveRequest{Tenant: tn, Generation: 1, Repair: true}); err != nil {
			t.Fatal(err)
		}
		migrated(t, tn, cred)
		if obs, err := e.store.Observe(ctx, agent.ObserveRequest{Tenant: tn, Generation: 1}); err != nil || len(obs.Drift) > 0 {
			t.Fatalf("Observe after the migration: %+v (err %v)", obs.Drift, err)
		}
	})

	t.Run("provision", func(t *testing.T) {
		tn := events.MustTenantID("legacy-prov")
		pw := mustGenerate(t)
		resp, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: tn, Generation: 1, Password: pw})
		if err != nil {
			t.Fatal(err)
		}
		e.makeLegacy(t, ctx, tn)
		if _, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: tn, Generation: 1, Password: pw}); err != nil {
			t.Fatalf("redelivered Provision of a legacy tenant: %v", err)
		}
		migrated(t, tn, resp.Credential)
	})

	t.Run("deprovision", func(t *testing.T) {
		tn := events.MustTenantID("legacy-deprov")
		e.provision(t, tn, 1)
		e.makeLegacy(t, ctx, tn)
		// The legacy policy also held by someone else: detached, so it
		// can be removed.
		if err := e.admin.AddUser(ctx, "legacy-friend", "friend-secret-1234"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.admin.AttachPolicy(ctx, madmin.PolicyAssociationReq{Policies: []string{tn.MinIOLegacyPolicy()}, User: "legacy-friend"}); err != nil {
			t.Fatal(err)
		}
		other := events.MustTenantID("bystander")
		ocred := e.provision(t, other, 1).Credential
		if _, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tn, Generation: 1}); err != nil {
			t.Fatal(err)
		}
		if found, err := e.resources(ctx, tn); err != nil || len(found) > 0 {
			t.Fatalf("after Deprovision of a legacy tenant: %v (err %v)", found, err)
		}
		if _, err := e.admin.InfoCannedPolicyV2(ctx, events.MinIOTenantPolicy); err != nil {
			t.Fatalf("shared policy after a Deprovision: %v", err)
		}
		e.mustVerify(t, other, ocred, "another tenant after the Deprovision")
	})
}
