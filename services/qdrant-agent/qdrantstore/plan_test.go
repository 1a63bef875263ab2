package qdrantstore

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/qdrant/go-client/qdrant"
	"google.golang.org/grpc/codes"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// snapshot is everything a dry run must not change: every collection's
// configuration (vector, metadata, strict mode) and points.
func (e *env) snapshot(t *testing.T, ctx context.Context) []string {
	t.Helper()
	admin := e.adminCtx(ctx)
	names, err := e.admin.ListCollections(admin)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range names {
		info, err := e.admin.GetCollectionInfo(admin, n)
		if err != nil {
			t.Fatal(err)
		}
		cfg := info.GetConfig()
		out = append(out, fmt.Sprintf("collection %s %v %v %v", n, cfg.GetParams().GetVectorsConfig(), cfg.GetMetadata(), cfg.GetStrictModeConfig()))
		pts, err := e.admin.Scroll(admin, &qdrant.ScrollPoints{CollectionName: n, Limit: qdrant.PtrOf(uint32(1000)), WithPayload: qdrant.NewWithPayload(true), WithVectors: qdrant.NewWithVectors(true)})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pts {
			out = append(out, fmt.Sprintf("point %s/%v %v %v", n, p.GetId(), p.GetPayload(), p.GetVectors()))
		}
	}
	return out
}

func TestPlanDryRunChangesNothing(t *testing.T) {
	withQdrant(t, func(t *testing.T, e *env) {
		ctx := testCtx(t)
		provision(t, e, "acme", 1)
		if err := e.createForeign(ctx, "squat"); err != nil {
			t.Fatal(err)
		}
		plan := &events.Plan{Name: "small", Qdrant: &events.QdrantPlan{MaxPointsCount: 3}}
		before := e.snapshot(t, ctx)
		for _, c := range []struct {
			tenant events.TenantID
			plan   *events.Plan
			want   string
		}{
			{"acme", plan, ""},
			{"fresh", plan, ""},
			{"squat", plan, events.ConflictNameTaken},
			{"acme", &events.Plan{Name: "wide", Qdrant: &events.QdrantPlan{VectorSize: 16}}, events.ConflictImmutable},
		} {
			dr, err := e.store.DryRun(ctx, agent.PlanRequest{Tenant: c.tenant, Generation: 2, Plan: c.plan})
			if err != nil {
				t.Fatalf("DryRun(%s): %v", c.tenant, err)
			}
			text := fmt.Sprint(dr.Operations)
			if !strings.Contains(text, "UpdateCollection "+c.tenant.QdrantCollection()+" strict_mode_config") || !strings.Contains(text, "JWT <redacted>") {
				t.Errorf("DryRun(%s) operations = %s", c.tenant, text)
			}
			var got string
			for _, cf := range dr.Conflicts {
				got += cf.Kind
			}
			if got != c.want {
				t.Errorf("DryRun(%s, %s) conflicts = %+v, want %q", c.tenant, c.plan.Name, dr.Conflicts, c.want)
			}
		}
		if after := e.snapshot(t, ctx); !reflect.DeepEqual(before, after) {
			t.Fatalf("the dry run changed the server:\nbefore %q\nafter  %q", before, after)
		}
	})
}

func TestPlanApplyEnforcedAndChanged(t *testing.T) {
	withQdrant(t, func(t *testing.T, e *env) {
		ctx := testCtx(t)
		// The plan's vector size and distance are the collection's.
		pw, _ := secret.Generate()
		resp, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: "acme", Generation: 1, SagaID: "s", Password: pw,
			Plan: &events.Plan{Name: "small", Qdrant: &events.QdrantPlan{VectorSize: 4, Distance: "Dot"}}})
		if err != nil {
			t.Fatal(err)
		}
		info, err := e.admin.GetCollectionInfo(e.adminCtx(ctx), events.TenantID("acme").QdrantCollection())
		if err != nil {
			t.Fatal(err)
		}
		if vp := info.GetConfig().GetParams().GetVectorsConfig().GetParams(); vp.GetSize() != 4 || vp.GetDistance() != qdrant.Distance_Dot {
			t.Fatalf("collection created with %v, want 4 dimensions, Dot", vp)
		}

		small := &events.Plan{Name: "small", Qdrant: &events.QdrantPlan{VectorSize: 4, Distance: "Dot", MaxPointsCount: 2, UpsertMaxBatchsize: 2}}
		got, err := e.store.ApplyPlan(ctx, agent.PlanRequest{Tenant: "acme", Generation: 1, Plan: small})
		if err != nil {
			t.Fatalf("ApplyPlan(small): %v", err)
		}
		if *got.Limits.Qdrant != *small.Qdrant {
			t.Fatalf("read back %+v, want %+v", *got.Limits.Qdrant, *small.Qdrant)
		}
		c, as, err := tenantCall(ctx, resp.Credential)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		upsert := func(ids ...uint64) error {
			var pts []*qdrant.PointStruct
			for _, id := range ids {
				pts = append(pts, &qdrant.PointStruct{Id: qdrant.NewIDNum(id), Vectors: qdrant.NewVectors(1, 0, 0, 0)})
			}
			_, err := c.Upsert(as, &qdrant.UpsertPoints{CollectionName: events.TenantID("acme").QdrantCollection(), Wait: qdrant.PtrOf(true), Points: pts})
			return err
		}
		if err := upsert(1, 2); err != nil {
			t.Fatalf("two points under max_points_count 2: %v", err)
		}
		if err := upsert(3); code(err) != codes.PermissionDenied {
			t.Fatalf("a third point under max_points_count 2: %v, want PermissionDenied (Forbidden)", err)
		}

		large := &events.Plan{Name: "large", Qdrant: &events.QdrantPlan{MaxPointsCount: 10}}
		if got, err = e.store.ApplyPlan(ctx, agent.PlanRequest{Tenant: "acme", Generation: 1, Plan: large}); err != nil {
			t.Fatalf("ApplyPlan(large): %v", err)
		}
		if got.Usage[events.UsagePoints] != 2 {
			t.Fatalf("usage %v, want 2 points", got.Usage)
		}
		if got.Limits.Qdrant.MaxPointsCount != 10 || got.Limits.Qdrant.UpsertMaxBatchsize != 0 {
			t.Fatalf("read back %+v: the small plan's batch size must be gone", *got.Limits.Qdrant)
		}
		if err := upsert(3, 4, 5); err != nil {
			t.Fatalf("three points in one batch under the large plan: %v", err)
		}

		_, err = e.store.ApplyPlan(ctx, agent.PlanRequest{Tenant: "acme", Generation: 1, Plan: &events.Plan{Name: "wide", Qdrant: &events.QdrantPlan{VectorSize: 16}}})
		if permanent, reason := agent.Classify(err); !permanent || reason != events.ReasonUnsupported {
			t.Fatalf("ApplyPlan(vector size 16) = %v, want permanent unsupported", err)
		}
	})
}
