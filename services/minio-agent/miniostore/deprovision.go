package miniostore

import (
	"context"
	"fmt"

	"github.com/minio/madmin-go/v3"
	"github.com/minio/minio-go/v7"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// Deprovision removes what tenantprov created for the tenant: it disables
// the user first (so the credential stops working before anything is
// deleted), then removes the user and the policy, and — beside them — the
// bucket with every object, version and incomplete multipart upload, and
// finally the system record. Absent resources are success. A bucket not
// tagged as tenantprov's, or a user or policy without a tenantprov record,
// is left exactly as it is and named in Skipped. A request for an older
// generation than the one recorded (system record or bucket tags) changes
// nothing and says so in Warnings.
func (s *Store) Deprovision(ctx context.Context, req agent.DeprovisionRequest) (agent.DeprovisionResponse, error) {
	t := req.Tenant
	if _, err := events.ParseTenantID(string(t)); err != nil {
		return agent.DeprovisionResponse{}, agent.Permanent(events.ReasonInvalid, err)
	}
	if err := s.ensureSystem(ctx); err != nil {
		return agent.DeprovisionResponse{}, err
	}

	// Look.
	o, err := s.look(ctx, t, req.Generation)
	if err != nil {
		return agent.DeprovisionResponse{}, err
	}

	// Decide what is ours.
	var resp agent.DeprovisionResponse
	ownIAM := o.rec != nil
	if !ownIAM && o.userExists {
		resp.Skipped = append(resp.Skipped, "user "+t.MinIOUser()+" (no tenantprov record)")
	}
	if !ownIAM && o.policyExists {
		resp.Skipped = append(resp.Skipped, "policy "+t.MinIOPolicy()+" (no tenantprov record)")
	}
	ownBucket := o.bucket == bucketOurs || o.bucket == bucketOursStale
	switch o.bucket {
	case bucketForeign:
		resp.Skipped = append(resp.Skipped, "bucket "+t.MinIOBucket()+" (tagged by another owner)")
	case bucketUntagged:
		if ownBucket, err = s.vouchedUntagged(ctx, t, o.rec); err != nil {
			return agent.DeprovisionResponse{}, err
		}
		if !ownBucket {
			resp.Skipped = append(resp.Skipped, "bucket "+t.MinIOBucket()+" (not tagged managed-by=tenantprov)")
		}
	}
	// A late command of an older generation leaves the newer one alone.
	if gen := o.generation(); req.Generation > 0 && gen > req.Generation {
		resp.Warnings = append(resp.Warnings, fmt.Sprintf(
			"bucket, user and policy of tenant %s belong to generation %d, the command to generation %d: left in place",
			t, gen, req.Generation))
		return resp, nil
	}

	// Disable first, then remove.
	if ownIAM && o.userExists && o.user.Status != madmin.AccountDisabled {
		if err := s.disableUser(ctx, t); err != nil {
			return agent.DeprovisionResponse{}, err
		}
	}
	err = s.steps(ctx,
		func(ctx context.Context) error {
			if !ownIAM {
				return nil
			}
			if err := s.removeUser(ctx, t); err != nil {
				return err
			}
			return s.removePolicy(ctx, t)
		},
		func(ctx context.Context) error {
			if !ownBucket {
				return nil
			}
			return s.removeBucket(ctx, t.MinIOBucket())
		},
	)
	if err != nil {
		return agent.DeprovisionResponse{}, err
	}
	if o.rec != nil {
		if err := s.deleteRecord(ctx, t); err != nil {
			return agent.DeprovisionResponse{}, err
		}
	}
	return resp, nil
}

func (s *Store) disableUser(ctx context.Context, t events.TenantID) error {
	err := s.call(ctx, "user.disable", func(ctx context.Context) error {
		return s.admin.SetUserStatus(ctx, t.MinIOUser(), madmin.AccountDisabled)
	})
	if err != nil && adminCode(err) != codeAdminNoSuchUser {
		return fmt.Errorf("disable user %s: %w", t.MinIOUser(), err)
	}
	return nil
}

func (s *Store) removeUser(ctx context.Context, t events.TenantID) error {
	err := s.call(ctx, "user.remove", func(ctx context.Context) error {
		return s.admin.RemoveUser(ctx, t.MinIOUser())
	})
	if err != nil && adminCode(err) != codeAdminNoSuchUser {
		return fmt.Errorf("remove user %s: %w", t.MinIOUser(), err)
	}
	return nil
}

func (s *Store) removePolicy(ctx context.Context, t events.TenantID) error {
	err := s.call(ctx, "policy.remove", func(ctx context.Context) error {
		return s.admin.RemoveCannedPolicy(ctx, t.MinIOPolicy())
	})
	if err != nil && adminCode(err) != codeAdminNoSuchPolicy {
		return fmt.Errorf("remove policy %s: %w", t.MinIOPolicy(), err)
	}
	return nil
}

// removeBucket aborts the bucket's incomplete multipart uploads (whose
// parts MinIO keeps outside the bucket) and deletes the bucket with every
// object and version in one force-delete.
func (s *Store) removeBucket(ctx context.Context, bucket string) error {
	err := s.call(ctx, "bucket.abort_uploads", func(ctx context.Context) error {
		lctx, cancel := context.WithCancel(ctx)
		defer cancel()
		seen := map[string]bool{}
		for u := range s.s3.ListIncompleteUploads(lctx, bucket, "", true) {
			if u.Err != nil {
				return u.Err
			}
			if seen[u.Key] {
				continue
			}
			seen[u.Key] = true
			if err := s.s3.RemoveIncompleteUpload(ctx, bucket, u.Key); err != nil && s3Code(err) != codeNoSuchUpload {
				return err
			}
		}
		return nil
	})
	if err != nil && s3Code(err) != codeNoSuchBucket {
		return fmt.Errorf("abort uploads in bucket %s: %w", bucket, err)
	}
	err = s.call(ctx, "bucket.remove", func(ctx context.Context) error {
		return s.s3.RemoveBucketWithOptions(ctx, bucket, minio.RemoveBucketOptions{ForceDelete: true})
	})
	if err != nil && s3Code(err) != codeNoSuchBucket {
		return fmt.Errorf("remove bucket %s: %w", bucket, err)
	}
	return nil
}
