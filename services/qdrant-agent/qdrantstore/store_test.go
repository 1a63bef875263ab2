package qdrantstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/qdrant/go-client/qdrant"
	"google.golang.org/grpc/codes"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/testkit"
	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// Every test starts its own Qdrant through testkit.StartQdrant — real
// Qdrant via testcontainers where Docker answers, the stand-in otherwise —
// and names which in its subtest ("qdrant=qdrant-standin" or
// "qdrant=qdrant (testcontainers)").

// testVectorSize keeps test collections small; the benchmark uses the
// production default.
const testVectorSize = 8

// env is one Qdrant server with a Store on it.
type env struct {
	q     *testkit.Qdrant
	store *Store
	admin *qdrant.Client // no key of its own: calls carry withKey
}

// withQdrant runs fn in a subtest named after the Qdrant that ran.
func withQdrant(t *testing.T, fn func(t *testing.T, e *env)) {
	t.Helper()
	q := testkit.StartQdrant(t)
	t.Run("qdrant="+q.Kind, func(t *testing.T) {
		fn(t, newEnv(t, q, nil))
	})
}

func newEnv(t testing.TB, q *testkit.Qdrant, edit func(*Config)) *env {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Host, cfg.GRPCPort, cfg.APIKey = q.Host, q.GRPCPort, secret.String(q.APIKey)
	cfg.VectorSize = testVectorSize
	if edit != nil {
		edit(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return &env{q: q, store: s, admin: q.Client(t, "")}
}

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (e *env) adminCtx(ctx context.Context) context.Context {
	return withKey(ctx, secret.String(e.q.APIKey))
}

// tenantCall returns a keyless client to the endpoint in cred and ctx
// carrying cred's JWT, as a tenant's application would connect.
func tenantCall(ctx context.Context, cred agent.Credential) (*qdrant.Client, context.Context, error) {
	port, _ := cred[CredGRPCPort].(int)
	c, err := qdrant.NewClient(&qdrant.Config{Host: cred.String(CredHost), Port: port, PoolSize: 1, SkipCompatibilityCheck: true})
	if err != nil {
		return nil, nil, err
	}
	return c, withKey(ctx, cred.Secret(CredAPIKey)), nil
}

// ownAccess upserts and queries a point in the tenant's collection with its
// credential.
func ownAccess(ctx context.Context, tenant events.TenantID, cred agent.Credential) error {
	c, as, err := tenantCall(ctx, cred)
	if err != nil {
		return err
	}
	defer c.Close()
	name := tenant.QdrantCollection()
	vec := probeVector(testVectorSize)
	if _, err := c.Upsert(as, &qdrant.UpsertPoints{CollectionName: name, Wait: qdrant.PtrOf(true), Points: []*qdrant.PointStruct{{
		Id: qdrant.NewIDNum(42), Vectors: qdrant.NewVectorsDense(vec), Payload: qdrant.NewValueMap(map[string]any{"doc": "hello"}),
	}}}); err != nil {
		return fmt.Errorf("upsert: %w", err)
	}
	hits, err := c.Query(as, &qdrant.QueryPoints{CollectionName: name, Query: qdrant.NewQueryDense(vec), Limit: qdrant.PtrOf(uint64(1))})
	if err != nil {
		return fmt.Errorf("query: %w", err)
	}
	if len(hits) != 1 || hits[0].GetId().GetNum() != 42 {
		return fmt.Errorf("query returned %v, want point 42", hits)
	}
	return nil
}

// crossAccess tries to read and write other's collection with cred; nil
// means both were denied.
func crossAccess(ctx context.Context, cred agent.Credential, other events.TenantID) error {
	c, as, err := tenantCall(ctx, cred)
	if err != nil {
		return err
	}
	defer c.Close()
	name := other.QdrantCollection()
	_, errRead := c.Scroll(as, &qdrant.ScrollPoints{CollectionName: name, Limit: qdrant.PtrOf(uint32(1))})
	_, errWrite := c.Upsert(as, &qdrant.UpsertPoints{CollectionName: name, Wait: qdrant.PtrOf(true), Points: []*qdrant.PointStruct{{
		Id: qdrant.NewIDNum(7), Vectors: qdrant.NewVectorsDense(probeVector(testVectorSize)),
	}}})
	for what, err := range map[string]error{"scroll " + name: errRead, "upsert into " + name: errWrite} {
		if code(err) != codes.PermissionDenied {
			return fmt.Errorf("%s with another tenant's token: got %v, want PermissionDenied", what, err)
		}
	}
	return nil
}

// exists reports whether the tenant's collection, marker or any revocation
// point exists.
func (e *env) exists(ctx context.Context, tenant events.TenantID) (bool, error) {
	admin := e.adminCtx(ctx)
	ok, err := e.admin.CollectionExists(admin, tenant.QdrantCollection())
	if err != nil || ok {
		return ok, err
	}
	n, err := e.admin.Count(admin, &qdrant.CountPoints{
		CollectionName: events.QdrantSystemCollection,
		Filter:         &qdrant.Filter{Must: []*qdrant.Condition{qdrant.NewMatchKeyword(keyTenant, tenant.String())}},
		Exact:          qdrant.PtrOf(true),
	})
	if isNotFound(err) {
		return false, nil
	}
	return n > 0, err
}

// foreignPoint is what createForeign writes into the foreign collection.
var foreignPoint = map[string]any{"owner": "someone-else"}

// createForeign makes tenant_<id> as another system would: no marker, no
// metadata, one point.
func (e *env) createForeign(ctx context.Context, tenant events.TenantID) error {
	admin := e.adminCtx(ctx)
	name := tenant.QdrantCollection()
	if err := e.admin.CreateCollection(admin, &qdrant.CreateCollection{
		CollectionName: name,
		VectorsConfig:  qdrant.NewVectorsConfig(&qdrant.VectorParams{Size: 4, Distance: qdrant.Distance_Euclid}),
	}); err != nil {
		return err
	}
	_, err := e.admin.Upsert(admin, &qdrant.UpsertPoints{CollectionName: name, Wait: qdrant.PtrOf(true), Points: []*qdrant.PointStruct{{
		Id: qdrant.NewIDNum(1), Vectors: qdrant.NewVectors(1, 2, 3, 4), Payload: qdrant.NewValueMap(foreignPoint),
	}}})
	return err
}

// foreignIntact checks the foreign collection is as createForeign left it,
// and that tenantprov recorded nothing about it.
func (e *env) foreignIntact(ctx context.Context, tenant events.TenantID) error {
	admin := e.adminCtx(ctx)
	name := tenant.QdrantCollection()
	info, err := e.admin.GetCollectionInfo(admin, name)
	if err != nil {
		return fmt.Errorf("foreign collection: %w", err)
	}
	if p := info.GetConfig().GetParams().GetVectorsConfig().GetParams(); p.GetSize() != 4 || p.GetDistance() != qdrant.Distance_Euclid {
		return fmt.Errorf("foreign collection's vectors changed: %v", p)
	}
	if md := info.GetConfig().GetMetadata(); len(md) != 0 {
		return fmt.Errorf("foreign collection got metadata %v", md)
	}
	pts, err := e.admin.Scroll(admin, &qdrant.ScrollPoints{CollectionName: name, Limit: qdrant.PtrOf(uint32(10)), WithPayload: qdrant.NewWithPayload(true)})
	if err != nil {
		return err
	}
	if len(pts) != 1 || pts[0].GetId().GetNum() != 1 || pts[0].GetPayload()["owner"].GetStringValue() != "someone-else" {
		return fmt.Errorf("foreign collection's points changed: %v", pts)
	}
	m, err := e.store.getMarker(admin, tenant)
	if err != nil {
		return err
	}
	if m != nil {
		return errors.New("a tenantprov marker was written for the foreign collection")
	}
	return nil
}

// interrupt leaves what an agent that died after creating the collection
// and its marker would: no revocation point, no token.
func (e *env) interrupt(ctx context.Context, tenant events.TenantID, generation uint64, _ secret.String) error {
	admin := e.adminCtx(ctx)
	if err := e.store.ensureSystem(ctx); err != nil {
		return err
	}
	if err := e.store.createTenantCollection(admin, tenant, generation); err != nil {
		return err
	}
	return e.store.putMarker(admin, tenant, generation)
}

// harness wires the conformance suite to e.
func (e *env) harness() *storetest.Harness {
	return &storetest.Harness{
		Store:         e.store,
		OwnAccess:     ownAccess,
		CrossAccess:   crossAccess,
		Exists:        e.exists,
		CreateForeign: e.createForeign,
		ForeignIntact: e.foreignIntact,
		Interrupt:     e.interrupt,
	}
}

func provision(t *testing.T, e *env, tenant events.TenantID, gen uint64) agent.ProvisionResponse {
	t.Helper()
	pw, _ := secret.Generate()
	resp, err := e.store.Provision(testCtx(t), agent.ProvisionRequest{Tenant: tenant, Generation: gen, SagaID: "saga-test", Password: pw})
	if err != nil {
		t.Fatalf("Provision %s gen %d: %v", tenant, gen, err)
	}
	return resp
}

func deprovision(t *testing.T, e *env, tenant events.TenantID, gen uint64) agent.DeprovisionResponse {
	t.Helper()
	resp, err := e.store.Deprovision(testCtx(t), agent.DeprovisionRequest{Tenant: tenant, Generation: gen, SagaID: "saga-test"})
	if err != nil {
		t.Fatalf("Deprovision %s gen %d: %v", tenant, gen, err)
	}
	return resp
}

func verifyPasses(t *testing.T, e *env, tenant events.TenantID, cred agent.Credential) agent.VerifyResponse {
	t.Helper()
	return verifyPassesGen(t, e, tenant, 1, cred)
}

func verifyPassesGen(t *testing.T, e *env, tenant events.TenantID, gen uint64, cred agent.Credential) agent.VerifyResponse {
	t.Helper()
	v, err := e.store.Verify(testCtx(t), agent.VerifyRequest{Tenant: tenant, Generation: gen, Credential: cred})
	if err != nil {
		t.Fatalf("Verify %s: %v", tenant, err)
	}
	if !v.Passed() {
		t.Fatalf("Verify %s failed: %+v", tenant, v.Checks)
	}
	return v
}

// wantRefused asserts that cred's token no longer opens its collection,
// with the given code.
func wantRefused(t *testing.T, tenant events.TenantID, cred agent.Credential, want codes.Code) {
	t.Helper()
	err := ownAccess(testCtx(t), tenant, cred)
	if code(err) != want {
		t.Fatalf("token of %s: got %v, want %v", tenant, err, want)
	}
}

func exists(t *testing.T, e *env, tenant events.TenantID) bool {
	t.Helper()
	ok, err := e.exists(testCtx(t), tenant)
	if err != nil {
		t.Fatalf("exists %s: %v", tenant, err)
	}
	return ok
}

// TestQdrantSpecifics checks what the conformance suite leaves to each
// store: the exact credential of DESIGN.md §6, the isolation mode, token
// rotation and revocation with Qdrant's codes, Skipped naming a foreign
// collection, and a deprovision on a server tenantprov never touched.
func TestQdrantSpecifics(t *testing.T) {
	withQdrant(t, func(t *testing.T, e *env) {
		acme, beta := events.MustTenantID("acme"), events.MustTenantID("beta-2")

		t.Run("deprovision on a server tenantprov never touched", func(t *testing.T) {
			deprovision(t, e, acme, 1)
			if ok, err := e.admin.CollectionExists(e.adminCtx(testCtx(t)), events.QdrantSystemCollection); err != nil || ok {
				t.Fatalf("Deprovision created the system collection (%v, %v); it must only remove", ok, err)
			}
		})

		t.Run("provision", func(t *testing.T) {
			r := provision(t, e, acme, 1)
			if r.IsolationMode != IsolationJWTRBAC || r.Resources[ResourceIsolationMode] != IsolationJWTRBAC || r.Resources[ResourceCollection] != "tenant_acme" {
				t.Fatalf("response: mode %q, resources %v", r.IsolationMode, r.Resources)
			}
			c := r.Credential
			if c.String(CredHost) != e.q.Host || c[CredGRPCPort] != e.q.GRPCPort || c.String(CredCollection) != "tenant_acme" || c.Secret(CredAPIKey).IsZero() {
				t.Fatalf("credential: %#v", c)
			}
			if len(c) != 4 {
				t.Fatalf("credential has keys beyond DESIGN.md §6: %#v", c)
			}
			if s := fmt.Sprintf("%v %+v %#v", r, r, r); strings.Contains(s, c.Secret(CredAPIKey).Reveal()) {
				t.Fatal("the JWT shows when the response is printed")
			}
			if err := ownAccess(testCtx(t), acme, c); err != nil {
				t.Fatalf("own access: %v", err)
			}
			verifyPasses(t, e, acme, c)
		})

		t.Run("re-provision converges and rotates the token", func(t *testing.T) {
			first := provision(t, e, acme, 1).Credential
			second := provision(t, e, acme, 1).Credential
			if first.Secret(CredAPIKey).Reveal() == second.Secret(CredAPIKey).Reveal() {
				t.Fatal("re-provision returned the same token")
			}
			wantRefused(t, acme, first, codes.Unauthenticated)
			if err := ownAccess(testCtx(t), acme, second); err != nil {
				t.Fatalf("new token: %v", err)
			}
			verifyPasses(t, e, acme, second)
		})

		t.Run("deprovision revokes and removes; idempotent", func(t *testing.T) {
			cred := provision(t, e, beta, 1).Credential
			r := deprovision(t, e, beta, 1)
			if len(r.Skipped) != 0 {
				t.Fatalf("skipped %v", r.Skipped)
			}
			wantRefused(t, beta, cred, codes.Unauthenticated)
			if exists(t, e, beta) {
				t.Fatal("resources left after deprovision")
			}
			deprovision(t, e, beta, 1)
		})

		t.Run("foreign collection: conflict, left intact", func(t *testing.T) {
			tenant := events.MustTenantID("foreign")
			if err := e.createForeign(testCtx(t), tenant); err != nil {
				t.Fatal(err)
			}
			_, err := e.store.Provision(testCtx(t), agent.ProvisionRequest{Tenant: tenant, Generation: 1})
			if !errors.Is(err, agent.ErrConflict) {
				t.Fatalf("Provision over a foreign collection: %v, want ErrConflict", err)
			}
			if perm, reason := agent.Classify(err); !perm || reason != events.ReasonConflict {
				t.Fatalf("classified %v %q", perm, reason)
			}
			r := deprovision(t, e, tenant, 1)
			if len(r.Skipped) != 1 {
				t.Fatalf("Skipped = %v, want the foreign collection", r.Skipped)
			}
			if err := e.foreignIntact(testCtx(t), tenant); err != nil {
				t.Fatal(err)
			}
		})
	})
}

// TestConformance runs the shared conformance suite (testkit/storetest)
// against one Qdrant, with a fresh Store for every subtest.
func TestConformance(t *testing.T) {
	q := testkit.StartQdrant(t)
	t.Run("qdrant="+q.Kind, func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) *storetest.Harness {
			return newEnv(t, q, nil).harness()
		})
	})
}
