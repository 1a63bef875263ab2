package miniostore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// snapshot is everything a dry run must not change: buckets with their
// objects, tags and quotas; users with their status and policy; policies.
func (e *env) snapshot(t *testing.T, ctx context.Context) []string {
	t.Helper()
	var out []string
	buckets, err := e.root.ListBuckets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range buckets {
		out = append(out, "bucket "+b.Name+" "+b.CreationDate.String())
		for o := range e.root.ListObjects(ctx, b.Name, minio.ListObjectsOptions{Recursive: true}) {
			if o.Err != nil {
				t.Fatal(o.Err)
			}
			out = append(out, fmt.Sprintf("object %s/%s %s %d", b.Name, o.Key, o.ETag, o.Size))
		}
		if tg, err := e.root.GetBucketTagging(ctx, b.Name); err == nil {
			out = append(out, "tags "+b.Name+" "+tg.String())
		}
		if q, err := e.admin.GetBucketQuota(ctx, b.Name); err == nil {
			out = append(out, fmt.Sprintf("quota %s %+v", b.Name, q))
		}
	}
	users, err := e.admin.ListUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name, u := range users {
		out = append(out, fmt.Sprintf("user %s %s %s", name, u.Status, u.PolicyName))
	}
	policies, err := e.admin.ListCannedPolicies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range policies {
		out = append(out, "policy "+name+" "+canonicalJSON(t, p))
	}
	slices.Sort(out)
	return out
}

// canonicalJSON renders a policy with its string lists sorted: MinIO
// renders the built-in policies' actions in varying order.
func canonicalJSON(t *testing.T, raw []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("policy JSON: %v", err)
	}
	var sortLists func(any) any
	sortLists = func(v any) any {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				x[k] = sortLists(e)
			}
		case []any:
			for i, e := range x {
				x[i] = sortLists(e)
			}
			slices.SortFunc(x, func(a, b any) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
		}
		return v
	}
	out, err := json.Marshal(sortLists(v))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestPlanDryRunChangesNothing(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	plan := &events.Plan{Name: "small", MinIO: &events.MinIOPlan{BucketQuotaBytes: 1 << 20}}

	// Before anything was ever provisioned (no system bucket yet).
	before := e.snapshot(t, ctx)
	if _, err := e.store.DryRun(ctx, agent.PlanRequest{Tenant: "first", Generation: 1, Plan: plan}); err != nil {
		t.Fatalf("DryRun on an empty server: %v", err)
	}
	if after := e.snapshot(t, ctx); !reflect.DeepEqual(before, after) {
		t.Fatalf("the dry run changed an empty server:\nbefore %q\nafter  %q", before, after)
	}

	e.provision(t, "acme", 1)
	if err := e.harness().CreateForeign(ctx, "squat"); err != nil {
		t.Fatal(err)
	}
	before = e.snapshot(t, ctx)
	for _, tenant := range []events.TenantID{"acme", "fresh", "squat"} {
		dr, err := e.store.DryRun(ctx, agent.PlanRequest{Tenant: tenant, Generation: 2, Plan: plan})
		if err != nil {
			t.Fatalf("DryRun(%s): %v", tenant, err)
		}
		text := fmt.Sprint(dr.Operations)
		if !strings.Contains(text, "SetBucketQuota "+tenant.MinIOBucket()+" hard 1048576 bytes") || !strings.Contains(text, "secret <redacted>") {
			t.Errorf("DryRun(%s) operations = %s", tenant, text)
		}
		if dr.Names[ResourceBucket] != tenant.MinIOBucket() {
			t.Errorf("DryRun(%s) names = %v", tenant, dr.Names)
		}
		wantConflicts := 0
		if tenant == "squat" {
			wantConflicts = 1
		}
		if len(dr.Conflicts) != wantConflicts || (wantConflicts == 1 && dr.Conflicts[0].Kind != events.ConflictNameTaken) {
			t.Errorf("DryRun(%s) conflicts = %+v, want %d name_taken", tenant, dr.Conflicts, wantConflicts)
		}
	}
	if after := e.snapshot(t, ctx); !reflect.DeepEqual(before, after) {
		t.Fatalf("the dry run changed the server:\nbefore %q\nafter  %q", before, after)
	}
}

func TestPlanApplyEnforcedAndChanged(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	resp := e.provision(t, "acme", 1)
	c, err := tenantClient(resp.Credential)
	if err != nil {
		t.Fatal(err)
	}
	put := func(size int) error {
		_, err := c.PutObject(ctx, events.TenantID("acme").MinIOBucket(), fmt.Sprintf("obj-%d", size), bytes.NewReader(make([]byte, size)), int64(size), minio.PutObjectOptions{})
		return err
	}

	small := &events.Plan{Name: "small", MinIO: &events.MinIOPlan{BucketQuotaBytes: 1 << 20}}
	got, err := e.store.ApplyPlan(ctx, agent.PlanRequest{Tenant: "acme", Generation: 1, Plan: small})
	if err != nil {
		t.Fatalf("ApplyPlan(small): %v", err)
	}
	if got.Limits.MinIO.BucketQuotaBytes != 1<<20 {
		t.Fatalf("read back %+v", got.Limits.MinIO)
	}
	if _, err := e.store.ApplyPlan(ctx, agent.PlanRequest{Tenant: "acme", Generation: 1, Plan: small}); err != nil {
		t.Fatalf("ApplyPlan(small) again: %v", err)
	}
	if err := put(2 << 20); err == nil || minio.ToErrorResponse(err).Code != "XMinioAdminBucketQuotaExceeded" {
		t.Fatalf("a 2 MiB put under a 1 MiB quota: %v, want XMinioAdminBucketQuotaExceeded", err)
	}
	if err := put(100 << 10); err != nil {
		t.Fatalf("a 100 KiB put under a 1 MiB quota: %v", err)
	}

	large := &events.Plan{Name: "large", MinIO: &events.MinIOPlan{BucketQuotaBytes: 8 << 20}}
	if got, err = e.store.ApplyPlan(ctx, agent.PlanRequest{Tenant: "acme", Generation: 1, Plan: large}); err != nil || got.Limits.MinIO.BucketQuotaBytes != 8<<20 {
		t.Fatalf("ApplyPlan(large) = %+v, %v", got.Limits, err)
	}
	if err := put(2 << 20); err != nil {
		t.Fatalf("a 2 MiB put under an 8 MiB quota: %v", err)
	}
	none := &events.Plan{Name: "default"}
	if got, err = e.store.ApplyPlan(ctx, agent.PlanRequest{Tenant: "acme", Generation: 1, Plan: none}); err != nil || got.Limits.MinIO.BucketQuotaBytes != 0 {
		t.Fatalf("ApplyPlan(no quota) = %+v, %v", got.Limits, err)
	}
	if err := put(9 << 20); err != nil {
		t.Fatalf("a 9 MiB put without a quota: %v", err)
	}

	// Not ours: refused, permanently, and the foreign bucket keeps no quota.
	if err := e.harness().CreateForeign(ctx, "squat"); err != nil {
		t.Fatal(err)
	}
	_, err = e.store.ApplyPlan(ctx, agent.PlanRequest{Tenant: "squat", Generation: 1, Plan: small})
	if permanent, _ := agent.Classify(err); err == nil || !permanent {
		t.Fatalf("ApplyPlan(squat) = %v, want a permanent error", err)
	}
	if err := e.harness().ForeignIntact(ctx, "squat"); err != nil {
		t.Fatal(err)
	}
}
