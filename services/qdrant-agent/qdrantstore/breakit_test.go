package qdrantstore

import (
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/qdrant/go-client/qdrant"
	"google.golang.org/grpc/codes"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// claimsOf decodes the claims of cred's JWT.
func claimsOf(t *testing.T, cred agent.Credential) map[string]any {
	t.Helper()
	parts := strings.Split(cred.Secret(CredAPIKey).Reveal(), ".")
	if len(parts) != 3 {
		t.Fatal("api_key is not a JWT")
	}
	return decodeSegment(t, parts[1])
}

// tokenIDOf returns the token_id cred's value_exists claim requires.
func tokenIDOf(t *testing.T, cred agent.Credential) string {
	t.Helper()
	ve, _ := claimsOf(t, cred)["value_exists"].(map[string]any)
	ms, _ := ve["matches"].([]any)
	if len(ms) != 1 {
		t.Fatalf("value_exists = %v", ve)
	}
	id, _ := ms[0].(map[string]any)["value"].(string)
	return id
}

// withToken returns a copy of cred whose api_key is claims signed with
// key: what an admin could seal as the tenant's credential.
func withToken(t *testing.T, cred agent.Credential, claims map[string]any, key string) agent.Credential {
	t.Helper()
	tok, err := sign(claims, secret.String(key))
	if err != nil {
		t.Fatal(err)
	}
	out := maps.Clone(cred)
	out[CredAPIKey] = tok
	return out
}

// putSystemPoint writes a point into the system collection with the
// admin key.
func (e *env) putSystemPoint(t *testing.T, id string, payload map[string]any) {
	t.Helper()
	_, err := e.admin.Upsert(e.adminCtx(testCtx(t)), &qdrant.UpsertPoints{
		CollectionName: events.QdrantSystemCollection,
		Wait:           qdrant.PtrOf(true),
		Points:         []*qdrant.PointStruct{{Id: qdrant.NewIDUUID(id), Vectors: qdrant.NewVectors(1), Payload: qdrant.NewValueMap(payload)}},
	})
	if err != nil {
		t.Fatalf("admin upsert into %s: %v", events.QdrantSystemCollection, err)
	}
}

// deleteSystemPoint removes a point of the system collection with the
// admin key.
func (e *env) deleteSystemPoint(t *testing.T, id *qdrant.PointId) {
	t.Helper()
	_, err := e.admin.Delete(e.adminCtx(testCtx(t)), &qdrant.DeletePoints{
		CollectionName: events.QdrantSystemCollection,
		Wait:           qdrant.PtrOf(true),
		Points:         qdrant.NewPointsSelector(id),
	})
	if err != nil {
		t.Fatalf("admin delete from %s: %v", events.QdrantSystemCollection, err)
	}
}

func mustTokenID(t *testing.T) string {
	t.Helper()
	id, err := newTokenID()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestVerifyCatchesBrokenIsolation breaks a provisioned tenant with admin
// rights between Provision and Verify — outward (a token reaching more
// than its collection) and inward (a token that does not expire or cannot
// be revoked, another token record or point leading to the collection, the
// revocation point or marker gone) — and expects Verify to report each
// breakage as failed, naming the checks that catch it.
func TestVerifyCatchesBrokenIsolation(t *testing.T) {
	withQdrant(t, func(t *testing.T, e *env) {
		key := e.q.APIKey
		type breakage func(t *testing.T, tenant events.TenantID, cred agent.Credential) agent.Credential
		cases := []struct {
			name  string
			brk   breakage
			fails []string // checks that must fail
		}{
			{"token without exp sealed as the credential", func(t *testing.T, _ events.TenantID, cred agent.Credential) agent.Credential {
				c := claimsOf(t, cred)
				delete(c, "exp")
				return withToken(t, cred, c, key)
			}, []string{CheckTokenScoped}},
			{"token expiring beyond QDRANT_TOKEN_TTL", func(t *testing.T, _ events.TenantID, cred agent.Credential) agent.Credential {
				c := claimsOf(t, cred)
				c["exp"] = time.Now().Add(2 * e.store.cfg.TokenTTL).Unix()
				return withToken(t, cred, c, key)
			}, []string{CheckTokenScoped, CheckNoOtherToken}}, // the record's expiry no longer matches either
			{"global manage token", func(t *testing.T, _ events.TenantID, cred agent.Credential) agent.Credential {
				c := claimsOf(t, cred)
				c["access"] = "m"
				return withToken(t, cred, c, key)
			}, []string{CheckTokenScoped, agent.CheckCanaryDenied, agent.CheckAdminDenied}},
			{"global read token", func(t *testing.T, _ events.TenantID, cred agent.Credential) agent.Credential {
				c := claimsOf(t, cred)
				c["access"] = "r"
				return withToken(t, cred, c, key)
			}, []string{CheckTokenScoped, agent.CheckOwnAccess, agent.CheckCanaryDenied}},
			{"token without access claim (Qdrant: global manage)", func(t *testing.T, _ events.TenantID, cred agent.Credential) agent.Credential {
				c := claimsOf(t, cred)
				delete(c, "access")
				return withToken(t, cred, c, key)
			}, []string{CheckTokenScoped, agent.CheckCanaryDenied, agent.CheckAdminDenied}},
			{"token naming two collections", func(t *testing.T, tenant events.TenantID, cred agent.Credential) agent.Credential {
				c := claimsOf(t, cred)
				c["access"] = []map[string]string{
					{"collection": tenant.QdrantCollection(), "access": "rw"},
					{"collection": events.CanaryCollection, "access": "r"},
				}
				return withToken(t, cred, c, key)
			}, []string{CheckTokenScoped, agent.CheckCanaryDenied}},
			{"token without value_exists (cannot be revoked)", func(t *testing.T, _ events.TenantID, cred agent.Credential) agent.Credential {
				c := claimsOf(t, cred)
				delete(c, "value_exists")
				return withToken(t, cred, c, key)
			}, []string{CheckTokenScoped, CheckNoOtherToken}},
			{"second live token record naming the collection", func(t *testing.T, tenant events.TenantID, cred agent.Credential) agent.Credential {
				id := mustTokenID(t)
				e.putSystemPoint(t, id, map[string]any{
					keyKind: kindToken, keyTenant: tenant.String(), keyGeneration: int64(1), keyTokenID: id,
					keyCollection: tenant.QdrantCollection(), keyExpiresAt: time.Now().Add(time.Hour).Unix(),
				})
				return cred
			}, []string{CheckNoOtherToken}},
			{"another tenant's token record naming the collection", func(t *testing.T, tenant events.TenantID, cred agent.Credential) agent.Credential {
				id := mustTokenID(t)
				e.putSystemPoint(t, id, map[string]any{
					keyKind: kindToken, keyTenant: "someone-else", keyGeneration: int64(1), keyTokenID: id,
					keyCollection: tenant.QdrantCollection(),
				})
				return cred
			}, []string{CheckNoOtherToken}},
			{"second point carrying the credential's token_id", func(t *testing.T, _ events.TenantID, cred agent.Credential) agent.Credential {
				e.putSystemPoint(t, mustTokenID(t), map[string]any{"kind": "backup", keyTokenID: tokenIDOf(t, cred)})
				return cred
			}, []string{CheckNoOtherToken}},
			{"revocation point deleted", func(t *testing.T, _ events.TenantID, cred agent.Credential) agent.Credential {
				e.deleteSystemPoint(t, qdrant.NewIDUUID(tokenIDOf(t, cred)))
				return cred
			}, []string{agent.CheckOwnAccess, CheckNoOtherToken}},
			{"revocation point's value changed", func(t *testing.T, tenant events.TenantID, cred agent.Credential) agent.Credential {
				id := tokenIDOf(t, cred)
				e.putSystemPoint(t, id, map[string]any{
					keyKind: kindToken, keyTenant: tenant.String(), keyGeneration: int64(1), keyTokenID: mustTokenID(t),
					keyCollection: tenant.QdrantCollection(), keyExpiresAt: int64(claimsOf(t, cred)["exp"].(float64)),
				})
				return cred
			}, []string{agent.CheckOwnAccess, CheckNoOtherToken}},
			{"marker of origin deleted", func(t *testing.T, tenant events.TenantID, cred agent.Credential) agent.Credential {
				e.deleteSystemPoint(t, markerID(tenant))
				return cred
			}, []string{CheckNoOtherToken}},
			{"credential signed with another key", func(t *testing.T, _ events.TenantID, cred agent.Credential) agent.Credential {
				return withToken(t, cred, claimsOf(t, cred), "not-the-server-key-"+strings.Repeat("y", 24))
			}, []string{agent.CheckOwnAccess, CheckTokenScoped}},
		}
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				tenant := events.MustTenantID(fmt.Sprintf("broken-%d", i))
				cred := provision(t, e, tenant, 1).Credential
				before := verifyPasses(t, e, tenant, cred)
				if len(before.Checks) != 6 {
					t.Fatalf("Verify of an intact tenant reported %d checks, want 6 (four outward, two inward): %+v", len(before.Checks), before.Checks)
				}

				bad := tc.brk(t, tenant, cred)
				v, err := e.store.Verify(testCtx(t), agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: bad})
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if v.Passed() {
					t.Fatalf("Verify passed a broken tenant: %+v", v.Checks)
				}
				got := map[string]events.Check{}
				for _, c := range v.Checks {
					got[c.Name] = c
				}
				for _, name := range tc.fails {
					c, ok := got[name]
					if !ok || c.Passed {
						t.Errorf("check %s: reported %v, passed %v (%s); want failed", name, ok, c.Passed, c.Detail)
					}
				}
				for _, c := range v.Checks {
					for _, tok := range []agent.Credential{cred, bad} {
						if strings.Contains(c.Detail, tok.Secret(CredAPIKey).Reveal()) {
							t.Fatalf("check %s detail shows the token", c.Name)
						}
					}
					if !c.Passed {
						t.Logf("%s: %s", c.Name, c.Detail)
					}
				}
			})
		}
	})
}

// TestDeprovisionLeavesNoWayBack: a token stays valid while any point
// carries its token_id, whatever else the point says. Deprovision must
// delete every such point — here an operator's copy of the revocation
// point — and never succeed while the token could still work: otherwise
// the old token comes back to life on the collection of the next
// generation.
func TestDeprovisionLeavesNoWayBack(t *testing.T) {
	withQdrant(t, func(t *testing.T, e *env) {
		acme := events.MustTenantID("acme")
		old := provision(t, e, acme, 1).Credential
		e.putSystemPoint(t, mustTokenID(t), map[string]any{"kind": "backup", keyTokenID: tokenIDOf(t, old)})
		// A forged token record of no generation naming the collection.
		stray := mustTokenID(t)
		e.putSystemPoint(t, stray, map[string]any{keyKind: kindToken, keyTenant: acme.String(), keyTokenID: stray, keyCollection: acme.QdrantCollection()})

		deprovision(t, e, acme, 1)
		if exists(t, e, acme) {
			t.Fatal("resources left after deprovision")
		}
		n, err := e.admin.Count(e.adminCtx(testCtx(t)), &qdrant.CountPoints{
			CollectionName: events.QdrantSystemCollection,
			Filter:         &qdrant.Filter{Should: []*qdrant.Condition{qdrant.NewMatchKeywords(keyTokenID, tokenIDOf(t, old), stray)}},
			Exact:          qdrant.PtrOf(true),
		})
		if err != nil || n != 0 {
			t.Fatalf("%d point(s) still carry a revoked token_id (err %v)", n, err)
		}

		cur := provision(t, e, acme, 2).Credential
		wantRefused(t, acme, old, codes.Unauthenticated)
		verifyPassesGen(t, e, acme, 2, cur)
	})
}

// TestTenantCannotWriteWhatTheControlPlaneTrusts: with its own rw token a
// tenant can change neither its collection's metadata (a marker of
// origin), nor the system collection (markers, token records), nor create
// a collection in another tenant's name; Qdrant requires global manage for
// collection meta operations (lib/storage/src/rbac/ops_checks.rs).
func TestTenantCannotWriteWhatTheControlPlaneTrusts(t *testing.T) {
	withQdrant(t, func(t *testing.T, e *env) {
		acme := events.MustTenantID("acme")
		cred := provision(t, e, acme, 1).Credential
		c, as, err := tenantCall(testCtx(t), cred)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		forged := qdrant.NewValueMap(map[string]any{metaManagedBy: managedBy, metaTenant: "victim", metaGeneration: int64(999999)})
		errMeta := c.UpdateCollection(as, &qdrant.UpdateCollection{CollectionName: acme.QdrantCollection(), Metadata: forged})
		_, errSystem := c.Upsert(as, &qdrant.UpsertPoints{CollectionName: events.QdrantSystemCollection, Wait: qdrant.PtrOf(true), Points: []*qdrant.PointStruct{{
			Id: markerID(acme), Vectors: qdrant.NewVectors(1), Payload: qdrant.NewValueMap(map[string]any{keyKind: kindCollection, keyTenant: "acme", keyGeneration: int64(999999)}),
		}}})
		errSquat := c.CreateCollection(as, &qdrant.CreateCollection{
			CollectionName: "tenant_victim",
			VectorsConfig:  qdrant.NewVectorsConfig(&qdrant.VectorParams{Size: testVectorSize, Distance: qdrant.Distance_Cosine}),
			Metadata:       forged,
		})
		for what, err := range map[string]error{"update own metadata": errMeta, "write the system collection": errSystem, "create tenant_victim": errSquat} {
			if code(err) != codes.PermissionDenied {
				t.Errorf("%s with the tenant's token: %v, want PermissionDenied", what, err)
			}
		}
		// Deprovision of generation 1 is not fooled and leaves nothing.
		deprovision(t, e, acme, 1)
		if exists(t, e, acme) {
			t.Fatal("resources left after deprovision")
		}
		wantRefused(t, acme, cred, codes.Unauthenticated)
		verifyPasses(t, e, events.MustTenantID("victim"), provision(t, e, events.MustTenantID("victim"), 1).Credential)
	})
}

// TestReplacedCollectionNotAdopted: an admin replaces tenantprov's
// collection by another system's collection of the same name (with its own
// metadata). The marker point left behind is stale; the foreign collection
// is a permanent conflict for the next provision, and the rollback's
// deprovision leaves it exactly as it was (and removes the stale marker).
func TestReplacedCollectionNotAdopted(t *testing.T) {
	withQdrant(t, func(t *testing.T, e *env) {
		acme := events.MustTenantID("acme")
		provision(t, e, acme, 1)
		admin := e.adminCtx(testCtx(t))
		if err := e.admin.DeleteCollection(admin, acme.QdrantCollection()); err != nil {
			t.Fatal(err)
		}
		if err := e.admin.CreateCollection(admin, &qdrant.CreateCollection{
			CollectionName: acme.QdrantCollection(),
			VectorsConfig:  qdrant.NewVectorsConfig(&qdrant.VectorParams{Size: 4, Distance: qdrant.Distance_Euclid}),
			Metadata:       qdrant.NewValueMap(map[string]any{"owner": "someone-else"}),
		}); err != nil {
			t.Fatal(err)
		}
		_, err := e.store.Provision(testCtx(t), agent.ProvisionRequest{Tenant: acme, Generation: 2})
		if perm, reason := agent.Classify(err); !errors.Is(err, agent.ErrConflict) || !perm || reason != events.ReasonConflict {
			t.Fatalf("Provision over a replaced collection: %v (permanent %v, %q), want a permanent conflict", err, perm, reason)
		}
		r := deprovision(t, e, acme, 2)
		if len(r.Skipped) != 1 {
			t.Fatalf("Skipped = %v, want the foreign collection", r.Skipped)
		}
		info, err := e.admin.GetCollectionInfo(admin, acme.QdrantCollection())
		if err != nil {
			t.Fatalf("the foreign collection is gone: %v", err)
		}
		if md := info.GetConfig().GetMetadata(); len(md) != 1 || md["owner"].GetStringValue() != "someone-else" {
			t.Fatalf("foreign metadata changed: %v", md)
		}
		if m, err := e.store.getMarker(admin, acme); err != nil || m != nil {
			t.Fatalf("stale marker left: %v %v", m, err)
		}
	})
}
