package miniostore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

var errCutOff = errors.New("agent cut off between MakeBucket and the stamp")

// provisionCutOff runs a Provision that dies after the bucket exists and
// before its creation time is stamped into the record (the chaos suite's
// command deadline or SIGKILL), and checks that it left an unstamped
// bucket behind.
func (e *env) provisionCutOff(t *testing.T, tenant events.TenantID, gen uint64) {
	t.Helper()
	ctx := ctxT(t)
	e.store.beforeStamp = func(context.Context) error { return errCutOff }
	defer func() { e.store.beforeStamp = nil }()
	_, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: tenant, Generation: gen, SagaID: "saga-cut", Password: mustGenerate(t)})
	if !errors.Is(err, errCutOff) {
		t.Fatalf("cut-off Provision: %v, want %v", err, errCutOff)
	}
	o, err := e.store.look(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	if !o.bucketExists || o.bucketStamped() {
		t.Fatalf("after the cut-off Provision: bucket exists %v, stamped %v; want an unstamped bucket", o.bucketExists, o.bucketStamped())
	}
}

// deprovisionCleans deprovisions the tenant and checks that nothing was
// skipped and nothing is left.
func (e *env) deprovisionCleans(t *testing.T, tenant events.TenantID, gen uint64) {
	t.Helper()
	ctx := ctxT(t)
	resp, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: gen, SagaID: "saga-dep"})
	if err != nil {
		t.Fatalf("Deprovision: %v", err)
	}
	if len(resp.Skipped) > 0 || len(resp.Warnings) > 0 {
		t.Errorf("Deprovision skipped %v, warned %v; the half-made bucket is tenantprov's", resp.Skipped, resp.Warnings)
	}
	left, err := e.resources(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Fatalf("after Deprovision, left: %v (leaked)", left)
	}
}

// TestProvisionCutOffBeforeStamp: a Provision cut off between MakeBucket
// and the stamp leaves an unstamped bucket that is still tenantprov's:
// Deprovision removes it, and the redelivered Provision adopts it.
func TestProvisionCutOffBeforeStamp(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)

	// staleRecord leaves what a Deprovision cut off after removing the
	// bucket and before deleting the record leaves: a record stamped with
	// the creation time of a bucket that is gone.
	staleRecord := func(t *testing.T, tenant events.TenantID) {
		t.Helper()
		e.provision(t, tenant, 1)
		if err := e.store.removeBucket(ctx, tenant.MinIOBucket()); err != nil {
			t.Fatal(err)
		}
		rec, err := e.store.readRecord(ctx, tenant)
		if err != nil || rec == nil || rec.BucketCreated.IsZero() {
			t.Fatalf("record %+v, %v; want a stamped record", rec, err)
		}
	}

	t.Run("fresh tenant, deprovision", func(t *testing.T) {
		tenant := events.MustTenantID("cut-fresh")
		e.provisionCutOff(t, tenant, 1)
		e.deprovisionCleans(t, tenant, 1)
	})
	t.Run("fresh tenant, redelivered provision", func(t *testing.T) {
		tenant := events.MustTenantID("cut-redeliver")
		e.provisionCutOff(t, tenant, 1)
		resp := e.provision(t, tenant, 1)
		e.mustVerify(t, tenant, resp.Credential, "after the redelivered Provision")
		e.deprovisionCleans(t, tenant, 1)
	})
	t.Run("stale stamp, deprovision", func(t *testing.T) {
		tenant := events.MustTenantID("cut-stale")
		staleRecord(t, tenant)
		e.provisionCutOff(t, tenant, 1)
		e.deprovisionCleans(t, tenant, 1)
	})
	t.Run("stale stamp, redelivered provision", func(t *testing.T) {
		tenant := events.MustTenantID("cut-stale-redeliver")
		staleRecord(t, tenant)
		e.provisionCutOff(t, tenant, 1)
		resp := e.provision(t, tenant, 1)
		e.mustVerify(t, tenant, resp.Credential, "after the redelivered Provision")
		e.deprovisionCleans(t, tenant, 1)
	})
	t.Run("new generation rewrites the record", func(t *testing.T) {
		tenant := events.MustTenantID("cut-regen")
		e.provisionCutOff(t, tenant, 1)
		// The record of generation 2 is written well after the bucket
		// was made (no timing is asserted; the pause only makes the gap
		// larger than any clock margin).
		time.Sleep(2*clockSkew + time.Second)
		e.provisionCutOff(t, tenant, 2)
		e.deprovisionCleans(t, tenant, 2)
	})
}
