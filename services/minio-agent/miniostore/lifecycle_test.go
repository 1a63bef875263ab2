package miniostore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/madmin-go/v3"
	"github.com/minio/minio-go/v7"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// client is a tenant S3 client that keeps issuing put/get requests until
// stopped, counting every request and every failure.
type client struct {
	name     string
	c        *minio.Client
	bucket   string
	requests atomic.Int64
	mu       sync.Mutex
	failures []string
	stop     chan struct{}
	done     chan struct{}
}

func (e *env) startClient(t *testing.T, name string, cred agent.Credential) *client {
	t.Helper()
	c, err := tenantClient(cred)
	if err != nil {
		t.Fatal(err)
	}
	cl := &client{name: name, c: c, bucket: cred.String(CredBucket), stop: make(chan struct{}), done: make(chan struct{})}
	go cl.run()
	t.Cleanup(cl.halt)
	return cl
}

func (cl *client) run() {
	defer close(cl.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-cl.stop; cancel() }()
	for i := 0; ; i++ {
		select {
		case <-cl.stop:
			return
		default:
		}
		key := fmt.Sprintf("load/%s/%d", cl.name, i%8)
		body := []byte(fmt.Sprintf("%s request %d", cl.name, i))
		_, err := cl.c.PutObject(ctx, cl.bucket, key, bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{DisableMultipart: true})
		if err == nil {
			var o *minio.Object
			if o, err = cl.c.GetObject(ctx, cl.bucket, key, minio.GetObjectOptions{}); err == nil {
				var got []byte
				got, err = io.ReadAll(o)
				_ = o.Close()
				if err == nil && !bytes.Equal(got, body) {
					err = fmt.Errorf("read back %q, want %q", got, body)
				}
			}
		}
		if ctx.Err() != nil {
			return // stopped in the middle of a request: not a failure
		}
		cl.requests.Add(1)
		if err != nil {
			cl.mu.Lock()
			cl.failures = append(cl.failures, err.Error())
			cl.mu.Unlock()
		}
	}
}

// halt stops the client and waits for its last request.
func (cl *client) halt() {
	select {
	case <-cl.stop:
	default:
		close(cl.stop)
	}
	<-cl.done
}

// mustHaveNoFailure stops the client and fails the test if any request
// failed or none was made.
func (cl *client) mustHaveNoFailure(t *testing.T, during string) {
	t.Helper()
	cl.halt()
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if n := len(cl.failures); n > 0 {
		t.Fatalf("%s: %d of %d requests of the %s client failed, first: %s", during, n, cl.requests.Load(), cl.name, cl.failures[0])
	}
	if cl.requests.Load() == 0 {
		t.Fatalf("%s: the %s client made no request", during, cl.name)
	}
}

// awaitRequests waits until cl has made n more requests than now.
func (cl *client) awaitRequests(t *testing.T, n int64) {
	t.Helper()
	target := cl.requests.Load() + n
	deadline := time.Now().Add(60 * time.Second)
	for cl.requests.Load() < target {
		if time.Now().After(deadline) {
			t.Fatalf("the %s client made %d requests in a minute, waiting for %d", cl.name, cl.requests.Load(), target)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) rotate(t *testing.T, tenant events.TenantID, from, to int) agent.Credential {
	t.Helper()
	resp, err := e.store.Rotate(ctxT(t), agent.RotateRequest{Tenant: tenant, Generation: 1, CurrentVersion: from, Version: to, Password: mustGenerate(t), Grace: time.Hour})
	if err != nil {
		t.Fatalf("Rotate(%s, v%d→v%d): %v", tenant, from, to, err)
	}
	return resp.Credential
}

func (e *env) mustVerify(t *testing.T, tenant events.TenantID, cred agent.Credential, what string) {
	t.Helper()
	resp, err := e.store.Verify(ctxT(t), agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: cred})
	if err != nil {
		t.Fatalf("Verify %s: %v", what, err)
	}
	for _, c := range resp.Checks {
		if !c.Passed {
			t.Fatalf("Verify %s: check %s failed: %s", what, c.Name, c.Detail)
		}
	}
}

// refused asserts that cred can no longer list the tenant's bucket and
// returns the error code MinIO answered.
func refused(t *testing.T, cred agent.Credential, what string) string {
	t.Helper()
	c, err := tenantClient(cred)
	if err != nil {
		t.Fatal(err)
	}
	err = firstListError(ctxT(t), c, cred.String(CredBucket))
	if err == nil || !answered(err) {
		t.Fatalf("%s: listing the bucket got %v, want a refusal", what, err)
	}
	return s3Code(err)
}

// TestRotationWithClientsUnderLoad: a client on the old credential issues
// requests throughout Rotate and until Retire without one failure; a client
// on the new credential likewise from Rotate through Retire and after it;
// a temporary (STS) key minted with the old credential works during the
// grace. After Retire the old credential and that temporary key are
// refused. (S3 has no sessions: each request is authenticated on its own,
// so the first request signed with a retired key after Retire fails, and
// a request already being served completes.)
func TestRotationWithClientsUnderLoad(t *testing.T) {
	e := newEnv(t)
	tenant := events.MustTenantID("rot-load")
	v1 := e.provision(t, tenant, 1).Credential
	old := e.startClient(t, "v1", v1)
	old.awaitRequests(t, 5)

	v2 := e.rotate(t, tenant, 1, 2)
	if ak := v2.String(CredAccessKey); ak == v1.String(CredAccessKey) || len(ak) > 20 {
		t.Fatalf("rotated access key %q: want a new key of at most 20 characters", ak)
	}
	next := e.startClient(t, "v2", v2)
	e.mustVerify(t, tenant, v2, "with v2 during the grace")
	e.mustVerify(t, tenant, v1, "with v1 during the grace")
	sts := e.mintTemporaryKey(t, v1)
	old.awaitRequests(t, 5)
	next.awaitRequests(t, 5)
	old.mustHaveNoFailure(t, "from before Rotate until Retire")

	if _, err := e.store.Retire(ctxT(t), agent.RetireRequest{Tenant: tenant, Generation: 1, Keep: 2}); err != nil {
		t.Fatalf("Retire: %v", err)
	}
	next.awaitRequests(t, 5)
	next.mustHaveNoFailure(t, "from Rotate through Retire")
	if code := refused(t, v1, "after Retire, v1"); code != codeSignatureDoesNotMatch {
		t.Errorf("after Retire, v1 refused with %q, want %s (the user's secret replaced)", code, codeSignatureDoesNotMatch)
	}
	if err := firstListError(ctxT(t), sts, tenant.MinIOBucket()); err == nil {
		t.Error("after Retire, a temporary key minted with v1 still works")
	}
	e.mustVerify(t, tenant, v2, "with v2 after Retire")

	// A redelivered Provision of the same generation must not revive v1.
	_, err := e.store.Provision(ctxT(t), agent.ProvisionRequest{Tenant: tenant, Generation: 1, SagaID: "saga-test",
		Password: v1.Secret(CredSecretKey)})
	if !errors.Is(err, ErrCredentialRetired) {
		t.Fatalf("Provision after Retire: %v, want ErrCredentialRetired", err)
	}
	refused(t, v1, "after the redelivered Provision, v1")

	// The next rotation retires a service account: its key is gone.
	v3 := e.rotate(t, tenant, 2, 3)
	if _, err := e.store.Retire(ctxT(t), agent.RetireRequest{Tenant: tenant, Generation: 1, Keep: 3}); err != nil {
		t.Fatalf("Retire v2: %v", err)
	}
	if code := refused(t, v2, "after the second Retire, v2"); code != codeInvalidAccessKeyID {
		t.Errorf("after the second Retire, v2 refused with %q, want %s (the key removed)", code, codeInvalidAccessKeyID)
	}
	e.mustVerify(t, tenant, v3, "with v3 after the second Retire")

	if _, err := e.store.Deprovision(ctxT(t), agent.DeprovisionRequest{Tenant: tenant, Generation: 1}); err != nil {
		t.Fatalf("Deprovision: %v", err)
	}
	if found, err := e.resources(ctxT(t), tenant); err != nil || len(found) > 0 {
		t.Fatalf("after Deprovision: %v left (err %v)", found, err)
	}
	if _, err := e.admin.InfoAccessKey(ctxT(t), v3.String(CredAccessKey)); adminCode(err) != codeAdminNoSuchAccessKey {
		t.Fatalf("after Deprovision, the rotated key v3: %v, want %s", err, codeAdminNoSuchAccessKey)
	}
}

// TestSuspendRefusesEveryKeyAndKeepsData: Suspend refuses the user's own
// key and a rotated key (a service account under the disabled user) —
// checked on the real server — while Observe sees no drift; after Resume
// both work again and the objects written before are read back.
func TestSuspendRefusesEveryKeyAndKeepsData(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	tenant := events.MustTenantID("sus-data")
	v1 := e.provision(t, tenant, 1).Credential
	v2 := e.rotate(t, tenant, 1, 2)
	for _, cred := range []agent.Credential{v1, v2} {
		c, _ := tenantClient(cred)
		body := "written by " + cred.String(CredAccessKey)
		if _, err := c.PutObject(ctx, tenant.MinIOBucket(), "keep/"+cred.String(CredAccessKey), strings.NewReader(body), int64(len(body)), minio.PutObjectOptions{}); err != nil {
			t.Fatalf("put with %s: %v", cred.String(CredAccessKey), err)
		}
	}
	req := agent.SuspendRequest{Tenant: tenant, Generation: 1}
	if err := e.store.Suspend(ctx, req); err != nil {
		t.Fatalf("Suspend: %v", err)
	}
	refused(t, v1, "suspended, the user's own key")
	if code := refused(t, v2, "suspended, the rotated key"); code != codeAccessDenied {
		t.Errorf("suspended, the rotated key refused with %q, want %s", code, codeAccessDenied)
	}
	obs, err := e.store.Observe(ctx, agent.ObserveRequest{Tenant: tenant, Generation: 1, CredentialVersion: 2, Credential: v2, Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(obs.Drift) > 0 || len(obs.Repaired) > 0 {
		t.Fatalf("Observe of a suspended tenant: drift %+v, repaired %+v (a disabled user is what Suspend wants)", obs.Drift, obs.Repaired)
	}
	if err := e.store.Resume(ctx, req); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	for _, cred := range []agent.Credential{v1, v2} {
		c, _ := tenantClient(cred)
		for _, writer := range []agent.Credential{v1, v2} {
			o, err := c.GetObject(ctx, tenant.MinIOBucket(), "keep/"+writer.String(CredAccessKey), minio.GetObjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(o)
			_ = o.Close()
			if err != nil || string(got) != "written by "+writer.String(CredAccessKey) {
				t.Fatalf("after Resume, %s reads the object of %s: %q, %v", cred.String(CredAccessKey), writer.String(CredAccessKey), got, err)
			}
		}
	}
	e.mustVerify(t, tenant, v2, "after Resume")

	// A suspended, rotated tenant deprovisions completely.
	if err := e.store.Suspend(ctx, req); err != nil {
		t.Fatalf("Suspend: %v", err)
	}
	if _, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1}); err != nil {
		t.Fatalf("Deprovision: %v", err)
	}
	if found, err := e.resources(ctx, tenant); err != nil || len(found) > 0 {
		t.Fatalf("after Deprovision: %v left (err %v)", found, err)
	}
	if _, err := e.admin.InfoAccessKey(ctx, v2.String(CredAccessKey)); adminCode(err) != codeAdminNoSuchAccessKey {
		t.Fatalf("after Deprovision of the suspended tenant, the rotated key: %v, want %s", err, codeAdminNoSuchAccessKey)
	}
}

// TestVerifyAcceptsOnlyRecordedKeys: during a rotation grace Verify passes
// with either credential, and still fails no_extra_keys for a service
// account the agent did not record and no_foreign_grants for the shared
// tenant policy attached to a group.
func TestVerifyAcceptsOnlyRecordedKeys(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	tenant := events.MustTenantID("rot-verify")
	v1 := e.provision(t, tenant, 1).Credential
	v2 := e.rotate(t, tenant, 1, 2)
	e.mustVerify(t, tenant, v1, "with v1")
	e.mustVerify(t, tenant, v2, "with v2")

	failed := func(cred agent.Credential, want string) {
		t.Helper()
		resp, err := e.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: cred})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range resp.Checks {
			if c.Name == want && !c.Passed {
				return
			}
		}
		t.Fatalf("Verify with %s passed %s: %+v", cred.String(CredAccessKey), want, resp.Checks)
	}
	// The next version's key, made by someone else before the agent: not
	// recorded, so not accepted.
	stray := rotationKey(tenant, 1, 3)
	if _, err := e.admin.AddServiceAccount(ctx, madmin.AddServiceAccountReq{TargetUser: tenant.MinIOUser(), AccessKey: stray, SecretKey: randomHex(16)}); err != nil {
		t.Fatal(err)
	}
	failed(v2, CheckNoExtraKeys)
	if err := e.admin.DeleteServiceAccount(ctx, stray); err != nil {
		t.Fatal(err)
	}
	if err := e.admin.AddUser(ctx, "twin-user", "twin-secret-12345"); err != nil {
		t.Fatal(err)
	}
	// The shared policy on another user reaches that user's bucket only.
	if _, err := e.admin.AttachPolicy(ctx, madmin.PolicyAssociationReq{Policies: []string{tenant.MinIOPolicy()}, User: "twin-user"}); err != nil {
		t.Fatal(err)
	}
	e.mustVerify(t, tenant, v2, "with the shared policy on twin-user")
	if err := e.admin.UpdateGroupMembers(ctx, madmin.GroupAddRemove{Group: "twins", Members: []string{"twin-user"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.AttachPolicy(ctx, madmin.PolicyAssociationReq{Policies: []string{tenant.MinIOPolicy()}, Group: "twins"}); err != nil {
		t.Fatal(err)
	}
	failed(v1, CheckNoForeignGrants)
	if _, err := e.admin.DetachPolicy(ctx, madmin.PolicyAssociationReq{Policies: []string{tenant.MinIOPolicy()}, Group: "twins"}); err != nil {
		t.Fatal(err)
	}
	e.mustVerify(t, tenant, v2, "with v2 after the breakages are undone")
}

// TestRotateOntoASquattedKeyIsAConflict: a rotation key held by another
// user's service account fails Rotate with a conflict, leaves that key
// alone and the current credential working.
func TestRotateOntoASquattedKeyIsAConflict(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	tenant := events.MustTenantID("rot-squat")
	v1 := e.provision(t, tenant, 1).Credential
	if err := e.admin.AddUser(ctx, "squatter", "squatter-secret-1"); err != nil {
		t.Fatal(err)
	}
	key := rotationKey(tenant, 1, 2)
	if _, err := e.admin.AddServiceAccount(ctx, madmin.AddServiceAccountReq{TargetUser: "squatter", AccessKey: key, SecretKey: "squatter-key-secret"}); err != nil {
		t.Fatal(err)
	}
	_, err := e.store.Rotate(ctx, agent.RotateRequest{Tenant: tenant, Generation: 1, CurrentVersion: 1, Version: 2, Password: mustGenerate(t)})
	if !errors.Is(err, agent.ErrConflict) {
		t.Fatalf("Rotate onto a squatted key: %v, want ErrConflict", err)
	}
	info, err := e.admin.InfoServiceAccount(ctx, key)
	if err != nil || info.ParentUser != "squatter" {
		t.Fatalf("the squatter's key after Rotate: %+v, %v", info, err)
	}
	e.mustVerify(t, tenant, v1, "with v1 after the failed rotation")
}

// TestRetireRefusesToLockOut: keeping a version that does not exist is
// refused permanently and changes nothing.
func TestRetireRefusesToLockOut(t *testing.T) {
	e := newEnv(t)
	tenant := events.MustTenantID("rot-lock")
	v1 := e.provision(t, tenant, 1).Credential
	_, err := e.store.Retire(ctxT(t), agent.RetireRequest{Tenant: tenant, Generation: 1, Keep: 2})
	if permanent, _ := agent.Classify(err); err == nil || !permanent {
		t.Fatalf("Retire keeping a version that does not exist: %v, want a permanent error", err)
	}
	e.mustVerify(t, tenant, v1, "with v1 after the refused Retire")
}

// TestRotationInterruptedConverges: an agent that dies after recording the
// new key and before creating it (the only window in Rotate) leaves the
// old credential intact and Verify passing; the redelivered Rotate
// completes the rotation, and Deprovision removes everything either way.
func TestRotationInterruptedConverges(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	tenant := events.MustTenantID("rot-crash")
	v1 := e.provision(t, tenant, 1).Credential
	rec, err := e.store.readRecord(ctx, tenant)
	if err != nil || rec == nil {
		t.Fatalf("record: %v, %v", rec, err)
	}
	rec.Keys = append(rec.Keys, rotatedKey{Version: 2, AccessKey: rotationKey(tenant, 1, 2)})
	if err := e.store.writeRecord(ctx, rec); err != nil {
		t.Fatal(err)
	}
	e.mustVerify(t, tenant, v1, "with v1 after the interrupted Rotate")
	obs, err := e.store.Observe(ctx, agent.ObserveRequest{Tenant: tenant, Generation: 1, CredentialVersion: 1, Credential: v1})
	if err != nil {
		t.Fatal(err)
	}
	if len(obs.Drift) != 1 || obs.Drift[0].Kind != DriftCredentialMissing {
		t.Fatalf("Observe after the interrupted Rotate: %+v, want only %s", obs.Drift, DriftCredentialMissing)
	}
	v2 := e.rotate(t, tenant, 1, 2)
	if v2.String(CredAccessKey) != rotationKey(tenant, 1, 2) {
		t.Fatalf("redelivered Rotate made key %s, want the recorded %s", v2.String(CredAccessKey), rotationKey(tenant, 1, 2))
	}
	e.mustVerify(t, tenant, v2, "with v2 after the redelivered Rotate")
	e.mustVerify(t, tenant, v1, "with v1 after the redelivered Rotate")
	if _, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1}); err != nil {
		t.Fatalf("Deprovision: %v", err)
	}
	if found, err := e.resources(ctx, tenant); err != nil || len(found) > 0 {
		t.Fatalf("after Deprovision: %v left (err %v)", found, err)
	}
}

// TestObserveLeavesForeignAlone: a foreign policy on a foreign user that
// reaches the bucket is reported and left attached; a bucket deleted and
// re-created by someone else is reported as lost data and left exactly as
// it is (no tags, no policy change, its object intact).
func TestObserveLeavesForeignAlone(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	tenant := events.MustTenantID("obs-foreign")
	v1 := e.provision(t, tenant, 1).Credential
	if err := e.admin.AddUser(ctx, "ops-user", "ops-secret-12345"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.AttachPolicy(ctx, madmin.PolicyAssociationReq{Policies: []string{"readwrite"}, User: "ops-user"}); err != nil {
		t.Fatal(err)
	}
	obs, err := e.store.Observe(ctx, agent.ObserveRequest{Tenant: tenant, Generation: 1, CredentialVersion: 1, Credential: v1, Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(obs.Drift) != 1 || obs.Drift[0].Kind != DriftForeignGrant || len(obs.Repaired) != 0 {
		t.Fatalf("Observe with a foreign grant: drift %+v, repaired %+v; want one %s, nothing repaired", obs.Drift, obs.Repaired, DriftForeignGrant)
	}
	if ui, err := e.admin.GetUserInfo(ctx, "ops-user"); err != nil || ui.PolicyName != "readwrite" {
		t.Fatalf("the foreign user after Observe: %+v, %v; want readwrite still attached", ui, err)
	}
	if _, err := e.admin.DetachPolicy(ctx, madmin.PolicyAssociationReq{Policies: []string{"readwrite"}, User: "ops-user"}); err != nil {
		t.Fatal(err)
	}

	if err := e.root.RemoveBucketWithOptions(ctx, tenant.MinIOBucket(), minio.RemoveBucketOptions{ForceDelete: true}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // a creation time distinct from the stamped one (second resolution)
	if err := e.harness().CreateForeign(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	obs, err = e.store.Observe(ctx, agent.ObserveRequest{Tenant: tenant, Generation: 1, CredentialVersion: 1, Credential: v1, Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	var replaced bool
	for _, d := range obs.Drift {
		replaced = replaced || d.Kind == DriftBucketReplaced && d.DataLost
	}
	if !replaced || len(obs.Repaired) != 0 {
		t.Fatalf("Observe of a re-created foreign bucket: drift %+v, repaired %+v; want %s with DataLost, nothing repaired", obs.Drift, obs.Repaired, DriftBucketReplaced)
	}
	if err := e.foreignIntact(ctx, tenant); err != nil {
		t.Fatalf("the foreign bucket after Observe: %v", err)
	}
}
