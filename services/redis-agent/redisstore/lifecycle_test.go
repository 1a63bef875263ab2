package redisstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

func (e *env) rotate(t testing.TB, ctx context.Context, tenant events.TenantID, from, to int) agent.Credential {
	t.Helper()
	resp, err := e.store.Rotate(ctx, agent.RotateRequest{Tenant: tenant, Generation: 1, CurrentVersion: from, Version: to, Password: password(t), Grace: time.Hour})
	if err != nil {
		t.Fatalf("Rotate v%d→v%d: %v", from, to, err)
	}
	return resp.Credential
}

func (e *env) verify(t testing.TB, ctx context.Context, tenant events.TenantID, cred agent.Credential) agent.VerifyResponse {
	t.Helper()
	v, err := e.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: cred})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return v
}

func failedCheck(v agent.VerifyResponse, name string) (string, bool) {
	for _, c := range v.Checks {
		if c.Name == name {
			return c.Detail, !c.Passed
		}
	}
	return "not reported", true
}

func kinds(ds []agent.Drift) []string {
	out := make([]string, 0, len(ds))
	for _, d := range ds {
		out = append(out, d.Kind)
	}
	return out
}

// TestRotateWithOpenClient: a client on the OLD credential keeps issuing
// requests through Rotate, Verify with both credentials, and until Retire,
// with no failed request. After Retire a new login with the old credential
// gets WRONGPASS, while connections already open (on either password) stay
// open: Redis does not re-check a connection's password, and Retire does not
// kill them (RetireSessionsWarning).
func TestRotateWithOpenClient(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 60*time.Second)
	v1 := e.provision(t, ctx, acme, 1).Credential

	old := tenantClient(t, v1)
	oldConn := old.Conn() // one authenticated session, kept across Retire
	t.Cleanup(func() { oldConn.Close() })
	if err := oldConn.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	// A pool on the old credential, dialling new connections as it goes.
	var requests, failures atomic.Int64
	var errMu sync.Mutex
	var firstErr error
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := e.connect(v1)
			defer c.Close()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("tenant:acme:load:%d", w)
				err := c.Set(ctx, key, i, 0).Err()
				if err == nil {
					err = c.Get(ctx, key).Err()
				}
				if i%20 == 0 {
					// A fresh login with the old password, mid-rotation.
					fresh := e.connect(v1)
					if err == nil {
						err = fresh.Ping(ctx).Err()
					}
					fresh.Close()
				}
				requests.Add(1)
				if err != nil {
					failures.Add(1)
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
				}
			}
		}()
	}
	waitRequests := func(n int64) {
		t.Helper()
		target := requests.Load() + n
		for requests.Load() < target {
			if ctx.Err() != nil {
				t.Fatal("load stopped issuing requests")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	waitRequests(50)
	v2 := e.rotate(t, ctx, acme, 1, 2)
	waitRequests(50)
	requirePassed(t, e.verify(t, ctx, acme, v2))
	requirePassed(t, e.verify(t, ctx, acme, v1))
	newConn := tenantClient(t, v2).Conn()
	t.Cleanup(func() { newConn.Close() })
	if err := newConn.Ping(ctx).Err(); err != nil {
		t.Fatalf("new credential during the grace: %v", err)
	}
	waitRequests(50)
	close(stop)
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d of %d requests on the old credential failed during the grace; first: %v", n, requests.Load(), firstErr)
	}

	resp, err := e.store.Retire(ctx, agent.RetireRequest{Tenant: acme, Generation: 1, Keep: 2})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(resp.Retired, []int{1}) || !slices.Contains(resp.Warnings, RetireSessionsWarning) {
		t.Errorf("Retire = %+v, want Retired [1] and the sessions warning", resp)
	}
	if err := tenantClient(t, v1).Ping(ctx).Err(); !redis.IsAuthError(err) {
		t.Errorf("new login with the retired credential: err = %v, want WRONGPASS", err)
	}
	if _, failed := failedCheck(e.verify(t, ctx, acme, v1), agent.CheckOwnAccess); !failed {
		t.Error("Verify with the retired credential passed own_access")
	}
	requirePassed(t, e.verify(t, ctx, acme, v2))
	// Documented behaviour: open sessions survive Retire, on both passwords.
	if err := newConn.Set(ctx, "tenant:acme:after", "1", 0).Err(); err != nil {
		t.Errorf("session on the kept credential after Retire: %v", err)
	}
	if err := oldConn.Get(ctx, "tenant:acme:after").Err(); err != nil {
		t.Errorf("session opened with the retired password before Retire: %v (documented to stay open)", err)
	}
	// Retire again: nothing more to retire.
	resp, err = e.store.Retire(ctx, agent.RetireRequest{Tenant: acme, Generation: 1, Keep: 2})
	if err != nil || len(resp.Retired) != 0 {
		t.Errorf("Retire again = %+v, %v; want nothing retired", resp, err)
	}
	// Keeping a version that was never recorded is refused, and changes nothing.
	if _, err := e.store.Retire(ctx, agent.RetireRequest{Tenant: acme, Generation: 1, Keep: 7}); err == nil {
		t.Error("Retire keeping an unknown version succeeded")
	}
	requirePassed(t, e.verify(t, ctx, acme, v2))
}

// TestRotationPersisted: both passwords of a grace are saved with ACL SAVE
// and survive a restart.
func TestRotationPersisted(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 30*time.Second)
	v1 := e.provision(t, ctx, acme, 1).Credential
	v2 := e.rotate(t, ctx, acme, 1, 2)
	e.redis.Stop(t)
	e.redis.Start(t)
	for i, cred := range []agent.Credential{v1, v2} {
		if err := tenantClient(t, cred).Set(ctx, "tenant:acme:x", "1", 0).Err(); err != nil {
			t.Errorf("credential v%d after restart: %v", i+1, err)
		}
	}
}

// TestVerifyDuringGrace: Verify accepts exactly the recorded credential
// versions, and still rejects any other password, nopass, and a credential
// whose hash the record does not hold.
func TestVerifyDuringGrace(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 60*time.Second)
	v1 := e.provision(t, ctx, acme, 1).Credential
	v2 := e.rotate(t, ctx, acme, 1, 2)
	requirePassed(t, e.verify(t, ctx, acme, v1))
	requirePassed(t, e.verify(t, ctx, acme, v2))

	intruder := password(t)
	for _, tc := range []struct {
		name  string
		rules []any
		undo  []any
	}{
		{"third password", []any{"#" + passwordHash(intruder)}, []any{"!" + passwordHash(intruder)}},
		{"nopass", []any{"nopass"}, []any{"resetpass", "#" + passwordHash(v1.Secret(CredPassword)), "#" + passwordHash(v2.Secret(CredPassword))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := e.admin.Do(ctx, append([]any{"ACL", "SETUSER", "tenant_acme"}, tc.rules...)...).Err(); err != nil {
				t.Fatal(err)
			}
			for i, cred := range []agent.Credential{v1, v2} {
				detail, failed := failedCheck(e.verify(t, ctx, acme, cred), CheckRuleAsProvisioned)
				if !failed {
					t.Errorf("Verify with v%d passed %s with a %s", i+1, CheckRuleAsProvisioned, tc.name)
				}
				if strings.Contains(detail, passwordHash(intruder)) || strings.Contains(detail, passwordHash(cred.Secret(CredPassword))) {
					t.Errorf("detail holds a password hash: %s", detail)
				}
			}
			if err := e.admin.Do(ctx, append([]any{"ACL", "SETUSER", "tenant_acme"}, tc.undo...)...).Err(); err != nil {
				t.Fatal(err)
			}
			requirePassed(t, e.verify(t, ctx, acme, v2))
		})
	}

	// A credential the record does not hold, even though the user has it.
	t.Run("unrecorded credential", func(t *testing.T) {
		if err := e.admin.Do(ctx, "ACL", "SETUSER", "tenant_acme", "#"+passwordHash(intruder)).Err(); err != nil {
			t.Fatal(err)
		}
		cred := agent.Credential{CredAddr: v1.String(CredAddr), CredUsername: "tenant_acme", CredPassword: intruder, CredKeyPrefix: "tenant:acme:"}
		if _, failed := failedCheck(e.verify(t, ctx, acme, cred), CheckRuleAsProvisioned); !failed {
			t.Error("Verify passed with a password the record does not hold")
		}
	})
}

// TestRotateInterrupted: an agent that died between recording the new
// version and adding its password leaves the old credential intact and
// Verify passing with it; the redelivered Rotate converges.
func TestRotateInterrupted(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 60*time.Second)
	v1 := e.provision(t, ctx, acme, 1).Credential
	rec, _, err := e.store.record(ctx, "tenant_acme")
	if err != nil {
		t.Fatal(err)
	}
	lost := password(t)
	rec.Credentials = append(rec.Credentials, credentialHash{Version: 2, SHA256: passwordHash(lost)})
	if err := e.store.writeRecord(ctx, "tenant_acme", rec); err != nil {
		t.Fatal(err)
	}
	requirePassed(t, e.verify(t, ctx, acme, v1))
	ob, err := e.store.Observe(ctx, agent.ObserveRequest{Tenant: acme, Generation: 1, CredentialVersion: 1, Credential: v1})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(kinds(ob.Drift), DriftPasswordMissing) {
		t.Errorf("Observe = %v, want %s", kinds(ob.Drift), DriftPasswordMissing)
	}
	v2 := e.rotate(t, ctx, acme, 1, 2)
	got, _, err := e.store.getUser(ctx, "tenant_acme")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.passwords) != 2 || slices.Contains(got.passwords, passwordHash(lost)) {
		t.Errorf("after the redelivered Rotate the user has %d passwords (the lost secret's among them: %v)", len(got.passwords), slices.Contains(got.passwords, passwordHash(lost)))
	}
	requirePassed(t, e.verify(t, ctx, acme, v1))
	requirePassed(t, e.verify(t, ctx, acme, v2))
	if ob, err := e.store.Observe(ctx, agent.ObserveRequest{Tenant: acme, Generation: 1, CredentialVersion: 2, Credential: v2}); err != nil || len(ob.Drift) > 0 {
		t.Errorf("Observe after the redelivered Rotate = %v, %v", kinds(ob.Drift), err)
	}
}

// TestSuspendEndsSessions: Suspend refuses logins and ends open sessions
// (including a subscription); the key written before is readable after
// Resume with the same credential; Observe of a suspended tenant reports
// no drift and its repair does not turn the user back on.
func TestSuspendEndsSessions(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 60*time.Second)
	cred := e.provision(t, ctx, acme, 1).Credential
	c := tenantClient(t, cred)
	if err := c.Set(ctx, "tenant:acme:kept", "data", 0).Err(); err != nil {
		t.Fatal(err)
	}
	conn := c.Conn()
	defer conn.Close()
	if err := conn.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	ps := c.Subscribe(ctx, "tenant:acme:events")
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}

	req := agent.SuspendRequest{Tenant: acme, Generation: 1}
	if err := e.store.Suspend(ctx, req); err != nil {
		t.Fatal(err)
	}
	if err := conn.Get(ctx, "tenant:acme:kept").Err(); err == nil {
		t.Error("open session still works after Suspend")
	}
	if _, err := ps.ReceiveTimeout(ctx, 2*time.Second); err == nil {
		t.Error("subscription still receives after Suspend")
	}
	if err := tenantClient(t, cred).Ping(ctx).Err(); !redis.IsAuthError(err) {
		t.Errorf("login while suspended: err = %v, want WRONGPASS", err)
	}
	for _, repair := range []bool{false, true} {
		ob, err := e.store.Observe(ctx, agent.ObserveRequest{Tenant: acme, Generation: 1, CredentialVersion: 1, Credential: cred, Repair: repair})
		if err != nil || len(ob.Drift) > 0 {
			t.Errorf("Observe(repair=%v) of a suspended tenant = %v, %v", repair, kinds(ob.Drift), err)
		}
	}
	if err := tenantClient(t, cred).Ping(ctx).Err(); !redis.IsAuthError(err) {
		t.Errorf("login while suspended, after Observe: err = %v, want WRONGPASS", err)
	}

	if err := e.store.Resume(ctx, req); err != nil {
		t.Fatal(err)
	}
	if v, err := tenantClient(t, cred).Get(ctx, "tenant:acme:kept").Result(); err != nil || v != "data" {
		t.Errorf("key after Resume = %q, %v; want \"data\"", v, err)
	}
	requirePassed(t, e.verify(t, ctx, acme, cred))

	// Rotating a suspended tenant keeps it suspended, and Resume brings
	// both credentials back.
	if err := e.store.Suspend(ctx, req); err != nil {
		t.Fatal(err)
	}
	v2 := e.rotate(t, ctx, acme, 1, 2)
	if err := tenantClient(t, v2).Ping(ctx).Err(); !redis.IsAuthError(err) {
		t.Errorf("new credential of a suspended tenant: err = %v, want WRONGPASS", err)
	}
	if err := e.store.Resume(ctx, req); err != nil {
		t.Fatal(err)
	}
	requirePassed(t, e.verify(t, ctx, acme, cred))
	requirePassed(t, e.verify(t, ctx, acme, v2))
}

// TestObserveForeignUsers: another user whose patterns reach the tenant's
// prefix is reported (inward drift) and never changed, even with Repair; a
// user without tenantprov's record is repaired only with a credential that
// proves it is ours.
func TestObserveForeignUsers(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 60*time.Second)
	cred := e.provision(t, ctx, acme, 1).Credential

	if err := e.admin.Do(ctx, "ACL", "SETUSER", "snoop", "on", ">snoop-pass", "~tenant:*", "+get").Err(); err != nil {
		t.Fatal(err)
	}
	before, err := e.aclLine(ctx, "snoop")
	if err != nil {
		t.Fatal(err)
	}
	ob, err := e.store.Observe(ctx, agent.ObserveRequest{Tenant: acme, Generation: 1, CredentialVersion: 1, Credential: cred, Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(kinds(ob.Drift), []string{DriftForeignReach}) || len(ob.Repaired) != 0 {
		t.Errorf("Observe = drift %v, repaired %v; want only %s, nothing repaired", kinds(ob.Drift), kinds(ob.Repaired), DriftForeignReach)
	}
	if len(ob.Drift) > 0 && !strings.Contains(ob.Drift[0].Detail, "snoop") {
		t.Errorf("drift does not name the foreign user: %s", ob.Drift[0].Detail)
	}
	if after, err := e.aclLine(ctx, "snoop"); err != nil || after != before {
		t.Errorf("foreign user changed by Observe: %q → %q (%v)", before, after, err)
	}
	if err := e.admin.Do(ctx, "ACL", "DELUSER", "snoop").Err(); err != nil {
		t.Fatal(err)
	}

	// The marker gone, and no credential to prove ownership: left alone.
	if err := e.admin.HDel(ctx, ManagedUsersKey, "tenant_acme").Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.admin.Do(ctx, "ACL", "SETUSER", "tenant_acme", "~*").Err(); err != nil {
		t.Fatal(err)
	}
	beforeUser, _ := e.aclLine(ctx, "tenant_acme")
	for _, c := range []agent.Credential{nil, {CredUsername: "tenant_acme", CredPassword: password(t)}} {
		ob, err = e.store.Observe(ctx, agent.ObserveRequest{Tenant: acme, Generation: 1, CredentialVersion: 1, Credential: c, Repair: true})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(kinds(ob.Drift), []string{DriftMarkerMissing}) || len(ob.Repaired) != 0 {
			t.Errorf("Observe without proof = drift %v, repaired %v; want %s only, nothing repaired", kinds(ob.Drift), kinds(ob.Repaired), DriftMarkerMissing)
		}
	}
	if afterUser, _ := e.aclLine(ctx, "tenant_acme"); afterUser != beforeUser {
		t.Error("an unproven user was changed by Observe")
	}
	if ok, _ := e.admin.HExists(ctx, ManagedUsersKey, "tenant_acme").Result(); ok {
		t.Error("Observe wrote a record for an unproven user")
	}
	// With the credential: the marker and the rule are repaired.
	ob, err = e.store.Observe(ctx, agent.ObserveRequest{Tenant: acme, Generation: 1, CredentialVersion: 1, Credential: cred, Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := kinds(ob.Repaired); !slices.Contains(got, DriftMarkerMissing) || !slices.Contains(got, DriftRuleChanged) {
		t.Errorf("Observe with the credential repaired %v, want the marker and the rule", got)
	}
	requirePassed(t, e.verify(t, ctx, acme, cred))
}

// TestObserveCredentialRefused: a deleted user is reported with the
// credential refused, recreated from the recorded hashes (both versions
// during a grace), and the credential authenticates again.
func TestObserveCredentialRefused(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 60*time.Second)
	v1 := e.provision(t, ctx, acme, 1).Credential
	v2 := e.rotate(t, ctx, acme, 1, 2)
	if err := e.admin.Do(ctx, "ACL", "DELUSER", "tenant_acme").Err(); err != nil {
		t.Fatal(err)
	}
	ob, err := e.store.Observe(ctx, agent.ObserveRequest{Tenant: acme, Generation: 1, CredentialVersion: 2, Credential: v2, Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{DriftUserMissing, DriftCredentialRefused} {
		if !slices.Contains(kinds(ob.Drift), k) || !slices.Contains(kinds(ob.Repaired), k) {
			t.Errorf("Observe = drift %v, repaired %v; want %s in both", kinds(ob.Drift), kinds(ob.Repaired), k)
		}
	}
	for _, d := range ob.Drift {
		if d.DataLost {
			t.Errorf("a deleted ACL user is not lost data: %+v", d)
		}
	}
	requirePassed(t, e.verify(t, ctx, acme, v1))
	requirePassed(t, e.verify(t, ctx, acme, v2))
}

// TestLifecycleRefusesForeign: Rotate, Retire, Suspend and Resume never act
// on a user tenantprov did not create.
func TestLifecycleRefusesForeign(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 30*time.Second)
	if err := e.admin.Do(ctx, "ACL", "SETUSER", "tenant_acme", "on", ">theirs", "~tenant:acme:*", "+get").Err(); err != nil {
		t.Fatal(err)
	}
	before, _ := e.aclLine(ctx, "tenant_acme")
	_, errRotate := e.store.Rotate(ctx, agent.RotateRequest{Tenant: acme, Generation: 1, CurrentVersion: 1, Version: 2, Password: password(t)})
	_, errRetire := e.store.Retire(ctx, agent.RetireRequest{Tenant: acme, Generation: 1, Keep: 1})
	errSuspend := e.store.Suspend(ctx, agent.SuspendRequest{Tenant: acme, Generation: 1})
	errResume := e.store.Resume(ctx, agent.SuspendRequest{Tenant: acme, Generation: 1})
	for name, err := range map[string]error{"Rotate": errRotate, "Retire": errRetire, "Suspend": errSuspend, "Resume": errResume} {
		var perm *agent.PermanentError
		if !errors.As(err, &perm) {
			t.Errorf("%s of a foreign user: err = %v, want a permanent error", name, err)
		}
	}
	if after, _ := e.aclLine(ctx, "tenant_acme"); after != before {
		t.Errorf("foreign user changed: %q → %q", before, after)
	}
}

// TestLegacyRecord: a record written before rotation existed (no credential
// versions) still verifies; Observe completes it from the credential;
// Rotate takes the user's one password as version 1.
func TestLegacyRecord(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 60*time.Second)
	v1 := e.provision(t, ctx, acme, 1).Credential
	legacy := func() {
		t.Helper()
		rec, _, err := e.store.record(ctx, "tenant_acme")
		if err != nil {
			t.Fatal(err)
		}
		rec.Credentials = nil
		if err := e.store.writeRecord(ctx, "tenant_acme", rec); err != nil {
			t.Fatal(err)
		}
	}
	legacy()
	requirePassed(t, e.verify(t, ctx, acme, v1))
	ob, err := e.store.Observe(ctx, agent.ObserveRequest{Tenant: acme, Generation: 1, CredentialVersion: 1, Credential: v1, Repair: true})
	if err != nil || !slices.Equal(kinds(ob.Drift), []string{DriftMarkerIncomplete}) || !slices.Equal(kinds(ob.Repaired), []string{DriftMarkerIncomplete}) {
		t.Fatalf("Observe of a legacy record = drift %v, repaired %v, %v", kinds(ob.Drift), kinds(ob.Repaired), err)
	}
	if ob, err := e.store.Observe(ctx, agent.ObserveRequest{Tenant: acme, Generation: 1, CredentialVersion: 1, Credential: v1}); err != nil || len(ob.Drift) > 0 {
		t.Fatalf("Observe after completing the record = %v, %v", kinds(ob.Drift), err)
	}

	legacy()
	v2 := e.rotate(t, ctx, acme, 1, 2)
	requirePassed(t, e.verify(t, ctx, acme, v1))
	requirePassed(t, e.verify(t, ctx, acme, v2))
	if _, err := e.store.Retire(ctx, agent.RetireRequest{Tenant: acme, Generation: 1, Keep: 2}); err != nil {
		t.Fatal(err)
	}
	if err := tenantClient(t, v1).Ping(ctx).Err(); !redis.IsAuthError(err) {
		t.Errorf("v1 after Retire: err = %v, want WRONGPASS", err)
	}
}

// TestObserveReSuspends: a suspended tenant's user turned on behind the
// agent's back is turned off again by Observe's repair, and sessions opened
// meanwhile are ended.
func TestObserveReSuspends(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 60*time.Second)
	cred := e.provision(t, ctx, acme, 1).Credential
	if err := e.store.Suspend(ctx, agent.SuspendRequest{Tenant: acme, Generation: 1}); err != nil {
		t.Fatal(err)
	}
	if err := e.admin.Do(ctx, "ACL", "SETUSER", "tenant_acme", "on").Err(); err != nil {
		t.Fatal(err)
	}
	conn := tenantClient(t, cred).Conn()
	defer conn.Close()
	if err := conn.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	ob, err := e.store.Observe(ctx, agent.ObserveRequest{Tenant: acme, Generation: 1, CredentialVersion: 1, Credential: cred, Repair: true})
	if err != nil || !slices.Equal(kinds(ob.Repaired), []string{DriftEnabledChanged}) {
		t.Fatalf("Observe = drift %v, repaired %v, %v; want %s repaired", kinds(ob.Drift), kinds(ob.Repaired), err, DriftEnabledChanged)
	}
	if err := conn.Ping(ctx).Err(); err == nil {
		t.Error("session opened while the user was wrongly on survives the repair")
	}
	if err := tenantClient(t, cred).Ping(ctx).Err(); !redis.IsAuthError(err) {
		t.Errorf("login after the repair: err = %v, want WRONGPASS", err)
	}
}

// TestRetireInterrupted: an agent killed inside Retire — after marking the
// old version retiring, before or after removing its password — leaves the
// kept credential working and Verify passing; Observe's repair never puts
// the retired password back, and the redelivered Retire converges.
func TestRetireInterrupted(t *testing.T) {
	for _, aclChanged := range []bool{false, true} {
		t.Run(fmt.Sprintf("password removed=%v", aclChanged), func(t *testing.T) {
			e := newEnv(t)
			ctx := ctxFor(t, 60*time.Second)
			v1 := e.provision(t, ctx, acme, 1).Credential
			v2 := e.rotate(t, ctx, acme, 1, 2)
			rec, _, err := e.store.record(ctx, "tenant_acme")
			if err != nil {
				t.Fatal(err)
			}
			for i := range rec.Credentials {
				rec.Credentials[i].Retiring = rec.Credentials[i].Version == 1
			}
			if err := e.store.writeRecord(ctx, "tenant_acme", rec); err != nil {
				t.Fatal(err)
			}
			if aclChanged {
				if err := e.admin.Do(ctx, "ACL", "SETUSER", "tenant_acme", "resetpass", "#"+passwordHash(v2.Secret(CredPassword))).Err(); err != nil {
					t.Fatal(err)
				}
			}
			requirePassed(t, e.verify(t, ctx, acme, v2))
			ob, err := e.store.Observe(ctx, agent.ObserveRequest{Tenant: acme, Generation: 1, CredentialVersion: 2, Credential: v2, Repair: true})
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool][]string{false: {DriftRetireUnfinished}, true: {}}[aclChanged]; !slices.Equal(kinds(ob.Drift), want) {
				t.Errorf("Observe = drift %v, want %v", kinds(ob.Drift), want)
			}
			if err := tenantClient(t, v1).Ping(ctx).Err(); !redis.IsAuthError(err) {
				t.Errorf("the retiring credential after Observe's repair: err = %v, want WRONGPASS", err)
			}
			resp, err := e.store.Retire(ctx, agent.RetireRequest{Tenant: acme, Generation: 1, Keep: 2})
			if err != nil || !slices.Equal(resp.Retired, []int{1}) {
				t.Fatalf("redelivered Retire = %+v, %v", resp, err)
			}
			requirePassed(t, e.verify(t, ctx, acme, v2))
			if ob, err := e.store.Observe(ctx, agent.ObserveRequest{Tenant: acme, Generation: 1, CredentialVersion: 2, Credential: v2}); err != nil || len(ob.Drift) > 0 {
				t.Errorf("Observe after the redelivered Retire = %v, %v", kinds(ob.Drift), err)
			}
		})
	}
}
