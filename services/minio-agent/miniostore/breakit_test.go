package miniostore

import (
	"context"
	"strings"
	"testing"

	"github.com/minio/madmin-go/v3"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

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
			name: "the shared tenant policy widened to *", want: CheckPolicyExact,
			break_: func(ctx context.Context, tn events.TenantID) error {
				return e.admin.AddCannedPolicy(ctx, tn.MinIOPolicy(), policy(`{"Effect":"Allow","Action":["s3:*"],"Resource":["arn:aws:s3:::*"]}`))
			},
			undo: func(ctx context.Context, tn events.TenantID) error {
				return e.admin.AddCannedPolicy(ctx, tn.MinIOPolicy(), TenantPolicy())
			},
		},
		{
			name: "the shared tenant policy attached to a group", want: CheckNoForeignGrants,
			break_: func(ctx context.Context, tn events.TenantID) error {
				if err := e.admin.AddUser(ctx, spy, spySec); err != nil {
					return err
				}
				if err := e.admin.UpdateGroupMembers(ctx, madmin.GroupAddRemove{Group: spyGroup, Members: []string{spy}}); err != nil {
					return err
				}
				_, err := e.admin.AttachPolicy(ctx, madmin.PolicyAssociationReq{Policies: []string{tn.MinIOPolicy()}, Group: spyGroup})
				return err
			},
			undo: func(ctx context.Context, tn events.TenantID) error {
				if _, err := e.admin.DetachPolicy(ctx, madmin.PolicyAssociationReq{Policies: []string{tn.MinIOPolicy()}, Group: spyGroup}); err != nil {
					return err
				}
				if err := e.admin.UpdateGroupMembers(ctx, madmin.GroupAddRemove{Group: spyGroup, Members: []string{spy}, IsRemove: true}); err != nil {
					return err
				}
				if err := e.admin.UpdateGroupMembers(ctx, madmin.GroupAddRemove{Group: spyGroup, IsRemove: true}); err != nil {
					return err
				}
				return e.admin.RemoveUser(ctx, spy)
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
				return e.checksByName(t, ctx, tn, cred, when)
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

// TestForeignGrantsThroughPolicyVariables: MinIO substitutes policy
// variables in a Resource before it matches the request — ${aws:username}
// becomes the requesting user's name (a service account's or temporary
// key's parent user) — so a policy naming no tenant's bucket literally can
// still reach one, and a user name holding "*" or "?" then acts as a
// wildcard. Each case makes a foreign user with such a policy, shows with
// that user's own credential whether it really reaches tenant zzz's bucket,
// and requires no_foreign_grants to fail exactly when it does, naming the
// policy and the user or group; after the undo Verify passes again.
func TestForeignGrantsThroughPolicyVariables(t *testing.T) {
	e := newEnv(t)
	tn := events.MustTenantID("zzz")
	cred := e.provision(t, tn, 1).Credential
	const (
		spySecret = "variable-secret-12345"
		polName   = "per-user-buckets"
	)
	verify := func(t *testing.T, ctx context.Context, when string) map[string]events.Check {
		t.Helper()
		return e.checksByName(t, ctx, tn, cred, when)
	}
	cases := []struct {
		name      string
		user      string
		group     string // if set, the policy is attached to this group, with user in it
		resources string // the policy's Resource list, JSON
		ownBucket string // a bucket the policy gives the user, created to show the policy works
		reaches   bool   // the user reaches tenant-zzz: no_foreign_grants must fail
	}{
		{
			name: "tenant-${aws:username} on a user named zzz", user: "zzz",
			resources: `["arn:aws:s3:::tenant-${aws:username}","arn:aws:s3:::tenant-${aws:username}/*"]`,
			reaches:   true,
		},
		{
			name: "tenant-${aws:username} on a group with a member named zzz", user: "zzz", group: "per-user",
			resources: `["arn:aws:s3:::tenant-${aws:username}","arn:aws:s3:::tenant-${aws:username}/*"]`,
			reaches:   true,
		},
		{
			name: "${aws:username} on a user named tenant-*", user: "tenant-*",
			resources: `["arn:aws:s3:::${aws:username}","arn:aws:s3:::${aws:username}/*"]`,
			reaches:   true,
		},
		{
			name: "${aws:username} on a user named tenant-?zz", user: "tenant-?zz",
			resources: `["arn:aws:s3:::${aws:username}","arn:aws:s3:::${aws:username}/*"]`,
			reaches:   true,
		},
		{
			name: "${aws:username} on a user named alice", user: "alice", ownBucket: "alice",
			resources: `["arn:aws:s3:::${aws:username}","arn:aws:s3:::${aws:username}/*"]`,
			reaches:   false,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxT(t)
			for name, c := range verify(t, ctx, "before the breakage") {
				if !c.Passed {
					t.Fatalf("before the breakage %s failed: %s", name, c.Detail)
				}
			}
			// The breakage.
			doc := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:*"],"Resource":` + tc.resources + `}]}`
			if err := e.admin.AddCannedPolicy(ctx, polName, []byte(doc)); err != nil {
				t.Fatalf("add policy: %v", err)
			}
			if err := e.admin.AddUser(ctx, tc.user, spySecret); err != nil {
				t.Fatalf("add user %s: %v", tc.user, err)
			}
			assoc := madmin.PolicyAssociationReq{Policies: []string{polName}, User: tc.user}
			if tc.group != "" {
				if err := e.admin.UpdateGroupMembers(ctx, madmin.GroupAddRemove{Group: tc.group, Members: []string{tc.user}}); err != nil {
					t.Fatalf("add group: %v", err)
				}
				assoc = madmin.PolicyAssociationReq{Policies: []string{polName}, Group: tc.group}
			}
			if _, err := e.admin.AttachPolicy(ctx, assoc); err != nil {
				t.Fatalf("attach: %v", err)
			}
			if tc.ownBucket != "" {
				if err := e.root.MakeBucket(ctx, tc.ownBucket, minio.MakeBucketOptions{}); err != nil {
					t.Fatalf("make bucket %s: %v", tc.ownBucket, err)
				}
			}

			// What the foreign user can really do, with its own key.
			spy, err := minio.New(e.minio.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(tc.user, spySecret, "")})
			if err != nil {
				t.Fatal(err)
			}
			put := func(bucket string) error {
				_, err := spy.PutObject(ctx, bucket, "spy.txt", strings.NewReader("x"), 1, minio.PutObjectOptions{})
				return err
			}
			if tc.ownBucket != "" {
				if err := put(tc.ownBucket); err != nil {
					t.Fatalf("%s cannot put into %s, so the policy does not do what the case needs: %v", tc.user, tc.ownBucket, err)
				}
			}
			err = put(tn.MinIOBucket())
			switch {
			case tc.reaches && err != nil:
				t.Fatalf("%s cannot put into %s, so the case shows no attack: %v", tc.user, tn.MinIOBucket(), err)
			case !tc.reaches && s3Code(err) != codeAccessDenied:
				t.Fatalf("%s put into %s: %v; want AccessDenied", tc.user, tn.MinIOBucket(), err)
			}

			c := verify(t, ctx, "after the breakage")[CheckNoForeignGrants]
			t.Logf("%s: passed=%v %s", CheckNoForeignGrants, c.Passed, c.Detail)
			if c.Passed == tc.reaches {
				t.Errorf("%s passed=%v while %s reaching %s is %v: %s", CheckNoForeignGrants, c.Passed, tc.user, tn.MinIOBucket(), tc.reaches, c.Detail)
			}
			if tc.reaches {
				who := "user " + tc.user
				if tc.group != "" {
					who = "group " + tc.group
				}
				if want := "policy " + polName + " on " + who; !strings.Contains(c.Detail, want) {
					t.Errorf("detail %q does not name %q", c.Detail, want)
				}
			}

			// The undo.
			if tc.reaches {
				if err := e.root.RemoveObject(ctx, tn.MinIOBucket(), "spy.txt", minio.RemoveObjectOptions{}); err != nil {
					t.Fatalf("remove spy object: %v", err)
				}
			}
			if tc.ownBucket != "" {
				if err := e.root.RemoveObject(ctx, tc.ownBucket, "spy.txt", minio.RemoveObjectOptions{}); err != nil {
					t.Fatalf("remove spy object: %v", err)
				}
				if err := e.root.RemoveBucket(ctx, tc.ownBucket); err != nil {
					t.Fatalf("remove bucket: %v", err)
				}
			}
			if _, err := e.admin.DetachPolicy(ctx, assoc); err != nil {
				t.Fatalf("detach: %v", err)
			}
			if tc.group != "" {
				if err := e.admin.UpdateGroupMembers(ctx, madmin.GroupAddRemove{Group: tc.group, Members: []string{tc.user}, IsRemove: true}); err != nil {
					t.Fatalf("leave group: %v", err)
				}
				if err := e.admin.UpdateGroupMembers(ctx, madmin.GroupAddRemove{Group: tc.group, IsRemove: true}); err != nil {
					t.Fatalf("remove group: %v", err)
				}
			}
			if err := e.admin.RemoveUser(ctx, tc.user); err != nil {
				t.Fatalf("remove user: %v", err)
			}
			if err := e.admin.RemoveCannedPolicy(ctx, polName); err != nil {
				t.Fatalf("remove policy: %v", err)
			}
			for name, c := range verify(t, ctx, "after the undo") {
				if !c.Passed {
					t.Errorf("after the undo %s failed: %s", name, c.Detail)
				}
			}
		})
	}
}
