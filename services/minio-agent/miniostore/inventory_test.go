package miniostore

import (
	"context"
	"testing"
	"time"

	"github.com/minio/madmin-go/v3"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/tags"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// TestInventory lists two provisioned tenants' buckets, users, policies and
// system records as ours with their generations, a foreign look-alike as
// not ours, and no longer lists a deprovisioned tenant.
func TestInventory(t *testing.T) {
	storetest.RunInventory(t, newEnv(t).harness())
}

// TestInventoryTrustsOnlyTheRecord: a look-alike bucket carrying
// tenantprov's tags (anyone with PutBucketTagging can write them) is not
// ours; a service account squatting a tenant's access key name, and one a
// tenant user made for itself, are listed and never ours; a rotated
// credential (a service account the tenant's record lists) is ours.
func TestInventoryTrustsOnlyTheRecord(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	forged := events.MustTenantID("inv-forged")
	if err := e.root.MakeBucket(ctx, forged.MinIOBucket(), minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	tg, err := tags.NewTags(bucketTags(forged, 1), false)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.root.SetBucketTagging(ctx, forged.MinIOBucket(), tg); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.AddServiceAccount(ctx, madmin.AddServiceAccountReq{AccessKey: "tenant-inv-squat", SecretKey: "squat-secret-12345"}); err != nil {
		t.Fatal(err)
	}
	owner := events.MustTenantID("inv-owner")
	pw, err := secret.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: owner, Generation: 3, SagaID: "inv", Password: pw}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.AddServiceAccount(ctx, madmin.AddServiceAccountReq{TargetUser: owner.MinIOUser(), AccessKey: "owner-spare-key", SecretKey: "spare-secret-12345"}); err != nil {
		t.Fatal(err)
	}

	pw2, err := secret.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Rotate(ctx, agent.RotateRequest{Tenant: owner, Generation: 3, CurrentVersion: 1, Version: 2, Password: pw2}); err != nil {
		t.Fatal(err)
	}
	rotated := rotationKey(owner, 3, 2)

	resp, err := e.store.Inventory(ctx, agent.InventoryRequest{})
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]events.InventoryItem{}
	for _, it := range resp.Items {
		found[string(it.Kind)+" "+it.Name] = it
	}
	for _, want := range []struct {
		key, tenant string
		ours        bool
	}{
		{"bucket tenant-inv-forged", "inv-forged", false},
		{"service_account tenant-inv-squat", "inv-squat", false},
		{"service_account owner-spare-key", "inv-owner", false},
		{"bucket tenant-inv-owner", "inv-owner", true},
		{"iam_user tenant-inv-owner", "inv-owner", true},
		{"service_account " + rotated, "inv-owner", true}, // a rotated credential
	} {
		it, ok := found[want.key]
		if !ok {
			t.Errorf("%s is not in the inventory (%d items)", want.key, len(resp.Items))
			continue
		}
		if it.Ours != want.ours || it.TenantID != want.tenant || (it.Ours && it.Generation != 3) {
			t.Errorf("%s: ours %v tenant %q, want ours %v tenant %q", want.key, it.Ours, it.TenantID, want.ours, want.tenant)
		}
	}
}
