package testkit_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/qdrant/go-client/qdrant"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tenantprov/tenantprov/testkit"
)

// These tests speak gRPC over loopback through the official go-client and
// assert only on results and gRPC codes, so they hold for real Qdrant
// (Docker) and for the stand-in alike. The expected codes are Qdrant's, as
// read from its source (see the qdrantstandin package doc).

const (
	qdrantTenantColl  = "tenant_acme"
	qdrantOtherColl   = "tenant_other"
	qdrantRevocations = "tenantprov_revocations"
)

func qdrantCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// qdrantSign mints an HS256 token with the given claims.
func qdrantSign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatalf("sign JWT: %v", err)
	}
	return s
}

// qdrantTenantClaims grants rw on tenant_acme, bound to the revocation
// point of (tenant, generation) the way the qdrant-agent's credential is.
func qdrantTenantClaims(mode, tenant string, generation int) jwt.MapClaims {
	return jwt.MapClaims{
		"exp":    time.Now().Add(time.Hour).Unix(),
		"access": []map[string]string{{"collection": qdrantTenantColl, "access": mode}},
		"value_exists": map[string]any{
			"collection": qdrantRevocations,
			"matches": []map[string]any{
				{"key": "tenant", "value": tenant},
				{"key": "generation", "value": generation},
			},
		},
	}
}

func qdrantWantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("%s: got %v (%v), want %v", what, got, err, want)
	}
}

func qdrantMust(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func qdrantCreate(t *testing.T, c *qdrant.Client, name string, size uint64, d qdrant.Distance) {
	t.Helper()
	qdrantMust(t, "create "+name, c.CreateCollection(qdrantCtx(t), &qdrant.CreateCollection{
		CollectionName: name,
		VectorsConfig:  qdrant.NewVectorsConfig(&qdrant.VectorParams{Size: size, Distance: d}),
	}))
}

func qdrantUpsert(ctx context.Context, c *qdrant.Client, coll string, pts ...*qdrant.PointStruct) error {
	_, err := c.Upsert(ctx, &qdrant.UpsertPoints{CollectionName: coll, Wait: qdrant.PtrOf(true), Points: pts})
	return err
}

func qdrantQuery(ctx context.Context, c *qdrant.Client, coll string, v ...float32) ([]*qdrant.ScoredPoint, error) {
	return c.Query(ctx, &qdrant.QueryPoints{
		CollectionName: coll,
		Query:          qdrant.NewQuery(v...),
		Limit:          qdrant.PtrOf(uint64(2)),
		WithPayload:    qdrant.NewWithPayload(true),
	})
}

func qdrantRevocationPoint(id string, tenant string, generation int) *qdrant.PointStruct {
	return &qdrant.PointStruct{
		Id:      qdrant.NewID(id),
		Vectors: qdrant.NewVectors(1),
		Payload: qdrant.NewValueMap(map[string]any{"tenant": tenant, "generation": generation}),
	}
}

func TestQdrant(t *testing.T) {
	start := time.Now()
	q := testkit.StartQdrant(t)
	t.Logf("StartQdrant took %v (%s)", time.Since(start), q.Kind)

	t.Run("qdrant="+q.Kind, func(t *testing.T) {
		admin := q.Client(t, q.APIKey)
		qdrantCreate(t, admin, qdrantRevocations, 1, qdrant.Distance_Dot)
		qdrantMust(t, "revocation points", qdrantUpsert(qdrantCtx(t), admin, qdrantRevocations,
			qdrantRevocationPoint("5c56c793-69f3-4fbf-87e6-c4bf54c28c26", "acme", 1),
			qdrantRevocationPoint("0b4ad9b5-31b0-4a50-9d3c-1a2c1c1e1f01", "revokee", 1),
		))

		t.Run("admin", func(t *testing.T) { qdrantAdmin(t, q, admin) })
		t.Run("tenant-rw-token", func(t *testing.T) { qdrantTenantRW(t, q, admin) })
		t.Run("tenant-r-token", func(t *testing.T) { qdrantTenantR(t, q, admin) })
		t.Run("refused", func(t *testing.T) { qdrantRefused(t, q, admin) })
	})
}

func qdrantAdmin(t *testing.T, q *testkit.Qdrant, admin *qdrant.Client) {
	ctx := qdrantCtx(t)
	health, err := admin.HealthCheck(ctx)
	qdrantMust(t, "health check", err)
	if q.Standin() && health.GetTitle() != "qdrant-standin" {
		t.Fatalf("stand-in health title %q, want qdrant-standin", health.GetTitle())
	}
	t.Logf("health: %s %s", health.GetTitle(), health.GetVersion())

	qdrantCreate(t, admin, qdrantTenantColl, 4, qdrant.Distance_Cosine)
	qdrantCreate(t, admin, qdrantOtherColl, 4, qdrant.Distance_Cosine)

	info, err := admin.GetCollectionInfo(ctx, qdrantTenantColl)
	qdrantMust(t, "get collection", err)
	params := info.GetConfig().GetParams().GetVectorsConfig().GetParams()
	if params.GetSize() != 4 || params.GetDistance() != qdrant.Distance_Cosine {
		t.Fatalf("collection params %v, want size 4 cosine", params)
	}

	qdrantMust(t, "upsert", qdrantUpsert(ctx, admin, qdrantTenantColl,
		&qdrant.PointStruct{Id: qdrant.NewIDNum(1), Vectors: qdrant.NewVectors(1, 0, 0, 0), Payload: qdrant.NewValueMap(map[string]any{"name": "east", "n": 1})},
		&qdrant.PointStruct{Id: qdrant.NewIDNum(2), Vectors: qdrant.NewVectors(0, 1, 0, 0), Payload: qdrant.NewValueMap(map[string]any{"name": "north", "n": 2})},
		&qdrant.PointStruct{Id: qdrant.NewID("7d3f1a2e-0c4b-4e8e-9a51-2b6f0d9c1e33"), Vectors: qdrant.NewVectors(0, 0, 1, 0), Payload: qdrant.NewValueMap(map[string]any{"name": "up", "n": 3})},
	))
	hits, err := qdrantQuery(ctx, admin, qdrantTenantColl, 0.9, 0.1, 0, 0)
	qdrantMust(t, "query", err)
	if len(hits) != 2 || hits[0].GetId().GetNum() != 1 || hits[0].GetPayload()["name"].GetStringValue() != "east" {
		t.Fatalf("query: got %v, want point 1 (east) first of 2", hits)
	}
	if hits[0].GetScore() <= hits[1].GetScore() || hits[0].GetScore() > 1.0001 {
		t.Fatalf("cosine scores %v, %v: want descending, at most 1", hits[0].GetScore(), hits[1].GetScore())
	}

	filtered, err := admin.Query(ctx, &qdrant.QueryPoints{
		CollectionName: qdrantTenantColl,
		Query:          qdrant.NewQuery(1, 0, 0, 0),
		Filter:         &qdrant.Filter{Must: []*qdrant.Condition{qdrant.NewMatchKeyword("name", "up")}},
	})
	qdrantMust(t, "filtered query", err)
	if len(filtered) != 1 || filtered[0].GetId().GetUuid() != "7d3f1a2e-0c4b-4e8e-9a51-2b6f0d9c1e33" {
		t.Fatalf("filtered query: got %v, want only the uuid point", filtered)
	}

	n, err := admin.Count(ctx, &qdrant.CountPoints{
		CollectionName: qdrantTenantColl,
		Filter:         &qdrant.Filter{Must: []*qdrant.Condition{qdrant.NewMatchInt("n", 2)}},
		Exact:          qdrant.PtrOf(true),
	})
	qdrantMust(t, "count", err)
	if n != 1 {
		t.Fatalf("count n=2: got %d, want 1", n)
	}

	_, err = qdrantQuery(ctx, admin, qdrantTenantColl, 1, 0, 0)
	qdrantWantCode(t, "query with 3 dims in a 4-dim collection", err, codes.InvalidArgument)
	err = qdrantUpsert(ctx, admin, qdrantTenantColl, &qdrant.PointStruct{Id: qdrant.NewIDNum(9), Vectors: qdrant.NewVectors(1, 2)})
	qdrantWantCode(t, "upsert with 2 dims in a 4-dim collection", err, codes.InvalidArgument)

	err = admin.CreateCollection(ctx, &qdrant.CreateCollection{
		CollectionName: qdrantTenantColl,
		VectorsConfig:  qdrant.NewVectorsConfig(&qdrant.VectorParams{Size: 4, Distance: qdrant.Distance_Cosine}),
	})
	qdrantWantCode(t, "create existing collection", err, codes.AlreadyExists)
	_, err = admin.GetCollectionInfo(ctx, "tenant_missing")
	qdrantWantCode(t, "get missing collection", err, codes.NotFound)
	exists, err := admin.CollectionExists(ctx, "tenant_missing")
	qdrantMust(t, "exists missing", err)
	if exists {
		t.Fatal("tenant_missing reported as existing")
	}
}

func qdrantTenantRW(t *testing.T, q *testkit.Qdrant, admin *qdrant.Client) {
	ctx := qdrantCtx(t)
	tenant := q.Client(t, qdrantSign(t, jwt.SigningMethodHS256, []byte(q.APIKey), qdrantTenantClaims("rw", "acme", 1)))

	qdrantMust(t, "tenant upsert into own collection", qdrantUpsert(ctx, tenant, qdrantTenantColl,
		&qdrant.PointStruct{Id: qdrant.NewIDNum(10), Vectors: qdrant.NewVectors(0, 0, 0, 1), Payload: qdrant.NewValueMap(map[string]any{"name": "tenant-own"})}))
	hits, err := qdrantQuery(ctx, tenant, qdrantTenantColl, 0, 0, 0, 1)
	qdrantMust(t, "tenant query own collection", err)
	if len(hits) == 0 || hits[0].GetId().GetNum() != 10 {
		t.Fatalf("tenant query: got %v, want point 10 first", hits)
	}
	exists, err := tenant.CollectionExists(ctx, qdrantTenantColl)
	qdrantMust(t, "tenant exists own collection", err)
	if !exists {
		t.Fatal("tenant cannot see its own collection")
	}
	names, err := tenant.ListCollections(ctx)
	qdrantMust(t, "tenant list", err)
	if !slices.Equal(names, []string{qdrantTenantColl}) {
		t.Fatalf("tenant list: got %v, want only %s", names, qdrantTenantColl)
	}

	err = tenant.CreateCollection(ctx, &qdrant.CreateCollection{
		CollectionName: "tenant_acme_extra",
		VectorsConfig:  qdrant.NewVectorsConfig(&qdrant.VectorParams{Size: 4, Distance: qdrant.Distance_Cosine}),
	})
	qdrantWantCode(t, "tenant creates a collection", err, codes.PermissionDenied)
	err = tenant.DeleteCollection(ctx, qdrantTenantColl)
	qdrantWantCode(t, "tenant deletes its own collection", err, codes.PermissionDenied)
	err = tenant.DeleteCollection(ctx, qdrantOtherColl)
	qdrantWantCode(t, "tenant deletes another collection", err, codes.PermissionDenied)
	err = qdrantUpsert(ctx, tenant, qdrantOtherColl, &qdrant.PointStruct{Id: qdrant.NewIDNum(1), Vectors: qdrant.NewVectors(1, 0, 0, 0)})
	qdrantWantCode(t, "tenant upserts into another collection", err, codes.PermissionDenied)
	_, err = qdrantQuery(ctx, tenant, qdrantOtherColl, 1, 0, 0, 0)
	qdrantWantCode(t, "tenant queries another collection", err, codes.PermissionDenied)
	_, err = tenant.Delete(ctx, &qdrant.DeletePoints{CollectionName: qdrantOtherColl, Wait: qdrant.PtrOf(true), Points: qdrant.NewPointsSelector(qdrant.NewIDNum(1))})
	qdrantWantCode(t, "tenant deletes points of another collection", err, codes.PermissionDenied)
	_, err = tenant.CollectionExists(ctx, qdrantOtherColl)
	qdrantWantCode(t, "tenant checks another collection exists", err, codes.PermissionDenied)
	_, err = tenant.Delete(ctx, &qdrant.DeletePoints{CollectionName: qdrantRevocations, Wait: qdrant.PtrOf(true),
		Points: qdrant.NewPointsSelectorFilter(&qdrant.Filter{Must: []*qdrant.Condition{qdrant.NewMatchKeyword("tenant", "acme")}})})
	qdrantWantCode(t, "tenant deletes its own revocation point", err, codes.PermissionDenied)

	// The same token as a bearer token, with no api-key header.
	bearer := q.Client(t, "")
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+qdrantSign(t, jwt.SigningMethodHS256, []byte(q.APIKey), qdrantTenantClaims("rw", "acme", 1)))
	_, err = qdrantQuery(ctx, bearer, qdrantTenantColl, 0, 0, 0, 1)
	qdrantMust(t, "tenant query with Authorization: Bearer", err)
}

func qdrantTenantR(t *testing.T, q *testkit.Qdrant, admin *qdrant.Client) {
	ctx := qdrantCtx(t)
	reader := q.Client(t, qdrantSign(t, jwt.SigningMethodHS256, []byte(q.APIKey), qdrantTenantClaims("r", "acme", 1)))
	_, err := qdrantQuery(ctx, reader, qdrantTenantColl, 1, 0, 0, 0)
	qdrantMust(t, "read-only token queries", err)
	err = qdrantUpsert(ctx, reader, qdrantTenantColl, &qdrant.PointStruct{Id: qdrant.NewIDNum(11), Vectors: qdrant.NewVectors(1, 1, 0, 0)})
	qdrantWantCode(t, "read-only token upserts", err, codes.PermissionDenied)

	global := q.Client(t, qdrantSign(t, jwt.SigningMethodHS256, []byte(q.APIKey), jwt.MapClaims{"access": "r"}))
	names, err := global.ListCollections(ctx)
	qdrantMust(t, "global read token lists", err)
	if !slices.Contains(names, qdrantOtherColl) {
		t.Fatalf("global read token list %v lacks %s", names, qdrantOtherColl)
	}
	err = qdrantUpsert(ctx, global, qdrantOtherColl, &qdrant.PointStruct{Id: qdrant.NewIDNum(1), Vectors: qdrant.NewVectors(1, 0, 0, 0)})
	qdrantWantCode(t, "global read token upserts", err, codes.PermissionDenied)
}

func qdrantRefused(t *testing.T, q *testkit.Qdrant, admin *qdrant.Client) {
	key := []byte(q.APIKey)
	hourAgo := time.Now().Add(-time.Hour).Unix()
	expired := qdrantTenantClaims("rw", "acme", 1)
	expired["exp"] = hourAgo
	missingBinding := qdrantTenantClaims("rw", "acme", 1)
	missingBinding["value_exists"] = map[string]any{
		"collection": "tenantprov_no_such_collection",
		"matches":    []map[string]any{{"key": "tenant", "value": "acme"}},
	}

	cases := []struct {
		name  string
		token func(t *testing.T) string
		want  codes.Code
	}{
		{"no api key", func(*testing.T) string { return "" }, codes.Unauthenticated},
		{"wrong api key", func(*testing.T) string { return "not-the-api-key" }, codes.Unauthenticated},
		{"alg none", func(t *testing.T) string {
			return qdrantSign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, qdrantTenantClaims("rw", "acme", 1))
		}, codes.Unauthenticated},
		{"alg HS512 with the right key", func(t *testing.T) string {
			return qdrantSign(t, jwt.SigningMethodHS512, key, qdrantTenantClaims("rw", "acme", 1))
		}, codes.Unauthenticated},
		// Qdrant's JwtParser maps InvalidSignature and ExpiredSignature to
		// AuthError::Forbidden, which its gRPC middleware sends as
		// PermissionDenied.
		{"signed with another key", func(t *testing.T) string {
			return qdrantSign(t, jwt.SigningMethodHS256, []byte("not-the-api-key"), qdrantTenantClaims("rw", "acme", 1))
		}, codes.PermissionDenied},
		{"expired", func(t *testing.T) string { return qdrantSign(t, jwt.SigningMethodHS256, key, expired) }, codes.PermissionDenied},
		{"value_exists collection missing", func(t *testing.T) string {
			return qdrantSign(t, jwt.SigningMethodHS256, key, missingBinding)
		}, codes.PermissionDenied},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := q.Client(t, tc.token(t))
			_, err := qdrantQuery(qdrantCtx(t), c, qdrantTenantColl, 1, 0, 0, 0)
			qdrantWantCode(t, "query", err, tc.want)
		})
	}

	t.Run("revoked by deleting the value_exists point", func(t *testing.T) {
		ctx := qdrantCtx(t)
		c := q.Client(t, qdrantSign(t, jwt.SigningMethodHS256, key, qdrantTenantClaims("rw", "revokee", 1)))
		_, err := qdrantQuery(ctx, c, qdrantTenantColl, 1, 0, 0, 0)
		qdrantMust(t, "query before revocation", err)
		_, err = admin.Delete(ctx, &qdrant.DeletePoints{CollectionName: qdrantRevocations, Wait: qdrant.PtrOf(true),
			Points: qdrant.NewPointsSelectorFilter(&qdrant.Filter{Must: []*qdrant.Condition{qdrant.NewMatchKeyword("tenant", "revokee")}})})
		qdrantMust(t, "delete revocation point", err)
		_, err = qdrantQuery(ctx, c, qdrantTenantColl, 1, 0, 0, 0)
		qdrantWantCode(t, "query after revocation", err, codes.Unauthenticated)
	})
}

func TestQdrantStandinStartsFast(t *testing.T) {
	t.Setenv(testkit.QdrantEnv, "standin")
	start := time.Now()
	q := testkit.StartQdrant(t)
	_, err := q.Client(t, "").HealthCheck(qdrantCtx(t))
	took := time.Since(start)
	qdrantMust(t, "health check", err)
	t.Logf("stand-in up and answering in %v", took)
	if took > time.Second {
		t.Fatalf("stand-in took %v to answer, want well under a second", took)
	}
}
