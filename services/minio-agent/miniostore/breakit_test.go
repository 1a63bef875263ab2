package miniostore

import (
	"context"
	"testing"

	"github.com/minio/madmin-go/v3"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// TestVerifyCatchesBreakage is issue 10's break-it test for MinIO: a
// provisioned tenant passes Verify; the admin then breaks its isolation in
// one way, inward or outward, and Verify must report the named check
// failed; once the breakage is undone Verify passes again (so the breakage,
// not something else, failed it).
func TestVerifyCatchesBreakage(t *testing.T) {
	e := newEnv(t)
	const (
		spy      = "spy-user"
		spySec   = "spy-secret-12345"
		spyGroup = "spies"
		spyPol   = "spy-tenants"
	)
	policy := func(stmt string) []byte {
		return []byte(`{"Version":"2012-10-17","Statement":[` + stmt + `]}`)
	}
	cases := []struct {
		name   string
		want   string // the check that must fail
		break_ func(ctx context.Context, tn events.TenantID) error
		undo   func(ctx context.Context, tn events.TenantID) error
	}{
		{
			name: "anonymous download policy on the bucket", want: CheckBucketNotPublic,
			break_: func(ctx context.Context, tn events.TenantID) error {
				return e.root.SetBucketPolicy(ctx, tn.MinIOBucket(), string(policy(
					`{"Effect":"Allow","Principal":{"AWS":["*"]},"Action":["s3:GetObject"],"Resource":["arn:aws:s3:::`+tn.MinIOBucket()+`/*"]}`)))
			},
			undo: func(ctx context.Context, tn events.TenantID) error {
				return e.root.SetBucketPolicy(ctx, tn.MinIOBucket(), "")
			},
		},
		{
			name: "bucket policy granting another principal", want: CheckBucketNotPublic,
			break_: func(ctx context.Context, tn events.TenantID) error {
				if err := e.admin.AddUser(ctx, spy, spySec); err != nil {
					return err
				}
				return e.root.SetBucketPolicy(ctx, tn.MinIOBucket(), string(policy(
					`{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam:::user/`+spy+`"]},"Action":["s3:ListBucket"],"Resource":["arn:aws:s3:::`+tn.MinIOBucket()+`"]}`)))
			},
			undo: func(ctx context.Context, tn events.TenantID) error {
				if err := e.root.SetBucketPolicy(ctx, tn.MinIOBucket(), ""); err != nil {
					return err
				}
				return e.admin.RemoveUser(ctx, spy)
			},
		},
		{
			name: "another user with a policy naming arn:aws:s3:::*", want: CheckNoForeignGrants,
			break_: func(ctx context.Context, tn events.TenantID) error {
				if err := e.admin.AddUser(ctx, spy, spySec); err != nil {
					return err
				}
				_, err := e.admin.AttachPolicy(ctx, madmin.PolicyAssociationReq{Policies: []string{"readonly"}, User: spy})
				return err
			},
			undo: func(ctx context.Context, _ events.TenantID) error { return e.admin.RemoveUser(ctx, spy) },
		},
		{
			name: "a group with a policy naming arn:aws:s3:::tenant-*", want: CheckNoForeignGrants,
			break_: func(ctx context.Context, tn events.TenantID) error {
				if err := e.admin.AddCannedPolicy(ctx, spyPol, policy(
					`{"Effect":"Allow","Action":["s3:GetObject"],"Resource":["arn:aws:s3:::tenant-*"]}`)); err != nil {
					return err
				}
				if err := e.admin.AddUser(ctx, spy, spySec); err != nil {
					return err
				}
				if err := e.admin.UpdateGroupMembers(ctx, madmin.GroupAddRemove{Group: spyGroup, Members: []string{spy}}); err != nil {
					return err
				}
				_, err := e.admin.AttachPolicy(ctx, madmin.PolicyAssociationReq{Policies: []string{spyPol}, Group: spyGroup})
				return err
			},
			undo: func(ctx context.Context, _ events.TenantID) error {
				if _, err := e.admin.DetachPolicy(ctx, madmin.PolicyAssociationReq{Policies: []string{spyPol}, Group: spyGroup}); err != nil {
					return err
				}
				if err := e.admin.UpdateGroupMembers(ctx, madmin.GroupAddRemove{Group: spyGroup, Members: []string{spy}, IsRemove: true}); err != nil {
					return err
				}
				if err := e.admin.UpdateGroupMembers(ctx, madmin.GroupAddRemove{Group: spyGroup, IsRemove: true}); err != nil {
					return err
				}
				if err := e.admin.RemoveUser(ctx, spy); err != nil {
					return err
				}
				return e.admin.RemoveCannedPolicy(ctx, spyPol)
			},
		},
		{
			name: "the tenant's policy widened to *", want: CheckPolicyExact,
			break_: func(ctx context.Context, tn events.TenantID) error {
				return e.admin.AddCannedPolicy(ctx, tn.MinIOPolicy(), policy(`{"Effect":"Allow","Action":["s3:*"],"Resource":["arn:aws:s3:::*"]}`))
			},
			undo: func(ctx context.Context, tn events.TenantID) error {
				return e.admin.AddCannedPolicy(ctx, tn.MinIOPolicy(), TenantPolicy(tn))
			},
		},
		{
			name: "a second policy attached to the tenant's user", want: CheckPolicyExact,
			break_: func(ctx context.Context, tn events.TenantID) error {
				_, err := e.admin.AttachPolicy(ctx, madmin.PolicyAssociationReq{Policies: []string{"diagnostics"}, User: tn.MinIOUser()})
				return err
			},
			undo: func(ctx context.Context, tn events.TenantID) error {
				_, err := e.admin.DetachPolicy(ctx, madmin.PolicyAssociationReq{Policies: []string{"diagnostics"}, User: tn.MinIOUser()})
				return err
			},
		},
		{
			name: "a service account under the tenant's user", want: CheckNoExtraKeys,
			break_: func(ctx context.Context, tn events.TenantID) error {
				_, err := e.admin.AddServiceAccount(ctx, madmin.AddServiceAccountReq{TargetUser: tn.MinIOUser(), AccessKey: "spy-key", SecretKey: spySec})
				return err
			},
			undo: func(ctx context.Context, _ events.TenantID) error {
				return e.admin.DeleteServiceAccount(ctx, "spy-key")
			},
		},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxT(t)
			tn := events.MustTenantID("broken-" + string(rune('a'+i)))
			cred := e.provision(t, tn, 1).Credential
			verify := func(when string) map[string]events.Check {
				t.Helper()
				v, err := e.store.Verify(ctx, agent.VerifyRequest{Tenant: tn, Generation: 1, Credential: cred})
				if err != nil {
					t.Fatalf("Verify %s: %v", when, err)
				}
				out := map[string]events.Check{}
				for _, c := range v.Checks {
					out[c.Name] = c
				}
				return out
			}
			for name, c := range verify("before the breakage") {
				if !c.Passed {
					t.Fatalf("before the breakage %s failed: %s", name, c.Detail)
				}
			}
			if err := tc.break_(ctx, tn); err != nil {
				t.Fatalf("break: %v", err)
			}
			c := verify("after the breakage")
			if c[tc.want].Passed {
				t.Errorf("%s passed after %q: %s", tc.want, tc.name, c[tc.want].Detail)
			}
			t.Logf("%s: %s", tc.want, c[tc.want].Detail)
			if err := tc.undo(ctx, tn); err != nil {
				t.Fatalf("undo: %v", err)
			}
			for name, c := range verify("after the undo") {
				if !c.Passed {
					t.Errorf("after the undo %s failed: %s", name, c.Detail)
				}
			}
			if _, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tn, Generation: 1}); err != nil {
				t.Fatalf("Deprovision: %v", err)
			}
		})
	}
}
