package miniostore

import (
	"context"
	"errors"
	"fmt"

	"github.com/minio/madmin-go/v3"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// Plans on MinIO (DESIGN.md §10): the tenant bucket's hard quota. MinIO
// refuses a put that would take the bucket beyond it (an object larger
// than the quota at once; the bucket's usage as the scanner last measured
// it otherwise, so a bucket can overshoot by what was written since the
// last scan). Nothing else a plan could ask for (request rate, object
// count, bandwidth) is enforced by MinIO per bucket or per user.

var (
	_ agent.PlanApplier = (*Store)(nil)
	_ agent.DryRunner   = (*Store)(nil)
)

// errNotOurs: the tenant's bucket is absent or not tenantprov's.
var errNotOurs = errors.New("the tenant's bucket is not provisioned by tenantprov")

// quotaFor is the hard quota the plan gives (the agent's MINIO_BUCKET_QUOTA
// when the plan sets none; 0 is no quota).
func (s *Store) quotaFor(p *events.Plan) uint64 {
	if p != nil && p.MinIO != nil && p.MinIO.BucketQuotaBytes > 0 {
		return p.MinIO.BucketQuotaBytes
	}
	return uint64(s.cfg.BucketQuota)
}

// ApplyPlan sets (or clears) the tenant bucket's hard quota and reads it
// back. The bucket must be the one tenantprov provisioned.
func (s *Store) ApplyPlan(ctx context.Context, req agent.PlanRequest) (agent.PlanResponse, error) {
	t := req.Tenant
	if _, err := events.ParseTenantID(string(t)); err != nil {
		return agent.PlanResponse{}, agent.Permanent(events.ReasonInvalid, err)
	}
	o, err := s.look(ctx, t)
	if err != nil {
		return agent.PlanResponse{}, err
	}
	ours, err := s.bucketOurs(ctx, t, o)
	if err != nil {
		return agent.PlanResponse{}, err
	}
	if !ours {
		return agent.PlanResponse{}, agent.Permanent(events.ReasonInvalid, fmt.Errorf("apply plan to %s: %w", t, errNotOurs))
	}
	if gen := o.generation(); req.Generation > 0 && gen > req.Generation {
		return agent.PlanResponse{}, agent.Permanent(events.ReasonInvalid,
			fmt.Errorf("apply plan to %s generation %d: the bucket belongs to generation %d: %w", t, req.Generation, gen, ErrStaleGeneration))
	}
	want, name := s.quotaFor(req.Plan), t.MinIOBucket()
	q := &madmin.BucketQuota{} // no quota: clears it
	if want > 0 {
		q = &madmin.BucketQuota{Quota: want, Size: want, Type: madmin.HardQuota}
	}
	err = s.call(ctx, "bucket.set_quota", func(ctx context.Context) error { return s.admin.SetBucketQuota(ctx, name, q) })
	if err != nil {
		return agent.PlanResponse{}, fmt.Errorf("set quota on bucket %s: %w", name, err)
	}
	got, err := s.bucketQuota(ctx, name)
	if err != nil {
		return agent.PlanResponse{}, err
	}
	if got != want {
		return agent.PlanResponse{}, fmt.Errorf("bucket %s: hard quota read back %d, want %d", name, got, want)
	}
	planName := ""
	if req.Plan != nil {
		planName = req.Plan.Name
	}
	return agent.PlanResponse{Limits: &events.Plan{Name: planName, MinIO: &events.MinIOPlan{BucketQuotaBytes: got}}}, nil
}

// bucketQuota reads the bucket's hard quota (0: none).
func (s *Store) bucketQuota(ctx context.Context, bucket string) (uint64, error) {
	var got uint64
	err := s.call(ctx, "bucket.get_quota", func(ctx context.Context) error {
		q, err := s.admin.GetBucketQuota(ctx, bucket)
		if err != nil {
			return err
		}
		if q.Type == madmin.HardQuota || q.Type == "" {
			got = max(q.Size, q.Quota)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("read quota of bucket %s: %w", bucket, err)
	}
	return got, nil
}

// DryRun reports the admin calls a provision with req.Plan would make,
// the names and every conflict (a foreign bucket, user or access key),
// with read-only calls only. The secret is never shown.
func (s *Store) DryRun(ctx context.Context, req agent.PlanRequest) (events.DryRun, error) {
	t := req.Tenant
	if _, err := events.ParseTenantID(string(t)); err != nil {
		return events.DryRun{}, agent.Permanent(events.ReasonInvalid, err)
	}
	bucket, user, policy := t.MinIOBucket(), t.MinIOUser(), t.MinIOPolicy()
	out := events.DryRun{Names: map[string]string{ResourceBucket: bucket, ResourceUser: user, ResourcePolicy: policy}}
	call := func(text, skip string) {
		out.Operations = append(out.Operations, events.Operation{Kind: "admin_call", Text: text, Skip: skip})
	}
	conflict := func(resource string) {
		out.Conflicts = append(out.Conflicts, events.Conflict{Kind: events.ConflictNameTaken, Resource: resource, Detail: "exists and was not created by tenantprov"})
	}
	var system bool
	err := s.call(ctx, "bucket.exists", func(ctx context.Context) (err error) { system, err = s.s3.BucketExists(ctx, SystemBucket); return err })
	if err != nil {
		return events.DryRun{}, fmt.Errorf("look for bucket %s: %w", SystemBucket, err)
	}
	var o observed
	if system {
		if o, err = s.look(ctx, t); err != nil {
			return events.DryRun{}, err
		}
	} else {
		call("MakeBucket "+SystemBucket+" (the agent's system record, once per server)", "")
		err := s.steps(ctx,
			func(ctx context.Context) (err error) {
				o.bucketCreated, o.bucketExists, err = s.bucketCreation(ctx, bucket)
				return err
			},
			func(ctx context.Context) (err error) { o.user, o.key, err = s.userInfo(ctx, t); return err },
		)
		if err != nil {
			return events.DryRun{}, err
		}
	}
	if o.key == keySquatted {
		conflict("access key " + user + " (a service account or temporary key)")
	}
	if o.bucketExists {
		ours, err := s.bucketOurs(ctx, t, o)
		if err != nil {
			return events.DryRun{}, err
		}
		if !ours {
			conflict("bucket " + bucket)
		}
	}
	if o.rec == nil && o.key == keyUser {
		conflict("user " + user)
	}
	call(fmt.Sprintf("PutObject %s/%s (system record: tenant %s, generation %d)", SystemBucket, recordKey(t), t, req.Generation), "")
	skip := ""
	if o.bucketExists {
		skip = "the bucket exists"
	}
	call("MakeBucket "+bucket+" (region "+s.serverRegion()+")", skip)
	call("PutBucketTagging "+bucket+" managed-by="+ManagedByValue+" tenant="+string(t), "")
	if q := s.quotaFor(req.Plan); q > 0 {
		call(fmt.Sprintf("SetBucketQuota %s hard %d bytes", bucket, q), "")
	} else if req.Plan != nil {
		call("SetBucketQuota "+bucket+" (clear)", "")
	}
	var doc []byte
	err = s.call(ctx, "policy.info", func(ctx context.Context) error {
		info, err := s.admin.InfoCannedPolicyV2(ctx, policy)
		if err != nil {
			if adminCode(err) == codeAdminNoSuchPolicy {
				return nil
			}
			return err
		}
		doc = info.Policy
		return nil
	})
	if err != nil {
		return events.DryRun{}, fmt.Errorf("look up policy %s: %w", policy, err)
	}
	skip = ""
	if doc != nil && s.tenantPolicyExact(doc) {
		skip = "it exists as written"
	}
	call("AddCannedPolicy "+policy+" (shared by every tenant: the bucket named like the requesting user only; list/location on it, get/put/delete/multipart on its objects)", skip)
	call("AddUser "+user+" secret <redacted>", "")
	skip = ""
	if o.key == keyUser && o.user.PolicyName == policy {
		skip = "already attached"
	}
	call("AttachPolicy "+policy+" to user "+user, skip)
	if o.rec.claimsLegacy() && o.legacyPolicy {
		call("RemoveCannedPolicy "+t.MinIOLegacyPolicy()+" (the tenant's policy before the shared one)", "")
	}
	return out, nil
}
