package miniostore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/minio/madmin-go/v3"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/tags"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// How tenantprov marks what it created (DESIGN.md §5: never adopt or delete
// a resource it did not create).
//
// A bucket carries bucket tags: managed-by=tenantprov, tenant=<id>,
// generation=<N>.
//
// MinIO users and canned policies carry no tags, so the agent keeps a
// system record per tenant: object tenants/<id>.json in the bucket
// tenantprov-system, which no tenant policy reaches. Provision writes it
// before it creates anything (the record states the intent "this user,
// policy and bucket are tenantprov's"); Deprovision deletes it after
// everything else is gone. A user or policy with the tenant's name and no
// record is foreign.
//
// The record also closes the one window bucket tags leave open: S3 cannot
// create a bucket and tag it in one call, so an agent that dies between
// MakeBucket and SetBucketTagging leaves an untagged bucket. Such a bucket
// is recognised as ours only if the record exists, the bucket is empty
// (no objects, versions or uploads) and it was created after the record
// was written; anything else untagged is foreign.

// Tag keys and values on tenant buckets and the canary.
const (
	TagManagedBy   = "managed-by"
	TagTenant      = "tenant"
	TagGeneration  = "generation"
	TagRole        = "role" // on the canary: role=canary
	ManagedByValue = "tenantprov"
)

// SystemBucket holds the agent's system records (tenants/<id>.json). Its
// name is in the reserved namespace, and no tenant policy reaches it.
const SystemBucket = events.ReservedPrefix + "-system"

const (
	canaryObject      = "canary.txt"
	recordPrefix      = "tenants/"
	recordContentType = "application/json"
	// clockSkew is how much earlier than its record an untagged bucket may
	// look created and still count as ours (both times come from the
	// server, which may be several nodes).
	clockSkew = 2 * time.Second
)

// record is a tenant's system record: tenantprov's claim on the tenant's
// user, policy and (until it is tagged) bucket.
type record struct {
	Tenant     string    `json:"tenant"`
	Generation uint64    `json:"generation"`
	SagaID     string    `json:"saga_id,omitempty"`
	Bucket     string    `json:"bucket"`
	User       string    `json:"user"`
	Policy     string    `json:"policy"`
	CreatedAt  time.Time `json:"created_at"`

	// written is the record object's LastModified (server time).
	written time.Time
}

func recordKey(t events.TenantID) string { return recordPrefix + string(t) + ".json" }

// readRecord returns the tenant's record, or nil if there is none.
func (s *Store) readRecord(ctx context.Context, t events.TenantID) (*record, error) {
	var rec *record
	err := s.call(ctx, "record.get", func(ctx context.Context) error {
		obj, err := s.s3.GetObject(ctx, SystemBucket, recordKey(t), minio.GetObjectOptions{})
		if err != nil {
			return err
		}
		defer obj.Close()
		info, err := obj.Stat()
		if err != nil {
			if s3Code(err) == codeNoSuchKey {
				return nil
			}
			return err
		}
		b, err := io.ReadAll(io.LimitReader(obj, 1<<16))
		if err != nil {
			return err
		}
		var r record
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("system record %s/%s is not valid JSON: %w", SystemBucket, recordKey(t), err)
		}
		r.written = info.LastModified
		rec = &r
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read system record of %s: %w", t, err)
	}
	return rec, nil
}

// writeRecord writes the tenant's record for generation.
func (s *Store) writeRecord(ctx context.Context, t events.TenantID, generation uint64, sagaID string) error {
	r := record{
		Tenant: string(t), Generation: generation, SagaID: sagaID,
		Bucket: t.MinIOBucket(), User: t.MinIOUser(), Policy: t.MinIOPolicy(),
		CreatedAt: time.Now().UTC(),
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	err = s.call(ctx, "record.put", func(ctx context.Context) error {
		_, err := s.s3.PutObject(ctx, SystemBucket, recordKey(t), bytes.NewReader(b), int64(len(b)),
			minio.PutObjectOptions{ContentType: recordContentType, DisableMultipart: true})
		return err
	})
	if err != nil {
		return fmt.Errorf("write system record of %s: %w", t, err)
	}
	return nil
}

// deleteRecord removes the tenant's record (absent is success).
func (s *Store) deleteRecord(ctx context.Context, t events.TenantID) error {
	err := s.call(ctx, "record.delete", func(ctx context.Context) error {
		return s.s3.RemoveObject(ctx, SystemBucket, recordKey(t), minio.RemoveObjectOptions{})
	})
	if err != nil && s3Code(err) != codeNoSuchKey {
		return fmt.Errorf("delete system record of %s: %w", t, err)
	}
	return nil
}

// bucketTags builds the tags of a tenant bucket.
func bucketTags(t events.TenantID, generation uint64) map[string]string {
	return map[string]string{
		TagManagedBy:  ManagedByValue,
		TagTenant:     string(t),
		TagGeneration: strconv.FormatUint(generation, 10),
	}
}

// observed is what the store found under a tenant's names before it
// changes anything.
type observed struct {
	bucket       bucketState
	bucketGen    uint64  // the bucket's generation tag (ours only; 0 if none)
	rec          *record // nil: no system record
	user         madmin.UserInfo
	userExists   bool
	policyExists bool
}

// look reads the tenant's bucket tags, system record, user and policy
// (concurrently, unless the sequence is Sequential).
func (s *Store) look(ctx context.Context, t events.TenantID, generation uint64) (observed, error) {
	var o observed
	err := s.steps(ctx,
		func(ctx context.Context) (err error) {
			o.bucket, o.bucketGen, err = s.inspectBucket(ctx, t, generation)
			return err
		},
		func(ctx context.Context) (err error) { o.rec, err = s.readRecord(ctx, t); return err },
		func(ctx context.Context) (err error) { o.user, o.userExists, err = s.userInfo(ctx, t); return err },
		func(ctx context.Context) (err error) { o.policyExists, err = s.policyExists(ctx, t); return err },
	)
	return o, err
}

// generation is the newest generation tenantprov's markers record for the
// tenant — the system record's and our bucket's generation tag — or 0 if
// there is none.
func (o observed) generation() uint64 {
	var gen uint64
	if o.rec != nil {
		gen = o.rec.Generation
	}
	if o.bucket == bucketOurs || o.bucket == bucketOursStale {
		gen = max(gen, o.bucketGen)
	}
	return gen
}

// bucketState is what the store found under a tenant's bucket name.
type bucketState int

const (
	bucketAbsent    bucketState = iota
	bucketOurs                  // tagged managed-by=tenantprov, tenant=<id>
	bucketUntagged              // exists without our tags: foreign unless the record vouches for it
	bucketForeign               // tagged by someone else
	bucketOursStale             // ours (tagged), but the tags need updating (generation)
)

// inspectBucket reads the bucket's tags in one call (which also tells
// whether it exists). For a bucket of ours it also returns the generation
// its tags record (0 if the tag is missing or unreadable).
func (s *Store) inspectBucket(ctx context.Context, t events.TenantID, generation uint64) (bucketState, uint64, error) {
	var (
		st     bucketState
		tagGen uint64
	)
	err := s.call(ctx, "bucket.get_tagging", func(ctx context.Context) error {
		tg, err := s.s3.GetBucketTagging(ctx, t.MinIOBucket())
		switch s3Code(err) {
		case "":
			if err != nil {
				return err
			}
		case codeNoSuchBucket:
			st = bucketAbsent
			return nil
		case codeNoSuchTagSet:
			st = bucketUntagged
			return nil
		default:
			return err
		}
		m := tg.ToMap()
		switch {
		case m[TagManagedBy] != ManagedByValue || m[TagTenant] != string(t):
			st = bucketForeign
			if len(m) == 0 {
				st = bucketUntagged
			}
		case m[TagGeneration] != strconv.FormatUint(generation, 10):
			st = bucketOursStale
			tagGen, _ = strconv.ParseUint(m[TagGeneration], 10, 64)
		default:
			st, tagGen = bucketOurs, generation
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("inspect bucket %s: %w", t.MinIOBucket(), err)
	}
	return st, tagGen, nil
}

// vouchedUntagged reports whether an untagged tenant bucket is one this
// agent created and could not tag before it died: rec exists, the bucket
// holds nothing, and it was created after rec was written.
func (s *Store) vouchedUntagged(ctx context.Context, t events.TenantID, rec *record) (bool, error) {
	if rec == nil {
		return false, nil
	}
	bucket := t.MinIOBucket()
	var created time.Time
	err := s.call(ctx, "bucket.list_all", func(ctx context.Context) error {
		bs, err := s.s3.ListBuckets(ctx)
		for _, b := range bs {
			if b.Name == bucket {
				created = b.CreationDate
			}
		}
		return err
	})
	if err != nil {
		return false, fmt.Errorf("list buckets: %w", err)
	}
	if created.IsZero() || created.Before(rec.written.Add(-clockSkew)) {
		return false, nil
	}
	empty, err := s.bucketEmpty(ctx, bucket)
	if err != nil {
		return false, err
	}
	return empty, nil
}

// bucketEmpty reports whether bucket holds no object version and no
// incomplete upload.
func (s *Store) bucketEmpty(ctx context.Context, bucket string) (bool, error) {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if o, ok := <-s.s3.ListObjects(lctx, bucket, minio.ListObjectsOptions{WithVersions: true, Recursive: true, MaxKeys: 1}); ok {
		if o.Err != nil {
			return false, fmt.Errorf("list %s: %w", bucket, o.Err)
		}
		return false, nil
	}
	if u, ok := <-s.s3.ListIncompleteUploads(lctx, bucket, "", true); ok {
		if u.Err != nil {
			return false, fmt.Errorf("list uploads in %s: %w", bucket, u.Err)
		}
		return false, nil
	}
	return true, nil
}

// setBucketTags tags the tenant bucket as ours.
func (s *Store) setBucketTags(ctx context.Context, t events.TenantID, generation uint64) error {
	tg, err := tags.NewTags(bucketTags(t, generation), false)
	if err != nil {
		return err
	}
	return s.call(ctx, "bucket.set_tagging", func(ctx context.Context) error {
		return s.s3.SetBucketTagging(ctx, t.MinIOBucket(), tg)
	})
}
