package miniostore

import (
	"context"
	"fmt"

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

// Provision creates, or converges on, the tenant's bucket (tagged as
// tenantprov's, with the configured quota), its canned policy, and its IAM
// user with req.Password as secret, the policy attached. Every ownership
// question is answered before anything is written, so a foreign bucket,
// user or policy fails with agent.ErrConflict and leaves the store exactly
// as it was, and a request for an older generation than the one recorded
// (system record or bucket tags) fails permanently with ErrStaleGeneration
// (reason invalid), changing nothing.
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
	o, err := s.look(ctx, t, req.Generation)
	if err != nil {
		return agent.ProvisionResponse{}, err
	}
	bucket := o.bucket

	// Decide.
	switch bucket {
	case bucketForeign:
		return agent.ProvisionResponse{}, agent.Conflict("bucket " + t.MinIOBucket() + " (tagged by another owner)")
	case bucketUntagged:
		ours, err := s.vouchedUntagged(ctx, t, o.rec)
		if err != nil {
			return agent.ProvisionResponse{}, err
		}
		if !ours {
			return agent.ProvisionResponse{}, agent.Conflict("bucket " + t.MinIOBucket() + " (not tagged managed-by=tenantprov)")
		}
		bucket = bucketOursStale
	}
	if o.rec == nil && o.userExists {
		return agent.ProvisionResponse{}, agent.Conflict("user " + t.MinIOUser() + " (no tenantprov record)")
	}
	if o.rec == nil && o.policyExists {
		return agent.ProvisionResponse{}, agent.Conflict("policy " + t.MinIOPolicy() + " (no tenantprov record)")
	}
	// A redelivered command of an older generation must not reset the
	// newer generation's secret (generation 0 carries no generation and is
	// not checked, as in the other stores).
	if gen := o.generation(); req.Generation > 0 && gen > req.Generation {
		return agent.ProvisionResponse{}, agent.Permanent(events.ReasonInvalid,
			fmt.Errorf("tenant %s: bucket, user and policy belong to generation %d, the command to generation %d: %w; nothing changed",
				t, gen, req.Generation, ErrStaleGeneration))
	}

	// Record the intent, then create.
	if o.rec == nil || o.rec.Generation != req.Generation {
		if err := s.writeRecord(ctx, t, req.Generation, req.SagaID); err != nil {
			return agent.ProvisionResponse{}, err
		}
	}
	mapped := o.userExists && o.user.PolicyName == t.MinIOPolicy()
	err = s.steps(ctx,
		func(ctx context.Context) error { return s.provisionBucket(ctx, t, req.Generation, bucket) },
		func(ctx context.Context) error { return s.provisionIAM(ctx, t, req, mapped) },
	)
	if err != nil {
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

// provisionBucket creates the bucket if absent, tags it, and sets the
// quota.
func (s *Store) provisionBucket(ctx context.Context, t events.TenantID, generation uint64, st bucketState) error {
	name := t.MinIOBucket()
	if st == bucketAbsent {
		err := s.call(ctx, "bucket.make", func(ctx context.Context) error {
			return s.s3.MakeBucket(ctx, name, minio.MakeBucketOptions{Region: s.serverRegion()})
		})
		if c := s3Code(err); c == codeBucketOwnedByYou || c == codeBucketExists {
			// Someone created it since we looked: ours only if tagged so.
			now, _, ierr := s.inspectBucket(ctx, t, generation)
			if ierr != nil {
				return ierr
			}
			if now != bucketOurs && now != bucketOursStale {
				return agent.Conflict("bucket " + name + " (created concurrently by another owner)")
			}
			st, err = now, nil
		}
		if err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	if st != bucketOurs {
		if err := s.setBucketTags(ctx, t, generation); err != nil {
			return fmt.Errorf("tag bucket %s: %w", name, err)
		}
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

// provisionIAM writes the canned policy and the user (with the new secret,
// enabled) side by side, then maps the policy to the user unless it
// already is.
func (s *Store) provisionIAM(ctx context.Context, t events.TenantID, req agent.ProvisionRequest, mapped bool) error {
	user, policy := t.MinIOUser(), t.MinIOPolicy()
	err := s.steps(ctx,
		func(ctx context.Context) error {
			err := s.call(ctx, "policy.add", func(ctx context.Context) error {
				return s.admin.AddCannedPolicy(ctx, policy, TenantPolicy(t))
			})
			if err != nil {
				return fmt.Errorf("add policy %s: %w", policy, err)
			}
			return nil
		},
		func(ctx context.Context) error {
			err := s.call(ctx, "user.add", func(ctx context.Context) error {
				if s.fastIAM {
					return s.addUserFast(ctx, user, req.Password.Reveal())
				}
				return s.admin.AddUser(ctx, user, req.Password.Reveal())
			})
			if err != nil {
				return fmt.Errorf("add user %s: %w", user, err)
			}
			return nil
		},
	)
	if err != nil || mapped {
		return err
	}
	err = s.call(ctx, "policy.attach", func(ctx context.Context) error {
		if s.fastIAM {
			return s.setPolicyFast(ctx, user, policy)
		}
		return s.attachPolicy(ctx, user, policy)
	})
	if err != nil {
		return fmt.Errorf("attach policy %s to user %s: %w", policy, user, err)
	}
	return nil
}

// userInfo returns the tenant user's info and whether it exists.
func (s *Store) userInfo(ctx context.Context, t events.TenantID) (madmin.UserInfo, bool, error) {
	var (
		info   madmin.UserInfo
		exists bool
	)
	err := s.call(ctx, "user.info", func(ctx context.Context) error {
		var err error
		info, err = s.admin.GetUserInfo(ctx, t.MinIOUser())
		switch adminCode(err) {
		case "":
			exists = err == nil
			return err
		case codeAdminNoSuchUser:
			return nil
		}
		return err
	})
	if err != nil {
		return info, false, fmt.Errorf("look up user %s: %w", t.MinIOUser(), err)
	}
	return info, exists, nil
}

// policyExists reports whether the tenant's canned policy exists.
func (s *Store) policyExists(ctx context.Context, t events.TenantID) (bool, error) {
	var exists bool
	err := s.call(ctx, "policy.info", func(ctx context.Context) error {
		_, err := s.admin.InfoCannedPolicyV2(ctx, t.MinIOPolicy())
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
		return false, fmt.Errorf("look up policy %s: %w", t.MinIOPolicy(), err)
	}
	return exists, nil
}
