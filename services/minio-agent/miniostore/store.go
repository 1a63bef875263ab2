// Package miniostore is the MinIO agent.Store (DESIGN.md §5): per tenant a
// bucket tenant-<id> tagged as tenantprov's, an IAM user tenant-<id> whose
// secret is the generated credential, holding the one canned policy every
// tenant shares (tenantprov-tenant-rw), which reaches the bucket named like
// the requesting user only (policy.go). Verify proves the
// isolation with the tenant's own credential; Deprovision removes only
// what tenantprov created.
//
// The store keeps two system buckets of its own: tenantprov-canary (an
// object no tenant may read, for verification) and tenantprov-system (the
// ownership records of users and policies, see owner.go). Both are created
// on first use.
package miniostore

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/minio/madmin-go/v3"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/tags"
	"golang.org/x/sync/errgroup"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

var _ agent.Store = (*Store)(nil)

// Store provisions tenants in one MinIO deployment. It is safe for
// concurrent use by several tenants; calls for the same tenant are expected
// to be serialised by the runtime (one command per tenant at a time).
type Store struct {
	cfg       Config
	admin     *madmin.AdminClient
	s3        *minio.Client
	transport http.RoundTripper
	observe   CallObserver
	// concurrent runs independent calls at once; fastIAM uses the
	// PBKDF2-sealed AddUser and the unencrypted policy mapping (iam.go).
	// Both are on unless WithSequence(Sequential).
	concurrent bool
	fastIAM    bool

	// policies caches parsed canned policies for no_foreign_grants
	// (grants.go).
	policies policyCache
	// grantReads, keyReads and bucketReads share the expensive reads
	// among concurrent callers (rounds.go).
	grantReads  agent.Rounds[struct{}, *grantSnapshot]
	keyReads    agent.Rounds[string, map[string]madmin.ListAccessKeysResp]
	bucketReads agent.Rounds[struct{}, map[string]time.Time]

	initMu   sync.Mutex
	initDone bool
	region   string

	// beforeStamp, if set (tests only), runs in Provision after the bucket
	// exists and before its creation time is stamped into the record: an
	// error there is an agent cut off in that window.
	beforeStamp func(ctx context.Context) error
}

// CallObserver receives the duration and outcome of every MinIO call the
// store makes, named "<resource>.<action>" (for example "user.add",
// "bucket.make", "verify.own_access"). It must be cheap and safe for
// concurrent use.
type CallObserver func(call string, d time.Duration, err error)

// Sequence is the order in which the store issues its MinIO calls.
type Sequence int

const (
	// Optimized issues independent calls concurrently (bucket work beside
	// IAM work, policy beside user) and uses the fast IAM calls of iam.go.
	// It is the default.
	Optimized Sequence = iota
	// Sequential issues one call after another with madmin's AddUser and
	// AttachPolicy: the baseline BenchmarkProvisionVerifyDeprovision
	// compares Optimized against. Equally correct, several times slower.
	Sequential
)

// Option configures a Store.
type Option func(*Store)

// WithCallObserver reports every MinIO call to o (timings, metrics).
func WithCallObserver(o CallObserver) Option { return func(s *Store) { s.observe = o } }

// WithSequence selects the call sequence (default Optimized).
func WithSequence(q Sequence) Option {
	return func(s *Store) {
		s.concurrent = q == Optimized
		s.fastIAM = q == Optimized
	}
}

// New returns a Store for cfg. It does not contact MinIO: the system
// buckets are created on the first Provision, Verify or Deprovision, and
// Ping reports whether MinIO answers.
func New(cfg Config, opts ...Option) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotConfigured, err)
	}
	transport, err := minio.DefaultTransport(cfg.Secure)
	if err != nil {
		return nil, fmt.Errorf("minio transport: %w", err)
	}
	creds := credentials.NewStaticV4(cfg.RootUser, cfg.RootPassword.Reveal(), "")
	s3, err := minio.New(cfg.Endpoint, &minio.Options{Creds: creds, Secure: cfg.Secure, Transport: transport})
	if err != nil {
		return nil, fmt.Errorf("minio client: %w", err)
	}
	admin, err := madmin.NewWithOptions(cfg.Endpoint, &madmin.Options{Creds: creds, Secure: cfg.Secure, Transport: transport})
	if err != nil {
		return nil, fmt.Errorf("minio admin client: %w", err)
	}
	s := &Store{cfg: cfg, admin: admin, s3: s3, transport: transport, concurrent: true, fastIAM: true}
	s.grantReads.Rest, s.keyReads.Rest, s.bucketReads.Rest = true, true, true
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// Kind is events.StoreMinIO.
func (s *Store) Kind() events.Store { return events.StoreMinIO }

// Ping asks the admin API for the server's info with the admin credential.
func (s *Store) Ping(ctx context.Context) error {
	return s.call(ctx, "server.info", func(ctx context.Context) error {
		_, err := s.admin.ServerInfo(ctx)
		return err
	})
}

// call runs one MinIO call and reports it to the observer.
func (s *Store) call(ctx context.Context, name string, f func(context.Context) error) error {
	start := time.Now()
	err := f(ctx)
	if s.observe != nil {
		s.observe(name, time.Since(start), err)
	}
	return err
}

// steps runs fs concurrently (one after another in the Sequential
// sequence) and returns the first error; on an error the others' context is
// cancelled.
func (s *Store) steps(ctx context.Context, fs ...func(context.Context) error) error {
	if !s.concurrent {
		for _, f := range fs {
			if err := f(ctx); err != nil {
				return err
			}
		}
		return nil
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, f := range fs {
		g.Go(func() error { return f(gctx) })
	}
	return g.Wait()
}

// ensureSystem creates, once per process, the canary bucket (tagged, with
// an object in it) and the system bucket, and learns the server's region
// for tenant clients. A failure is retried on the next call.
func (s *Store) ensureSystem(ctx context.Context) error {
	s.initMu.Lock()
	defer s.initMu.Unlock()
	if s.initDone {
		return nil
	}
	for _, b := range []string{events.CanaryBucket, SystemBucket} {
		err := s.call(ctx, "bucket.make", func(ctx context.Context) error {
			return s.s3.MakeBucket(ctx, b, minio.MakeBucketOptions{})
		})
		if c := s3Code(err); err != nil && c != codeBucketOwnedByYou && c != codeBucketExists {
			return fmt.Errorf("create system bucket %s: %w", b, err)
		}
	}
	tg, err := tags.NewTags(map[string]string{TagManagedBy: ManagedByValue, TagRole: "canary"}, false)
	if err != nil {
		return err
	}
	if err := s.s3.SetBucketTagging(ctx, events.CanaryBucket, tg); err != nil {
		return fmt.Errorf("tag canary bucket: %w", err)
	}
	if _, err := s.s3.StatObject(ctx, events.CanaryBucket, canaryObject, minio.StatObjectOptions{}); err != nil {
		if s3Code(err) != codeNoSuchKey {
			return fmt.Errorf("stat canary object: %w", err)
		}
		body := "tenantprov isolation canary: no tenant credential may read this\n"
		if _, err := s.s3.PutObject(ctx, events.CanaryBucket, canaryObject, strings.NewReader(body), int64(len(body)),
			minio.PutObjectOptions{ContentType: "text/plain", DisableMultipart: true}); err != nil {
			return fmt.Errorf("write canary object: %w", err)
		}
	}
	region, err := s.s3.GetBucketLocation(ctx, SystemBucket)
	if err != nil {
		return fmt.Errorf("bucket location: %w", err)
	}
	s.region = region
	s.initDone = true
	return nil
}

// serverRegion is the region learnt by ensureSystem.
func (s *Store) serverRegion() string {
	s.initMu.Lock()
	defer s.initMu.Unlock()
	return s.region
}
