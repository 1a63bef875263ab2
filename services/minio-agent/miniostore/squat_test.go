package miniostore

import (
	"errors"
	"strings"
	"testing"

	"github.com/minio/madmin-go/v3"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// tenantAdmin is an admin API client with the tenant's own credential.
func (e *env) tenantAdmin(t *testing.T, cred agent.Credential) *madmin.AdminClient {
	t.Helper()
	c, err := madmin.NewWithOptions(e.minio.Endpoint, &madmin.Options{
		Creds: credentials.NewStaticV4(cred.String(CredAccessKey), cred.Secret(CredSecretKey).Reveal(), ""),
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestTenantCannotMintOrChangeKeys is the first half of issue 10 scenario
// 4: with only its own credential a tenant tries to create a service
// account named after another tenant, list its keys and change its own
// secret. MinIO allows all of these to a user unless a policy denies them.
func TestTenantCannotMintOrChangeKeys(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	attacker := events.MustTenantID("attacker")
	cred := e.provision(t, attacker, 1).Credential
	ta := e.tenantAdmin(t, cred)

	_, err := ta.AddServiceAccount(ctx, madmin.AddServiceAccountReq{AccessKey: "tenant-victim", SecretKey: "victim-secret-123"})
	if adminCode(err) != codeAccessDenied {
		t.Errorf("tenant creates service account tenant-victim: %v, want AccessDenied", err)
	}
	_, err = ta.AddServiceAccount(ctx, madmin.AddServiceAccountReq{})
	if adminCode(err) != codeAccessDenied {
		t.Errorf("tenant creates a service account with a generated key: %v, want AccessDenied", err)
	}
	if _, err := e.admin.InfoAccessKey(ctx, "tenant-victim"); adminCode(err) != codeAdminNoSuchAccessKey {
		t.Errorf("after the attempt, access key tenant-victim: %v, want none", err)
	}
	if _, err := ta.ListAccessKeysBulk(ctx, nil, madmin.ListAccessKeysOpts{}); adminCode(err) != codeAccessDenied {
		t.Errorf("tenant lists its access keys: %v, want AccessDenied", err)
	}
	// MinIO does not check any policy when a user lists its own service
	// accounts; with creation denied there is nothing to list.
	if l, err := ta.ListServiceAccounts(ctx, ""); err == nil && len(l.Accounts) > 0 {
		t.Errorf("tenant has service accounts: %+v", l.Accounts)
	}
	if _, err := ta.ListServiceAccounts(ctx, "tenant-other"); adminCode(err) != codeAccessDenied {
		t.Errorf("tenant lists another user's service accounts: %v, want AccessDenied", err)
	}
	// Another user's service account can be neither changed nor removed.
	if err := e.admin.AddUser(ctx, "someone", "someone-secret-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.AddServiceAccount(ctx, madmin.AddServiceAccountReq{TargetUser: "someone", AccessKey: "someone-key", SecretKey: "someone-key-secret"}); err != nil {
		t.Fatal(err)
	}
	if err := ta.UpdateServiceAccount(ctx, "someone-key", madmin.UpdateServiceAccountReq{NewSecretKey: "tenant-chosen-secret-2"}); adminCode(err) != codeAccessDenied {
		t.Errorf("tenant updates another user's service account: %v, want AccessDenied", err)
	}
	_ = ta.DeleteServiceAccount(ctx, "someone-key")
	if info, err := e.admin.InfoServiceAccount(ctx, "someone-key"); err != nil || info.ParentUser != "someone" {
		t.Errorf("another user's service account after the tenant's attempts: %+v, %v", info, err)
	}
	if err := ta.AddUser(ctx, attacker.MinIOUser(), "tenant-chosen-secret-1"); adminCode(err) != codeAccessDenied {
		t.Errorf("tenant changes its own secret: %v, want AccessDenied", err)
	}
	if err := e.harness().OwnAccess(ctx, attacker, cred); err != nil {
		t.Errorf("the issued secret stopped working: %v", err)
	}
	if _, err := ta.GetUserInfo(ctx, attacker.MinIOUser()); adminCode(err) != codeAccessDenied {
		t.Errorf("tenant reads its own user: %v, want AccessDenied", err)
	}

	// A temporary key (STS AssumeRole, which no policy governs) inherits
	// the deny.
	sts, err := credentials.NewSTSAssumeRole("http://"+e.minio.Endpoint, credentials.STSAssumeRoleOptions{
		AccessKey: cred.String(CredAccessKey), SecretKey: cred.Secret(CredSecretKey).Reveal(),
	})
	if err != nil {
		t.Fatal(err)
	}
	tempAdmin, err := madmin.NewWithOptions(e.minio.Endpoint, &madmin.Options{Creds: sts})
	if err != nil {
		t.Fatal(err)
	}
	_, err = tempAdmin.AddServiceAccount(ctx, madmin.AddServiceAccountReq{AccessKey: "tenant-victim", SecretKey: "victim-secret-123"})
	if adminCode(err) != codeAccessDenied {
		t.Errorf("tenant's temporary key creates service account tenant-victim: %v, want AccessDenied", err)
	}
}

// TestSquattedAccessKeyIsAConflict is the second half of scenario 4: an
// access key tenant-victim already held by a service account (minted by a
// tenant before its policy denied it, or by any other user) makes
// provisioning victim a permanent conflict, the rollback completes and the
// service account is left exactly as it was; deprovisioning the tenant
// that minted it removes it.
func TestSquattedAccessKeyIsAConflict(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	attacker := events.MustTenantID("attacker")
	victim := events.MustTenantID("victim")
	cred := e.provision(t, attacker, 1).Credential
	// What a tenant could do with its own credential before the deny: a
	// service account of its own user, with the victim's access key.
	const squatSecret = "squatter-secret-123"
	if _, err := e.admin.AddServiceAccount(ctx, madmin.AddServiceAccountReq{
		TargetUser: attacker.MinIOUser(), AccessKey: victim.MinIOUser(), SecretKey: squatSecret,
	}); err != nil {
		t.Fatal(err)
	}
	squatter, err := minio.New(e.minio.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(victim.MinIOUser(), squatSecret, "")})
	if err != nil {
		t.Fatal(err)
	}
	squatWorks := func() error { return firstListError(ctx, squatter, attacker.MinIOBucket()) }
	if err := squatWorks(); err != nil {
		t.Fatalf("squatting key does not work to begin with: %v", err)
	}

	_, err = e.store.Provision(ctx, agent.ProvisionRequest{Tenant: victim, Generation: 1, SagaID: "s", Password: mustGenerate(t)})
	if !errors.Is(err, agent.ErrConflict) {
		t.Fatalf("Provision over a squatted access key: %v, want ErrConflict", err)
	}
	if perm, reason := agent.Classify(err); !perm || reason != events.ReasonConflict {
		t.Fatalf("Classify = %v %q, want permanent conflict", perm, reason)
	}
	if found, err := e.resources(ctx, victim); err != nil || len(found) > 0 {
		t.Fatalf("after the conflict: %v (err %v), want nothing of victim's", found, err)
	}
	// The rollback completes, leaving the service account alone.
	r, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: victim, Generation: 1, SagaID: "s"})
	if err != nil {
		t.Fatalf("rollback Deprovision: %v", err)
	}
	if len(r.Skipped) != 1 || !strings.Contains(r.Skipped[0], "access key "+victim.MinIOUser()) {
		t.Fatalf("rollback skipped %q, want the access key", r.Skipped)
	}
	info, err := e.admin.InfoServiceAccount(ctx, victim.MinIOUser())
	if err != nil || info.ParentUser != attacker.MinIOUser() || info.AccountStatus != "on" {
		t.Fatalf("squatting service account after the rollback: %+v, %v", info, err)
	}
	if err := squatWorks(); err != nil {
		t.Fatalf("squatting key changed by the rollback: %v", err)
	}

	// Deprovisioning the tenant that minted the key removes it, and a
	// temporary key the tenant minted, before reporting success.
	temp := e.mintTemporaryKey(t, cred)
	if _, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: attacker, Generation: 1}); err != nil {
		t.Fatalf("Deprovision attacker: %v", err)
	}
	if _, err := e.admin.InfoAccessKey(ctx, victim.MinIOUser()); adminCode(err) != codeAdminNoSuchAccessKey {
		t.Fatalf("the attacker's service account after its Deprovision: %v, want gone", err)
	}
	if err := squatWorks(); s3Code(err) != codeInvalidAccessKeyID {
		t.Fatalf("the squatting key after its parent's Deprovision: %v, want InvalidAccessKeyId", err)
	}
	if err := firstListError(ctx, temp, attacker.MinIOBucket()); s3Code(err) != codeInvalidAccessKeyID {
		t.Fatalf("the tenant's temporary key after Deprovision: %v, want InvalidAccessKeyId", err)
	}
	// Now victim is free.
	resp := e.provision(t, victim, 1)
	if err := e.harness().OwnAccess(ctx, victim, resp.Credential); err != nil {
		t.Fatal(err)
	}
}

// TestKeySquattedAfterTheRecord: the key is squatted after tenantprov
// recorded its intent (an agent that died after writing the record, or a
// squat between the record and add-user). Provision is still a conflict,
// and the rollback removes what is tenantprov's — the record — and leaves
// the service account alone.
func TestKeySquattedAfterTheRecord(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	victim := events.MustTenantID("late-victim")
	if err := e.store.ensureSystem(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.store.writeRecord(ctx, newRecord(victim, 1, "s", nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.AddServiceAccount(ctx, madmin.AddServiceAccountReq{
		TargetUser: e.minio.RootUser, AccessKey: victim.MinIOUser(), SecretKey: "squatter-secret-123",
	}); err != nil {
		t.Fatal(err)
	}
	req := agent.ProvisionRequest{Tenant: victim, Generation: 1, SagaID: "s", Password: mustGenerate(t)}
	if _, err := e.store.Provision(ctx, req); !errors.Is(err, agent.ErrConflict) {
		t.Fatalf("Provision: %v, want ErrConflict", err)
	}
	// The squat after the look: add-user's answer is a conflict too.
	for _, seq := range []Sequence{Optimized, Sequential} {
		st := envOn(t, e.minio, Config{}, WithSequence(seq)).store
		if err := st.provisionIAM(ctx, victim, req, false); !errors.Is(err, agent.ErrConflict) {
			t.Fatalf("sequence %d: add-user over a service account: %v, want ErrConflict", seq, err)
		}
	}
	r, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: victim, Generation: 1, SagaID: "s"})
	if err != nil || len(r.Skipped) != 1 {
		t.Fatalf("rollback: %v, skipped %q", err, r.Skipped)
	}
	if found, err := e.resources(ctx, victim); err != nil || len(found) > 0 {
		t.Fatalf("after the rollback: %v (err %v), want nothing of tenantprov's", found, err)
	}
	if info, err := e.admin.InfoServiceAccount(ctx, victim.MinIOUser()); err != nil || info.AccountStatus != "on" {
		t.Fatalf("squatting service account after the rollback: %+v, %v", info, err)
	}
}

// mintTemporaryKey gets an STS key with the tenant's credential and returns
// a client that uses it.
func (e *env) mintTemporaryKey(t *testing.T, cred agent.Credential) *minio.Client {
	t.Helper()
	sts, err := credentials.NewSTSAssumeRole("http://"+e.minio.Endpoint, credentials.STSAssumeRoleOptions{
		AccessKey: cred.String(CredAccessKey), SecretKey: cred.Secret(CredSecretKey).Reveal(),
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := minio.New(e.minio.Endpoint, &minio.Options{Creds: sts})
	if err != nil {
		t.Fatal(err)
	}
	if err := firstListError(ctxT(t), c, cred.String(CredBucket)); err != nil {
		t.Fatalf("the tenant's temporary key does not work to begin with: %v", err)
	}
	return c
}

// TestDeprovisionAfterCrashRemovesMintedKeys: a Deprovision that died after
// disabling the user is retried; the retry still finds and removes the
// keys derived from the (now disabled) user.
func TestDeprovisionAfterCrashRemovesMintedKeys(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	tenant := events.MustTenantID("crasher")
	cred := e.provision(t, tenant, 1).Credential
	const svcKey, svcSecret = "crasher-svc", "crasher-svc-secret-1"
	if _, err := e.admin.AddServiceAccount(ctx, madmin.AddServiceAccountReq{TargetUser: tenant.MinIOUser(), AccessKey: svcKey, SecretKey: svcSecret}); err != nil {
		t.Fatal(err)
	}
	temp := e.mintTemporaryKey(t, cred)
	if err := e.admin.SetUserStatus(ctx, tenant.MinIOUser(), madmin.AccountDisabled); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1}); err != nil {
		t.Fatalf("Deprovision: %v", err)
	}
	svc, err := minio.New(e.minio.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(svcKey, svcSecret, "")})
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*minio.Client{"service account": svc, "temporary key": temp} {
		if err := firstListError(ctx, c, tenant.MinIOBucket()); s3Code(err) != codeInvalidAccessKeyID {
			t.Errorf("%s after Deprovision: %v, want InvalidAccessKeyId", name, err)
		}
	}
	if found, err := e.resources(ctx, tenant); err != nil || len(found) > 0 {
		t.Fatalf("after Deprovision: %v (err %v)", found, err)
	}
}

// TestConfirmGoneReportsLeftovers: Deprovision's final look fails (and so
// the command is retried) while anything it removed is still there.
func TestConfirmGoneReportsLeftovers(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	tenant := events.MustTenantID("lingering")
	e.provision(t, tenant, 1)
	const svcKey = "lingering-svc"
	if _, err := e.admin.AddServiceAccount(ctx, madmin.AddServiceAccountReq{TargetUser: tenant.MinIOUser(), AccessKey: svcKey, SecretKey: "lingering-secret-1"}); err != nil {
		t.Fatal(err)
	}
	e.makeLegacy(t, ctx, tenant) // a legacy policy the record claims, to be removed too
	err := e.store.confirmGone(ctx, tenant, true, true, true, []string{"svc:" + svcKey})
	if !errors.Is(err, errLeftInPlace) {
		t.Fatalf("confirmGone with everything in place: %v, want errLeftInPlace", err)
	}
	if perm, _ := agent.Classify(err); perm {
		t.Fatalf("leftovers classified permanent: %v", err)
	}
	for _, want := range []string{"user " + tenant.MinIOUser(), "access key " + svcKey, "policy " + tenant.MinIOLegacyPolicy(), "bucket " + tenant.MinIOBucket()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if _, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1}); err != nil {
		t.Fatal(err)
	}
	if err := e.store.confirmGone(ctx, tenant, true, true, true, []string{"svc:" + svcKey}); err != nil {
		t.Fatalf("confirmGone after Deprovision: %v", err)
	}
}
