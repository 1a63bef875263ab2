package miniostore

import (
	"context"
	"fmt"
	"maps"
	"strings"

	"github.com/minio/madmin-go/v3"
	"github.com/minio/minio-go/v7"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// Drift kinds Observe reports (agent.Drift.Kind).
const (
	// DriftRecordMissing: the system record is gone, so nothing of the
	// tenant can be claimed as tenantprov's. Reported only.
	DriftRecordMissing = "record_missing"
	// DriftGenerationMismatch: the record is of another generation.
	// Reported only.
	DriftGenerationMismatch = "generation_mismatch"
	// DriftBucketMissing: the bucket is gone (DataLost; never recreated).
	DriftBucketMissing = "bucket_missing"
	// DriftBucketReplaced: a bucket of the tenant's name exists but is not
	// the one tenantprov made (deleted and re-created): the data is lost
	// and the new bucket is foreign (DataLost; left alone).
	DriftBucketReplaced = "bucket_replaced"
	// DriftMarkerChanged: the bucket's (informative) tags or the record's
	// bucket stamp differ. Repaired.
	DriftMarkerChanged = "marker_changed"
	// DriftBucketPolicy: the bucket has a bucket policy or answers
	// anonymous requests (inward). Repaired by removing the bucket policy.
	DriftBucketPolicy = "bucket_policy"
	// DriftUserMissing: the tenant's user is gone, with its keys. Not
	// repairable without a new credential (rotate or re-provision).
	DriftUserMissing = "user_missing"
	// DriftGrantChanged: the shared tenant policy's document, the user's
	// policy mapping, its groups or its status differ from what was
	// provisioned, or the tenant is still on its legacy policy
	// tenant-<id>-rw (outward). Repaired (the legacy policy by migrating
	// the tenant to the shared one).
	DriftGrantChanged = "grant_changed"
	// DriftForeignGrant: another user or group reaches the bucket
	// (inward). Repaired when the grant is tenantprov's policy (the shared
	// one, or the tenant's legacy one) attached to someone else
	// (detached); a foreign policy on a foreign user is only reported.
	DriftForeignGrant = "foreign_grant"
	// DriftExtraKey: a service account under the tenant's user that is
	// not a recorded credential (inward). Repaired by removing it.
	DriftExtraKey = "extra_key"
	// DriftCredentialMissing: a recorded rotated credential is gone.
	// Reported (the next rotation replaces it).
	DriftCredentialMissing = "credential_missing"
	// DriftCredentialRefused: the current credential does not reach the
	// bucket. Reported; it follows from other drift when that is repaired.
	DriftCredentialRefused = "credential_refused"
)

// Observe compares the tenant's bucket, user, policy and keys with the
// system record, reusing Verify's inward checks (bucket_not_public,
// no_foreign_grants, policy_exact, no_extra_keys), and with req.Repair
// puts back what is tenantprov's: the shared policy's document and the
// user's mapping to it, the user's status and groups, the bucket's tags
// and stamp; it migrates a tenant off its legacy policy, and removes a
// bucket policy on the tenant's bucket, tenantprov's policies from anyone
// else, and service accounts under the tenant's user that are not
// recorded credentials. It never recreates a bucket, never touches a
// resource that is not tenantprov's, and never changes a secret.
func (s *Store) Observe(ctx context.Context, req agent.ObserveRequest) (agent.ObserveResponse, error) {
	t := req.Tenant
	if _, err := events.ParseTenantID(string(t)); err != nil {
		return agent.ObserveResponse{}, agent.Permanent(events.ReasonInvalid, err)
	}
	if err := s.ensureSystem(ctx); err != nil {
		return agent.ObserveResponse{}, err
	}
	o, err := s.look(ctx, t)
	if err != nil {
		return agent.ObserveResponse{}, err
	}
	ob := &observation{s: s, t: t, repair: req.Repair}
	rec := o.rec
	switch {
	case rec == nil:
		ob.drift(agent.Drift{Kind: DriftRecordMissing, Resource: SystemBucket + "/" + recordKey(t),
			Detail: "no system record: nothing of " + string(t) + " can be claimed as tenantprov's"})
		return ob.resp, nil
	case req.Generation > 0 && rec.Generation != req.Generation:
		ob.drift(agent.Drift{Kind: DriftGenerationMismatch, Resource: SystemBucket + "/" + recordKey(t),
			Detail: fmt.Sprintf("record is of generation %d, observed for %d", rec.Generation, req.Generation)})
		return ob.resp, nil
	}

	bucketOurs, err := ob.bucket(ctx, o)
	if err != nil {
		return agent.ObserveResponse{}, err
	}
	if err := ob.iam(ctx, o); err != nil {
		return agent.ObserveResponse{}, err
	}
	if bucketOurs && req.Credential != nil && !rec.Suspended {
		if err := ob.credential(ctx, req.Credential); err != nil {
			return agent.ObserveResponse{}, err
		}
	}
	return ob.resp, nil
}

// observation collects one Observe's drift and repairs.
type observation struct {
	s      *Store
	t      events.TenantID
	repair bool
	resp   agent.ObserveResponse
}

func (ob *observation) drift(d agent.Drift) { ob.resp.Drift = append(ob.resp.Drift, d) }

// fix reports d and, when repairing, runs f and records d as repaired.
func (ob *observation) fix(ctx context.Context, d agent.Drift, f func(context.Context) error) error {
	ob.drift(d)
	if !ob.repair {
		return nil
	}
	if err := f(ctx); err != nil {
		return fmt.Errorf("repair %s of %s: %w", d.Kind, d.Resource, err)
	}
	ob.resp.Repaired = append(ob.resp.Repaired, d)
	return nil
}

// bucket observes the bucket: present and the one the record names, tags,
// no bucket policy. It reports whether the bucket is tenantprov's.
func (ob *observation) bucket(ctx context.Context, o observed) (bool, error) {
	s, t, name := ob.s, ob.t, ob.t.MinIOBucket()
	switch {
	case !o.bucketExists:
		ob.drift(agent.Drift{Kind: DriftBucketMissing, Resource: name, DataLost: true,
			Detail: "bucket " + name + " is gone with its objects; not recreated"})
		return false, nil
	case !o.bucketStamped():
		ours, err := s.bucketOurs(ctx, t, o)
		if err != nil {
			return false, err
		}
		if !ours {
			ob.drift(agent.Drift{Kind: DriftBucketReplaced, Resource: name, DataLost: true,
				Detail: fmt.Sprintf("bucket %s was created %s, not the bucket tenantprov made (%s); left alone",
					name, o.bucketCreated.UTC().Format("2006-01-02T15:04:05Z"), o.rec.BucketCreated.UTC().Format("2006-01-02T15:04:05Z"))})
			return false, nil
		}
		rec := *o.rec
		err = ob.fix(ctx, agent.Drift{Kind: DriftMarkerChanged, Resource: SystemBucket + "/" + recordKey(t),
			Detail: "record does not stamp the creation time of bucket " + name},
			func(ctx context.Context) error { return s.stampBucket(ctx, &rec, o.bucketCreated) })
		if err != nil {
			return false, err
		}
	}

	want := bucketTags(t, o.rec.Generation)
	var got map[string]string
	err := s.call(ctx, "observe.bucket_tags", func(ctx context.Context) error {
		tg, err := s.s3.GetBucketTagging(ctx, name)
		if s3Code(err) == codeNoSuchTagSet {
			return nil
		}
		if err != nil {
			return err
		}
		got = tg.ToMap()
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("read tags of bucket %s: %w", name, err)
	}
	if !maps.Equal(got, want) {
		err := ob.fix(ctx, agent.Drift{Kind: DriftMarkerChanged, Resource: name,
			Detail: fmt.Sprintf("bucket tags %v, want %v", got, want)},
			func(ctx context.Context) error { return s.setBucketTags(ctx, t, o.rec.Generation) })
		if err != nil {
			return false, err
		}
	}

	anonymous, err := s.tenantS3("", "")
	if err != nil {
		return false, err
	}
	check, err := s.checkBucketNotPublic(ctx, anonymous, t)
	if err != nil {
		return false, err
	}
	if !check.Passed {
		err := ob.fix(ctx, agent.Drift{Kind: DriftBucketPolicy, Resource: name, Detail: check.Detail},
			func(ctx context.Context) error {
				return s.call(ctx, "observe.remove_bucket_policy", func(ctx context.Context) error {
					return s.s3.SetBucketPolicy(ctx, name, "")
				})
			})
		if err != nil {
			return false, err
		}
	}
	return true, nil
}

// iam observes the user, the policy, who else holds the policy or reaches
// the bucket, and the keys under the user.
func (ob *observation) iam(ctx context.Context, o observed) error {
	s, t, rec := ob.s, ob.t, o.rec
	if o.key != keyUser {
		detail := "user " + t.MinIOUser() + " is gone, with every credential of the tenant; rotate or re-provision"
		if o.key == keySquatted {
			detail = "access key " + t.MinIOUser() + " is held by a service account or temporary key tenantprov did not create"
		}
		ob.drift(agent.Drift{Kind: DriftUserMissing, Resource: t.MinIOUser(), Detail: detail})
	}

	var (
		exact  events.Check
		pf     policyFindings
		grants events.Check
		gf     grantFindings
		keys   events.Check
		extra  []string
		have   []madmin.ServiceAccountInfo
	)
	err := s.steps(ctx,
		func(ctx context.Context) (err error) {
			exact, pf, err = s.checkPolicyExact(ctx, t, rec.Suspended)
			return err
		},
		func(ctx context.Context) (err error) { grants, gf, err = s.checkNoForeignGrants(ctx, t); return err },
		func(ctx context.Context) (err error) { keys, extra, err = s.checkNoExtraKeys(ctx, t, rec); return err },
		func(ctx context.Context) (err error) { have, err = s.serviceAccounts(ctx, t); return err },
	)
	if err != nil {
		return err
	}

	if !exact.Passed && (pf.policyMissing || pf.document || o.key == keyUser && pf.any()) {
		err := ob.fix(ctx, agent.Drift{Kind: DriftGrantChanged, Resource: t.MinIOUser() + ", " + t.MinIOPolicy(), Detail: exact.Detail},
			func(ctx context.Context) error { return ob.repairGrants(ctx, pf, rec.Suspended, o.key == keyUser) })
		if err != nil {
			return err
		}
	}
	if !grants.Passed {
		d := agent.Drift{Kind: DriftForeignGrant, Resource: t.MinIOBucket(), Detail: grants.Detail}
		if gf.foreign > 0 {
			// A foreign policy on a foreign user or group: reported, not
			// touched.
			ob.drift(d)
		}
		if len(gf.own) > 0 {
			d.Detail = "tenantprov's policy attached to " + entityList(gf.own)
			if err := ob.fix(ctx, d, func(ctx context.Context) error { return s.detach(ctx, "observe.policy_detach", gf.own) }); err != nil {
				return err
			}
		}
	}
	if rec.claimsLegacy() {
		// After the mapping's repair above: the user holds the shared
		// policy before the legacy one goes.
		d := agent.Drift{Kind: DriftGrantChanged, Resource: t.MinIOLegacyPolicy(),
			Detail: "tenant " + string(t) + " is on its legacy policy " + t.MinIOLegacyPolicy() + ", not the shared " + t.MinIOPolicy()}
		if err := ob.fix(ctx, d, func(ctx context.Context) error { return ob.migrate(ctx, o.legacyPolicy) }); err != nil {
			return err
		}
	}
	if !keys.Passed && o.key == keyUser {
		d := agent.Drift{Kind: DriftExtraKey, Resource: t.MinIOUser(), Detail: keys.Detail}
		if len(extra) == 0 {
			ob.drift(d)
		} else if err := ob.fix(ctx, d, func(ctx context.Context) error {
			for _, ak := range extra {
				if err := s.removeServiceAccount(ctx, t, ak); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	if o.key == keyUser {
		present := map[string]bool{}
		for _, a := range have {
			present[a.AccessKey] = true
		}
		for _, k := range rec.Keys {
			if !present[k.AccessKey] {
				ob.drift(agent.Drift{Kind: DriftCredentialMissing, Resource: k.AccessKey,
					Detail: fmt.Sprintf("credential version %d (service account %s of %s) is gone; the next rotation replaces it", k.Version, k.AccessKey, t.MinIOUser())})
			}
		}
	}
	return nil
}

// repairGrants writes the shared tenant policy as provisioned and, if the user
// exists, maps exactly that policy to it, takes it out of its groups and
// sets the status the record says.
func (ob *observation) repairGrants(ctx context.Context, pf policyFindings, suspended, user bool) error {
	s, t := ob.s, ob.t
	if pf.policyMissing || pf.document {
		if err := s.ensureTenantPolicy(ctx, true); err != nil {
			return err
		}
	}
	if !user {
		return nil
	}
	if pf.mapping || pf.policyMissing {
		if err := s.mapTenantPolicy(ctx, "observe.policy_set", t); err != nil {
			return err
		}
	}
	for _, g := range pf.groups {
		err := s.call(ctx, "observe.group_leave", func(ctx context.Context) error {
			return s.admin.UpdateGroupMembers(ctx, madmin.GroupAddRemove{Group: g, Members: []string{t.MinIOUser()}, IsRemove: true})
		})
		if err != nil {
			return fmt.Errorf("take user %s out of group %s: %w", t.MinIOUser(), g, err)
		}
	}
	if pf.status {
		return s.setUserStatus(ctx, t, suspended)
	}
	return nil
}

// migrate moves the tenant off its legacy policy (migrateLegacy), from the
// record as it is now: this Observe may have stamped the bucket into it.
func (ob *observation) migrate(ctx context.Context, legacyExists bool) error {
	rec, err := ob.s.readRecord(ctx, ob.t)
	if err != nil || rec == nil {
		return err
	}
	return ob.s.migrateLegacy(ctx, ob.t, rec, legacyExists)
}

// credential checks that cred still reaches the bucket (one listing).
func (ob *observation) credential(ctx context.Context, cred agent.Credential) error {
	s, t := ob.s, ob.t
	access, key := cred.String(CredAccessKey), cred.Secret(CredSecretKey)
	if access == "" || key.IsZero() {
		return agent.Permanent(events.ReasonInvalid, errNoCredential)
	}
	c, err := s.tenantS3(access, key.Reveal())
	if err != nil {
		return err
	}
	err = s.call(ctx, "observe.credential", func(ctx context.Context) error {
		lctx, cancel := context.WithCancel(ctx)
		defer cancel()
		return (<-c.ListObjects(lctx, t.MinIOBucket(), minio.ListObjectsOptions{MaxKeys: 1})).Err
	})
	switch {
	case err == nil:
		return nil
	case !answered(err):
		return fmt.Errorf("observe credential %s: %w", access, err)
	}
	ob.drift(agent.Drift{Kind: DriftCredentialRefused, Resource: access,
		Detail: "listing " + t.MinIOBucket() + " with the current credential: " + describe(err)})
	return nil
}

func entityList(es []policyEntity) string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.String()
	}
	return strings.Join(parts, ", ")
}
