package miniostore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/madmin-go/v3"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/testkit"
	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// env is one test's MinIO with the store under test and root clients that
// do not go through the store.
type env struct {
	minio *testkit.MinIO
	store *Store
	root  *minio.Client
	admin *madmin.AdminClient
	calls *callLog
}

// newEnv starts a fresh MinIO and a Store on it.
func newEnv(t testing.TB, opts ...Option) *env {
	t.Helper()
	m := testkit.StartMinIO(t)
	return envOn(t, m, Config{}, opts...)
}

// envOn builds a Store on a running MinIO; cfg's connection fields are
// filled in from m.
func envOn(t testing.TB, m *testkit.MinIO, cfg Config, opts ...Option) *env {
	t.Helper()
	cfg.Endpoint, cfg.RootUser, cfg.RootPassword = m.Endpoint, m.RootUser, secret.String(m.RootPassword)
	calls := &callLog{}
	st, err := New(cfg, append([]Option{WithCallObserver(calls.observe)}, opts...)...)
	if err != nil {
		t.Fatalf("miniostore.New: %v", err)
	}
	creds := credentials.NewStaticV4(m.RootUser, m.RootPassword, "")
	root, err := minio.New(m.Endpoint, &minio.Options{Creds: creds})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := madmin.NewWithOptions(m.Endpoint, &madmin.Options{Creds: creds})
	if err != nil {
		t.Fatal(err)
	}
	return &env{minio: m, store: st, root: root, admin: admin, calls: calls}
}

// callLog records the store's MinIO calls in order, with their timings.
type callLog struct {
	mu    sync.Mutex
	order []string
	total map[string]time.Duration
	count map[string]int
}

func (l *callLog) observe(call string, d time.Duration, _ error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total == nil {
		l.total, l.count = map[string]time.Duration{}, map[string]int{}
	}
	l.order = append(l.order, call)
	l.total[call] += d
	l.count[call]++
}

func (l *callLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.order, l.total, l.count = nil, nil, nil
}

// calls returns the recorded call names in order.
func (l *callLog) calls() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.order...)
}

// summary renders "call n× total" lines sorted by total time.
func (l *callLog) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	names := make([]string, 0, len(l.total))
	for n := range l.total {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return l.total[names[i]] > l.total[names[j]] })
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "  %-24s %3d× %8.1f ms\n", n, l.count[n], float64(l.total[n].Microseconds())/1000)
	}
	return b.String()
}

func ctxT(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustGenerate(t testing.TB) secret.String {
	t.Helper()
	p, err := secret.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// provision provisions tenant and fails the test on error.
func (e *env) provision(t testing.TB, tenant events.TenantID, gen uint64) agent.ProvisionResponse {
	t.Helper()
	resp, err := e.store.Provision(ctxT(t), agent.ProvisionRequest{Tenant: tenant, Generation: gen, SagaID: "saga-test", Password: mustGenerate(t)})
	if err != nil {
		t.Fatalf("Provision(%s): %v", tenant, err)
	}
	return resp
}

// tenantClient is an S3 client with the keys of cred, on cred's endpoint.
func tenantClient(cred agent.Credential) (*minio.Client, error) {
	secure, _ := cred[CredSecure].(bool)
	return minio.New(cred.String(CredEndpoint), &minio.Options{
		Creds:  credentials.NewStaticV4(cred.String(CredAccessKey), cred.Secret(CredSecretKey).Reveal(), ""),
		Secure: secure,
	})
}

// harness is the conformance harness of this store on e.
func (e *env) harness() *storetest.Harness {
	return &storetest.Harness{
		Store: e.store,
		OwnAccess: func(ctx context.Context, tenant events.TenantID, cred agent.Credential) error {
			c, err := tenantClient(cred)
			if err != nil {
				return err
			}
			bucket := cred.String(CredBucket)
			if bucket != tenant.MinIOBucket() {
				return fmt.Errorf("credential names bucket %q, want %q", bucket, tenant.MinIOBucket())
			}
			body := []byte("harness own access")
			if _, err := c.PutObject(ctx, bucket, "harness/own.txt", bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{}); err != nil {
				return fmt.Errorf("put into own bucket: %w", err)
			}
			o, err := c.GetObject(ctx, bucket, "harness/own.txt", minio.GetObjectOptions{})
			if err != nil {
				return fmt.Errorf("get from own bucket: %w", err)
			}
			defer o.Close()
			got, err := io.ReadAll(o)
			if err != nil {
				return fmt.Errorf("get from own bucket: %w", err)
			}
			if !bytes.Equal(got, body) {
				return fmt.Errorf("read back %q, want %q", got, body)
			}
			return nil
		},
		CrossAccess: func(ctx context.Context, cred agent.Credential, other events.TenantID) error {
			c, err := tenantClient(cred)
			if err != nil {
				return err
			}
			bucket := other.MinIOBucket()
			var allowed []string
			expectDenied := func(what string, err error) {
				if s3Code(err) != codeAccessDenied {
					allowed = append(allowed, fmt.Sprintf("%s: %v", what, err))
				}
			}
			expectDenied("list "+bucket, firstListError(ctx, c, bucket))
			_, err = c.PutObject(ctx, bucket, "intruder.txt", strings.NewReader("x"), 1, minio.PutObjectOptions{})
			expectDenied("put into "+bucket, err)
			_, err = c.StatObject(ctx, bucket, "harness/own.txt", minio.StatObjectOptions{})
			if err == nil {
				allowed = append(allowed, "stat "+bucket+"/harness/own.txt: allowed")
			}
			err = c.RemoveObject(ctx, bucket, "harness/own.txt", minio.RemoveObjectOptions{})
			expectDenied("delete from "+bucket, err)
			if len(allowed) > 0 {
				return errors.New(strings.Join(allowed, "; "))
			}
			return nil
		},
		Exists: func(ctx context.Context, tenant events.TenantID) (bool, error) {
			found, err := e.resources(ctx, tenant)
			return len(found) > 0, err
		},
		CreateForeign: func(ctx context.Context, tenant events.TenantID) error {
			bucket := tenant.MinIOBucket()
			if err := e.root.MakeBucket(ctx, bucket, minio.MakeBucketOptions{}); err != nil {
				return err
			}
			_, err := e.root.PutObject(ctx, bucket, foreignObject, strings.NewReader(foreignBody), int64(len(foreignBody)), minio.PutObjectOptions{})
			return err
		},
		ForeignIntact: func(ctx context.Context, tenant events.TenantID) error {
			return e.foreignIntact(ctx, tenant)
		},
		Interrupt: func(ctx context.Context, tenant events.TenantID, generation uint64, _ secret.String) error {
			// What an agent leaves when it dies after the record and the
			// bucket work, before the user and policy: the Optimized
			// sequence writes the record, then bucket and IAM side by side.
			if err := e.store.ensureSystem(ctx); err != nil {
				return err
			}
			rec := newRecord(tenant, generation, "saga-interrupted", nil)
			if err := e.store.writeRecord(ctx, rec); err != nil {
				return err
			}
			return e.store.provisionBucket(ctx, tenant, generation, rec, observed{})
		},
	}
}

const (
	foreignObject = "foreign-data.txt"
	foreignBody   = "data of another system"
)

// foreignIntact checks the bucket CreateForeign made: there, untagged, its
// object unchanged and alone.
func (e *env) foreignIntact(ctx context.Context, tenant events.TenantID) error {
	bucket := tenant.MinIOBucket()
	ok, err := e.root.BucketExists(ctx, bucket)
	if err != nil || !ok {
		return fmt.Errorf("foreign bucket %s gone (err %v)", bucket, err)
	}
	if _, err := e.root.GetBucketTagging(ctx, bucket); s3Code(err) != codeNoSuchTagSet {
		return fmt.Errorf("foreign bucket %s tags changed (GetBucketTagging: %v)", bucket, err)
	}
	o, err := e.root.GetObject(ctx, bucket, foreignObject, minio.GetObjectOptions{})
	if err != nil {
		return err
	}
	defer o.Close()
	got, err := io.ReadAll(o)
	if err != nil {
		return fmt.Errorf("foreign object: %w", err)
	}
	if string(got) != foreignBody {
		return fmt.Errorf("foreign object changed: %q", got)
	}
	var keys []string
	for obj := range e.root.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
		if obj.Err != nil {
			return obj.Err
		}
		keys = append(keys, obj.Key)
	}
	if len(keys) != 1 {
		return fmt.Errorf("foreign bucket holds %v, want only %s", keys, foreignObject)
	}
	return nil
}

// resources lists what exists of the tenant (bucket, user, policy — the
// user holding the shared tenant policy —, legacy policy — a policy
// tenant-<id>-rw —, system record), asked with the root credential.
func (e *env) resources(ctx context.Context, tenant events.TenantID) ([]string, error) {
	var found []string
	ok, err := e.root.BucketExists(ctx, tenant.MinIOBucket())
	if err != nil {
		return nil, err
	}
	if ok {
		found = append(found, "bucket")
	}
	ui, err := e.admin.GetUserInfo(ctx, tenant.MinIOUser())
	switch adminCode(err) {
	case "":
		if err != nil {
			return nil, err
		}
		found = append(found, "user")
		if slices.Contains(strings.Split(ui.PolicyName, ","), tenant.MinIOPolicy()) {
			found = append(found, "policy")
		}
	case codeAdminNoSuchUser, codeIAMActionNotAllowed: // none, or a service account's key
	default:
		return nil, err
	}
	_, err = e.admin.InfoCannedPolicyV2(ctx, tenant.MinIOLegacyPolicy())
	switch adminCode(err) {
	case "":
		if err != nil {
			return nil, err
		}
		found = append(found, "legacy policy")
	case codeAdminNoSuchPolicy:
	default:
		return nil, err
	}
	_, err = e.root.StatObject(ctx, SystemBucket, recordKey(tenant), minio.StatObjectOptions{})
	switch s3Code(err) {
	case "":
		if err != nil {
			return nil, err
		}
		found = append(found, "record")
	case codeNoSuchKey, codeNoSuchBucket:
	default:
		return nil, err
	}
	return found, nil
}

// checksByName runs Verify of tenant tn (generation 1) with cred and
// returns its checks by name; when says at which point, for the failure.
func (e *env) checksByName(t testing.TB, ctx context.Context, tn events.TenantID, cred agent.Credential, when string) map[string]events.Check {
	t.Helper()
	v, err := e.store.Verify(ctx, agent.VerifyRequest{Tenant: tn, Generation: 1, Credential: cred})
	if err != nil {
		t.Fatalf("Verify %s: %v", when, err)
	}
	out := map[string]events.Check{}
	for _, c := range v.Checks {
		out[c.Name] = c
	}
	return out
}

// legacyPolicy is the per-tenant policy tenant-<id>-rw that agents before
// the shared tenant policy wrote: TenantPolicy with the tenant's bucket in
// place of the variable.
func legacyPolicy(tenant events.TenantID) []byte {
	return bytes.ReplaceAll(TenantPolicy(), []byte("${"+usernameVariable+"}"), []byte(tenant.MinIOBucket()))
}

// makeLegacy puts a provisioned tenant into the layout an agent before the
// shared policy left: its own policy tenant-<id>-rw, mapped exactly to its
// user, claimed by its system record.
func (e *env) makeLegacy(t testing.TB, ctx context.Context, tenant events.TenantID) {
	t.Helper()
	if err := e.admin.AddCannedPolicy(ctx, tenant.MinIOLegacyPolicy(), legacyPolicy(tenant)); err != nil {
		t.Fatal(err)
	}
	//lint:ignore SA1019 SetPolicy maps exactly this policy (as the agent does).
	if err := e.admin.SetPolicy(ctx, tenant.MinIOLegacyPolicy(), tenant.MinIOUser(), false); err != nil {
		t.Fatal(err)
	}
	rec, err := e.store.readRecord(ctx, tenant)
	if err != nil || rec == nil {
		t.Fatalf("record of %s: %v, %v", tenant, rec, err)
	}
	rec.Policy = tenant.MinIOLegacyPolicy()
	if err := e.store.writeRecord(ctx, rec); err != nil {
		t.Fatal(err)
	}
}
