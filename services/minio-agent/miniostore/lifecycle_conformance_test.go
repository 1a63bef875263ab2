package miniostore

import (
	"context"
	"fmt"

	"github.com/minio/madmin-go/v3"
	"github.com/minio/minio-go/v7"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// breakages are the drifts RunLifecycle's Observe subtest makes with the
// root credential: inward (someone else reaches the bucket) and outward
// (the tenant's credential reaches more, or less, than its bucket), and
// one that loses data.
func (e *env) breakages() []storetest.Breakage {
	return []storetest.Breakage{
		{Name: "bucket policy makes the bucket public (inward)", Repairable: true,
			Break: func(ctx context.Context, t events.TenantID, _ agent.Credential) error {
				return e.root.SetBucketPolicy(ctx, t.MinIOBucket(), publicReadPolicy(t.MinIOBucket()))
			}},
		{Name: "shared tenant policy widened to the canary (outward)", Repairable: true,
			Break: func(ctx context.Context, t events.TenantID, _ agent.Credential) error {
				return e.admin.AddCannedPolicy(ctx, t.MinIOPolicy(), []byte(fmt.Sprintf(
					`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:*"],"Resource":["arn:aws:s3:::%s","arn:aws:s3:::%s/*","arn:aws:s3:::%s/*"]}]}`,
					t.MinIOBucket(), t.MinIOBucket(), events.CanaryBucket)))
			}},
		{Name: "shared tenant policy detached from the user (outward)", Repairable: true,
			Break: func(ctx context.Context, t events.TenantID, _ agent.Credential) error {
				_, err := e.admin.DetachPolicy(ctx, madmin.PolicyAssociationReq{Policies: []string{t.MinIOPolicy()}, User: t.MinIOUser()})
				return err
			}},
		{Name: "shared tenant policy attached to a group (inward)", Repairable: true,
			Break: func(ctx context.Context, t events.TenantID, _ agent.Credential) error {
				other, group := "intruder-"+string(t), "intruders-"+string(t)
				if err := e.admin.AddUser(ctx, other, "intruder-secret-1234"); err != nil {
					return err
				}
				if err := e.admin.UpdateGroupMembers(ctx, madmin.GroupAddRemove{Group: group, Members: []string{other}}); err != nil {
					return err
				}
				_, err := e.admin.AttachPolicy(ctx, madmin.PolicyAssociationReq{Policies: []string{t.MinIOPolicy()}, Group: group})
				return err
			}},
		{Name: "tenant still on its legacy policy (outward)", Repairable: true,
			Break: func(ctx context.Context, t events.TenantID, _ agent.Credential) error {
				if err := e.admin.AddCannedPolicy(ctx, t.MinIOLegacyPolicy(), legacyPolicy(t)); err != nil {
					return err
				}
				//lint:ignore SA1019 SetPolicy maps exactly this policy (as the agent does).
				if err := e.admin.SetPolicy(ctx, t.MinIOLegacyPolicy(), t.MinIOUser(), false); err != nil {
					return err
				}
				rec, err := e.store.readRecord(ctx, t)
				if err != nil || rec == nil {
					return fmt.Errorf("record of %s: %v", t, err)
				}
				rec.Policy = t.MinIOLegacyPolicy()
				return e.store.writeRecord(ctx, rec)
			}},
		{Name: "service account minted under the tenant's user (inward)", Repairable: true,
			Break: func(ctx context.Context, t events.TenantID, _ agent.Credential) error {
				_, err := e.admin.AddServiceAccount(ctx, madmin.AddServiceAccountReq{TargetUser: t.MinIOUser(), AccessKey: "straykey" + randomHex(4), SecretKey: randomHex(16)})
				return err
			}},
		{Name: "user put into a group that reads the canary (outward)", Repairable: true,
			Break: func(ctx context.Context, t events.TenantID, _ agent.Credential) error {
				pol, group := "canary-read-"+string(t), "canary-readers-"+string(t)
				if err := e.admin.AddCannedPolicy(ctx, pol, []byte(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetObject"],"Resource":["arn:aws:s3:::`+events.CanaryBucket+`/*"]}]}`)); err != nil {
					return err
				}
				if err := e.admin.UpdateGroupMembers(ctx, madmin.GroupAddRemove{Group: group, Members: []string{t.MinIOUser()}}); err != nil {
					return err
				}
				_, err := e.admin.AttachPolicy(ctx, madmin.PolicyAssociationReq{Policies: []string{pol}, Group: group})
				return err
			}},
		{Name: "user disabled behind tenantprov's back (outward)", Repairable: true,
			Break: func(ctx context.Context, t events.TenantID, _ agent.Credential) error {
				return e.admin.SetUserStatus(ctx, t.MinIOUser(), madmin.AccountDisabled)
			}},
		{Name: "bucket deleted with its objects (data lost)", Repairable: false,
			Break: func(ctx context.Context, t events.TenantID, _ agent.Credential) error {
				return e.root.RemoveBucketWithOptions(ctx, t.MinIOBucket(), minio.RemoveBucketOptions{ForceDelete: true})
			}},
	}
}

// publicReadPolicy is a bucket policy letting anyone read bucket.
func publicReadPolicy(bucket string) string {
	return fmt.Sprintf(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":["*"]},"Action":["s3:GetObject","s3:ListBucket"],"Resource":["arn:aws:s3:::%s","arn:aws:s3:::%s/*"]}]}`, bucket, bucket)
}
