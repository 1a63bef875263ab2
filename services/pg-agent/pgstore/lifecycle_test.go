package pgstore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// The lifecycle scenarios of issues 14 and 15 that are PostgreSQL's own:
// sessions across Rotate, Retire and Suspend, and what a second login role
// means for ownership and for Verify's inward checks.

func lifecycleCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func (ts *testServer) rotate(t *testing.T, ctx context.Context, tenant events.TenantID, from, to int) (agent.Credential, secret.String) {
	t.Helper()
	pw := newPassword(t)
	resp, err := ts.store.Rotate(ctx, agent.RotateRequest{Tenant: tenant, Generation: 1, CurrentVersion: from, Version: to, Password: pw, Grace: time.Hour})
	if err != nil {
		t.Fatalf("Rotate(%s, v%d→v%d): %v", tenant, from, to, err)
	}
	return resp.Credential, pw
}

func (ts *testServer) retire(t *testing.T, ctx context.Context, tenant events.TenantID, keep int) agent.RetireResponse {
	t.Helper()
	resp, err := ts.store.Retire(ctx, agent.RetireRequest{Tenant: tenant, Generation: 1, Keep: keep})
	if err != nil {
		t.Fatalf("Retire(%s, keep v%d): %v", tenant, keep, err)
	}
	return resp
}

func (ts *testServer) mustConnect(t *testing.T, ctx context.Context, user string, pw secret.String, db string) *pgx.Conn {
	t.Helper()
	conn, err := ts.connect(ctx, user, pw, db)
	if err != nil {
		t.Fatalf("log in as %s: %v", user, scrubConnectError(err))
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// refused fails unless logging in as user is refused with an
// authentication error (SQLSTATE class 28).
func (ts *testServer) refused(t *testing.T, ctx context.Context, user string, pw secret.String, db, what string) {
	t.Helper()
	conn, err := ts.connect(ctx, user, pw, db)
	if err == nil {
		conn.Close(ctx)
		t.Fatalf("%s: %s still logs in", what, user)
	}
	if code := sqlState(err); !strings.HasPrefix(code, "28") {
		t.Fatalf("%s: want an authentication error (28xxx) for %s, got %v", what, user, scrubConnectError(err))
	}
}

// sessionEnded fails unless conn's next statement fails (its session was
// terminated).
func sessionEnded(t *testing.T, ctx context.Context, conn *pgx.Conn, what string) {
	t.Helper()
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err == nil {
		t.Fatalf("%s: the open session still runs statements", what)
	}
}

func (ts *testServer) observe(t *testing.T, ctx context.Context, tenant events.TenantID, cred agent.Credential, version int, repair bool) agent.ObserveResponse {
	t.Helper()
	resp, err := ts.store.Observe(ctx, agent.ObserveRequest{Tenant: tenant, Generation: 1, CredentialVersion: version, Credential: cred, Repair: repair})
	if err != nil {
		t.Fatalf("Observe(%s): %v", tenant, err)
	}
	return resp
}

func hasDrift(ds []agent.Drift, kind string) bool {
	for _, d := range ds {
		if d.Kind == kind {
			return true
		}
	}
	return false
}

// client is an application connected with one credential that issues a
// request (INSERT, then SELECT of what it wrote) every few milliseconds
// until stopped, and counts what failed.
type client struct {
	stop     chan struct{}
	done     chan struct{}
	mu       sync.Mutex
	ok       int
	failures []string
}

func startClient(ctx context.Context, conn *pgx.Conn, who string) *client {
	c := &client{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for i := 0; ; i++ {
			select {
			case <-c.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			var id int
			err := conn.QueryRow(ctx, "INSERT INTO app (who) VALUES ($1) RETURNING id", who).Scan(&id)
			if err == nil {
				var got string
				err = conn.QueryRow(ctx, "SELECT who FROM app WHERE id = $1", id).Scan(&got)
			}
			c.mu.Lock()
			if err != nil {
				c.failures = append(c.failures, err.Error())
			} else {
				c.ok++
			}
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *client) halt() (ok int, failures []string) {
	close(c.stop)
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ok, c.failures
}

// An application connected with the old credential keeps working through
// Rotate (and a redelivered Rotate) until Retire, with no failed request;
// what either credential creates is reachable by the other; Retire ends the
// old credential's sessions and refuses it, while the new credential's
// sessions go on.
func TestRotateWithConnectedClient(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := lifecycleCtx(t)
	tenant := events.MustTenantID("grace-client")
	owner, db := tenant.PostgresRole(), tenant.PostgresDatabase()
	v1cred, pw1 := ts.provision(t, ctx, tenant, 1)
	defer ts.store.Deprovision(context.Background(), agent.DeprovisionRequest{Tenant: tenant, Generation: 1})

	old := ts.mustConnect(t, ctx, owner, pw1, db)
	if _, err := old.Exec(ctx, "CREATE TABLE app (id serial PRIMARY KEY, who text NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	app := startClient(ctx, old, "v1")

	v2cred, pw2 := ts.rotate(t, ctx, tenant, 1, 2)
	v2user := v2cred.String("user")
	if v2user != owner+"__v2" {
		t.Fatalf("rotated credential's user = %q, want %s__v2", v2user, owner)
	}
	// Neither role can reach the record of credentials.
	var reach bool
	if err := ts.admin.QueryRow(ctx, "SELECT has_table_privilege($1, '"+credentialsTable+"', 'SELECT,INSERT,UPDATE,DELETE') OR has_table_privilege($2, '"+credentialsTable+"', 'SELECT,INSERT,UPDATE,DELETE')", owner, v2user).Scan(&reach); err != nil || reach {
		t.Fatalf("a tenant role holds a privilege on %s (err %v)", credentialsTable, err)
	}
	// The new credential's sessions act as the owner role.
	v2 := ts.mustConnect(t, ctx, v2user, pw2, db)
	var cur, sess string
	if err := v2.QueryRow(ctx, "SELECT current_user, session_user").Scan(&cur, &sess); err != nil {
		t.Fatal(err)
	}
	if cur != owner || sess != v2user {
		t.Fatalf("v2 session: current_user %s, session_user %s; want %s, %s", cur, sess, owner, v2user)
	}
	for _, stmt := range []string{
		"INSERT INTO app (who) VALUES ('v2')", // v1's table
		"CREATE TABLE made_by_v2 (v text)",    // owned by the owner role
		"INSERT INTO made_by_v2 VALUES ('x')",
		"SET ROLE NONE", // as the login role itself: default privileges
		"CREATE TABLE v2_own (v text)",
		"INSERT INTO v2_own VALUES ('y')",
		"RESET ROLE",
	} {
		if _, err := v2.Exec(ctx, stmt); err != nil {
			t.Fatalf("v2: %s: %v", stmt, err)
		}
	}
	// The old credential, in a second session, reaches both.
	old2 := ts.mustConnect(t, ctx, owner, pw1, db)
	for _, q := range []string{"SELECT v FROM made_by_v2", "SELECT v FROM v2_own"} {
		var v string
		if err := old2.QueryRow(ctx, q).Scan(&v); err != nil {
			t.Fatalf("v1: %s: %v", q, err)
		}
	}
	old2.Close(ctx)

	for _, cred := range []agent.Credential{v1cred.Credential, v2cred} {
		vr, err := ts.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: cred})
		if err != nil {
			t.Fatal(err)
		}
		requirePassed(t, vr)
	}
	// A redelivered Rotate resets version 2's password; nothing else moves.
	v2cred, pw2 = ts.rotate(t, ctx, tenant, 1, 2)
	if d := ts.observe(t, ctx, tenant, v2cred, 2, false).Drift; len(d) != 0 {
		t.Fatalf("Observe during the grace: %+v", d)
	}
	time.Sleep(200 * time.Millisecond) // let the client run across all of it

	n, failures := app.halt()
	if len(failures) > 0 {
		t.Fatalf("the client on the old credential saw %d failed requests during the grace (of %d): %v", len(failures), n+len(failures), failures[0])
	}
	if n == 0 {
		t.Fatal("the client issued no request")
	}
	t.Logf("the old credential's client completed %d requests during the grace, none failed", n)

	resp := ts.retire(t, ctx, tenant, 2)
	if len(resp.Retired) != 1 || resp.Retired[0] != 1 {
		t.Fatalf("Retire retired %v, want [1]", resp.Retired)
	}
	sessionEnded(t, ctx, old, "after Retire, the old credential's session")
	ts.refused(t, ctx, owner, pw1, db, "after Retire, the old credential")
	// The new credential's open session survives, and sees everything.
	var rows int
	if err := v2.QueryRow(ctx, "SELECT count(*) FROM app WHERE who = 'v1'").Scan(&rows); err != nil || rows != n {
		t.Fatalf("after Retire, v2 reads %d rows of the old client (err %v), want %d", rows, err, n)
	}
	fresh := ts.mustConnect(t, ctx, v2user, pw2, db)
	if _, err := fresh.Exec(ctx, "INSERT INTO v2_own VALUES ('z')"); err != nil {
		t.Fatalf("after Retire, v2 writes: %v", err)
	}
	vr, err := ts.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: v2cred})
	if err != nil {
		t.Fatal(err)
	}
	requirePassed(t, vr)
	vr, err = ts.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: v1cred.Credential})
	if err != nil {
		t.Fatal(err)
	}
	if check(vr, agent.CheckOwnAccess).Passed {
		t.Fatal("Verify with the retired credential: own_access passed")
	}
}

// Retiring a version role hands what it owns to the owner role, so that the
// kept credential reaches it; the role is dropped. Deprovision afterwards,
// with the newest credential's session open and objects it owns, leaves
// nothing.
func TestRetireReassignsObjects(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := lifecycleCtx(t)
	tenant := events.MustTenantID("grace-owned")
	owner, db := tenant.PostgresRole(), tenant.PostgresDatabase()
	ts.provision(t, ctx, tenant, 1)

	v2cred, pw2 := ts.rotate(t, ctx, tenant, 1, 2)
	ts.retire(t, ctx, tenant, 2)
	v2 := ts.mustConnect(t, ctx, v2cred.String("user"), pw2, db)
	for _, stmt := range []string{"SET ROLE NONE", "CREATE SCHEMA v2s", "CREATE TABLE v2s.kept (v text)", "INSERT INTO v2s.kept VALUES ('data')"} {
		if _, err := v2.Exec(ctx, stmt); err != nil {
			t.Fatalf("v2: %s: %v", stmt, err)
		}
	}
	v3cred, pw3 := ts.rotate(t, ctx, tenant, 2, 3)
	if got := ts.retire(t, ctx, tenant, 3).Retired; len(got) != 1 || got[0] != 2 {
		t.Fatalf("Retire retired %v, want [2]", got)
	}
	sessionEnded(t, ctx, v2, "after Retire, v2's session")
	ts.refused(t, ctx, v2cred.String("user"), pw2, db, "after Retire, v2")
	var gone bool
	if err := ts.admin.QueryRow(ctx, "SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", owner+"__v2").Scan(&gone); err != nil || !gone {
		t.Fatalf("role %s__v2 still exists after Retire (err %v)", owner, err)
	}
	v3 := ts.mustConnect(t, ctx, v3cred.String("user"), pw3, db)
	var v, tableOwner, schemaOwner string
	if err := v3.QueryRow(ctx, "SELECT v, (SELECT tableowner FROM pg_tables WHERE schemaname = 'v2s' AND tablename = 'kept'), (SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'v2s') FROM v2s.kept").Scan(&v, &tableOwner, &schemaOwner); err != nil {
		t.Fatalf("v3 reads what v2 owned: %v", err)
	}
	if tableOwner != owner || schemaOwner != owner {
		t.Fatalf("after Retire, v2's table is owned by %s and its schema by %s, want %s", tableOwner, schemaOwner, owner)
	}
	vr, err := ts.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: v3cred})
	if err != nil {
		t.Fatal(err)
	}
	requirePassed(t, vr)

	// v3 owns something of its own and keeps a session open: Deprovision
	// removes it all.
	for _, stmt := range []string{"SET ROLE NONE", "CREATE TABLE v3_own (v text)"} {
		if _, err := v3.Exec(ctx, stmt); err != nil {
			t.Fatalf("v3: %s: %v", stmt, err)
		}
	}
	if _, err := ts.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1}); err != nil {
		t.Fatalf("Deprovision: %v", err)
	}
	if ok, err := ts.exists(ctx, tenant); err != nil || ok {
		t.Fatalf("after Deprovision something of the tenant exists (err %v)", err)
	}
	var rows int
	if err := ts.admin.QueryRow(ctx, "SELECT (SELECT count(*) FROM "+recordTable+" WHERE tenant = $1) + (SELECT count(*) FROM "+credentialsTable+" WHERE tenant = $1)", string(tenant)).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("after Deprovision the system record keeps %d rows (err %v)", rows, err)
	}
}

// Suspend refuses every live credential and ends their sessions; data,
// grants and passwords stay; Resume brings back the same credentials and
// the data written before.
func TestSuspendEndsSessionsKeepsData(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := lifecycleCtx(t)
	tenant := events.MustTenantID("susp-data")
	owner, db := tenant.PostgresRole(), tenant.PostgresDatabase()
	v1cred, pw1 := ts.provision(t, ctx, tenant, 1)
	defer ts.store.Deprovision(context.Background(), agent.DeprovisionRequest{Tenant: tenant, Generation: 1})
	v2cred, pw2 := ts.rotate(t, ctx, tenant, 1, 2)
	v2user := v2cred.String("user")

	s1 := ts.mustConnect(t, ctx, owner, pw1, db)
	if _, err := s1.Exec(ctx, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before suspend')"); err != nil {
		t.Fatal(err)
	}
	s2 := ts.mustConnect(t, ctx, v2user, pw2, db)

	req := agent.SuspendRequest{Tenant: tenant, Generation: 1}
	if err := ts.store.Suspend(ctx, req); err != nil {
		t.Fatalf("Suspend: %v", err)
	}
	sessionEnded(t, ctx, s1, "after Suspend, v1's session")
	sessionEnded(t, ctx, s2, "after Suspend, v2's session")
	ts.refused(t, ctx, owner, pw1, db, "after Suspend, v1")
	ts.refused(t, ctx, v2user, pw2, db, "after Suspend, v2")
	if d := ts.observe(t, ctx, tenant, v2cred, 2, false).Drift; len(d) != 0 {
		t.Fatalf("Observe of a suspended tenant reports drift: %+v", d)
	}
	if err := ts.store.Suspend(ctx, req); err != nil {
		t.Fatalf("Suspend again: %v", err)
	}

	if err := ts.store.Resume(ctx, req); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	for _, c := range []struct {
		user string
		pw   secret.String
	}{{owner, pw1}, {v2user, pw2}} {
		conn := ts.mustConnect(t, ctx, c.user, c.pw, db)
		var v string
		if err := conn.QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil || v != "before suspend" {
			t.Fatalf("after Resume, %s reads %q (err %v)", c.user, v, err)
		}
	}
	for _, cred := range []agent.Credential{v1cred.Credential, v2cred} {
		vr, err := ts.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: cred})
		if err != nil {
			t.Fatal(err)
		}
		requirePassed(t, vr)
	}

	// A retired credential stays refused across Suspend and Resume.
	ts.retire(t, ctx, tenant, 2)
	if err := ts.store.Suspend(ctx, req); err != nil {
		t.Fatal(err)
	}
	if err := ts.store.Resume(ctx, req); err != nil {
		t.Fatal(err)
	}
	ts.refused(t, ctx, owner, pw1, db, "after Retire, Suspend and Resume, v1")
	ts.mustConnect(t, ctx, v2user, pw2, db)
}

// During the grace Verify accepts exactly the tenant's recorded credentials:
// a role with a version role's name that tenantprov did not create is
// neither adopted by Rotate nor accepted as the tenant by Verify, and a
// version role with more reach than provisioned fails Verify; Observe
// repairs what it may.
func TestVerifyAcceptsOnlyRecordedCredentials(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := lifecycleCtx(t)
	tenant := events.MustTenantID("grace-inward")
	owner, db := tenant.PostgresRole(), tenant.PostgresDatabase()
	v1cred, _ := ts.provision(t, ctx, tenant, 1)
	defer ts.store.Deprovision(context.Background(), agent.DeprovisionRequest{Tenant: tenant, Generation: 1})
	v2cred, pw2 := ts.rotate(t, ctx, tenant, 1, 2)
	v2user := v2cred.String("user")

	verifyFails := func(t *testing.T, name string) {
		t.Helper()
		for _, cred := range []agent.Credential{v1cred.Credential, v2cred} {
			vr, err := ts.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: cred})
			if err != nil {
				t.Fatal(err)
			}
			if c := check(vr, name); c.Passed {
				t.Fatalf("Verify with %s: check %s passed: %+v", cred.String("user"), name, vr.Checks)
			} else {
				t.Logf("%s: %s", name, c.Detail)
			}
		}
	}
	verifyPasses := func(t *testing.T) {
		t.Helper()
		for _, cred := range []agent.Credential{v1cred.Credential, v2cred} {
			vr, err := ts.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: cred})
			if err != nil {
				t.Fatal(err)
			}
			requirePassed(t, vr)
		}
	}

	for _, tc := range []struct {
		name  string
		stmts []string
		check string
		kind  string
	}{
		{"an unrecorded look-alike version role acts as the tenant",
			[]string{`CREATE ROLE "` + owner + `__v9" LOGIN PASSWORD 'intruder'`, `GRANT "` + owner + `" TO "` + owner + `__v9"`},
			CheckRoleLockedDown, DriftRoleMemberAdded},
		{"the version role made a member of pg_read_all_data",
			[]string{`GRANT pg_read_all_data TO "` + v2user + `"`}, CheckRoleLockedDown, DriftRoleMemberOf},
		{"the version role given CREATEROLE",
			[]string{`ALTER ROLE "` + v2user + `" CREATEROLE`}, CheckRoleLockedDown, DriftRoleAttributes},
		{"the version role granted CONNECT on the canary",
			[]string{`GRANT CONNECT ON DATABASE ` + ident(events.CanaryDatabase) + ` TO "` + v2user + `"`}, CheckOtherDatabasesDenied, DriftOutwardDatabase},
		{"the version role's sessions no longer start as the owner role",
			[]string{`ALTER ROLE "` + v2user + `" RESET role`}, "", DriftRoleSetting},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustExecPool(t, ctx, ts, tc.stmts...)
			if tc.check != "" {
				verifyFails(t, tc.check)
			}
			got := ts.observe(t, ctx, tenant, v2cred, 2, false)
			if !hasDrift(got.Drift, tc.kind) {
				t.Fatalf("Observe did not report %s: %+v", tc.kind, got.Drift)
			}
			rep := ts.observe(t, ctx, tenant, v2cred, 2, true)
			if !hasDrift(rep.Repaired, tc.kind) {
				t.Fatalf("Observe with Repair did not repair %s: %+v", tc.kind, rep)
			}
			if d := ts.observe(t, ctx, tenant, v2cred, 2, false).Drift; len(d) != 0 {
				t.Fatalf("after repair: %+v", d)
			}
			verifyPasses(t)
		})
	}
	// The look-alike is still there, untouched but for its membership, and
	// Verify refuses it as the tenant's credential.
	intruder := agent.Credential{"user": owner + "__v9", "database": db, "password": secret.String("intruder")}
	vr, err := ts.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: intruder})
	if err != nil {
		t.Fatal(err)
	}
	if vr.Passed() || check(vr, CheckSystemRecord).Passed {
		t.Fatalf("Verify accepted an unrecorded role as the tenant's credential: %+v", vr.Checks)
	}
	// Rotate never adopts it.
	_, err = ts.store.Rotate(ctx, agent.RotateRequest{Tenant: tenant, Generation: 1, CurrentVersion: 2, Version: 9, Password: newPassword(t)})
	if !errors.Is(err, agent.ErrConflict) {
		t.Fatalf("Rotate to a version whose role name is taken: want ErrConflict, got %v", err)
	}
	var login, member bool
	if err := ts.admin.QueryRow(ctx, "SELECT rolcanlogin, EXISTS (SELECT 1 FROM pg_auth_members WHERE member = r.oid) FROM pg_roles r WHERE rolname = $1", owner+"__v9").Scan(&login, &member); err != nil {
		t.Fatalf("the look-alike role: %v", err)
	}
	if !login || member {
		t.Fatalf("the look-alike role changed: login=%t, member of a role=%t", login, member)
	}
	// Retire never locks the tenant out: keeping a version that is not
	// live is refused, and nothing is retired.
	if _, err := ts.store.Retire(ctx, agent.RetireRequest{Tenant: tenant, Generation: 1, Keep: 7}); err == nil {
		t.Fatal("Retire keeping a version that does not exist succeeded")
	}
	ts.mustConnect(t, ctx, v2user, pw2, db)
	verifyPasses(t)
}

// The tenant changing its own password (ALTER ROLE … PASSWORD is allowed
// for one's own role) is drift Observe reports and leaves to a rotation.
func TestObserveReportsRefusedCredential(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := lifecycleCtx(t)
	tenant := events.MustTenantID("obs-cred")
	cred, pw := ts.provision(t, ctx, tenant, 1)
	defer ts.store.Deprovision(context.Background(), agent.DeprovisionRequest{Tenant: tenant, Generation: 1})
	conn := ts.mustConnect(t, ctx, tenant.PostgresRole(), pw, tenant.PostgresDatabase())
	if _, err := conn.Exec(ctx, "ALTER ROLE CURRENT_USER PASSWORD 'chosen-by-the-tenant'"); err != nil {
		t.Fatal(err)
	}
	got := ts.observe(t, ctx, tenant, cred.Credential, 1, true)
	if !hasDrift(got.Drift, DriftCredentialRefused) {
		t.Fatalf("Observe did not report the refused credential: %+v", got.Drift)
	}
	if hasDrift(got.Repaired, DriftCredentialRefused) {
		t.Fatal("Observe claims to have repaired a credential")
	}
	if err := noSecretIn(got, pw); err != nil {
		t.Fatal(err)
	}
}

func noSecretIn(resp agent.ObserveResponse, pw secret.String) error {
	for _, d := range append(resp.Drift, resp.Repaired...) {
		if strings.Contains(d.Kind+d.Resource+d.Detail, pw.Reveal()) {
			return errors.New("a drift report holds the password")
		}
	}
	return nil
}

// An agent that dies in the middle of Retire leaves the retired version
// role NOLOGIN and marked retiring in the record: Observe (with Repair)
// does not turn its LOGIN back on, Resume neither, and the redelivered
// Retire finishes; the kept credential works throughout.
func TestRetireInterruptedConverges(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := lifecycleCtx(t)
	tenant := events.MustTenantID("retire-crash")
	db := tenant.PostgresDatabase()
	ts.provision(t, ctx, tenant, 1)
	defer ts.store.Deprovision(context.Background(), agent.DeprovisionRequest{Tenant: tenant, Generation: 1})
	v2cred, pw2 := ts.rotate(t, ctx, tenant, 1, 2)
	v3cred, pw3 := ts.rotate(t, ctx, tenant, 2, 3)
	v2user := v2cred.String("user")
	// What retireOne commits first for version 2, and nothing after.
	mustExecPool(t, ctx, ts,
		`ALTER ROLE "`+v2user+`" NOLOGIN`,
		"UPDATE "+credentialsTable+" SET retiring = true WHERE tenant = '"+string(tenant)+"' AND version = 2")

	got := ts.observe(t, ctx, tenant, v3cred, 3, true)
	if hasDrift(got.Drift, DriftRoleLogin) {
		t.Fatalf("Observe wants a half-retired role's LOGIN back: %+v", got.Drift)
	}
	if err := ts.store.Resume(ctx, agent.SuspendRequest{Tenant: tenant, Generation: 1}); err != nil {
		t.Fatal(err)
	}
	ts.refused(t, ctx, v2user, pw2, db, "a half-retired credential after Observe and Resume")
	ts.mustConnect(t, ctx, v3cred.String("user"), pw3, db)

	resp := ts.retire(t, ctx, tenant, 3)
	if len(resp.Retired) != 2 {
		t.Fatalf("the redelivered Retire retired %v, want [1 2]", resp.Retired)
	}
	ts.mustConnect(t, ctx, v3cred.String("user"), pw3, db)
	vr, err := ts.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: v3cred})
	if err != nil {
		t.Fatal(err)
	}
	requirePassed(t, vr)
}

// Observe of a name held by a foreign role and database (not in the
// record) reports and repairs nothing of theirs, and Rotate, Retire,
// Suspend refuse to act on them.
func TestLifecycleNeverTouchesForeign(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := lifecycleCtx(t)
	tenant := events.MustTenantID("lc-foreign")
	if err := ts.createForeign(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	// The foreign database grants CONNECT to its own role and the role has
	// no tenantprov record: on a tenant's, Observe would repair both.
	got := ts.observe(t, ctx, tenant, nil, 1, true)
	if len(got.Repaired) != 0 {
		t.Fatalf("Observe repaired a foreign resource: %+v", got.Repaired)
	}
	if !hasDrift(got.Drift, DriftMarkerMissing) {
		t.Fatalf("Observe of a foreign name: want %s, got %+v", DriftMarkerMissing, got.Drift)
	}
	if _, err := ts.store.Rotate(ctx, agent.RotateRequest{Tenant: tenant, Generation: 1, CurrentVersion: 1, Version: 2, Password: newPassword(t)}); !errors.Is(err, ErrNotProvisioned) {
		t.Fatalf("Rotate of a foreign name: want ErrNotProvisioned, got %v", err)
	}
	if _, err := ts.store.Retire(ctx, agent.RetireRequest{Tenant: tenant, Generation: 1, Keep: 2}); !errors.Is(err, ErrNotProvisioned) {
		t.Fatalf("Retire of a foreign name: want ErrNotProvisioned, got %v", err)
	}
	if err := ts.store.Suspend(ctx, agent.SuspendRequest{Tenant: tenant, Generation: 1}); !errors.Is(err, ErrNotProvisioned) {
		t.Fatalf("Suspend of a foreign name: want ErrNotProvisioned, got %v", err)
	}
	if err := ts.foreignIntact(ctx, tenant); err != nil {
		t.Fatalf("the foreign role or database changed: %v", err)
	}
}

// The server log, with every statement logged, shows the rotated
// credentials' verifiers and never a password, through the whole
// lifecycle.
func TestLifecycleServerLogNeverHoldsPassword(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := lifecycleCtx(t)
	mustExecPool(t, ctx, ts, "ALTER SYSTEM SET log_statement = 'all'", "ALTER SYSTEM SET log_min_error_statement = 'error'", "SELECT pg_reload_conf()")
	sleep(ctx, 200)
	tenant := events.MustTenantID("logrot")
	_, pw1 := ts.provision(t, ctx, tenant, 1)
	v2cred, pw2 := ts.rotate(t, ctx, tenant, 1, 2)
	_, pw2b := ts.rotate(t, ctx, tenant, 1, 2)
	v2cred["password"] = pw2b
	vr, err := ts.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: v2cred})
	if err != nil {
		t.Fatal(err)
	}
	requirePassed(t, vr)
	ts.observe(t, ctx, tenant, v2cred, 2, true)
	ts.retire(t, ctx, tenant, 2)
	for _, f := range []func(context.Context, agent.SuspendRequest) error{ts.store.Suspend, ts.store.Resume} {
		if err := f(ctx, agent.SuspendRequest{Tenant: tenant, Generation: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ts.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(ts.pg.DataDir), "postgres.log"))
	if err != nil {
		t.Fatalf("server log: %v", err)
	}
	serverLog := string(b)
	for _, want := range []string{`CREATE ROLE "tenant_logrot__v2"`, `ALTER ROLE "tenant_logrot__v2" WITH LOGIN`, "PASSWORD 'SCRAM-SHA-256$4096:", `DROP ROLE "tenant_logrot"`} {
		if !strings.Contains(serverLog, want) {
			t.Fatalf("the server log lacks %q: statement logging did not work", want)
		}
	}
	for i, pw := range []secret.String{pw1, pw2, pw2b} {
		if strings.Contains(serverLog, pw.Reveal()) {
			t.Errorf("password %d is in the server log", i+1)
		}
	}
}
