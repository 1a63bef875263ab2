package miniostore

import (
	"context"
	"fmt"
	"strings"

	"github.com/minio/madmin-go/v3"
	"github.com/minio/minio-go/v7"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

var _ agent.Inventorier = (*Store)(nil)

// Inventory lists every bucket and IAM user named tenant-<id>, every canned
// policy named tenant-<id>-rw (the per-tenant policies before the shared
// one, which is the system's and not listed), every service account or
// temporary key named tenant-<id> or belonging to a tenant user, and every
// system record (kind marker). Ownership follows owner.go: a bucket is ours
// when the record names it by its creation time (or, unstamped, when
// bucketOurs vouches for it as Provision would) — never by its tags; a user
// is ours when the tenant's system record exists, and a policy
// tenant-<id>-rw when the record claims it. A service account is ours only when
// it is a rotated credential: under the tenant's user, its access key listed
// in the tenant's system record; other service accounts and temporary keys
// are never ours.
func (s *Store) Inventory(ctx context.Context, _ agent.InventoryRequest) (agent.InventoryResponse, error) {
	var resp agent.InventoryResponse
	recs := map[events.TenantID]*record{}
	var keys []string
	err := s.call(ctx, "record.list", func(ctx context.Context) error {
		keys = keys[:0]
		for o := range s.s3.ListObjects(ctx, SystemBucket, minio.ListObjectsOptions{Prefix: recordPrefix, Recursive: true}) {
			if o.Err != nil {
				if s3Code(o.Err) == codeNoSuchBucket {
					return nil
				}
				return o.Err
			}
			keys = append(keys, o.Key)
		}
		return nil
	})
	if err != nil {
		return resp, fmt.Errorf("inventory: list system records: %w", err)
	}
	for _, k := range keys {
		name := strings.TrimSuffix(strings.TrimPrefix(k, recordPrefix), ".json")
		it := events.InventoryItem{Kind: events.KindMarker, Name: SystemBucket + "/" + k, TenantID: name, Ours: true}
		if id, err := events.ParseTenantID(name); err == nil {
			rec, err := s.readRecord(ctx, id)
			if err != nil {
				return resp, fmt.Errorf("inventory: %w", err)
			}
			if rec == nil {
				continue // deleted meanwhile
			}
			recs[id] = rec
			it.Generation = rec.Generation
		}
		resp.Items = append(resp.Items, it)
	}
	owned := func(tenant string) (bool, uint64) {
		id, err := events.ParseTenantID(tenant)
		if err != nil {
			return false, 0
		}
		if r := recs[id]; r != nil {
			return true, r.Generation
		}
		return false, 0
	}

	var buckets []minio.BucketInfo
	if err := s.call(ctx, "bucket.list_all", func(ctx context.Context) (err error) {
		buckets, err = s.s3.ListBuckets(ctx)
		return err
	}); err != nil {
		return resp, fmt.Errorf("inventory: list buckets: %w", err)
	}
	for _, b := range buckets {
		if !strings.HasPrefix(b.Name, "tenant-") {
			continue
		}
		it := events.InventoryItem{Kind: events.KindBucket, Name: b.Name, TenantID: strings.TrimPrefix(b.Name, "tenant-")}
		if id, ok := events.TenantFromName(b.Name, "tenant-", ""); ok && recs[id] != nil {
			ours, err := s.bucketOurs(ctx, id, observed{bucketExists: true, bucketCreated: b.CreationDate, rec: recs[id]})
			if err != nil {
				return resp, fmt.Errorf("inventory: %w", err)
			}
			if ours {
				it.Ours, it.Generation = true, recs[id].Generation
			}
		}
		resp.Items = append(resp.Items, it)
	}

	var users map[string]madmin.UserInfo
	if err := s.call(ctx, "user.list", func(ctx context.Context) (err error) {
		users, err = s.admin.ListUsers(ctx)
		return err
	}); err != nil {
		return resp, fmt.Errorf("inventory: list users: %w", err)
	}
	for name := range users {
		if !strings.HasPrefix(name, "tenant-") {
			continue
		}
		it := events.InventoryItem{Kind: events.KindIAMUser, Name: name, TenantID: strings.TrimPrefix(name, "tenant-")}
		it.Ours, it.Generation = owned(it.TenantID)
		resp.Items = append(resp.Items, it)
	}

	// Service accounts and temporary keys: tenantprov creates only the
	// rotated credentials its records list. Listed are those with a
	// tenant's name (a squatted access key) and those whose parent is a
	// tenant user.
	var accessKeys map[string]madmin.ListAccessKeysResp
	if err := s.call(ctx, "user.list_access_keys", func(ctx context.Context) (err error) {
		accessKeys, err = s.admin.ListAccessKeysBulk(ctx, nil, madmin.ListAccessKeysOpts{ListType: madmin.AccessKeyListAll, All: true})
		return err
	}); err != nil {
		return resp, fmt.Errorf("inventory: list access keys: %w", err)
	}
	for parent, k := range accessKeys {
		for _, sa := range append(append([]madmin.ServiceAccountInfo(nil), k.ServiceAccounts...), k.STSKeys...) {
			var tenant string
			switch {
			case strings.HasPrefix(sa.AccessKey, "tenant-"):
				tenant = strings.TrimPrefix(sa.AccessKey, "tenant-")
			case strings.HasPrefix(parent, "tenant-"):
				tenant = strings.TrimPrefix(parent, "tenant-")
			default:
				continue
			}
			it := events.InventoryItem{Kind: events.KindServiceAccount, Name: sa.AccessKey, TenantID: tenant}
			// A rotated credential (lifecycle.go) is ours: a service
			// account of the tenant's own user whose access key the
			// tenant's system record lists.
			if id, err := events.ParseTenantID(tenant); err == nil && parent == id.MinIOUser() && recs[id].recordedKeys()[sa.AccessKey] {
				it.Ours, it.Generation = true, recs[id].Generation
			}
			resp.Items = append(resp.Items, it)
		}
	}

	var policies map[string][]byte
	if err := s.call(ctx, "policy.list", func(ctx context.Context) error {
		ps, err := s.admin.ListCannedPolicies(ctx)
		policies = make(map[string][]byte, len(ps))
		for k := range ps {
			policies[k] = nil
		}
		return err
	}); err != nil {
		return resp, fmt.Errorf("inventory: list policies: %w", err)
	}
	for name := range policies {
		if !strings.HasPrefix(name, "tenant-") {
			continue
		}
		it := events.InventoryItem{Kind: events.KindPolicy, Name: name, TenantID: strings.TrimSuffix(strings.TrimPrefix(name, "tenant-"), "-rw")}
		if id, err := events.ParseTenantID(it.TenantID); err == nil && name == id.MinIOLegacyPolicy() && recs[id].claimsLegacy() {
			it.Ours, it.Generation = true, recs[id].Generation
		}
		resp.Items = append(resp.Items, it)
	}
	return resp, nil
}
