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
// a resource it did not create; nothing a tenant can write is trusted).
//
// The only marker the store trusts is its system record: object
// tenants/<id>.json in the bucket tenantprov-system, which no tenant policy
// reaches and which only the agent's admin credential writes. Provision
// writes it before it creates anything (the record states the intent "this
// user and bucket are tenantprov's"); Deprovision deletes it after
// everything else is gone. A user with the tenant's name and no record is
// foreign, and an access key with the tenant's name that is a service
// account or temporary key is foreign whatever the record says (tenantprov
// creates only users). The tenant's user holds the one shared tenant
// policy (events.MinIOTenantPolicy, in the reserved namespace), which is
// tenantprov's whoever made it: Provision and Observe rewrite it when it
// differs, and nothing removes it. A per-tenant policy tenant-<id>-rw is
// tenantprov's only while the record claims it (record.claimsLegacy).
//
// A bucket is tenantprov's only if the record names it by its creation
// time: after MakeBucket succeeds, Provision stamps the bucket's
// CreationDate into the record (bucket_created). A bucket with the tenant's
// name and another creation time — made by someone else before the record,
// or deleted and re-created since — is foreign.
//
// S3 cannot create a bucket and record it in one call, so ownership is
// claimed before the bucket exists: whenever Provision is about to create
// the bucket, it first writes into the record the intent (bucket_intent:
// the agent's clock just before MakeBucket, with bucket_created cleared,
// under the record's generation). An agent cut off between MakeBucket and
// the stamp (command deadline, SIGKILL) leaves an unstamped bucket; it is
// ours if the record holds an intent, the bucket was created at or after
// the intent (less intentMargin: the agent's and MinIO's clocks differ),
// and it is empty (no objects, versions or uploads) or carries
// tenantprov's tags for this tenant. Provision, Deprovision and Observe
// then stamp it. A bucket created before the intent, or unstamped under a
// record with no intent (written by an agent before intents existed: then
// the record's own write time stands in for the intent, as before), stays
// foreign.
//
// The window cannot be used by a tenant to have tenantprov adopt (and later
// delete) a bucket: creating a bucket takes s3:CreateBucket, which no
// tenant policy grants (policy.go); only an admin credential can create
// one, and an admin is trusted with the store anyway.
//
// Bucket tags (managed-by, tenant, generation) are still written, for
// operators; they are information, never evidence of ownership: anyone
// with s3:PutBucketTagging on a bucket can write them.

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
	// clockSkew is how much earlier than its record an unstamped bucket may
	// look created and still count as ours (both times come from the
	// server, which may be several nodes).
	clockSkew = 2 * time.Second
	// intentMargin is how much earlier than the recorded intent (the
	// agent's clock) an unstamped bucket may look created (MinIO's clock)
	// and still count as ours.
	intentMargin = 5 * time.Second
)

// record is a tenant's system record: tenantprov's claim on the tenant's
// user, policy and bucket.
type record struct {
	Tenant     string `json:"tenant"`
	Generation uint64 `json:"generation"`
	SagaID     string `json:"saga_id,omitempty"`
	Bucket     string `json:"bucket"`
	User       string `json:"user"`
	// Policy is the shared tenant policy (events.MinIOTenantPolicy), or,
	// in a record an agent before it wrote, the tenant's own legacy policy
	// tenant-<id>-rw: the record claims that one until the tenant is
	// migrated off it (migrateLegacy).
	Policy    string    `json:"policy"`
	CreatedAt time.Time `json:"created_at"`
	// BucketCreated is the CreationDate of the bucket this agent made
	// (zero until it is stamped after MakeBucket).
	BucketCreated time.Time `json:"bucket_created,omitzero"`
	// BucketIntent is when (agent's clock) the agent was about to create
	// the bucket: written before MakeBucket, with BucketCreated cleared,
	// so that a bucket left unstamped by an agent cut off before the stamp
	// is still recognised as ours (bucketOurs).
	BucketIntent time.Time `json:"bucket_intent,omitzero"`
	// Keys are the rotated credentials (versions 2 and up): service
	// accounts the agent made under User (lifecycle.go). Verify accepts
	// exactly these service accounts under the user.
	Keys []rotatedKey `json:"keys,omitempty"`
	// UserRetired is true once credential version 1, the user's own
	// secret, is retired: the agent replaced it with one nobody knows.
	UserRetired bool `json:"user_retired,omitempty"`
	// Suspended is true while the tenant is suspended (the user is
	// disabled on purpose).
	Suspended bool `json:"suspended,omitempty"`

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

// newRecord is the record of generation, keeping the bucket stamp and
// intent of prev (the bucket outlives a generation change only if it is
// ours) and its claim on a legacy policy not yet migrated.
func newRecord(t events.TenantID, generation uint64, sagaID string, prev *record) *record {
	r := &record{
		Tenant: string(t), Generation: generation, SagaID: sagaID,
		Bucket: t.MinIOBucket(), User: t.MinIOUser(), Policy: t.MinIOPolicy(),
		CreatedAt: time.Now().UTC(),
	}
	if prev != nil {
		r.BucketCreated = prev.BucketCreated
		r.BucketIntent = prev.BucketIntent
		if prev.claimsLegacy() {
			r.Policy = prev.Policy
		}
	}
	return r
}

// claimsLegacy reports whether r claims the tenant's legacy policy
// tenant-<id>-rw (written by an agent before the shared policy, and not
// migrated since). Only a record that claims it lets the agent remove a
// policy of that name: one made by anyone else is left alone.
func (r *record) claimsLegacy() bool {
	return r != nil && r.Policy == events.TenantID(r.Tenant).MinIOLegacyPolicy()
}

// withIntent is r claiming a bucket about to be created now: the intent
// set, any stamp of an earlier bucket (which is gone) cleared.
func (r *record) withIntent(now time.Time) *record {
	c := *r
	c.BucketCreated, c.BucketIntent = time.Time{}, now.UTC()
	return &c
}

// intentPending reports whether r already claims a bucket not yet stamped.
func (r *record) intentPending() bool {
	return r.BucketCreated.IsZero() && !r.BucketIntent.IsZero()
}

// writeRecord writes r as the tenant's record.
func (s *Store) writeRecord(ctx context.Context, r *record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	err = s.call(ctx, "record.put", func(ctx context.Context) error {
		_, err := s.s3.PutObject(ctx, SystemBucket, recordPrefix+r.Tenant+".json", bytes.NewReader(b), int64(len(b)),
			minio.PutObjectOptions{ContentType: recordContentType, DisableMultipart: true})
		return err
	})
	if err != nil {
		return fmt.Errorf("write system record of %s: %w", r.Tenant, err)
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

// bucketTags builds the (informative) tags of a tenant bucket.
func bucketTags(t events.TenantID, generation uint64) map[string]string {
	return map[string]string{
		TagManagedBy:  ManagedByValue,
		TagTenant:     string(t),
		TagGeneration: strconv.FormatUint(generation, 10),
	}
}

// keyState is what holds the tenant's access key name.
type keyState int

const (
	keyAbsent   keyState = iota
	keyUser              // an IAM user (ours if the record exists)
	keySquatted          // a service account or temporary key: never ours
)

// observed is what the store found under a tenant's names before it
// changes anything.
type observed struct {
	bucketExists  bool
	bucketCreated time.Time // the bucket's CreationDate, if it exists
	rec           *record   // nil: no system record
	user          madmin.UserInfo
	key           keyState
	legacyPolicy  bool // a canned policy tenant-<id>-rw exists
}

// look reads the tenant's bucket, system record, access key and legacy
// policy (concurrently, unless the sequence is Sequential).
func (s *Store) look(ctx context.Context, t events.TenantID) (observed, error) {
	var o observed
	err := s.steps(ctx,
		func(ctx context.Context) (err error) {
			o.bucketCreated, o.bucketExists, err = s.bucketCreation(ctx, t.MinIOBucket())
			return err
		},
		func(ctx context.Context) (err error) { o.rec, err = s.readRecord(ctx, t); return err },
		func(ctx context.Context) (err error) { o.user, o.key, err = s.userInfo(ctx, t); return err },
		func(ctx context.Context) (err error) { o.legacyPolicy, err = s.legacyPolicyExists(ctx, t); return err },
	)
	return o, err
}

// generation is the generation the system record holds (0 if none).
func (o observed) generation() uint64 {
	if o.rec == nil {
		return 0
	}
	return o.rec.Generation
}

// bucketStamped reports whether the bucket exists and is the one the
// record names by its creation time.
func (o observed) bucketStamped() bool {
	return o.bucketExists && o.rec != nil && !o.rec.BucketCreated.IsZero() && o.rec.BucketCreated.Equal(o.bucketCreated)
}

// bucketCreation returns the bucket's CreationDate and whether it exists.
// Only the bucket listing tells a creation date, and its cost grows with
// the number of buckets: a bucket that is absent (HEAD, the usual case
// before a Provision and after a Deprovision) needs none, and concurrent
// callers share a listing that began after each of them asked (rounds.go).
func (s *Store) bucketCreation(ctx context.Context, bucket string) (time.Time, bool, error) {
	var (
		created time.Time
		exists  bool
	)
	err := s.call(ctx, "bucket.exists", func(ctx context.Context) (err error) {
		exists, err = s.s3.BucketExists(ctx, bucket)
		return err
	})
	if err != nil {
		return time.Time{}, false, fmt.Errorf("look for bucket %s: %w", bucket, err)
	}
	if !exists {
		return time.Time{}, false, nil
	}
	err = s.call(ctx, "bucket.created", func(ctx context.Context) error {
		all, err := s.bucketReads.Get(ctx, struct{}{}, s.readBuckets)
		created, exists = all[bucket]
		return err
	})
	if err != nil {
		return time.Time{}, false, fmt.Errorf("list buckets: %w", err)
	}
	return created, exists, nil
}

// readBuckets lists every bucket's creation date (the fetch of
// s.bucketReads).
func (s *Store) readBuckets(ctx context.Context, _ []struct{}) (map[string]time.Time, error) {
	var out map[string]time.Time
	err := s.call(ctx, "bucket.list_all", func(ctx context.Context) error {
		bs, err := s.s3.ListBuckets(ctx)
		out = make(map[string]time.Time, len(bs))
		for _, b := range bs {
			out[b.Name] = b.CreationDate
		}
		return err
	})
	return out, err
}

// bucketOurs reports whether the tenant's existing bucket is tenantprov's:
// stamped in the record, or — the window between MakeBucket and the stamp
// — unstamped, created at or after the intent the record holds, and either
// empty or tagged by tenantprov for this tenant. A record without an intent
// (written before intents existed) counts its own write time as the intent.
func (s *Store) bucketOurs(ctx context.Context, t events.TenantID, o observed) (bool, error) {
	switch {
	case !o.bucketExists || o.rec == nil:
		return false, nil
	case o.bucketStamped():
		return true, nil
	case o.bucketCreated.IsZero():
		// MinIO lists the bucket without a creation date (seen under
		// load, persistently: its bucket metadata was rewritten without
		// the date and without the tags). The date cannot decide: a
		// bucket the record stamped (the agent saw it made) is ours; one
		// the record only intends is ours if empty or tagged by
		// tenantprov for this tenant. Only an admin can create buckets,
		// so a tenant cannot arrange this.
		switch {
		case !o.rec.BucketCreated.IsZero():
			return true, nil
		case o.rec.BucketIntent.IsZero():
			return false, nil
		}
	case !o.rec.BucketCreated.IsZero():
		return false, nil // the record names another bucket of this name
	case !o.rec.BucketIntent.IsZero():
		if o.bucketCreated.Before(o.rec.BucketIntent.Add(-intentMargin)) {
			return false, nil // older than tenantprov's intent
		}
	case o.bucketCreated.Before(o.rec.written.Add(-clockSkew)):
		return false, nil // older than tenantprov's (legacy) record
	}
	empty, err := s.bucketEmpty(ctx, t.MinIOBucket())
	if err != nil || empty {
		return empty, err
	}
	var tagged bool
	err = s.call(ctx, "bucket.get_tagging", func(ctx context.Context) error {
		tg, err := s.s3.GetBucketTagging(ctx, t.MinIOBucket())
		if s3Code(err) == codeNoSuchTagSet {
			return nil
		}
		if err != nil {
			return err
		}
		m := tg.ToMap()
		tagged = m[TagManagedBy] == ManagedByValue && m[TagTenant] == string(t)
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("read tags of bucket %s: %w", t.MinIOBucket(), err)
	}
	return tagged, nil
}

// stampBucket records the bucket's creation time in rec (and writes rec)
// unless it already holds it.
func (s *Store) stampBucket(ctx context.Context, rec *record, created time.Time) error {
	if rec.BucketCreated.Equal(created) || created.IsZero() {
		// A bucket listed without a creation date is not stamped (the
		// record keeps its claim: bucketOurs).
		return nil
	}
	stamped := *rec
	stamped.BucketCreated = created
	if err := s.writeRecord(ctx, &stamped); err != nil {
		return err
	}
	*rec = stamped
	return nil
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

// setBucketTags tags the tenant bucket for operators.
func (s *Store) setBucketTags(ctx context.Context, t events.TenantID, generation uint64) error {
	tg, err := tags.NewTags(bucketTags(t, generation), false)
	if err != nil {
		return err
	}
	return s.call(ctx, "bucket.set_tagging", func(ctx context.Context) error {
		return s.s3.SetBucketTagging(ctx, t.MinIOBucket(), tg)
	})
}
