package qdrantstandin_test

import (
	"strings"
	"testing"

	"github.com/qdrant/go-client/qdrant"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tenantprov/tenantprov/testkit/qdrantstandin"
)

func TestStrictMode(t *testing.T) {
	s := startStandin(t, qdrantstandin.Config{APIKey: testKey})
	c := s.client(t, testKey)
	ctx := ctxFor(t)
	must(t, "create", c.CreateCollection(ctx, &qdrant.CreateCollection{
		CollectionName:   "limited",
		VectorsConfig:    qdrant.NewVectorsConfig(&qdrant.VectorParams{Size: 2, Distance: qdrant.Distance_Dot}),
		StrictModeConfig: &qdrant.StrictModeConfig{Enabled: qdrant.PtrOf(true), MaxPointsCount: qdrant.PtrOf(uint64(3)), UpsertMaxBatchsize: qdrant.PtrOf(uint64(2))},
	}))
	pt := func(id uint64, payload map[string]any) *qdrant.PointStruct {
		return &qdrant.PointStruct{Id: qdrant.NewIDNum(id), Vectors: qdrant.NewVectors(1, 0), Payload: qdrant.NewValueMap(payload)}
	}
	forbidden := func(what string, err error, text string) {
		t.Helper()
		wantCode(t, what, err, codes.PermissionDenied)
		if msg := status.Convert(err).Message(); !strings.Contains(msg, "desc = Forbidden: ") && !strings.HasPrefix(msg, "Forbidden: ") || !strings.Contains(msg, text) {
			t.Fatalf("%s: message %q, want Forbidden: … %s", what, msg, text)
		}
	}
	must(t, "upsert 2", upsert(ctx, c, "limited", pt(1, nil), pt(2, nil)))
	forbidden("a batch of 3 over upsert_max_batchsize 2", upsert(ctx, c, "limited", pt(3, nil), pt(4, nil), pt(5, nil)), "Upsert limit exceeded")
	must(t, "upsert the third point", upsert(ctx, c, "limited", pt(3, nil)))
	forbidden("a fourth point over max_points_count 3", upsert(ctx, c, "limited", pt(4, nil)), "Max points count exceeded")
	must(t, "overwrite an existing point at the limit", upsert(ctx, c, "limited", pt(3, map[string]any{"a": "b"})))
	if n, err := c.Count(ctx, &qdrant.CountPoints{CollectionName: "limited"}); err != nil || n != 3 {
		t.Fatalf("count = %d, %v; want 3 (the refused upserts changed nothing)", n, err)
	}

	// Update merges field by field, and is read back.
	must(t, "update", c.UpdateCollection(ctx, &qdrant.UpdateCollection{CollectionName: "limited",
		StrictModeConfig: &qdrant.StrictModeConfig{MaxPointsCount: qdrant.PtrOf(uint64(10)), MaxQueryLimit: qdrant.PtrOf(uint32(5)), MaxCollectionPayloadSizeBytes: qdrant.PtrOf(uint64(64))}}))
	info, err := c.GetCollectionInfo(ctx, "limited")
	must(t, "get", err)
	sm := info.GetConfig().GetStrictModeConfig()
	if !sm.GetEnabled() || sm.GetMaxPointsCount() != 10 || sm.GetUpsertMaxBatchsize() != 2 || sm.GetMaxQueryLimit() != 5 {
		t.Fatalf("strict mode read back %v", sm)
	}
	must(t, "a fourth point under max_points_count 10", upsert(ctx, c, "limited", pt(4, nil)))
	_, err = c.Query(ctx, &qdrant.QueryPoints{CollectionName: "limited", Limit: qdrant.PtrOf(uint64(6))})
	forbidden("a query for 6 over max_query_limit 5", err, "Limit exceeded")
	if _, err := c.Query(ctx, &qdrant.QueryPoints{CollectionName: "limited", Limit: qdrant.PtrOf(uint64(5))}); err != nil {
		t.Fatalf("a query for 5: %v", err)
	}
	forbidden("a payload over max_collection_payload_size_bytes", upsert(ctx, c, "limited", pt(5, map[string]any{"big": strings.Repeat("x", 100)})), "payload")

	// Disabled: nothing is enforced, the limits are kept.
	must(t, "disable", c.UpdateCollection(ctx, &qdrant.UpdateCollection{CollectionName: "limited", StrictModeConfig: &qdrant.StrictModeConfig{Enabled: qdrant.PtrOf(false)}}))
	must(t, "a batch of 3 with strict mode off", upsert(ctx, c, "limited", pt(5, nil), pt(6, nil), pt(7, nil)))
	info, err = c.GetCollectionInfo(ctx, "limited")
	must(t, "get", err)
	if sm := info.GetConfig().GetStrictModeConfig(); sm.GetEnabled() || sm.GetMaxPointsCount() != 10 {
		t.Fatalf("strict mode read back %v", sm)
	}
}
