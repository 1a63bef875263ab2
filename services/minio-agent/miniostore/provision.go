package miniostore

import (
	"context"
	"fmt"
	"time"

	"github.com/minio/madmin-go/v3"
	"github.com/minio/minio-go/v7"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// minSecretLen is MinIO's lower bound on a user's secret key. (MinIO caps
// secrets at 40 characters only for keys it generates, service accounts and
// STS credentials; an IAM user accepts the 43-character generated
// credential as it is, which the conformance suite proves by signing
// requests with it.)
const minSecretLen = 8

// Resource keys of ProvisionResponse.Resources.
const (
	ResourceBucket = "bucket"
	ResourceUser   = "user"
	ResourcePolicy = "policy"
)

// Credential keys (DESIGN.md §6, section minio).
const (
	CredEndpoint  = "endpoint"
	CredSecure    = "secure"
	CredBucket    = "bucket"
	CredAccessKey = "access_key"
	CredSecretKey = "secret_key"
)

// Provision creates, or converges on, the tenant's bucket (stamped in the
// system record, tagged for operators, with the configured quota) and its
// IAM user with req.Password as secret, holding exactly the shared tenant
// policy (written first if it is absent or differs). A tenant still on its
// own legacy policy is migrated off it. Every ownership question is
// answered before anything is written, so a foreign bucket, user or an
// access key squatted by a service account fails with agent.ErrConflict
// and leaves the store exactly as it was, and a request for an older
// generation than the one recorded fails permanently with
// ErrStaleGeneration (reason invalid), changing nothing.
func (s *Store) Provision(ctx context.Context, req agent.ProvisionRequest) (agent.ProvisionResponse, error) {
	t := req.Tenant
	if _, err := events.ParseTenantID(string(t)); err != nil {
		return agent.ProvisionResponse{}, agent.Permanent(events.ReasonInvalid, err)
	}
	if n := len(req.Password.Reveal()); n < minSecretLen {
		return agent.ProvisionResponse{}, agent.Permanent(events.ReasonInvalid,
			fmt.Errorf("credential for %s is %d characters; MinIO needs at least %d", t, n, minSecretLen))
	}
	if err := s.ensureSystem(ctx); err != nil {
		return agent.ProvisionResponse{}, err
	}

	// Look.
	o, err := s.look(ctx, t)
	if err != nil {
		return agent.ProvisionResponse{}, err
	}

	// Decide.
	if o.key == keySquatted {
		return agent.ProvisionResponse{}, squatConflict(t)
	}
	if o.bucketExists {
		ours, err := s.bucketOurs(ctx, t, o)
		if err != nil {
			return agent.ProvisionResponse{}, err
		}
		if !ours {
			return agent.ProvisionResponse{}, agent.Conflict("bucket " + t.MinIOBucket() + " (not created by tenantprov)")
		}
	}
	if o.rec == nil && o.key == keyUser {
		return agent.ProvisionResponse{}, agent.Conflict("user " + t.MinIOUser() + " (no tenantprov record)")
	}
	// A redelivered command of an older generation must not reset the
	// newer generation's secret (generation 0 carries no generation and is
	// not checked, as in the other stores).
	if gen := o.generation(); req.Generation > 0 && gen > req.Generation {
		return agent.ProvisionResponse{}, agent.Permanent(events.ReasonInvalid,
			fmt.Errorf("tenant %s: bucket, user and policy belong to generation %d, the command to generation %d: %w; nothing changed",
				t, gen, req.Generation, ErrStaleGeneration))
	}

	// Credential version 1 is the user's secret; once a rotation retired
	// it (Retire), a late or redelivered Provision of the same generation
	// must not bring it back.
	if o.rec != nil && o.rec.Generation == req.Generation && o.rec.UserRetired {
		return agent.ProvisionResponse{}, agent.Permanent(events.ReasonInvalid,
			fmt.Errorf("tenant %s: credential version 1 was retired by a rotation; provisioning again would bring it back: %w",
				t, ErrCredentialRetired))
	}

	// Record the intent, then create: the record claims the bucket before
	// MakeBucket, so that a Provision cut off before the stamp leaves a
	// bucket that is still recognisably ours (owner.go).
	rec, write := o.rec, false
	if rec == nil || rec.Generation != req.Generation {
		rec, write = newRecord(t, req.Generation, req.SagaID, o.rec), true
	}
	if !o.bucketExists {
		rec, write = rec.withIntent(time.Now()), true
	}
	if write {
		if err := s.writeRecord(ctx, rec); err != nil {
			return agent.ProvisionResponse{}, err
		}
	}
	mapped := o.key == keyUser && o.user.PolicyName == t.MinIOPolicy()
	err = s.steps(ctx,
		func(ctx context.Context) error { return s.provisionBucket(ctx, t, req.Generation, rec, o) },
		func(ctx context.Context) error { return s.provisionIAM(ctx, t, req, mapped) },
	)
	if err != nil {
		return agent.ProvisionResponse{}, err
	}
	if err := s.migrateLegacy(ctx, t, rec, o.legacyPolicy); err != nil {
		return agent.ProvisionResponse{}, err
	}

	endpoint, secure := s.cfg.publicEndpoint()
	return agent.ProvisionResponse{
		Resources: map[string]string{
			ResourceBucket: t.MinIOBucket(),
			ResourceUser:   t.MinIOUser(),
			ResourcePolicy: t.MinIOPolicy(),
		},
		Credential: agent.Credential{
			CredEndpoint:  endpoint,
			CredSecure:    secure,
			CredBucket:    t.MinIOBucket(),
			CredAccessKey: t.MinIOUser(),
			CredSecretKey: req.Password,
		},
	}, nil
}

// squatConflict is the conflict of an access key tenant-<id> held by a
// service account or temporary key: tenantprov creates only users, so it
// is someone else's (for example a key another tenant minted for itself).
func squatConflict(t events.TenantID) error {
	return agent.Conflict("access key " + t.MinIOUser() + " (a service account or temporary key tenantprov did not create)")
}

// squatted reports whether err is the admin API's answer to a user call on
// an access key held by a service account or temporary key.
func squatted(err error) bool {
	c := adminCode(err)
	return c == codeIAMActionNotAllowed || c == codeInvalidIAMCredentials
}

// provisionBucket creates the bucket if absent and stamps its creation
// time into rec, tags it, and sets the quota. o is what look found (the
// bucket, if it exists, is ours: Provision checked).
func (s *Store) provisionBucket(ctx context.Context, t events.TenantID, generation uint64, rec *record, o observed) error {
	name := t.MinIOBucket()
	created := o.bucketCreated
	if !o.bucketExists {
		// The intent goes into the record before the bucket exists
		// (Provision wrote it already; a caller that did not gets it
		// written here).
		if !rec.intentPending() {
			claimed := rec.withIntent(time.Now())
			if err := s.writeRecord(ctx, claimed); err != nil {
				return err
			}
			*rec = *claimed
		}
		err := s.call(ctx, "bucket.make", func(ctx context.Context) error {
			return s.s3.MakeBucket(ctx, name, minio.MakeBucketOptions{Region: s.serverRegion()})
		})
		if c := s3Code(err); c == codeBucketOwnedByYou || c == codeBucketExists {
			// Someone created it since we looked: not ours.
			return agent.Conflict("bucket " + name + " (created concurrently by another owner)")
		}
		if err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
		var exists bool
		if created, exists, err = s.bucketCreation(ctx, name); err != nil {
			return err
		} else if !exists {
			return fmt.Errorf("bucket %s missing right after it was created", name)
		}
	}
	if s.beforeStamp != nil {
		if err := s.beforeStamp(ctx); err != nil {
			return err
		}
	}
	if err := s.stampBucket(ctx, rec, created); err != nil {
		return err
	}
	if err := s.setBucketTags(ctx, t, generation); err != nil {
		return fmt.Errorf("tag bucket %s: %w", name, err)
	}
	if q := uint64(s.cfg.BucketQuota); q > 0 {
		err := s.call(ctx, "bucket.set_quota", func(ctx context.Context) error {
			return s.admin.SetBucketQuota(ctx, name, &madmin.BucketQuota{Quota: q, Size: q, Type: madmin.HardQuota})
		})
		if err != nil {
			return fmt.Errorf("set quota on bucket %s: %w", name, err)
		}
	}
	return nil
}

// provisionIAM ensures the shared tenant policy and writes the user (with
// the new secret, enabled) side by side, then maps the policy to the user
// unless it already is.
func (s *Store) provisionIAM(ctx context.Context, t events.TenantID, req agent.ProvisionRequest, mapped bool) error {
	user := t.MinIOUser()
	err := s.steps(ctx,
		func(ctx context.Context) error { return s.ensureTenantPolicy(ctx, false) },
		func(ctx context.Context) error {
			err := s.call(ctx, "user.add", func(ctx context.Context) error {
				if s.fastIAM {
					return s.addUserFast(ctx, user, req.Password.Reveal())
				}
				return s.admin.AddUser(ctx, user, req.Password.Reveal())
			})
			if squatted(err) {
				return squatConflict(t)
			}
			if err != nil {
				return fmt.Errorf("add user %s: %w", user, err)
			}
			return nil
		},
	)
	if err != nil || mapped {
		return err
	}
	err = s.mapTenantPolicy(ctx, "policy.attach", t)
	if squatted(err) {
		return squatConflict(t)
	}
	return err
}

// attachRetries bounds how often mapTenantPolicy asks again when MinIO
// answers that the shared policy does not exist.
const attachRetries = 3

// mapTenantPolicy maps exactly the shared tenant policy to the tenant's
// user. MinIO has been seen refusing the mapping with "the canned policy
// does not exist" for a policy that did (1,000 mappings at once, in two
// runs of several): the policy is then written again and the mapping
// asked again, a few times, before the error is returned (transient: the
// command is retried).
func (s *Store) mapTenantPolicy(ctx context.Context, call string, t events.TenantID) error {
	user, policy := t.MinIOUser(), t.MinIOPolicy()
	for i := 0; ; i++ {
		err := s.call(ctx, call, func(ctx context.Context) error {
			if s.fastIAM {
				return s.setPolicyFast(ctx, user, policy)
			}
			return s.attachPolicy(ctx, user, policy)
		})
		if err == nil {
			return nil
		}
		if adminCode(err) != codeAdminNoSuchPolicy || i == attachRetries {
			return fmt.Errorf("attach policy %s to user %s: %w", policy, user, err)
		}
		if err := s.ensureTenantPolicy(ctx, i > 0); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(time.Duration(i+1) * 50 * time.Millisecond):
		}
	}
}

// ensureTenantPolicy reads the shared tenant policy and writes it when it
// is absent or its document differs from TenantPolicy (or always, with
// force). It is tenantprov's, in the reserved namespace: whatever is there
// under its name is overwritten.
func (s *Store) ensureTenantPolicy(ctx context.Context, force bool) error {
	name := events.MinIOTenantPolicy
	if !force {
		var raw []byte
		err := s.call(ctx, "policy.info", func(ctx context.Context) error {
			info, err := s.admin.InfoCannedPolicyV2(ctx, name)
			if err == nil {
				raw = info.Policy // info is nil on an error
			}
			return err
		})
		switch {
		case err == nil:
			if s.tenantPolicyExact(raw) {
				return nil
			}
		case adminCode(err) != codeAdminNoSuchPolicy:
			return fmt.Errorf("look up policy %s: %w", name, err)
		}
	}
	err := s.call(ctx, "policy.add", func(ctx context.Context) error {
		return s.admin.AddCannedPolicy(ctx, name, TenantPolicy())
	})
	if err != nil {
		return fmt.Errorf("add policy %s: %w", name, err)
	}
	return nil
}

// tenantPolicyExact reports whether raw, a canned policy document as MinIO
// returns it, is TenantPolicy.
func (s *Store) tenantPolicyExact(raw []byte) bool {
	want, _ := parsePolicy(TenantPolicy())
	got, err := parsePolicy(raw)
	return err == nil && samePolicy(got, want)
}

// migrateLegacy moves a tenant whose record claims its legacy policy
// tenant-<id>-rw (an agent before the shared policy provisioned it) off
// that policy: once its user holds the shared policy (the caller mapped
// it), the legacy policy is removed and the record stops claiming it, in
// that order, so an agent cut off in between finds the claim and removes
// the policy next time. legacyExists is whether look found the policy.
func (s *Store) migrateLegacy(ctx context.Context, t events.TenantID, rec *record, legacyExists bool) error {
	if !rec.claimsLegacy() {
		return nil
	}
	if legacyExists {
		if err := s.removeLegacyPolicy(ctx, t); err != nil {
			return err
		}
	}
	migrated := *rec
	migrated.Policy = t.MinIOPolicy()
	if err := s.writeRecord(ctx, &migrated); err != nil {
		return err
	}
	*rec = migrated
	return nil
}

// userInfo returns the tenant user's info and what holds its access key.
func (s *Store) userInfo(ctx context.Context, t events.TenantID) (madmin.UserInfo, keyState, error) {
	var (
		info madmin.UserInfo
		st   keyState
	)
	err := s.call(ctx, "user.info", func(ctx context.Context) error {
		var err error
		info, err = s.admin.GetUserInfo(ctx, t.MinIOUser())
		switch {
		case err == nil:
			st = keyUser
		case adminCode(err) == codeAdminNoSuchUser:
			st, err = keyAbsent, nil
		case squatted(err):
			// Only if the name really is some other kind of key (and not,
			// say, a server whose users come from LDAP).
			if _, kerr := s.admin.InfoAccessKey(ctx, t.MinIOUser()); kerr == nil {
				st, err = keySquatted, nil
			}
		}
		return err
	})
	if err != nil {
		return info, keyAbsent, fmt.Errorf("look up user %s: %w", t.MinIOUser(), err)
	}
	return info, st, nil
}

// legacyPolicyExists reports whether a canned policy tenant-<id>-rw (the
// tenant's policy before the shared one) exists.
func (s *Store) legacyPolicyExists(ctx context.Context, t events.TenantID) (bool, error) {
	var exists bool
	err := s.call(ctx, "policy.info", func(ctx context.Context) error {
		_, err := s.admin.InfoCannedPolicyV2(ctx, t.MinIOLegacyPolicy())
		switch adminCode(err) {
		case "":
			exists = err == nil
			return err
		case codeAdminNoSuchPolicy:
			return nil
		}
		return err
	})
	if err != nil {
		return false, fmt.Errorf("look up policy %s: %w", t.MinIOLegacyPolicy(), err)
	}
	return exists, nil
}
