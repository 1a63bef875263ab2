package miniostore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/minio/madmin-go/v3"
	"github.com/minio/minio-go/v7"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// Deprovision removes what tenantprov created for the tenant: it disables
// the user first (so the credential stops working before anything is
// deleted), removes every service account and temporary (STS) key of the
// user (keys the tenant could have minted for itself) and the user (which
// takes its mapping to the shared tenant policy with it; that policy is
// never removed), then a legacy policy tenant-<id>-rw the record claims
// and — beside them — the bucket with every object, version and
// incomplete multipart upload, and finally the system record. It returns
// success only after it has seen that none of the tenant's keys and
// resources is left; anything of this generation still there is an error,
// and the command is retried. Absent resources are success. A bucket not
// stamped in the record, a user without a record, a policy tenant-<id>-rw
// the record does not claim, or an access key held by a service account
// or temporary key, is foreign: left exactly as it is and named in
// Skipped. A request for an older generation than
// the one recorded changes nothing and says so in Warnings.
func (s *Store) Deprovision(ctx context.Context, req agent.DeprovisionRequest) (agent.DeprovisionResponse, error) {
	t := req.Tenant
	if _, err := events.ParseTenantID(string(t)); err != nil {
		return agent.DeprovisionResponse{}, agent.Permanent(events.ReasonInvalid, err)
	}
	if err := s.ensureSystem(ctx); err != nil {
		return agent.DeprovisionResponse{}, err
	}

	// Look.
	o, err := s.look(ctx, t)
	if err != nil {
		return agent.DeprovisionResponse{}, err
	}

	// Decide what is ours.
	var resp agent.DeprovisionResponse
	ownIAM := o.rec != nil
	ownUser := ownIAM && o.key == keyUser
	ownLegacy := o.rec.claimsLegacy()
	switch {
	case o.key == keySquatted:
		resp.Skipped = append(resp.Skipped, "access key "+t.MinIOUser()+" (a service account or temporary key tenantprov did not create)")
	case !ownIAM && o.key == keyUser:
		resp.Skipped = append(resp.Skipped, "user "+t.MinIOUser()+" (no tenantprov record)")
	}
	if !ownLegacy && o.legacyPolicy {
		resp.Skipped = append(resp.Skipped, "policy "+t.MinIOLegacyPolicy()+" (not claimed by a tenantprov record)")
	}
	ownBucket, err := s.bucketOurs(ctx, t, o)
	if err != nil {
		return agent.DeprovisionResponse{}, err
	}
	if o.bucketExists && !ownBucket {
		resp.Skipped = append(resp.Skipped, "bucket "+t.MinIOBucket()+" (not created by tenantprov)")
	}
	// A late command of an older generation leaves the newer one alone.
	if gen := o.generation(); req.Generation > 0 && gen > req.Generation {
		resp.Warnings = append(resp.Warnings, fmt.Sprintf(
			"bucket, user and policy of tenant %s belong to generation %d, the command to generation %d: left in place",
			t, gen, req.Generation))
		return resp, nil
	}

	// A bucket ours by the intent alone (a Provision cut off before the
	// stamp) is stamped first, so that a Deprovision cut off in turn
	// leaves it recognisable whatever rewrites the record meanwhile.
	if ownBucket && !o.bucketStamped() && !o.bucketCreated.IsZero() {
		rec := *o.rec
		if err := s.stampBucket(ctx, &rec, o.bucketCreated); err != nil {
			return agent.DeprovisionResponse{}, err
		}
	}

	// Disable first, then remove.
	var keys []string
	if ownUser {
		if keys, err = s.userKeys(ctx, t); err != nil {
			return agent.DeprovisionResponse{}, err
		}
		if o.user.Status != madmin.AccountDisabled {
			if err := s.disableUser(ctx, t); err != nil {
				return agent.DeprovisionResponse{}, err
			}
		}
	}
	err = s.steps(ctx,
		func(ctx context.Context) error {
			if !ownIAM {
				return nil
			}
			if ownUser {
				if err := s.removeServiceAccounts(ctx, t, keys); err != nil {
					return err
				}
				if err := s.revokeTemporaryKeys(ctx, t); err != nil {
					return err
				}
				if err := s.removeUser(ctx, t); err != nil {
					return err
				}
			}
			if !ownLegacy {
				return nil
			}
			return s.removeLegacyPolicy(ctx, t)
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
	if err := s.confirmGone(ctx, t, ownUser, ownLegacy, ownBucket, keys); err != nil {
		return agent.DeprovisionResponse{}, err
	}
	if o.rec != nil {
		if err := s.deleteRecord(ctx, t); err != nil {
			return agent.DeprovisionResponse{}, err
		}
	}
	return resp, nil
}

// errLeftInPlace reports that something Deprovision removed is still
// there; the command fails (transiently) and is retried.
var errLeftInPlace = errors.New("still present after removal")

// userKeys lists the access keys derived from the tenant's user: service
// accounts ("svc:<key>") and temporary keys ("sts:<key>").
func (s *Store) userKeys(ctx context.Context, t events.TenantID) ([]string, error) {
	var keys []string
	err := s.call(ctx, "user.list_keys", func(ctx context.Context) error {
		r, listed, err := s.bulkKeys(ctx, t.MinIOUser())
		if err != nil {
			return err
		}
		if listed {
			for _, a := range r.STSKeys {
				keys = append(keys, "sts:"+a.AccessKey)
			}
			for _, a := range r.ServiceAccounts {
				keys = append(keys, "svc:"+a.AccessKey)
			}
			return nil
		}
		// The bulk listing leaves a disabled user out (a suspended
		// tenant, or a retry after the user was disabled):
		// list-service-accounts does not.
		sa, err := s.admin.ListServiceAccounts(ctx, t.MinIOUser())
		for _, a := range sa.Accounts {
			keys = append(keys, "svc:"+a.AccessKey)
		}
		return err
	})
	if err != nil && adminCode(err) != codeAdminNoSuchUser {
		return nil, fmt.Errorf("list access keys of user %s: %w", t.MinIOUser(), err)
	}
	return keys, nil
}

// removeServiceAccounts deletes the service accounts among keys.
func (s *Store) removeServiceAccounts(ctx context.Context, t events.TenantID, keys []string) error {
	for _, k := range keys {
		ak, ok := strings.CutPrefix(k, "svc:")
		if !ok {
			continue
		}
		err := s.call(ctx, "user.remove_service_account", func(ctx context.Context) error {
			return s.admin.DeleteServiceAccount(ctx, ak)
		})
		if err != nil && adminCode(err) != codeInvalidIAMCredentials {
			return fmt.Errorf("remove service account %s of user %s: %w", ak, t.MinIOUser(), err)
		}
	}
	return nil
}

// revokeTemporaryKeys deletes every STS key of the tenant's user (MinIO
// keeps them when the user is removed).
func (s *Store) revokeTemporaryKeys(ctx context.Context, t events.TenantID) error {
	err := s.call(ctx, "user.revoke_tokens", func(ctx context.Context) error {
		return s.admin.RevokeTokens(ctx, madmin.RevokeTokensReq{User: t.MinIOUser(), FullRevoke: true})
	})
	if err != nil && adminCode(err) != codeAdminNoSuchUser {
		return fmt.Errorf("revoke temporary keys of user %s: %w", t.MinIOUser(), err)
	}
	return nil
}

// confirmGone checks, after removal, that none of what Deprovision removed
// can still be found: the user, every key derived from it, the legacy
// policy and the bucket.
func (s *Store) confirmGone(ctx context.Context, t events.TenantID, user, legacy, bucket bool, keys []string) error {
	var left []string
	if user {
		_, st, err := s.userInfo(ctx, t)
		if err != nil {
			return err
		}
		if st != keyAbsent {
			left = append(left, "user "+t.MinIOUser())
		}
		for _, k := range keys {
			_, ak, _ := strings.Cut(k, ":")
			err := s.call(ctx, "user.key_info", func(ctx context.Context) error {
				_, err := s.admin.InfoAccessKey(ctx, ak)
				return err
			})
			switch {
			case err == nil:
				left = append(left, "access key "+ak+" of user "+t.MinIOUser())
			case adminCode(err) != codeAdminNoSuchAccessKey:
				return fmt.Errorf("look up access key %s: %w", ak, err)
			}
		}
	}
	if legacy {
		exists, err := s.legacyPolicyExists(ctx, t)
		if err != nil {
			return err
		}
		if exists {
			left = append(left, "policy "+t.MinIOLegacyPolicy())
		}
	}
	if bucket {
		_, exists, err := s.bucketCreation(ctx, t.MinIOBucket())
		if err != nil {
			return err
		}
		if exists {
			left = append(left, "bucket "+t.MinIOBucket())
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("deprovision %s: %s %w", t, strings.Join(left, ", "), errLeftInPlace)
	}
	return nil
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

// removeLegacyPolicy removes the tenant's legacy policy tenant-<id>-rw
// (absent is success). MinIO refuses to remove a policy still attached to
// a user or group: it is tenantprov's (the record claims it), so it is
// first detached from everyone who holds it.
func (s *Store) removeLegacyPolicy(ctx context.Context, t events.TenantID) error {
	name := t.MinIOLegacyPolicy()
	remove := func() error {
		return s.call(ctx, "policy.remove", func(ctx context.Context) error {
			return s.admin.RemoveCannedPolicy(ctx, name)
		})
	}
	err := remove()
	if adminCode(err) == codeIAMPolicyInUse {
		if err := s.detachEverywhere(ctx, name); err != nil {
			return err
		}
		err = remove()
	}
	if err != nil && adminCode(err) != codeAdminNoSuchPolicy {
		return fmt.Errorf("remove policy %s: %w", name, err)
	}
	return nil
}

// detachEverywhere detaches the canned policy name from every user and
// group it is attached to.
func (s *Store) detachEverywhere(ctx context.Context, name string) error {
	var res madmin.PolicyEntitiesResult
	err := s.call(ctx, "iam.policy_entities", func(ctx context.Context) (err error) {
		res, err = s.admin.GetPolicyEntities(ctx, madmin.PolicyEntitiesQuery{Policy: []string{name}})
		return err
	})
	if err != nil {
		return fmt.Errorf("attachments of policy %s: %w", name, err)
	}
	var es []policyEntity
	for _, m := range res.PolicyMappings {
		if m.Policy != name {
			continue
		}
		for _, u := range m.Users {
			es = append(es, policyEntity{policy: name, user: u})
		}
		for _, g := range m.Groups {
			es = append(es, policyEntity{policy: name, group: g})
		}
	}
	return s.detach(ctx, "policy.detach", es)
}

// detach removes each entity's policy from its user or group (one already
// detached is success).
func (s *Store) detach(ctx context.Context, call string, es []policyEntity) error {
	for _, e := range es {
		err := s.call(ctx, call, func(ctx context.Context) error {
			_, err := s.admin.DetachPolicy(ctx, madmin.PolicyAssociationReq{Policies: []string{e.policy}, User: e.user, Group: e.group})
			return err
		})
		if err != nil && adminCode(err) != codeAdminPolicyApplied {
			return fmt.Errorf("detach %s from %s: %w", e.policy, e, err)
		}
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

// bulkListChunk bounds the users of one bulk key listing (they travel in
// the request's query string).
const bulkListChunk = 100

// readKeys lists the access keys of users (the fetch of s.keyReads): bulk
// listings shared by every caller of the round. MinIO leaves a disabled or
// unknown user out of the answer, and lists every other one, keys or not.
func (s *Store) readKeys(ctx context.Context, users []string) (map[string]madmin.ListAccessKeysResp, error) {
	out := map[string]madmin.ListAccessKeysResp{}
	users = sortedKeys(users)
	for chunk := range slices.Chunk(users, bulkListChunk) {
		err := s.call(ctx, "iam.list_keys_bulk", func(ctx context.Context) error {
			m, err := s.admin.ListAccessKeysBulk(ctx, chunk, madmin.ListAccessKeysOpts{ListType: madmin.AccessKeyListAll})
			maps.Copy(out, m)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("list access keys: %w", err)
		}
	}
	return out, nil
}

// bulkKeys returns user's service accounts and temporary keys from a
// shared bulk listing that began after the call; listed is false when the
// listing left the user out (disabled, or no such user).
func (s *Store) bulkKeys(ctx context.Context, user string) (keys madmin.ListAccessKeysResp, listed bool, err error) {
	m, err := s.keyReads.Get(ctx, user, s.readKeys)
	if err != nil {
		return keys, false, err
	}
	keys, listed = m[user]
	return keys, listed, nil
}
