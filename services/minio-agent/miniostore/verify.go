package miniostore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/minio/madmin-go/v3"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// errNoCredential reports a VerifyRequest without the tenant's keys.
var errNoCredential = errors.New("credential has no access_key or secret_key")

// probePrefix starts the names of everything Verify writes or tries to
// create; it is in the reserved namespace, so it never collides with a
// tenant's data or resources.
const probePrefix = events.ReservedPrefix + "-probe-"

// propagationWait bounds how long own_access retries a freshly created
// user that a server of a multi-node deployment does not know yet. (MinIO
// notifies its peers before AddUser returns, so this is a safety margin,
// and it is what Verify of a removed user costs.)
const propagationWait = time.Second

// Names of the inward checks Verify reports besides agent.RequiredChecks.
const (
	// CheckBucketNotPublic passes when the tenant's bucket has no bucket
	// policy and anonymous requests to it are refused.
	CheckBucketNotPublic = "bucket_not_public"
	// CheckNoForeignGrants passes when no canned policy that grants any S3
	// action on the tenant's bucket or its objects (wildcards included)
	// is attached to any user or group but the tenant's user holding the
	// shared tenant policy. A policy with variables in its resources — the
	// shared tenant policy among them — is judged for each user it is
	// attached to with that user's name in ${aws:username}, and for a
	// group (or a name MinIO would not substitute) with every variable
	// matching anything.
	CheckNoForeignGrants = "no_foreign_grants"
	// CheckPolicyExact passes when the tenant's user is enabled, in no
	// group, and has exactly the shared tenant policy, whose document is
	// exactly TenantPolicy.
	CheckPolicyExact = "policy_exact"
	// CheckNoExtraKeys passes when the tenant's user has no service
	// accounts but the rotated credentials recorded in the system record
	// (enabled).
	CheckNoExtraKeys = "no_extra_keys"
)

// Verify checks isolation in both directions. Outward, with the tenant's
// credential against the agent's endpoint (not the public one, which the
// agent may not reach):
//
//   - own_access: a probe object is put, read back and deleted in the
//     tenant's bucket;
//   - canary_denied: listing and reading the canary bucket, writing into
//     it, listing the system bucket (another bucket) and creating a
//     bucket are all refused with AccessDenied;
//   - wrong_password_refused: the same access key with a wrong secret is
//     refused (SignatureDoesNotMatch or InvalidAccessKeyId);
//   - admin_denied: admin API calls (server info, list users, add a
//     policy, create a service account, list its access keys, set its own
//     secret) are refused with AccessDenied.
//
// Inward, with the admin credential and anonymously:
//
//   - bucket_not_public: no bucket policy on the tenant's bucket, and
//     anonymous listing and reading are refused;
//   - no_foreign_grants: no canned policy that allows any S3 action on the
//     bucket or its objects (arn:aws:s3:::*, tenant-<id>* and other
//     wildcards included) is attached to a user or group (other than the
//     agent's admin user), but the shared tenant policy on the tenant's
//     own user. Policy variables are substituted as MinIO does before
//     matching: ${aws:username} by the name of the user the policy is
//     attached to (so the shared policy on any other tenant's user passes,
//     and "tenant-${aws:username}" on a user named <id>, or the shared
//     policy on a user named "tenant-*" or on any group, fails it), every
//     other variable, and any variable for a group, by "*";
//   - policy_exact: the tenant's user is enabled, in no group, mapped to
//     exactly the shared tenant policy, and that policy is exactly
//     TenantPolicy;
//   - no_extra_keys: the tenant's user has no service accounts but the
//     rotated credentials of its system record (lifecycle.go), each
//     enabled.
//
// Anything a probe wrongly managed to create is removed with the admin
// credential. An error is returned only if MinIO could not be reached.
func (s *Store) Verify(ctx context.Context, req agent.VerifyRequest) (agent.VerifyResponse, error) {
	t := req.Tenant
	access, key := req.Credential.String(CredAccessKey), req.Credential.Secret(CredSecretKey)
	if access == "" || key.IsZero() {
		return agent.VerifyResponse{}, agent.Permanent(events.ReasonInvalid, errNoCredential)
	}
	if err := s.ensureSystem(ctx); err != nil {
		return agent.VerifyResponse{}, err
	}
	tenant, err := s.tenantS3(access, key.Reveal())
	if err != nil {
		return agent.VerifyResponse{}, err
	}
	wrong, err := s.tenantS3(access, tamper(key).Reveal())
	if err != nil {
		return agent.VerifyResponse{}, err
	}
	anonymous, err := s.tenantS3("", "")
	if err != nil {
		return agent.VerifyResponse{}, err
	}
	tenantAdmin, err := madmin.NewWithOptions(s.cfg.Endpoint, &madmin.Options{
		Creds: credentials.NewStaticV4(access, key.Reveal(), ""), Secure: s.cfg.Secure, Transport: s.transport,
	})
	if err != nil {
		return agent.VerifyResponse{}, fmt.Errorf("tenant admin client: %w", err)
	}

	rec, err := s.readRecord(ctx, t)
	if err != nil {
		return agent.VerifyResponse{}, err
	}
	rotated := rec.recordedKeys()[access]

	checks := make([]events.Check, 8)
	err = s.steps(ctx,
		func(ctx context.Context) (err error) { checks[0], err = s.checkOwnAccess(ctx, tenant, t); return err },
		func(ctx context.Context) (err error) { checks[1], err = s.checkCanaryDenied(ctx, tenant); return err },
		func(ctx context.Context) (err error) {
			checks[2], err = s.checkWrongPassword(ctx, wrong, t)
			return err
		},
		func(ctx context.Context) (err error) {
			checks[3], err = s.checkAdminDenied(ctx, tenantAdmin, access, key, rotated)
			return err
		},
		func(ctx context.Context) (err error) {
			checks[4], err = s.checkBucketNotPublic(ctx, anonymous, t)
			return err
		},
		func(ctx context.Context) (err error) { checks[5], _, err = s.checkNoForeignGrants(ctx, t); return err },
		func(ctx context.Context) (err error) {
			checks[6], _, err = s.checkPolicyExact(ctx, t, false)
			return err
		},
		func(ctx context.Context) (err error) { checks[7], _, err = s.checkNoExtraKeys(ctx, t, rec); return err },
	)
	if err != nil {
		return agent.VerifyResponse{}, err
	}
	return agent.VerifyResponse{Checks: checks}, nil
}

// tenantS3 is an S3 client with a tenant's keys, on the agent's endpoint.
func (s *Store) tenantS3(access, key string) (*minio.Client, error) {
	c, err := minio.New(s.cfg.Endpoint, &minio.Options{
		Creds:     credentials.NewStaticV4(access, key, ""),
		Secure:    s.cfg.Secure,
		Region:    s.serverRegion(),
		Transport: s.transport,
	})
	if err != nil {
		return nil, fmt.Errorf("tenant client: %w", err)
	}
	return c, nil
}

// tamper returns a secret of the same length that differs in its last
// character.
func tamper(k secret.String) secret.String {
	b := []byte(k.Reveal())
	if b[len(b)-1] == 'A' {
		b[len(b)-1] = 'B'
	} else {
		b[len(b)-1] = 'A'
	}
	return secret.String(b)
}

func (s *Store) checkOwnAccess(ctx context.Context, c *minio.Client, t events.TenantID) (events.Check, error) {
	check := events.Check{Name: agent.CheckOwnAccess}
	bucket := t.MinIOBucket()
	obj := "tenantprov-probe/" + randomHex(8)
	payload := []byte("tenantprov verification probe " + obj)
	fail := func(step string, err error) (events.Check, error) {
		if err != nil && !answered(err) {
			return check, fmt.Errorf("own access: %s: %w", step, err)
		}
		check.Detail = fmt.Sprintf("%s %s/%s: %s", step, bucket, obj, describe(err))
		return check, nil
	}
	err := s.call(ctx, "verify.own_put", func(ctx context.Context) error {
		deadline := time.Now().Add(propagationWait)
		for {
			_, err := c.PutObject(ctx, bucket, obj, bytes.NewReader(payload), int64(len(payload)),
				minio.PutObjectOptions{DisableMultipart: true})
			if s3Code(err) != codeInvalidAccessKeyID || time.Now().After(deadline) {
				return err
			}
			select { // a new user not yet known to this server
			case <-ctx.Done():
				return err
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	if err != nil {
		return fail("put", err)
	}
	var got []byte
	err = s.call(ctx, "verify.own_get", func(ctx context.Context) error {
		o, err := c.GetObject(ctx, bucket, obj, minio.GetObjectOptions{})
		if err != nil {
			return err
		}
		defer o.Close()
		got, err = io.ReadAll(io.LimitReader(o, 1<<16))
		return err
	})
	if err != nil {
		return fail("get", err)
	}
	err = s.call(ctx, "verify.own_delete", func(ctx context.Context) error {
		return c.RemoveObject(ctx, bucket, obj, minio.RemoveObjectOptions{})
	})
	if err != nil {
		return fail("delete", err)
	}
	if !bytes.Equal(got, payload) {
		check.Detail = fmt.Sprintf("get %s/%s returned %d bytes that differ from the %d put", bucket, obj, len(got), len(payload))
		return check, nil
	}
	check.Passed = true
	check.Detail = "put, get and delete of a probe object in " + bucket
	return check, nil
}

// denialProbe is one operation a tenant credential must be refused.
type denialProbe struct {
	what string
	run  func(ctx context.Context) error
	// undo removes what the operation created if it was wrongly allowed.
	undo func(ctx context.Context)
	// alsoRefused are error codes besides AccessDenied that mean the
	// operation was refused.
	alsoRefused []string
}

func (s *Store) checkCanaryDenied(ctx context.Context, c *minio.Client) (events.Check, error) {
	probeObj := probePrefix + randomHex(8)
	probeBucket := probePrefix + randomHex(8)
	probes := []denialProbe{
		{what: "list " + events.CanaryBucket, run: func(ctx context.Context) error {
			return firstListError(ctx, c, events.CanaryBucket)
		}},
		{what: "get " + events.CanaryBucket + "/" + canaryObject, run: func(ctx context.Context) error {
			o, err := c.GetObject(ctx, events.CanaryBucket, canaryObject, minio.GetObjectOptions{})
			if err != nil {
				return err
			}
			defer o.Close()
			_, err = o.Stat()
			return err
		}},
		{what: "put into " + events.CanaryBucket, run: func(ctx context.Context) error {
			_, err := c.PutObject(ctx, events.CanaryBucket, probeObj, strings.NewReader("x"), 1, minio.PutObjectOptions{DisableMultipart: true})
			return err
		}, undo: func(ctx context.Context) {
			_ = s.s3.RemoveObject(ctx, events.CanaryBucket, probeObj, minio.RemoveObjectOptions{})
		}},
		{what: "list " + SystemBucket + " (another bucket)", run: func(ctx context.Context) error {
			return firstListError(ctx, c, SystemBucket)
		}},
		{what: "create bucket " + probeBucket, run: func(ctx context.Context) error {
			return c.MakeBucket(ctx, probeBucket, minio.MakeBucketOptions{Region: s.serverRegion()})
		}, undo: func(ctx context.Context) {
			_ = s.s3.RemoveBucketWithOptions(ctx, probeBucket, minio.RemoveBucketOptions{ForceDelete: true})
		}},
	}
	return s.denials(ctx, agent.CheckCanaryDenied, "verify.canary_denied", probes)
}

// checkAdminDenied probes the admin API with the tenant's keys; rotated
// says they are a rotated credential (a service account), which MinIO
// refuses to treat as a user with XMinioInvalidIAMCredentials.
func (s *Store) checkAdminDenied(ctx context.Context, c *madmin.AdminClient, access string, key secret.String, rotated bool) (events.Check, error) {
	var notUser []string
	if rotated {
		notUser = []string{codeInvalidIAMCredentials}
	}
	probePolicy := probePrefix + randomHex(8)
	// Service-account access keys are at most 20 characters.
	probeKey := "tpprobe" + randomHex(6)
	probes := []denialProbe{
		{what: "admin server info", run: func(ctx context.Context) error {
			_, err := c.ServerInfo(ctx)
			return err
		}},
		{what: "admin list users", run: func(ctx context.Context) error {
			_, err := c.ListUsers(ctx)
			return err
		}},
		{what: "admin add policy", run: func(ctx context.Context) error {
			return c.AddCannedPolicy(ctx, probePolicy, []byte(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetObject"],"Resource":["arn:aws:s3:::`+events.CanaryBucket+`/*"]}]}`))
		}, undo: func(ctx context.Context) {
			_ = s.admin.RemoveCannedPolicy(ctx, probePolicy)
		}},
		{what: "create a service account for itself", run: func(ctx context.Context) error {
			return addServiceAccountSealed(ctx, c, key.Reveal(), probeKey, randomHex(16))
		}, undo: func(ctx context.Context) {
			_ = s.admin.DeleteServiceAccount(ctx, probeKey)
		}},
		{what: "list its access keys", run: func(ctx context.Context) error {
			_, err := c.ListAccessKeysBulk(ctx, nil, madmin.ListAccessKeysOpts{})
			return err
		}},
		// Setting the secret it already has changes nothing if allowed.
		{what: "set its own secret", run: func(ctx context.Context) error {
			return addUserSealed(ctx, c, key.Reveal(), access, key.Reveal())
		}, alsoRefused: notUser},
	}
	return s.denials(ctx, agent.CheckAdminDenied, "verify.admin_denied", probes)
}

func (s *Store) checkBucketNotPublic(ctx context.Context, anonymous *minio.Client, t events.TenantID) (events.Check, error) {
	check := events.Check{Name: CheckBucketNotPublic}
	bucket := t.MinIOBucket()
	var policy string
	err := s.call(ctx, "verify.bucket_policy", func(ctx context.Context) error {
		var err error
		policy, err = s.s3.GetBucketPolicy(ctx, bucket)
		if s3Code(err) == codeNoSuchBucketPolicy {
			return nil
		}
		return err
	})
	if err != nil {
		return check, fmt.Errorf("%s: bucket policy of %s: %w", check.Name, bucket, err)
	}
	var problems []string
	if strings.TrimSpace(policy) != "" {
		problems = append(problems, "bucket "+bucket+" has a bucket policy: "+truncate(policy, 300))
	}
	probes := []denialProbe{
		{what: "anonymous list " + bucket, run: func(ctx context.Context) error {
			return firstListError(ctx, anonymous, bucket)
		}},
		{what: "anonymous get " + bucket + "/" + probePrefix + "absent", run: func(ctx context.Context) error {
			_, err := anonymous.StatObject(ctx, bucket, probePrefix+"absent", minio.StatObjectOptions{})
			return err
		}},
	}
	denied, err := s.denials(ctx, check.Name, "verify.anonymous_denied", probes)
	if err != nil {
		return check, err
	}
	if !denied.Passed {
		problems = append(problems, denied.Detail)
	}
	if len(problems) > 0 {
		check.Detail = strings.Join(problems, "; ")
		return check, nil
	}
	check.Passed = true
	check.Detail = "no bucket policy on " + bucket + "; " + denied.Detail
	return check, nil
}

// policyEntity is a user or a group a policy is attached to.
type policyEntity struct {
	policy      string
	user, group string
}

func (e policyEntity) String() string {
	if e.group != "" {
		return "group " + e.group
	}
	return "user " + e.user
}

// grantFindings is what checkNoForeignGrants found, for Observe's repair.
type grantFindings struct {
	// own are the users and groups, other than the tenant's user, that
	// hold one of tenantprov's policies reaching the bucket — the shared
	// tenant policy, or the tenant's legacy policy — (Observe may detach
	// it: the policy is tenantprov's).
	own []policyEntity
	// foreign counts foreign policies on users or groups that reach the
	// bucket (reported only).
	foreign int
}

// checkNoForeignGrants is the no_foreign_grants check (see Verify). A
// policy without variables is matched once, whoever holds it; only one
// with a variable in a resource that reaches the bucket for anyone is
// matched again per attached user.
//
// Two policies are tenantprov's: the shared tenant policy, which reaches
// the bucket for the tenant's user only, and the tenant's legacy policy
// tenant-<id>-rw (an agent before the shared policy made it; policy_exact
// fails until the tenant is migrated off it). On the tenant's own user
// they are the tenant's grant; on anyone else they are reported as
// tenantprov's policy attached where it must not be (Observe detaches
// them).
func (s *Store) checkNoForeignGrants(ctx context.Context, t events.TenantID) (events.Check, grantFindings, error) {
	check := events.Check{Name: CheckNoForeignGrants}
	arn := "arn:aws:s3:::" + t.MinIOBucket()
	ours := func(name string) bool { return name == t.MinIOPolicy() || name == t.MinIOLegacyPolicy() }
	var (
		granting []string // reach the bucket whoever holds them
		perUser  []string // reach it for some users only (policy variables)
		unread   []string
		grants   []string
		own      []policyEntity
		spared   []string // perUser policies attached only where they do not reach
	)
	err := s.call(ctx, "verify.foreign_grants", func(ctx context.Context) error {
		snap, err := s.grantReads.Get(ctx, struct{}{}, s.readGrants)
		if err != nil {
			return err
		}
		for name, p := range snap.policies {
			switch {
			case p.err:
				unread = append(unread, name)
				granting = append(granting, name)
			case !grantsBucket(p.doc, arn, anyone):
				// Reaches it for nobody: what it grants to anyone
				// covers what it grants to each user.
			case p.doc.variables:
				perUser = append(perUser, name)
			default:
				granting = append(granting, name)
			}
		}
		slices.Sort(granting)
		slices.Sort(perUser)
		// found records that the policy name on e reaches the bucket.
		found := func(name string, e policyEntity) {
			switch {
			case e.user == t.MinIOUser() && ours(name):
				// The tenant's own grant.
			case ours(name):
				e.policy = name
				own = append(own, e)
			default:
				grants = append(grants, "policy "+name+" on "+e.String())
			}
		}
		for _, name := range granting {
			m := snap.entities[name]
			for _, u := range m.Users {
				if u != s.cfg.RootUser {
					found(name, policyEntity{user: u})
				}
			}
			for _, g := range m.Groups {
				found(name, policyEntity{group: g})
			}
		}
		// A policy with variables is evaluated for each user it is
		// attached to, with that user's name; for a group, whose members
		// each bring their own, it reaches the bucket as it does for
		// anyone.
		for _, name := range perUser {
			m, doc := snap.entities[name], snap.policies[name].doc
			n, o := len(grants), len(own)
			for _, u := range m.Users {
				if u != s.cfg.RootUser && grantsBucket(doc, arn, requestUsername(u)) {
					found(name, policyEntity{user: u})
				}
			}
			for _, g := range m.Groups {
				found(name, policyEntity{group: g})
			}
			if len(grants) == n && len(own) == o && len(m.Users) > 0 {
				spared = append(spared, name)
			}
		}
		return nil
	})
	if err != nil {
		return check, grantFindings{}, fmt.Errorf("%s: %w", check.Name, err)
	}
	found := grantFindings{own: own, foreign: len(grants)}
	for _, e := range own {
		grants = append(grants, "policy "+e.policy+" on "+e.String())
	}
	slices.Sort(grants)
	if len(grants) > 0 {
		check.Detail = "reach " + t.MinIOBucket() + ": " + strings.Join(grants, ", ")
		if len(unread) > 0 {
			check.Detail += " (unreadable policies counted as granting: " + strings.Join(unread, ", ") + ")"
		}
		return check, found, nil
	}
	check.Passed = true
	check.Detail = fmt.Sprintf("no user or group but the tenant's has a policy reaching %s (%d policies could name it", t.MinIOBucket(), len(granting)+len(perUser))
	if len(spared) > 0 {
		check.Detail += "; " + strings.Join(spared, ", ") + " reaches it, through policy variables, for no user holding it but " + t.MinIOUser()
	}
	check.Detail += ")"
	return check, found, nil
}

// policyFindings is what checkPolicyExact found wrong, for Observe's
// repair.
type policyFindings struct {
	userMissing   bool     // no such user (or unreadable)
	policyMissing bool     // no such policy
	document      bool     // the policy document differs
	mapping       bool     // the user's policies are not exactly the tenant's
	groups        []string // groups the user is in
	status        bool     // the user's status is not the wanted one
}

func (f policyFindings) any() bool {
	return f.userMissing || f.policyMissing || f.document || f.mapping || len(f.groups) > 0 || f.status
}

// checkPolicyExact checks the tenant's user and policy; suspended says the
// user is meant to be disabled (Observe of a suspended tenant).
func (s *Store) checkPolicyExact(ctx context.Context, t events.TenantID, suspended bool) (events.Check, policyFindings, error) {
	check := events.Check{Name: CheckPolicyExact}
	var (
		f          policyFindings
		ui         madmin.UserInfo
		doc        []byte
		uerr, perr error
	)
	err := s.call(ctx, "verify.policy_exact", func(ctx context.Context) error {
		ui, uerr = s.admin.GetUserInfo(ctx, t.MinIOUser())
		if uerr != nil && !answered(uerr) {
			return uerr
		}
		info, err := s.admin.InfoCannedPolicyV2(ctx, events.MinIOTenantPolicy)
		if err != nil && !answered(err) {
			return err
		}
		if perr = err; err == nil {
			doc = info.Policy // info is nil on an error
		}
		return nil
	})
	if err != nil {
		return check, f, fmt.Errorf("%s: %w", check.Name, err)
	}
	want := madmin.AccountEnabled
	if suspended {
		want = madmin.AccountDisabled
	}
	var problems []string
	if uerr != nil {
		f.userMissing = true
		problems = append(problems, "user "+t.MinIOUser()+" unreadable: "+describe(uerr))
	} else {
		if ui.PolicyName != t.MinIOPolicy() {
			f.mapping = true
			problems = append(problems, fmt.Sprintf("user %s has policies %q, want exactly %q", t.MinIOUser(), ui.PolicyName, t.MinIOPolicy()))
		}
		if len(ui.MemberOf) > 0 {
			f.groups = slices.Clone(ui.MemberOf)
			problems = append(problems, fmt.Sprintf("user %s is in groups %v", t.MinIOUser(), ui.MemberOf))
		}
		if ui.Status != want {
			f.status = true
			problems = append(problems, fmt.Sprintf("user %s is %q, want %q", t.MinIOUser(), ui.Status, want))
		}
	}
	if perr != nil {
		f.policyMissing = true
		problems = append(problems, "policy "+t.MinIOPolicy()+" unreadable: "+describe(perr))
	} else if !s.tenantPolicyExact(doc) {
		f.document = true
		var compact bytes.Buffer
		if json.Compact(&compact, doc) != nil {
			compact.Reset()
			compact.Write(doc)
		}
		problems = append(problems, "policy "+t.MinIOPolicy()+" differs from the tenant policy: "+truncate(compact.String(), 300))
	}
	if len(problems) > 0 {
		check.Detail = strings.Join(problems, "; ")
		return check, f, nil
	}
	check.Passed = true
	check.Detail = "user " + t.MinIOUser() + " " + string(want) + ", in no group, with exactly " + t.MinIOPolicy() + " as written"
	return check, f, nil
}

// checkNoExtraKeys passes when the only service accounts under the
// tenant's user are the rotated credentials rec records, each enabled. (A
// service account's own policy can only narrow its parent's, and the bulk
// listing does not report it.) It also returns the access keys of the
// service accounts that are not such (Observe removes them: they are keys
// of tenantprov's user that tenantprov did not make or no longer wants).
func (s *Store) checkNoExtraKeys(ctx context.Context, t events.TenantID, rec *record) (events.Check, []string, error) {
	check := events.Check{Name: CheckNoExtraKeys}
	var keys madmin.ListServiceAccountsResp
	err := s.call(ctx, "verify.extra_keys", func(ctx context.Context) error {
		// A shared bulk listing settles the usual case, a user without
		// service accounts. It leaves a disabled user out, and does not
		// give a key's status: then the user's own listing decides.
		r, listed, err := s.bulkKeys(ctx, t.MinIOUser())
		if err != nil && !answered(err) {
			return err
		}
		if err == nil && listed && len(r.ServiceAccounts) == 0 {
			return nil
		}
		keys, err = s.admin.ListServiceAccounts(ctx, t.MinIOUser())
		return err
	})
	if err != nil && !answered(err) {
		return check, nil, fmt.Errorf("%s: %w", check.Name, err)
	}
	if err != nil {
		check.Detail = "access keys of " + t.MinIOUser() + " unreadable: " + describe(err)
		return check, nil, nil
	}
	recorded := rec.recordedKeys()
	var extra, problems, ok []string
	for _, a := range keys.Accounts {
		switch {
		case !recorded[a.AccessKey]:
			extra = append(extra, a.AccessKey)
			problems = append(problems, a.AccessKey+" (not a recorded credential)")
		case a.AccountStatus != "" && a.AccountStatus != "on" && a.AccountStatus != string(madmin.AccountEnabled):
			problems = append(problems, a.AccessKey+" (status "+a.AccountStatus+")")
		default:
			ok = append(ok, a.AccessKey)
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		check.Detail = fmt.Sprintf("user %s has service accounts: %s", t.MinIOUser(), strings.Join(problems, ", "))
		return check, extra, nil
	}
	check.Passed = true
	check.Detail = fmt.Sprintf("user %s has no service accounts but its %d recorded rotated credentials (temporary keys expire and go with the user)",
		t.MinIOUser(), len(ok))
	return check, nil, nil
}

// addServiceAccountSealed asks, with client c (whose secret key is
// sealingKey), for a service account of c's own user with the given keys.
// It is madmin's AddServiceAccount with the PBKDF2-sealed body of
// addUserSealed: madmin would spend an Argon2id derivation (~0.3 s) on a
// request that is meant to be refused.
func addServiceAccountSealed(ctx context.Context, c *madmin.AdminClient, sealingKey, accessKey, secretKey string) error {
	return sealedAdminCall(ctx, c, sealingKey, http.MethodPut, "add-service-account", nil,
		madmin.AddServiceAccountReq{AccessKey: accessKey, SecretKey: secretKey})
}

// truncate shortens s to at most n bytes for a check's detail.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// denials runs probes and passes the check only if every one was refused
// with AccessDenied.
func (s *Store) denials(ctx context.Context, name, call string, probes []denialProbe) (events.Check, error) {
	check := events.Check{Name: name}
	var denied, allowed []string
	err := s.call(ctx, call, func(ctx context.Context) error {
		for _, p := range probes {
			err := p.run(ctx)
			switch {
			case err == nil:
				allowed = append(allowed, p.what+": allowed")
				if p.undo != nil {
					p.undo(context.WithoutCancel(ctx))
				}
			case !answered(err):
				return fmt.Errorf("%s: %w", p.what, err)
			case s3Code(err) == codeAccessDenied || adminCode(err) == codeAccessDenied,
				adminCode(err) != "" && slices.Contains(p.alsoRefused, adminCode(err)):
				denied = append(denied, p.what)
			default:
				allowed = append(allowed, p.what+": "+describe(err)+" instead of AccessDenied")
			}
		}
		return nil
	})
	if err != nil {
		return check, fmt.Errorf("%s: %w", name, err)
	}
	if len(allowed) > 0 {
		check.Detail = "not denied: " + strings.Join(allowed, "; ")
		return check, nil
	}
	check.Passed = true
	check.Detail = "denied: " + strings.Join(denied, ", ")
	return check, nil
}

func (s *Store) checkWrongPassword(ctx context.Context, c *minio.Client, t events.TenantID) (events.Check, error) {
	check := events.Check{Name: agent.CheckWrongPasswordRefused}
	var err error
	_ = s.call(ctx, "verify.wrong_password", func(ctx context.Context) error {
		err = firstListError(ctx, c, t.MinIOBucket())
		return err
	})
	switch code := s3Code(err); {
	case err == nil:
		check.Detail = "listing " + t.MinIOBucket() + " with a wrong secret succeeded"
	case !answered(err):
		return check, fmt.Errorf("wrong password: %w", err)
	case code == codeSignatureDoesNotMatch || code == codeInvalidAccessKeyID:
		check.Passed = true
		check.Detail = "a wrong secret was refused: " + code
	default:
		check.Detail = "a wrong secret got " + describe(err) + " instead of SignatureDoesNotMatch"
	}
	return check, nil
}

// firstListError lists at most one key of bucket and returns the error, if
// any.
func firstListError(ctx context.Context, c *minio.Client, bucket string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	o := <-c.ListObjects(ctx, bucket, minio.ListObjectsOptions{MaxKeys: 1})
	return o.Err
}

// describe names an error by its S3/admin code where it has one.
func describe(err error) string {
	if c := s3Code(err); c != "" {
		return c
	}
	if c := adminCode(err); c != "" {
		return c
	}
	return err.Error()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
