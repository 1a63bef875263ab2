package miniostore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/madmin-go/v3"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/tags"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// lifecycle runs the whole contract on one tenant with the given sequence:
// provision, verify, idempotent re-provision with a new credential,
// deprovision, idempotent deprovision.
func lifecycle(t *testing.T, e *env) {
	ctx := ctxT(t)
	h := e.harness()
	tenant := events.MustTenantID("acme")
	first := mustGenerate(t)
	if n := len(first.Reveal()); n != 43 {
		t.Fatalf("generated credential is %d characters, the test expects the 43 MinIO must accept", n)
	}
	resp, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: tenant, Generation: 1, SagaID: "s1", Password: first})
	if err != nil {
		t.Fatalf("Provision: %v", err)
	}
	wantRes := map[string]string{"bucket": "tenant-acme", "user": "tenant-acme", "policy": "tenantprov-tenant-rw"}
	if !equalMaps(resp.Resources, wantRes) {
		t.Errorf("Resources = %v, want %v", resp.Resources, wantRes)
	}
	cred := resp.Credential
	if cred.String(CredEndpoint) != e.minio.Endpoint || cred[CredSecure] != false || cred.String(CredBucket) != "tenant-acme" ||
		cred.String(CredAccessKey) != "tenant-acme" || cred.Secret(CredSecretKey) != first || len(cred) != 5 {
		t.Errorf("Credential = %#v", cred.Plain())
	}
	if err := h.OwnAccess(ctx, tenant, cred); err != nil {
		t.Fatalf("own access: %v", err)
	}
	v, err := e.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: cred})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !v.Passed() || len(agent.MissingChecks(v.Checks)) > 0 {
		t.Fatalf("Verify did not pass: %+v", v.Checks)
	}
	for _, c := range v.Checks {
		t.Logf("check %s: %v (%s)", c.Name, c.Passed, c.Detail)
	}

	// Re-provision (redelivery with a fresh credential): converges, and only
	// the new secret works.
	second := mustGenerate(t)
	resp2, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: tenant, Generation: 1, SagaID: "s1", Password: second})
	if err != nil {
		t.Fatalf("re-Provision: %v", err)
	}
	if err := h.OwnAccess(ctx, tenant, resp2.Credential); err != nil {
		t.Fatalf("own access after re-provision: %v", err)
	}
	if err := h.OwnAccess(ctx, tenant, cred); err == nil {
		t.Fatal("the first credential still works after re-provision")
	}
	if v, err := e.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: resp2.Credential}); err != nil || !v.Passed() {
		t.Fatalf("Verify after re-provision: %v %+v", err, v.Checks)
	}

	if _, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1}); err != nil {
		t.Fatalf("Deprovision: %v", err)
	}
	if found, err := e.resources(ctx, tenant); err != nil || len(found) > 0 {
		t.Fatalf("after Deprovision: still %v (err %v)", found, err)
	}
	if err := h.OwnAccess(ctx, tenant, resp2.Credential); err == nil {
		t.Fatal("credential works after Deprovision")
	}
	if r, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1}); err != nil || len(r.Skipped) > 0 {
		t.Fatalf("second Deprovision: %v, skipped %v", err, r.Skipped)
	}
	if r, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: events.MustTenantID("never-seen"), Generation: 1}); err != nil || len(r.Skipped) > 0 {
		t.Fatalf("Deprovision of a never-provisioned tenant: %v, skipped %v", err, r.Skipped)
	}
}

func TestLifecycle(t *testing.T) {
	for _, q := range []struct {
		name string
		seq  Sequence
	}{{"optimized", Optimized}, {"sequential", Sequential}} {
		t.Run(q.name, func(t *testing.T) {
			e := newEnv(t, WithSequence(q.seq))
			lifecycle(t, e)
			t.Logf("MinIO calls:\n%s", e.calls.summary())
		})
	}
}

func TestPolicyDocument(t *testing.T) {
	tenant := events.MustTenantID("acme")
	var doc policyDocument
	if err := json.Unmarshal(TenantPolicy(), &doc); err != nil {
		t.Fatal(err)
	}
	want := policyDocument{Version: "2012-10-17", Statement: []policyStatement{
		{Effect: "Allow", Action: []string{"s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"}, Resource: []string{"arn:aws:s3:::${aws:username}"}},
		{Effect: "Allow", Action: []string{"s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:PutObject"}, Resource: []string{"arn:aws:s3:::${aws:username}/*"}},
		{Effect: "Deny", Action: []string{"admin:*"}},
	}}
	if !samePolicy(doc, want) {
		t.Fatalf("TenantPolicy = %s", TenantPolicy())
	}
	if tenant.MinIOPolicy() != "tenantprov-tenant-rw" || tenant.MinIOUser() != tenant.MinIOBucket() {
		t.Fatalf("policy %s, user %s, bucket %s: the shared policy reaches the bucket named like the user", tenant.MinIOPolicy(), tenant.MinIOUser(), tenant.MinIOBucket())
	}

	// What MinIO stored is exactly that, and it is what the user has.
	e := newEnv(t)
	ctx := ctxT(t)
	e.provision(t, tenant, 1)
	info, err := e.admin.InfoCannedPolicyV2(ctx, tenant.MinIOPolicy())
	if err != nil {
		t.Fatal(err)
	}
	raw := info.Policy
	var stored policyDocument
	if err := json.Unmarshal(raw, &stored); err != nil {
		t.Fatalf("stored policy %s: %v", raw, err)
	}
	if !samePolicy(stored, want) {
		t.Fatalf("stored policy = %s", raw)
	}
	ui, err := e.admin.GetUserInfo(ctx, tenant.MinIOUser())
	if err != nil {
		t.Fatal(err)
	}
	if ui.PolicyName != tenant.MinIOPolicy() || ui.Status != madmin.AccountEnabled {
		t.Fatalf("user: policy %q status %q, want %q enabled", ui.PolicyName, ui.Status, tenant.MinIOPolicy())
	}
}

func TestMultipartAndDeprovisionRemovesEverything(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	tenant := events.MustTenantID("bigdata")
	resp := e.provision(t, tenant, 1)
	c, err := tenantClient(resp.Credential)
	if err != nil {
		t.Fatal(err)
	}
	bucket := tenant.MinIOBucket()

	// A multipart upload by the tenant (two 5 MiB parts) works.
	data := make([]byte, 10<<20+123)
	_, _ = rand.Read(data)
	info, err := c.PutObject(ctx, bucket, "big.bin", bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{PartSize: 5 << 20})
	if err != nil {
		t.Fatalf("multipart upload by the tenant: %v", err)
	}
	if !strings.Contains(info.ETag, "-") {
		t.Errorf("ETag %q: the upload was not multipart", info.ETag)
	}
	o, err := c.GetObject(ctx, bucket, "big.bin", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(o)
	o.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back multipart object: %d bytes, err %v", len(got), err)
	}

	// An incomplete upload, listable and abortable by the tenant; a second
	// one left behind for Deprovision.
	core := minio.Core{Client: c}
	for _, key := range []string{"aborted.bin", "left-behind.bin"} {
		id, err := core.NewMultipartUpload(ctx, bucket, key, minio.PutObjectOptions{})
		if err != nil {
			t.Fatalf("tenant starts a multipart upload: %v", err)
		}
		part := bytes.Repeat([]byte("p"), 5<<20)
		if _, err := core.PutObjectPart(ctx, bucket, key, id, 1, bytes.NewReader(part), int64(len(part)), minio.PutObjectPartOptions{}); err != nil {
			t.Fatalf("tenant uploads a part: %v", err)
		}
		if _, err := core.ListObjectParts(ctx, bucket, key, id, 0, 10); err != nil {
			t.Fatalf("tenant lists parts: %v", err)
		}
	}
	if _, err := core.ListMultipartUploads(ctx, bucket, "", "", "", "", 10); err != nil {
		t.Fatalf("tenant lists uploads: %v", err)
	}
	if err := c.RemoveIncompleteUpload(ctx, bucket, "aborted.bin"); err != nil {
		t.Fatalf("tenant aborts an upload: %v", err)
	}
	for i := range 3 {
		body := strings.Repeat("x", i+1)
		if _, err := c.PutObject(ctx, bucket, "dir/obj-"+string(rune('a'+i)), strings.NewReader(body), int64(len(body)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	if _, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1}); err != nil {
		t.Fatalf("Deprovision: %v", err)
	}
	if found, err := e.resources(ctx, tenant); err != nil || len(found) > 0 {
		t.Fatalf("after Deprovision: still %v (err %v)", found, err)
	}
	// Nothing of the tenant's uploads is left on the drive either.
	var leftovers []string
	_ = filepath.WalkDir(filepath.Join(e.minio.DataDir, ".minio.sys", "multipart"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			leftovers = append(leftovers, p)
		}
		return nil
	})
	if len(leftovers) > 0 {
		t.Fatalf("multipart data left on the drive after Deprovision: %v", leftovers)
	}
}

func TestUserDisabledBeforeAnythingIsRemoved(t *testing.T) {
	for _, seq := range []Sequence{Optimized, Sequential} {
		e := newEnv(t, WithSequence(seq))
		tenant := events.MustTenantID("acme")
		e.provision(t, tenant, 1)
		e.calls.reset()
		if _, err := e.store.Deprovision(ctxT(t), agent.DeprovisionRequest{Tenant: tenant, Generation: 1}); err != nil {
			t.Fatal(err)
		}
		calls := e.calls.calls()
		disable := slices.Index(calls, "user.disable")
		if disable < 0 {
			t.Fatalf("sequence %d: no user.disable in %v", seq, calls)
		}
		if slices.Contains(calls, "policy.remove") {
			t.Errorf("sequence %d: Deprovision removed a policy (the shared tenant policy stays): %v", seq, calls)
		}
		for _, c := range []string{"user.remove", "bucket.abort_uploads", "bucket.remove", "record.delete"} {
			if i := slices.Index(calls, c); i < disable {
				t.Errorf("sequence %d: %s at %d, before user.disable at %d: %v", seq, c, i, disable, calls)
			}
		}
	}
}

func TestForeignResourcesAreNeverTouched(t *testing.T) {
	e := newEnv(t)
	h := e.harness()
	ctx := ctxT(t)

	t.Run("bucket", func(t *testing.T) {
		tenant := events.MustTenantID("foreign-bucket")
		if err := h.CreateForeign(ctx, tenant); err != nil {
			t.Fatal(err)
		}
		_, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: tenant, Generation: 1, Password: mustGenerate(t)})
		if !errors.Is(err, agent.ErrConflict) {
			t.Fatalf("Provision over a foreign bucket: %v, want ErrConflict", err)
		}
		if found, _ := e.resources(ctx, tenant); !slices.Equal(found, []string{"bucket"}) {
			t.Fatalf("after the conflict: %v, want only the foreign bucket", found)
		}
		r, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1})
		if err != nil || len(r.Skipped) != 1 || !strings.Contains(r.Skipped[0], "bucket tenant-foreign-bucket") {
			t.Fatalf("Deprovision: %v, skipped %v", err, r.Skipped)
		}
		if err := h.ForeignIntact(ctx, tenant); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("tagged by someone else", func(t *testing.T) {
		tenant := events.MustTenantID("other-tags")
		if err := e.root.MakeBucket(ctx, tenant.MinIOBucket(), minio.MakeBucketOptions{}); err != nil {
			t.Fatal(err)
		}
		e.tag(t, tenant.MinIOBucket(), map[string]string{"managed-by": "someone-else", "tenant": "other-tags"})
		_, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: tenant, Generation: 1, Password: mustGenerate(t)})
		if !errors.Is(err, agent.ErrConflict) {
			t.Fatalf("Provision: %v, want ErrConflict", err)
		}
		if _, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1}); err != nil {
			t.Fatal(err)
		}
		if ok, _ := e.root.BucketExists(ctx, tenant.MinIOBucket()); !ok {
			t.Fatal("foreign tagged bucket deleted")
		}
	})

	// Tags are information, not evidence: a bucket tagged as tenantprov's
	// by someone with s3:PutBucketTagging is still foreign.
	t.Run("forged tags", func(t *testing.T) {
		tenant := events.MustTenantID("forged-tags")
		if err := h.CreateForeign(ctx, tenant); err != nil {
			t.Fatal(err)
		}
		e.tag(t, tenant.MinIOBucket(), bucketTags(tenant, 1))
		_, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: tenant, Generation: 1, Password: mustGenerate(t)})
		if !errors.Is(err, agent.ErrConflict) {
			t.Fatalf("Provision over a bucket with forged tags: %v, want ErrConflict", err)
		}
		r, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1})
		if err != nil || len(r.Skipped) != 1 || !strings.Contains(r.Skipped[0], "bucket "+tenant.MinIOBucket()) {
			t.Fatalf("Deprovision: %v, skipped %v", err, r.Skipped)
		}
		if found, _ := e.resources(ctx, tenant); !slices.Equal(found, []string{"bucket"}) {
			t.Fatalf("after the rollback: %v, want only the foreign bucket", found)
		}
	})

	// A bucket re-created under a provisioned tenant's name (after someone
	// deleted tenantprov's) is not the one the record names.
	t.Run("re-created bucket", func(t *testing.T) {
		tenant := events.MustTenantID("recreated")
		e.provision(t, tenant, 1)
		if err := e.root.RemoveBucketWithOptions(ctx, tenant.MinIOBucket(), minio.RemoveBucketOptions{ForceDelete: true}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1100 * time.Millisecond) // a different creation time, to the millisecond at least
		if err := h.CreateForeign(ctx, tenant); err != nil {
			t.Fatal(err)
		}
		r, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1})
		if err != nil || len(r.Skipped) != 1 || !strings.Contains(r.Skipped[0], "bucket "+tenant.MinIOBucket()) {
			t.Fatalf("Deprovision: %v, skipped %v", err, r.Skipped)
		}
		if err := h.ForeignIntact(ctx, tenant); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("user", func(t *testing.T) {
		tenant := events.MustTenantID("foreign-user")
		foreignSecret := "foreign-secret-123"
		if err := e.admin.AddUser(ctx, tenant.MinIOUser(), foreignSecret); err != nil {
			t.Fatal(err)
		}
		_, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: tenant, Generation: 1, Password: mustGenerate(t)})
		if !errors.Is(err, agent.ErrConflict) {
			t.Fatalf("Provision over a foreign user: %v, want ErrConflict", err)
		}
		if found, _ := e.resources(ctx, tenant); !slices.Equal(found, []string{"user"}) {
			t.Fatalf("after the conflict: %v, want only the foreign user", found)
		}
		r, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1})
		if err != nil || len(r.Skipped) != 1 || !strings.HasPrefix(r.Skipped[0], "user ") {
			t.Fatalf("Deprovision: %v, skipped %v", err, r.Skipped)
		}
		ui, err := e.admin.GetUserInfo(ctx, tenant.MinIOUser())
		if err != nil || ui.Status != madmin.AccountEnabled {
			t.Fatalf("foreign user after Deprovision: %+v, %v", ui, err)
		}
		// Its secret is unchanged: it can still sign requests.
		c, _ := tenantClient(agent.Credential{CredEndpoint: e.minio.Endpoint, CredAccessKey: tenant.MinIOUser(), CredSecretKey: secret.String(foreignSecret)})
		if err := firstListError(ctx, c, "anything"); s3Code(err) != codeAccessDenied {
			t.Fatalf("foreign user's own secret: %v, want AccessDenied (signature accepted)", err)
		}
	})

	// A policy named like a legacy tenant policy (tenant-<id>-rw) that no
	// record claims is someone else's: the tenant does not use that name
	// any more, so it is no conflict, and it is left exactly as it is.
	t.Run("legacy-named policy", func(t *testing.T) {
		tenant := events.MustTenantID("foreign-policy")
		doc := []byte(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetObject"],"Resource":["arn:aws:s3:::elsewhere/*"]}]}`)
		if err := e.admin.AddCannedPolicy(ctx, tenant.MinIOLegacyPolicy(), doc); err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: tenant, Generation: 1, Password: mustGenerate(t)}); err != nil {
			t.Fatalf("Provision beside a foreign legacy-named policy: %v", err)
		}
		resp, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(resp.Skipped, func(s string) bool { return strings.HasPrefix(s, "policy "+tenant.MinIOLegacyPolicy()) }) {
			t.Errorf("Deprovision skipped %v, want the foreign policy named", resp.Skipped)
		}
		info, err := e.admin.InfoCannedPolicyV2(ctx, tenant.MinIOLegacyPolicy())
		if err != nil || !strings.Contains(string(info.Policy), "elsewhere") {
			t.Fatalf("foreign policy after Provision and Deprovision: %v", err)
		}
	})
}

// TestStaleGeneration: a late command of an older generation neither resets
// the newer generation's secret nor removes its resources.
func TestStaleGeneration(t *testing.T) {
	e := newEnv(t)
	h := e.harness()
	ctx := ctxT(t)
	tenant := events.MustTenantID("acme")
	cred := e.provision(t, tenant, 2).Credential
	all := []string{"bucket", "user", "policy", "record"}
	intact := func(t *testing.T, after string) {
		t.Helper()
		if found, err := e.resources(ctx, tenant); err != nil || !slices.Equal(found, all) {
			t.Fatalf("after %s: %v (err %v), want %v", after, found, err, all)
		}
		if rec, err := e.store.readRecord(ctx, tenant); err != nil || rec == nil || rec.Generation != 2 {
			t.Fatalf("after %s: record %+v (err %v), want generation 2", after, rec, err)
		}
		tg, err := e.root.GetBucketTagging(ctx, tenant.MinIOBucket())
		if err != nil || tg.ToMap()[TagGeneration] != "2" {
			t.Fatalf("after %s: bucket tags %v (err %v), want generation=2", after, tg, err)
		}
		ui, err := e.admin.GetUserInfo(ctx, tenant.MinIOUser())
		if err != nil || ui.Status != madmin.AccountEnabled || ui.PolicyName != tenant.MinIOPolicy() {
			t.Fatalf("after %s: user %+v (err %v), want enabled with %s", after, ui, err, tenant.MinIOPolicy())
		}
		if err := h.OwnAccess(ctx, tenant, cred); err != nil {
			t.Fatalf("generation 2 credential after %s: %v", after, err)
		}
	}

	stale := mustGenerate(t)
	_, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: tenant, Generation: 1, SagaID: "late", Password: stale})
	if !errors.Is(err, ErrStaleGeneration) {
		t.Fatalf("Provision of generation 1 after 2: %v, want ErrStaleGeneration", err)
	}
	if perm, reason := agent.Classify(err); !perm || reason != events.ReasonInvalid {
		t.Fatalf("Classify = %v %q, want permanent %q", perm, reason, events.ReasonInvalid)
	}
	if msg := err.Error(); !strings.Contains(msg, "generation 2") || !strings.Contains(msg, "generation 1") || strings.Contains(msg, stale.Reveal()) {
		t.Errorf("error message %q: want both generations named and no secret", msg)
	}
	intact(t, "a stale Provision")
	staleCred := maps.Clone(cred)
	staleCred[CredSecretKey] = stale
	if err := h.OwnAccess(ctx, tenant, staleCred); err == nil {
		t.Fatal("the stale Provision's secret works")
	}

	r, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1, SagaID: "late"})
	if err != nil {
		t.Fatalf("Deprovision of generation 1 after 2: %v", err)
	}
	if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "generation 2") || len(r.Skipped) > 0 {
		t.Fatalf("stale Deprovision: warnings %q, skipped %q; want one warning naming generation 2", r.Warnings, r.Skipped)
	}
	intact(t, "a stale Deprovision")

	r, err = e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 2})
	if err != nil || len(r.Warnings) > 0 || len(r.Skipped) > 0 {
		t.Fatalf("Deprovision of generation 2: %v, warnings %q, skipped %q", err, r.Warnings, r.Skipped)
	}
	if found, err := e.resources(ctx, tenant); err != nil || len(found) > 0 {
		t.Fatalf("after Deprovision of generation 2: still %v (err %v)", found, err)
	}
	if err := h.OwnAccess(ctx, tenant, cred); err == nil {
		t.Fatal("generation 2 credential works after its Deprovision")
	}
}

func (e *env) tag(t *testing.T, bucket string, m map[string]string) {
	t.Helper()
	tg, err := tags.NewTags(m, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.root.SetBucketTagging(ctxT(t), bucket, tg); err != nil {
		t.Fatal(err)
	}
}

// TestCrashBetweenCreateAndTag covers the window bucket tags leave: the
// agent created the bucket and died before tagging it.
func TestCrashBetweenCreateAndTag(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	if err := e.store.ensureSystem(ctx); err != nil {
		t.Fatal(err)
	}
	crash := func(t *testing.T, tenant events.TenantID) {
		t.Helper()
		if err := e.store.writeRecord(ctx, newRecord(tenant, 1, "s", nil)); err != nil {
			t.Fatal(err)
		}
		if err := e.root.MakeBucket(ctx, tenant.MinIOBucket(), minio.MakeBucketOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("empty bucket is ours", func(t *testing.T) {
		tenant := events.MustTenantID("crashed")
		crash(t, tenant)
		resp := e.provision(t, tenant, 1)
		if err := e.harness().OwnAccess(ctx, tenant, resp.Credential); err != nil {
			t.Fatal(err)
		}
		tg, err := e.root.GetBucketTagging(ctx, tenant.MinIOBucket())
		if err != nil || tg.ToMap()[TagManagedBy] != ManagedByValue {
			t.Fatalf("bucket not tagged after recovery: %v %v", tg, err)
		}
	})

	t.Run("bucket with data is not", func(t *testing.T) {
		tenant := events.MustTenantID("crashed-data")
		crash(t, tenant)
		if _, err := e.root.PutObject(ctx, tenant.MinIOBucket(), "x", strings.NewReader("x"), 1, minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
		_, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: tenant, Generation: 1, Password: mustGenerate(t)})
		if !errors.Is(err, agent.ErrConflict) {
			t.Fatalf("Provision: %v, want ErrConflict", err)
		}
		r, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1})
		if err != nil || len(r.Skipped) != 1 {
			t.Fatalf("Deprovision: %v, skipped %v", err, r.Skipped)
		}
		if ok, _ := e.root.BucketExists(ctx, tenant.MinIOBucket()); !ok {
			t.Fatal("bucket with data deleted")
		}
	})

	t.Run("user created, policy not attached", func(t *testing.T) {
		tenant := events.MustTenantID("half-iam")
		if err := e.store.writeRecord(ctx, newRecord(tenant, 1, "s", nil)); err != nil {
			t.Fatal(err)
		}
		if err := e.admin.AddUser(ctx, tenant.MinIOUser(), "some-old-secret"); err != nil {
			t.Fatal(err)
		}
		resp := e.provision(t, tenant, 1)
		v, err := e.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: resp.Credential})
		if err != nil || !v.Passed() {
			t.Fatalf("Verify after recovery: %v %+v", err, v.Checks)
		}
	})

	t.Run("deprovision after a crash in deprovision", func(t *testing.T) {
		tenant := events.MustTenantID("half-gone")
		e.provision(t, tenant, 1)
		// Died after disabling and removing the user, before the rest.
		if err := e.admin.SetUserStatus(ctx, tenant.MinIOUser(), madmin.AccountDisabled); err != nil {
			t.Fatal(err)
		}
		if err := e.admin.RemoveUser(ctx, tenant.MinIOUser()); err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1}); err != nil {
			t.Fatal(err)
		}
		if found, err := e.resources(ctx, tenant); err != nil || len(found) > 0 {
			t.Fatalf("after Deprovision: still %v (err %v)", found, err)
		}
	})
}

// TestVerifyCatchesBrokenIsolation gives the tenant's user more than its
// policy and expects the checks to notice.
func TestVerifyCatchesBrokenIsolation(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	tenant := events.MustTenantID("leaky")
	resp := e.provision(t, tenant, 1)
	verify := func() map[string]events.Check {
		t.Helper()
		v, err := e.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: resp.Credential})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]events.Check{}
		for _, c := range v.Checks {
			out[c.Name] = c
		}
		return out
	}
	//lint:ignore SA1019 the test replaces the user's mapping outright, as an operator mistake would
	if err := e.admin.SetPolicy(ctx, "readwrite", tenant.MinIOUser(), false); err != nil {
		t.Fatal(err)
	}
	c := verify()
	// readwrite allows every bucket and has no deny of the self-service
	// admin calls.
	if c[agent.CheckCanaryDenied].Passed || c[agent.CheckAdminDenied].Passed || c[CheckPolicyExact].Passed || !c[agent.CheckOwnAccess].Passed {
		t.Fatalf("with readwrite: %+v", c)
	}
	t.Logf("readwrite: %s", c[agent.CheckCanaryDenied].Detail)
	if strings.Contains(c[agent.CheckCanaryDenied].Detail, resp.Credential.Secret(CredSecretKey).Reveal()) {
		t.Fatal("detail leaks the secret")
	}
	// Nothing the probes managed to create is left behind.
	bs, err := e.root.ListBuckets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs {
		if strings.HasPrefix(b.Name, probePrefix) {
			t.Errorf("probe bucket %s left behind", b.Name)
		}
	}

	//lint:ignore SA1019 as above
	if err := e.admin.SetPolicy(ctx, "consoleAdmin", tenant.MinIOUser(), false); err != nil {
		t.Fatal(err)
	}
	c = verify()
	if c[agent.CheckAdminDenied].Passed {
		t.Fatalf("with consoleAdmin: %+v", c[agent.CheckAdminDenied])
	}
	t.Logf("consoleAdmin: %s", c[agent.CheckAdminDenied].Detail)
	if pols, err := e.admin.ListCannedPolicies(ctx); err == nil {
		for name := range pols {
			if strings.HasPrefix(name, probePrefix) {
				t.Errorf("probe policy %s left behind", name)
			}
		}
	}
	if l, err := e.admin.ListServiceAccounts(ctx, tenant.MinIOUser()); err != nil || len(l.Accounts) > 0 {
		t.Errorf("probe service accounts left behind: %+v (err %v)", l.Accounts, err)
	}
}

func TestQuota(t *testing.T) {
	m := newEnv(t).minio
	e := envOn(t, m, Config{BucketQuota: 1 << 20})
	tenant := events.MustTenantID("small")
	e.provision(t, tenant, 1)
	q, err := e.admin.GetBucketQuota(ctxT(t), tenant.MinIOBucket())
	if err != nil {
		t.Fatal(err)
	}
	if q.Type != madmin.HardQuota || (q.Size != 1<<20 && q.Quota != 1<<20) {
		t.Fatalf("quota = %+v, want hard 1 MiB", q)
	}
}

func TestInvalidRequests(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	cases := []struct {
		name string
		run  func() error
	}{
		{"provision bad tenant", func() error {
			_, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: "Bad--ID", Generation: 1, Password: mustGenerate(t)})
			return err
		}},
		{"provision short password", func() error {
			_, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: "acme", Generation: 1, Password: "short"})
			return err
		}},
		{"verify without credential", func() error {
			_, err := e.store.Verify(ctx, agent.VerifyRequest{Tenant: "acme", Generation: 1})
			return err
		}},
		{"deprovision bad tenant", func() error {
			_, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: "tenantprov-x", Generation: 1})
			return err
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			perm, reason := agent.Classify(c.run())
			if !perm || reason != events.ReasonInvalid {
				t.Fatalf("Classify = %v %q, want permanent %q", perm, reason, events.ReasonInvalid)
			}
		})
	}
	if found, _ := e.resources(ctx, "acme"); len(found) > 0 {
		t.Fatalf("invalid requests created %v", found)
	}
}

func TestPing(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.store.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	e.minio.Stop(t)
	if err := e.store.Ping(ctx); err == nil {
		t.Fatal("Ping succeeded with MinIO stopped")
	}
	e.minio.Start(t)
	if err := e.store.Ping(ctx); err != nil {
		t.Fatalf("Ping after restart: %v", err)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
