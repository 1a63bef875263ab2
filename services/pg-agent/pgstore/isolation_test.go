package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// The tests in this file are issue 10's PostgreSQL scenarios: a tenant (or
// another role on the server) acting against the control plane with only
// what PostgreSQL lets it do.

// adminIn opens an admin session into db.
func (ts *testServer) adminIn(t *testing.T, ctx context.Context, db string) *pgx.Conn {
	t.Helper()
	conn, err := ts.connect(ctx, ts.pg.AdminUser, secret.String(ts.pg.AdminPassword), db)
	if err != nil {
		t.Fatalf("admin session in %s: %v", db, scrubConnectError(err))
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// Scenario 1: the tenant role owns its database, so it can rewrite the
// database's COMMENT. Whatever it writes there, Deprovision removes the role
// and the database, and the tenant's credential stops working.
func TestTenantCannotEscapeDeprovision(t *testing.T) {
	ts := newTestServer(t, nil)
	for _, tc := range []struct {
		name, tenant, comment string
	}{
		{"forged marker with generation 999999", "escape-forged", `{"managed_by":"tenantprov","tenant":"escape-forged","generation":999999}`},
		{"a comment that is not a marker", "escape-mine", "mine"},
		{"no comment at all", "escape-none", ""},
		// Not comments: other things a database owner may change.
		{"database made a template", "escape-template", "ALTER DATABASE %s IS_TEMPLATE true"},
		{"role password changed by the tenant", "escape-pw", "ALTER ROLE CURRENT_USER PASSWORD 'chosen-by-the-tenant'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			tenant := events.MustTenantID(tc.tenant)
			role, db := tenant.PostgresRole(), tenant.PostgresDatabase()
			_, pw := ts.provision(t, ctx, tenant, 1)

			// The tenant, with its own credential, rewrites the comment and
			// keeps a session open.
			conn, err := ts.connect(ctx, role, pw, db)
			if err != nil {
				t.Fatalf("tenant login: %v", scrubConnectError(err))
			}
			defer conn.Close(context.Background())
			stmt := "COMMENT ON DATABASE " + ident(db) + " IS NULL"
			if strings.HasPrefix(tc.comment, "ALTER ") {
				stmt = strings.ReplaceAll(tc.comment, "%s", ident(db))
			} else if tc.comment != "" {
				lit, err := quoteLiteral(tc.comment)
				if err != nil {
					t.Fatal(err)
				}
				stmt = "COMMENT ON DATABASE " + ident(db) + " IS " + lit
			}
			if _, err := conn.Exec(ctx, stmt); err != nil {
				t.Fatalf("the tenant could not run %q (the scenario needs it): %v", stmt, err)
			}

			dr, err := ts.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1})
			if err != nil {
				t.Fatalf("Deprovision: %v", err)
			}
			if len(dr.Warnings) != 0 || len(dr.Skipped) != 0 {
				t.Errorf("Deprovision left something: skipped %q, warnings %q", dr.Skipped, dr.Warnings)
			}
			if ok, _ := ts.exists(ctx, tenant); ok {
				t.Errorf("role or database %s still exists after Deprovision", role)
			}
			if err := conn.Ping(ctx); err == nil {
				t.Error("the tenant's session survived Deprovision")
			}
			if c, err := ts.connect(ctx, role, pw, db); err == nil {
				c.Close(ctx)
				t.Error("the tenant still logs in after Deprovision")
			}
			// The next generation provisions normally (not "stale").
			resp, _ := ts.provision(t, ctx, tenant, 2)
			vr, err := ts.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 2, Credential: resp.Credential})
			if err != nil {
				t.Fatal(err)
			}
			requirePassed(t, vr)
		})
	}
}

// Scenario 2: a non-superuser role with CREATEDB creates tenant_victim,
// writes tenantprov's old marker into its comment, grants CONNECT to a spy
// and plants a table. Provisioning victim is a permanent conflict, the
// rollback (Deprovision) succeeds, and the database is exactly as it was.
func TestForeignDatabaseNeverAdopted(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := testCtx(t)
	tenant := events.MustTenantID("victim")
	db := tenant.PostgresDatabase()
	// Another tenant first, so that the agent's start-up work is done and
	// what follows happens on a running system.
	ts.provision(t, ctx, events.MustTenantID("bystander"), 1)

	mustExecPool(t, ctx, ts,
		"CREATE ROLE squatter LOGIN CREATEDB PASSWORD 'squatter-pw'",
		"CREATE ROLE spy LOGIN PASSWORD 'spy-pw'",
		"GRANT CONNECT ON DATABASE postgres TO squatter",
	)
	sq, err := ts.connect(ctx, "squatter", "squatter-pw", "postgres")
	if err != nil {
		t.Fatal(scrubConnectError(err))
	}
	defer sq.Close(context.Background())
	for _, stmt := range []string{
		"CREATE DATABASE " + ident(db),
		`COMMENT ON DATABASE ` + ident(db) + ` IS '{"managed_by":"tenantprov","tenant":"victim","generation":1}'`,
		"GRANT CONNECT ON DATABASE " + ident(db) + " TO spy",
	} {
		if _, err := sq.Exec(ctx, stmt); err != nil {
			t.Fatalf("squatter: %s: %v", stmt, err)
		}
	}
	sqIn, err := ts.connect(ctx, "squatter", "squatter-pw", db)
	if err != nil {
		t.Fatal(scrubConnectError(err))
	}
	if _, err := sqIn.Exec(ctx, "CREATE TABLE planted (v text); INSERT INTO planted VALUES ('planted')"); err != nil {
		t.Fatal(err)
	}
	sqIn.Close(ctx)

	before := foreignDBSnapshot(t, ctx, ts, db)
	_, err = ts.store.Provision(ctx, agent.ProvisionRequest{Tenant: tenant, Generation: 1, Password: newPassword(t)})
	if !errors.Is(err, agent.ErrConflict) {
		t.Fatalf("Provision over a squatted database = %v, want agent.ErrConflict", err)
	}
	if perm, reason := agent.Classify(err); !perm || reason != events.ReasonConflict {
		t.Errorf("Classify = permanent %t, %s; want permanent conflict", perm, reason)
	}
	if after := foreignDBSnapshot(t, ctx, ts, db); after != before {
		t.Errorf("Provision changed the foreign database:\nbefore %s\nafter  %s", before, after)
	}
	var roles int
	_ = ts.admin.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = $1", tenant.PostgresRole()).Scan(&roles)
	if roles != 0 {
		t.Errorf("Provision created role %s although the database is foreign", tenant.PostgresRole())
	}

	// The saga's rollback.
	dr, err := ts.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1})
	if err != nil {
		t.Fatalf("rollback Deprovision: %v", err)
	}
	if len(dr.Skipped) != 1 || !strings.Contains(dr.Skipped[0], db) {
		t.Errorf("Skipped = %q, want the foreign database", dr.Skipped)
	}
	if after := foreignDBSnapshot(t, ctx, ts, db); after != before {
		t.Errorf("Deprovision changed the foreign database:\nbefore %s\nafter  %s", before, after)
	}
	// The spy still gets in, and the planted table is still there.
	spy, err := ts.connect(ctx, "spy", "spy-pw", db)
	if err != nil {
		t.Fatalf("the spy lost its access to the foreign database: %v", scrubConnectError(err))
	}
	spy.Close(ctx)
}

// foreignDBSnapshot is a database's owner, ACL, comment and tables.
func foreignDBSnapshot(t *testing.T, ctx context.Context, ts *testServer, db string) string {
	t.Helper()
	var s string
	err := ts.admin.QueryRow(ctx, `SELECT row(d.oid, pg_get_userbyid(d.datdba), d.datacl, shobj_description(d.oid, 'pg_database'))::text FROM pg_database d WHERE datname = $1`, db).Scan(&s)
	if err != nil {
		t.Fatalf("database %s: %v", db, err)
	}
	conn := ts.adminIn(t, ctx, db)
	var tables, schemaACL string
	if err := conn.QueryRow(ctx, `SELECT coalesce(string_agg(schemaname || '.' || tablename || ':' || tableowner, ',' ORDER BY 1), '') FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')`).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `SELECT row(pg_get_userbyid(nspowner), nspacl)::text FROM pg_namespace WHERE nspname = 'public'`).Scan(&schemaACL); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	return s + " tables " + tables + " schema public " + schemaACL
}

func mustExecPool(t *testing.T, ctx context.Context, ts *testServer, stmts ...string) {
	t.Helper()
	for _, stmt := range stmts {
		if _, err := ts.admin.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
}

// Scenario 3: databases an operator creates with PostgreSQL's defaults
// (PUBLIC has CONNECT) — before the agent starts or while it runs — are
// closed to tenants by default, and Verify proves it against pg_database.
func TestTenantReachesNoOtherDatabase(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := testCtx(t)
	mustExecPool(t, ctx, ts, "CREATE DATABASE appdb")

	first := events.MustTenantID("first")
	_, pw1 := ts.provision(t, ctx, first, 1)
	mustExecPool(t, ctx, ts, "CREATE DATABASE appdb_later")
	second := events.MustTenantID("second")
	resp2, pw2 := ts.provision(t, ctx, second, 1)

	for _, who := range []struct {
		tenant events.TenantID
		pw     secret.String
	}{{first, pw1}, {second, pw2}} {
		for _, db := range []string{"appdb", "appdb_later", "postgres", "template1", events.CanaryDatabase} {
			conn, err := ts.connect(ctx, who.tenant.PostgresRole(), who.pw, db)
			if err == nil {
				conn.Close(ctx)
				t.Errorf("%s connected to %s", who.tenant.PostgresRole(), db)
			} else if sqlState(err) != sqlstateInsufficientPrivilege {
				t.Errorf("%s connecting to %s: %v, want SQLSTATE 42501", who.tenant.PostgresRole(), db, scrubConnectError(err))
			}
		}
	}
	vr, err := ts.store.Verify(ctx, agent.VerifyRequest{Tenant: second, Generation: 1, Credential: resp2.Credential})
	if err != nil {
		t.Fatal(err)
	}
	requirePassed(t, vr)
	if c := check(vr, CheckOtherDatabasesDenied); !c.Passed {
		t.Errorf("%s: %+v", CheckOtherDatabasesDenied, c)
	}
}

// Scenario 6 (PostgreSQL half), the break-it test: each deliberate breakage
// an admin makes between Provision and Verify — inward or outward — makes
// Verify fail, and the check that names it fails.
func TestVerifyCatchesBrokenIsolation(t *testing.T) {
	ts := newTestServer(t, nil)
	mustExecPool(t, testCtx(t), ts, "CREATE ROLE spy LOGIN PASSWORD 'spy-pw'")
	for _, tc := range []struct {
		name  string
		check string
		// inDB statements run as the admin inside the tenant's database;
		// break statements in the admin database.
		brk, inDB, undo []string
	}{
		{name: "PUBLIC granted CONNECT on the tenant's database", check: CheckDatabasePrivate,
			brk: []string{"GRANT CONNECT ON DATABASE %[2]s TO PUBLIC"}},
		{name: "another role granted ALL on the tenant's database", check: CheckDatabasePrivate,
			brk: []string{"GRANT ALL ON DATABASE %[2]s TO spy"}},
		{name: "the tenant's database given to another owner", check: CheckDatabasePrivate,
			brk: []string{"ALTER DATABASE %[2]s OWNER TO spy"}},
		{name: "the tenant's database made a template", check: CheckDatabasePrivate,
			brk: []string{"ALTER DATABASE %[2]s IS_TEMPLATE true"}},
		{name: "the tenant role granted to another role", check: CheckRoleLockedDown,
			brk: []string{"GRANT %[1]s TO spy"}},
		{name: "the tenant role made member of another role", check: CheckRoleLockedDown,
			brk: []string{"GRANT spy TO %[1]s"}},
		{name: "the tenant role given CREATEDB", check: CheckRoleLockedDown,
			brk: []string{"ALTER ROLE %[1]s CREATEDB"}},
		{name: "the tenant role's connection limit removed", check: CheckRoleLockedDown,
			brk: []string{"ALTER ROLE %[1]s CONNECTION LIMIT -1"}},
		{name: "USAGE and CREATE on the tenant's public schema granted to PUBLIC", check: CheckSchemasPrivate,
			inDB: []string{"GRANT USAGE, CREATE ON SCHEMA public TO PUBLIC"}},
		{name: "a schema in the tenant's database owned by another role", check: CheckSchemasPrivate,
			inDB: []string{"CREATE SCHEMA planted AUTHORIZATION spy"}},
		{name: "a new database reachable through PUBLIC's CONNECT", check: CheckOtherDatabasesDenied,
			brk: []string{"CREATE DATABASE opendb"}, undo: []string{"DROP DATABASE opendb"}},
		{name: "the tenant role granted CONNECT on the canary", check: agent.CheckCanaryDenied,
			brk: []string{"GRANT CONNECT ON DATABASE " + ident(events.CanaryDatabase) + " TO %[1]s"}},
		{name: "the system record rewritten to another generation", check: CheckSystemRecord,
			brk:  []string{"UPDATE " + recordTable + " SET generation = 999999 WHERE tenant = '%[3]s'"},
			undo: []string{"UPDATE " + recordTable + " SET generation = 1 WHERE generation = 999999"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			tenant := events.MustTenantID(fmt.Sprintf("brk-%x", fnvShort(tc.name)))
			resp, _ := ts.provision(t, ctx, tenant, 1)
			verify := func() agent.VerifyResponse {
				t.Helper()
				vr, err := ts.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: resp.Credential})
				if err != nil {
					t.Fatal(err)
				}
				return vr
			}
			requirePassed(t, verify()) // the baseline: intact, Verify passes

			names := strings.NewReplacer("%[1]s", ident(tenant.PostgresRole()), "%[2]s", ident(tenant.PostgresDatabase()), "%[3]s", string(tenant))
			for _, s := range tc.brk {
				mustExecPool(t, ctx, ts, names.Replace(s))
			}
			if len(tc.inDB) > 0 {
				conn := ts.adminIn(t, ctx, tenant.PostgresDatabase())
				for _, s := range tc.inDB {
					if _, err := conn.Exec(ctx, s); err != nil {
						t.Fatalf("%s: %v", s, err)
					}
				}
			}
			// Afterwards the tenant goes, whatever was done to it, so that
			// the next case starts from a clean server.
			defer func() {
				for _, s := range tc.undo {
					mustExecPool(t, ctx, ts, s)
				}
				if _, err := ts.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1}); err != nil {
					t.Errorf("Deprovision after the breakage: %v", err)
				}
				if ok, _ := ts.exists(ctx, tenant); ok {
					t.Error("role or database left after Deprovision")
				}
			}()

			vr := verify()
			if vr.Passed() {
				t.Fatalf("Verify passed with the isolation broken: %+v", vr.Checks)
			}
			c := check(vr, tc.check)
			if c.Passed {
				t.Errorf("check %s passed: %+v", tc.check, vr.Checks)
			}
			t.Logf("%s: %s", tc.check, c.Detail)
		})
	}
}

func fnvShort(s string) uint32 {
	var h uint32 = 2166136261
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

// Tenants provisioned by an agent older than the system record carry their
// marker as the role's COMMENT, which a tenant cannot write; the record is
// filled from those once, when it is created, so that an upgrade does not
// orphan them. A comment naming another tenant is not imported.
func TestRoleMarkersImportedOnce(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := testCtx(t)
	legacy, liar, late := events.MustTenantID("legacy"), events.MustTenantID("liar"), events.MustTenantID("late")
	marker := func(id string, gen int) string {
		return fmt.Sprintf(`'{"managed_by":"tenantprov","tenant":"%s","generation":%d}'`, id, gen)
	}
	mustExecPool(t, ctx, ts,
		"CREATE ROLE "+ident(legacy.PostgresRole())+" LOGIN PASSWORD 'old-pw' CONNECTION LIMIT 20",
		"COMMENT ON ROLE "+ident(legacy.PostgresRole())+" IS "+marker("legacy", 4),
		"CREATE DATABASE "+ident(legacy.PostgresDatabase())+" OWNER "+ident(legacy.PostgresRole()),
		"CREATE ROLE "+ident(liar.PostgresRole())+" LOGIN",
		"COMMENT ON ROLE "+ident(liar.PostgresRole())+" IS "+marker("legacy", 4),
	)
	// The first call creates the record and imports.
	if err := ts.store.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: events.MustTenantID("nobody"), Generation: 1}); err != nil {
		t.Fatal(err)
	}
	// Imported later? No: the record exists now, comments are never read again.
	mustExecPool(t, ctx, ts,
		"CREATE ROLE "+ident(late.PostgresRole())+" LOGIN",
		"COMMENT ON ROLE "+ident(late.PostgresRole())+" IS "+marker("late", 1),
	)

	dr, err := ts.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: legacy, Generation: 4})
	if err != nil || len(dr.Skipped) != 0 || len(dr.Warnings) != 0 {
		t.Fatalf("Deprovision of the imported tenant = %+v, %v", dr, err)
	}
	if ok, _ := ts.exists(ctx, legacy); ok {
		t.Error("the imported tenant's role or database is still there")
	}
	for _, id := range []events.TenantID{liar, late} {
		_, err := ts.store.Provision(ctx, agent.ProvisionRequest{Tenant: id, Generation: 1, Password: newPassword(t)})
		if !errors.Is(err, agent.ErrConflict) {
			t.Errorf("Provision(%s) over a role that was not imported = %v, want ErrConflict", id, err)
		}
	}
}

// The tenant owns its database and may set its defaults (ALTER DATABASE …
// SET): a search_path that puts its own schema before pg_catalog would make
// the admin's sessions in that database — the schema lock-down of a
// re-provision, Verify's catalog queries — call the tenant's functions as
// the admin. The agent's sessions there ignore those defaults.
func TestTenantCannotHijackAdminSessions(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := testCtx(t)
	tenant := events.MustTenantID("hijacker")
	resp, pw := ts.provision(t, ctx, tenant, 1)
	conn, err := ts.connect(ctx, tenant.PostgresRole(), pw, tenant.PostgresDatabase())
	if err != nil {
		t.Fatal(scrubConnectError(err))
	}
	defer conn.Close(context.Background())
	// Every catalog function Verify calls in the tenant's database, shadowed
	// by one that creates a superuser when the admin runs it.
	trap := `LANGUAGE plpgsql AS $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'hijacked') THEN
    EXECUTE 'CREATE ROLE hijacked SUPERUSER LOGIN';
  END IF;
  RETURN NULL; END $$`
	for _, stmt := range []string{
		"CREATE FUNCTION public.pg_get_userbyid(oid) RETURNS name " + trap,
		`CREATE FUNCTION public.acldefault("char", oid) RETURNS aclitem[] ` + trap,
		"CREATE FUNCTION public.aclexplode(aclitem[]) RETURNS TABLE (grantor oid, grantee oid, privilege_type text, is_grantable boolean) LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'CREATE ROLE hijacked SUPERUSER LOGIN'; END $$",
		"ALTER DATABASE " + ident(tenant.PostgresDatabase()) + " SET search_path = public, pg_catalog",
		"ALTER DATABASE " + ident(tenant.PostgresDatabase()) + " SET default_transaction_read_only = on",
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			t.Fatalf("tenant: %s: %v", stmt, err)
		}
	}
	vr, err := ts.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: resp.Credential})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	_ = vr // the tenant may have broken its own checks; what matters is below
	if _, err := ts.store.Provision(ctx, agent.ProvisionRequest{Tenant: tenant, Generation: 1, Password: newPassword(t)}); err != nil {
		t.Errorf("re-provision: %v", err)
	}
	var hijacked bool
	if err := ts.admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hijacked')").Scan(&hijacked); err != nil {
		t.Fatal(err)
	}
	if hijacked {
		t.Fatal("the admin ran the tenant's function: role hijacked exists")
	}
	if _, err := ts.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1}); err != nil {
		t.Errorf("Deprovision: %v", err)
	}
}

// Two agent replicas start at once on a fresh server (both create the system
// record, the canary and revoke PUBLIC's CONNECT) and provision, verify and
// deprovision side by side — the same tenant from both, too.
func TestReplicasShareOneServer(t *testing.T) {
	a := newTestServer(t, nil)
	b := newTestServerOn(t, a.pg, nil)
	ctx := testCtx(t)
	mustExecPool(t, ctx, a, "CREATE DATABASE appdb")
	errs := make(chan error, 32)
	var wg sync.WaitGroup
	for i, ts := range []*testServer{a, b, a, b} {
		wg.Go(func() {
			own := events.MustTenantID(fmt.Sprintf("replica-%d", i))
			shared := events.MustTenantID("replica-shared")
			for _, tenant := range []events.TenantID{own, shared} {
				if _, err := ts.store.Provision(ctx, agent.ProvisionRequest{Tenant: tenant, Generation: 1, Password: newPassword(t)}); err != nil {
					errs <- fmt.Errorf("replica %d: provision %s: %w", i, tenant, err)
				}
			}
			pw := newPassword(t)
			resp, err := ts.store.Provision(ctx, agent.ProvisionRequest{Tenant: own, Generation: 1, Password: pw})
			if err != nil {
				errs <- fmt.Errorf("replica %d: provision %s: %w", i, own, err)
				return
			}
			vr, err := ts.store.Verify(ctx, agent.VerifyRequest{Tenant: own, Generation: 1, Credential: resp.Credential})
			if err != nil || !vr.Passed() {
				errs <- fmt.Errorf("replica %d: verify %s: %v %+v", i, own, err, vr.Checks)
			}
			if _, err := ts.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: own, Generation: 1}); err != nil {
				errs <- fmt.Errorf("replica %d: deprovision %s: %w", i, own, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var records int
	if err := a.admin.QueryRow(ctx, "SELECT count(*) FROM "+recordTable).Scan(&records); err != nil || records != 1 {
		t.Errorf("%d records (%v), want only replica-shared's", records, err)
	}
	var open bool
	if err := a.admin.QueryRow(ctx, "SELECT has_database_privilege('public', 'appdb', 'CONNECT')").Scan(&open); err != nil || open {
		t.Errorf("appdb open to PUBLIC: %t %v", open, err)
	}
}

// A tenant that was let into another database (an operator's grant) and
// created objects there is still removed completely: DROP OWNED BY runs in
// every database pg_shdepend names, so DROP ROLE cannot fail on them.
func TestDeprovisionRemovesObjectsInOtherDatabases(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := testCtx(t)
	tenant := events.MustTenantID("spread")
	_, pw := ts.provision(t, ctx, tenant, 1)
	role := ident(tenant.PostgresRole())
	mustExecPool(t, ctx, ts, "CREATE DATABASE elsewhere", "GRANT CONNECT, CREATE ON DATABASE elsewhere TO "+role)
	conn, err := ts.connect(ctx, tenant.PostgresRole(), pw, "elsewhere")
	if err != nil {
		t.Fatal(scrubConnectError(err))
	}
	if _, err := conn.Exec(ctx, "CREATE SCHEMA mine; CREATE TABLE mine.t (v text)"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	dr, err := ts.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1})
	if err != nil || len(dr.Skipped)+len(dr.Warnings) != 0 {
		t.Fatalf("Deprovision = %+v, %v", dr, err)
	}
	if ok, _ := ts.exists(ctx, tenant); ok {
		t.Error("role or database left")
	}
	var schemas int
	if err := ts.adminIn(t, ctx, "elsewhere").QueryRow(ctx, "SELECT count(*) FROM pg_namespace WHERE nspname = 'mine'").Scan(&schemas); err != nil || schemas != 0 {
		t.Errorf("the tenant's schema in another database survived (%d, %v)", schemas, err)
	}
}

// A re-provision (a redelivered command) undoes what the tenant may do to
// its own database's flags: a template database passes Verify again.
func TestReprovisionResetsTemplate(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := testCtx(t)
	tenant := events.MustTenantID("templated")
	_, pw := ts.provision(t, ctx, tenant, 1)
	conn, err := ts.connect(ctx, tenant.PostgresRole(), pw, tenant.PostgresDatabase())
	if err != nil {
		t.Fatal(scrubConnectError(err))
	}
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+ident(tenant.PostgresDatabase())+" IS_TEMPLATE true"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	resp, _ := ts.provision(t, ctx, tenant, 1)
	vr, err := ts.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: resp.Credential})
	if err != nil {
		t.Fatal(err)
	}
	requirePassed(t, vr)
}
