package qdrantstandin_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/qdrant/go-client/qdrant"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tenantprov/tenantprov/testkit/qdrantstandin"
)

// These tests cover what only the stand-in needs to prove about itself
// (configurations StartQdrant never uses, edge cases of its store and its
// lifecycle). The behaviour shared with real Qdrant is tested in
// testkit/qdrant_test.go against whichever Qdrant runs.

const testKey = "standin-test-api-key"

type standin struct {
	srv  *qdrantstandin.Server
	port int
}

func startStandin(t *testing.T, cfg qdrantstandin.Config) *standin {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	cfg.Logf = t.Logf
	srv := qdrantstandin.New(cfg)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &standin{srv: srv, port: lis.Addr().(*net.TCPAddr).Port}
}

func (s *standin) client(t *testing.T, key string) *qdrant.Client {
	t.Helper()
	c, err := qdrant.NewClient(&qdrant.Config{Host: "127.0.0.1", Port: s.port, APIKey: key, SkipCompatibilityCheck: true})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func sign(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(testKey))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("%s: got %v (%v), want %v", what, got, err, want)
	}
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func create(t *testing.T, c *qdrant.Client, name string, size uint64, d qdrant.Distance) {
	t.Helper()
	must(t, "create "+name, c.CreateCollection(ctxFor(t), &qdrant.CreateCollection{
		CollectionName: name,
		VectorsConfig:  qdrant.NewVectorsConfig(&qdrant.VectorParams{Size: size, Distance: d}),
	}))
}

func upsert(ctx context.Context, c *qdrant.Client, coll string, pts ...*qdrant.PointStruct) error {
	_, err := c.Upsert(ctx, &qdrant.UpsertPoints{CollectionName: coll, Wait: qdrant.PtrOf(true), Points: pts})
	return err
}

func pt(id *qdrant.PointId, payload map[string]any, v ...float32) *qdrant.PointStruct {
	p := &qdrant.PointStruct{Id: id, Vectors: qdrant.NewVectors(v...)}
	if payload != nil {
		p.Payload = qdrant.NewValueMap(payload)
	}
	return p
}

func TestQdrantStandinHealthNamesItself(t *testing.T) {
	s := startStandin(t, qdrantstandin.Config{APIKey: testKey})
	h, err := s.client(t, "").HealthCheck(ctxFor(t)) // no key: HealthCheck bypasses auth
	must(t, "health", err)
	if h.GetTitle() != qdrantstandin.Title || !strings.HasSuffix(h.GetVersion(), "-standin") {
		t.Fatalf("health = %q %q, want the stand-in's name", h.GetTitle(), h.GetVersion())
	}
}

func TestQdrantStandinWithoutKeyAllowsAll(t *testing.T) {
	s := startStandin(t, qdrantstandin.Config{})
	c := s.client(t, "")
	create(t, c, "open", 2, qdrant.Distance_Dot)
	must(t, "upsert", upsert(ctxFor(t), c, "open", pt(qdrant.NewIDNum(1), nil, 1, 2)))
}

func TestQdrantStandinReadOnlyKey(t *testing.T) {
	s := startStandin(t, qdrantstandin.Config{APIKey: testKey, ReadOnlyAPIKey: "ro-key"})
	create(t, s.client(t, testKey), "docs", 2, qdrant.Distance_Dot)
	ro := s.client(t, "ro-key")
	names, err := ro.ListCollections(ctxFor(t))
	must(t, "read-only list", err)
	if len(names) != 1 {
		t.Fatalf("read-only list = %v", names)
	}
	_, err = ro.Query(ctxFor(t), &qdrant.QueryPoints{CollectionName: "docs", Query: qdrant.NewQuery(1, 0)})
	must(t, "read-only query", err)
	wantCode(t, "read-only upsert", upsert(ctxFor(t), ro, "docs", pt(qdrant.NewIDNum(1), nil, 1, 0)), codes.PermissionDenied)
	wantCode(t, "read-only delete collection", ro.DeleteCollection(ctxFor(t), "docs"), codes.PermissionDenied)
}

func TestQdrantStandinJWTNeedsRBAC(t *testing.T) {
	s := startStandin(t, qdrantstandin.Config{APIKey: testKey}) // JWTRBAC off
	_, err := s.client(t, sign(t, jwt.MapClaims{"access": "m"})).ListCollections(ctxFor(t))
	wantCode(t, "valid JWT with RBAC off", err, codes.Unauthenticated)
}

func TestQdrantStandinClaims(t *testing.T) {
	s := startStandin(t, qdrantstandin.Config{APIKey: testKey, JWTRBAC: true})
	create(t, s.client(t, testKey), "c1", 2, qdrant.Distance_Dot)
	now := time.Now()
	cases := []struct {
		name   string
		claims jwt.MapClaims
		want   codes.Code
	}{
		{"no access claim means manage", jwt.MapClaims{}, codes.OK},
		{"no exp never expires", jwt.MapClaims{"access": "r"}, codes.OK},
		{"exp inside the 30s leeway", jwt.MapClaims{"access": "r", "exp": now.Add(-10 * time.Second).Unix()}, codes.OK},
		{"exp past the leeway", jwt.MapClaims{"access": "r", "exp": now.Add(-40 * time.Second).Unix()}, codes.PermissionDenied},
		{"fractional exp does not parse", jwt.MapClaims{"access": "r", "exp": 1.5e10 + 0.5}, codes.Unauthenticated},
		{"unknown global mode", jwt.MapClaims{"access": "rw"}, codes.Unauthenticated},
		{"unknown collection mode", jwt.MapClaims{"access": []map[string]string{{"collection": "c1", "access": "m"}}}, codes.Unauthenticated},
		{"duplicate collection", jwt.MapClaims{"access": []map[string]string{{"collection": "c1", "access": "r"}, {"collection": "c1", "access": "rw"}}}, codes.Unauthenticated},
		{"points read-write mode (prw)", jwt.MapClaims{"access": []map[string]string{{"collection": "c1", "access": "prw"}}}, codes.OK},
		{"unknown field of an access entry ignored (serde)", jwt.MapClaims{"access": []map[string]any{{"collection": "c1", "access": "r", "snapshot_export": "yes"}}}, codes.OK},
		{"payload rule", jwt.MapClaims{"access": []map[string]any{{"collection": "c1", "access": "r", "payload": map[string]any{"a": "b"}}}}, codes.Unauthenticated},
		{"value_exists without matches", jwt.MapClaims{"value_exists": map[string]any{"collection": "c1"}}, codes.Unauthenticated},
		{"value_exists with a float value", jwt.MapClaims{"value_exists": map[string]any{"collection": "c1", "matches": []map[string]any{{"key": "a", "value": 1.5}}}}, codes.Unauthenticated},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.client(t, sign(t, tc.claims)).ListCollections(ctxFor(t))
			wantCode(t, "list", err, tc.want)
		})
	}
	t.Run("manage token creates collections", func(t *testing.T) {
		create(t, s.client(t, sign(t, jwt.MapClaims{"access": "m"})), "by_token", 2, qdrant.Distance_Dot)
	})
}

// TestQdrantStandinCollectionAccess: "prw" writes points like "rw"
// (Qdrant's CollectionAccessMode::PointsReadWrite), and listing a
// collection's aliases needs read access on it, as in Qdrant's
// do_list_collection_aliases; the stand-in has no aliases to list.
func TestQdrantStandinCollectionAccess(t *testing.T) {
	s := startStandin(t, qdrantstandin.Config{APIKey: testKey, JWTRBAC: true})
	admin := s.client(t, testKey)
	create(t, admin, "c1", 1, qdrant.Distance_Dot)
	create(t, admin, "c2", 1, qdrant.Distance_Dot)
	prw := s.client(t, sign(t, jwt.MapClaims{"access": []map[string]string{{"collection": "c1", "access": "prw"}}}))
	must(t, "prw upsert into c1", upsert(ctxFor(t), prw, "c1", pt(qdrant.NewIDNum(1), nil, 1)))
	wantCode(t, "prw upsert into c2", upsert(ctxFor(t), prw, "c2", pt(qdrant.NewIDNum(1), nil, 1)), codes.PermissionDenied)
	wantCode(t, "prw update c1", prw.UpdateCollection(ctxFor(t), &qdrant.UpdateCollection{CollectionName: "c1"}), codes.PermissionDenied)

	aliases, err := prw.ListCollectionAliases(ctxFor(t), "c1")
	must(t, "aliases of c1", err)
	if len(aliases) != 0 {
		t.Fatalf("aliases of c1 = %v", aliases)
	}
	_, err = prw.ListCollectionAliases(ctxFor(t), "c2")
	wantCode(t, "aliases of c2 without access", err, codes.PermissionDenied)
}

func TestQdrantStandinValueExistsMatching(t *testing.T) {
	s := startStandin(t, qdrantstandin.Config{APIKey: testKey, JWTRBAC: true})
	admin := s.client(t, testKey)
	create(t, admin, "rev", 1, qdrant.Distance_Dot)
	must(t, "revocation point", upsert(ctxFor(t), admin, "rev",
		pt(qdrant.NewIDNum(1), map[string]any{"tenant": "acme", "gen": 3, "tags": []any{"x", "y"}, "meta": map[string]any{"on": true}}, 1)))
	for _, tc := range []struct {
		matches []map[string]any
		want    codes.Code
	}{
		{[]map[string]any{{"key": "tenant", "value": "acme"}, {"key": "gen", "value": 3}}, codes.OK},
		{[]map[string]any{{"key": "tags", "value": "y"}, {"key": "meta.on", "value": true}}, codes.OK},
		{[]map[string]any{{"key": "tenant", "value": "acme"}, {"key": "gen", "value": 4}}, codes.Unauthenticated},
		{[]map[string]any{{"key": "gen", "value": "3"}}, codes.Unauthenticated}, // a string never matches an integer
	} {
		t.Run(fmt.Sprint(tc.matches), func(t *testing.T) {
			tok := sign(t, jwt.MapClaims{"access": "r", "value_exists": map[string]any{"collection": "rev", "matches": tc.matches}})
			_, err := s.client(t, tok).ListCollections(ctxFor(t))
			wantCode(t, "list", err, tc.want)
		})
	}
}

func TestQdrantStandinPoints(t *testing.T) {
	s := startStandin(t, qdrantstandin.Config{})
	c := s.client(t, "")
	ctx := ctxFor(t)
	create(t, c, "pts", 2, qdrant.Distance_Euclid)
	must(t, "upsert", upsert(ctx, c, "pts",
		pt(qdrant.NewID("FFFFFFFF00000000000000000000000A"), map[string]any{"k": "u"}, 5, 5), // simple form, upper case
		pt(qdrant.NewIDNum(7), map[string]any{"k": "a", "n": 7}, 1, 1),
		pt(qdrant.NewIDNum(3), map[string]any{"k": "b", "n": 3}, 0, 0),
		pt(qdrant.NewID("{00000000-0000-0000-0000-000000000001}"), map[string]any{"k": "v"}, 9, 9),
	))

	page, next, err := c.ScrollAndOffset(ctx, &qdrant.ScrollPoints{CollectionName: "pts", Limit: qdrant.PtrOf(uint32(3))})
	must(t, "scroll", err)
	var ids []string
	for _, p := range page {
		ids = append(ids, idString(p.GetId()))
	}
	if got := strings.Join(ids, ","); got != "3,7,00000000-0000-0000-0000-000000000001" {
		t.Fatalf("scroll order %s", got)
	}
	if idString(next) != "ffffffff-0000-0000-0000-00000000000a" {
		t.Fatalf("next page offset %v", next)
	}
	if page[0].GetPayload()["k"].GetStringValue() != "b" {
		t.Fatalf("scroll returns payload by default, got %v", page[0].GetPayload())
	}

	hits, err := c.Query(ctx, &qdrant.QueryPoints{CollectionName: "pts", Query: qdrant.NewQuery(0.9, 0.9), WithVectors: qdrant.NewWithVectors(true)})
	must(t, "query", err)
	if idString(hits[0].GetId()) != "7" || hits[0].GetPayload() != nil || len(hits[0].GetVectors().GetVector().GetDenseVector().GetData()) != 2 {
		t.Fatalf("euclid query: nearest is %v", hits[0])
	}
	if hits[0].GetScore() > hits[1].GetScore() {
		t.Fatalf("euclid scores must ascend: %v then %v", hits[0].GetScore(), hits[1].GetScore())
	}

	got, err := c.Get(ctx, &qdrant.GetPoints{CollectionName: "pts", Ids: []*qdrant.PointId{qdrant.NewIDNum(3), qdrant.NewIDNum(99)},
		WithPayload: qdrant.NewWithPayloadInclude("n")})
	must(t, "get", err)
	if len(got) != 1 || len(got[0].GetPayload()) != 1 || got[0].GetPayload()["n"].GetIntegerValue() != 3 {
		t.Fatalf("get with include n: %v", got)
	}

	n, err := c.Count(ctx, &qdrant.CountPoints{CollectionName: "pts", Filter: &qdrant.Filter{
		Should:  []*qdrant.Condition{qdrant.NewMatchKeywords("k", "a", "b", "u")},
		MustNot: []*qdrant.Condition{qdrant.NewRange("n", &qdrant.Range{Gt: qdrant.PtrOf(5.0)})},
	}})
	must(t, "count", err)
	if n != 2 {
		t.Fatalf("count = %d, want 2 (b and u)", n)
	}

	_, err = c.Delete(ctx, &qdrant.DeletePoints{CollectionName: "pts", Wait: qdrant.PtrOf(true),
		Points: qdrant.NewPointsSelectorFilter(&qdrant.Filter{Must: []*qdrant.Condition{qdrant.NewHasID(qdrant.NewIDNum(7))}})})
	must(t, "delete by filter", err)
	_, err = c.Delete(ctx, &qdrant.DeletePoints{CollectionName: "pts", Wait: qdrant.PtrOf(true),
		Points: qdrant.NewPointsSelector(qdrant.NewID("ffffffff-0000-0000-0000-00000000000a"))})
	must(t, "delete by id", err)
	if n, _ := c.Count(ctx, &qdrant.CountPoints{CollectionName: "pts"}); n != 2 {
		t.Fatalf("after deletes count = %d, want 2", n)
	}

	err = upsert(ctx, c, "pts", pt(qdrant.NewID("not-a-uuid"), nil, 1, 1))
	wantCode(t, "bad uuid", err, codes.InvalidArgument)
	_, err = c.Query(ctx, &qdrant.QueryPoints{CollectionName: "pts", Query: qdrant.NewQueryFusion(qdrant.Fusion_RRF)})
	wantCode(t, "fusion query", err, codes.Unimplemented)
	if !strings.Contains(status.Convert(errors.Unwrap(err)).Message(), "qdrant-standin") {
		t.Fatalf("unimplemented message should name the stand-in: %v", err)
	}
	err = upsert(ctx, c, "missing", pt(qdrant.NewIDNum(1), nil, 1, 1))
	wantCode(t, "upsert into missing collection", err, codes.NotFound)
}

func idString(id *qdrant.PointId) string {
	if u := id.GetUuid(); u != "" {
		return u
	}
	return fmt.Sprint(id.GetNum())
}

func TestQdrantStandinCollections(t *testing.T) {
	s := startStandin(t, qdrantstandin.Config{})
	c := s.client(t, "")
	ctx := ctxFor(t)
	must(t, "create", c.CreateCollection(ctx, &qdrant.CreateCollection{
		CollectionName: "meta",
		VectorsConfig:  qdrant.NewVectorsConfig(&qdrant.VectorParams{Size: 3, Distance: qdrant.Distance_Manhattan}),
		Metadata:       qdrant.NewValueMap(map[string]any{"tenant": "acme"}),
	}))
	must(t, "update", c.UpdateCollection(ctx, &qdrant.UpdateCollection{CollectionName: "meta", Metadata: qdrant.NewValueMap(map[string]any{"generation": 2})}))
	info, err := c.GetCollectionInfo(ctx, "meta")
	must(t, "get", err)
	md := info.GetConfig().GetMetadata()
	if md["tenant"].GetStringValue() != "acme" || md["generation"].GetIntegerValue() != 2 {
		t.Fatalf("metadata = %v", md)
	}
	if p := info.GetConfig().GetParams().GetVectorsConfig().GetParams(); p.GetSize() != 3 || p.GetDistance() != qdrant.Distance_Manhattan {
		t.Fatalf("params = %v", p)
	}
	for _, bad := range []*qdrant.CreateCollection{
		{CollectionName: "zero", VectorsConfig: qdrant.NewVectorsConfig(&qdrant.VectorParams{Size: 0, Distance: qdrant.Distance_Cosine})},
		{CollectionName: "nodist", VectorsConfig: qdrant.NewVectorsConfig(&qdrant.VectorParams{Size: 3})},
		{CollectionName: "bad/name", VectorsConfig: qdrant.NewVectorsConfig(&qdrant.VectorParams{Size: 3, Distance: qdrant.Distance_Cosine})},
	} {
		wantCode(t, "create "+bad.CollectionName, c.CreateCollection(ctx, bad), codes.InvalidArgument)
	}
	res, err := c.GetCollectionsClient().Delete(ctx, &qdrant.DeleteCollection{CollectionName: "never-was"})
	must(t, "delete absent", err)
	if res.GetResult() {
		t.Fatal("deleting an absent collection reported true")
	}
	must(t, "delete", c.DeleteCollection(ctx, "meta"))
}

func TestQdrantStandinConcurrent(t *testing.T) {
	s := startStandin(t, qdrantstandin.Config{})
	c := s.client(t, "")
	create(t, c, "busy", 4, qdrant.Distance_Cosine)
	ctx := ctxFor(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 8 {
		wg.Go(func() {
			for i := range 25 {
				id := uint64(w*100 + i)
				if err := upsert(ctx, c, "busy", pt(qdrant.NewIDNum(id), map[string]any{"w": w}, float32(w), float32(i), 1, 0)); err != nil {
					errs <- err
					return
				}
				if _, err := c.Query(ctx, &qdrant.QueryPoints{CollectionName: "busy", Query: qdrant.NewQuery(1, 1, 1, 1)}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n, _ := c.Count(ctx, &qdrant.CountPoints{CollectionName: "busy"}); n != 200 {
		t.Fatalf("count = %d, want 200", n)
	}
}

func TestQdrantStandinStop(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := qdrantstandin.New(qdrantstandin.Config{})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	c, err := qdrant.NewClient(&qdrant.Config{Host: "127.0.0.1", Port: lis.Addr().(*net.TCPAddr).Port, SkipCompatibilityCheck: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.HealthCheck(ctxFor(t)); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	srv.Stop() // idempotent
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve after Stop returned %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Stop")
	}
	if err := srv.Serve(lis); !errors.Is(err, grpc.ErrServerStopped) {
		t.Fatalf("Serve on a stopped server = %v, want grpc.ErrServerStopped", err)
	}
}
