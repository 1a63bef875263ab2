package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

func newPassword(t testing.TB) secret.String {
	t.Helper()
	pw, err := secret.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return pw
}

func (ts *testServer) provision(t testing.TB, ctx context.Context, tenant events.TenantID, gen uint64) (agent.ProvisionResponse, secret.String) {
	t.Helper()
	pw := newPassword(t)
	resp, err := ts.store.Provision(ctx, agent.ProvisionRequest{Tenant: tenant, Generation: gen, SagaID: "saga-test", Password: pw})
	if err != nil {
		t.Fatalf("Provision(%s, gen %d): %v", tenant, gen, err)
	}
	return resp, pw
}

func requirePassed(t *testing.T, resp agent.VerifyResponse) {
	t.Helper()
	if !resp.Passed() {
		t.Fatalf("verify failed: %+v", resp.Checks)
	}
	names := map[string]bool{}
	for _, c := range resp.Checks {
		names[c.Name] = true
	}
	for _, n := range []string{agent.CheckOwnAccess, agent.CheckCanaryDenied, agent.CheckWrongPasswordRefused, agent.CheckAdminDenied} {
		if !names[n] {
			t.Errorf("check %s did not run: %+v", n, resp.Checks)
		}
	}
}

func check(resp agent.VerifyResponse, name string) events.Check {
	for _, c := range resp.Checks {
		if c.Name == name {
			return c
		}
	}
	return events.Check{Name: name, Detail: "missing"}
}

// TestPostgresStore exercises the store on one server; the subtests are
// independent tenants.
func TestPostgresStore(t *testing.T) {
	ts := newTestServer(t, nil)

	t.Run("ProvisionShape", func(t *testing.T) {
		ctx := testCtx(t)
		tenant := events.MustTenantID("acme-eu")
		resp, pw := ts.provision(t, ctx, tenant, 3)
		role, db := tenant.PostgresRole(), tenant.PostgresDatabase()

		// Resources and credential, keys as DESIGN.md §6.
		wantRes := map[string]string{"database": db, "role": role, "pg_hba": "hostssl tenant_acme-eu tenant_acme-eu 0.0.0.0/0 scram-sha-256"}
		for k, v := range wantRes {
			if resp.Resources[k] != v {
				t.Errorf("Resources[%s] = %q, want %q", k, resp.Resources[k], v)
			}
		}
		c := resp.Credential
		if c.String("host") != "127.0.0.1" || c["port"] != ts.pg.Port || c.String("database") != db || c.String("user") != role || c.Secret("password") != pw {
			t.Errorf("credential = %v", c)
		}
		u, err := url.Parse(c.Secret("url").Reveal())
		if err != nil {
			t.Fatal(err)
		}
		if p, _ := u.User.Password(); u.Scheme != "postgres" || u.User.Username() != role || p != pw.Reveal() || u.Path != "/"+db || u.Query().Get("sslmode") != "disable" {
			t.Errorf("url has the wrong parts: user=%s db=%s sslmode=%s", u.User.Username(), u.Path, u.Query().Get("sslmode"))
		}
		if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "PG_SSLMODE=disable") {
			t.Errorf("warnings = %q, want one about sslmode=disable", resp.Warnings)
		}
		if b, _ := json.Marshal(resp); strings.Contains(string(b), pw.Reveal()) {
			t.Error("the response marshals the password in clear")
		}

		// The role: least privilege, connection limit, a SCRAM verifier.
		var super, createDB, createRole, repl, bypass, inherit, login bool
		var connLimit int
		var rolpassword string
		err = ts.admin.QueryRow(ctx, `SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolinherit, rolcanlogin, rolconnlimit, rolpassword FROM pg_authid WHERE rolname = $1`, role).
			Scan(&super, &createDB, &createRole, &repl, &bypass, &inherit, &login, &connLimit, &rolpassword)
		if err != nil {
			t.Fatal(err)
		}
		if super || createDB || createRole || repl || bypass || inherit || !login || connLimit != 20 {
			t.Errorf("role attributes: super=%t createdb=%t createrole=%t replication=%t bypassrls=%t inherit=%t login=%t connlimit=%d",
				super, createDB, createRole, repl, bypass, inherit, login, connLimit)
		}
		if !verifierPattern.MatchString(rolpassword) {
			t.Errorf("rolpassword is not a SCRAM verifier: %.20s…", rolpassword)
		}

		// The system record: generation and the OIDs of role and database;
		// no comment is written (nor trusted).
		var gen int64
		var recRole, recDB bool
		var comments int
		err = ts.admin.QueryRow(ctx, `SELECT t.generation, t.role_oid = r.oid, t.database_oid = d.oid,
			(SELECT count(*) FROM pg_shdescription WHERE objoid IN (r.oid, d.oid))
			FROM tenantprov.postgres_tenants t, pg_roles r, pg_database d WHERE t.tenant = $1 AND r.rolname = $2 AND d.datname = $2`, string(tenant), role).
			Scan(&gen, &recRole, &recDB, &comments)
		if err != nil {
			t.Fatalf("system record: %v", err)
		}
		if gen != 3 || !recRole || !recDB || comments != 0 {
			t.Errorf("system record: generation %d, role OID matches %t, database OID matches %t; %d comments", gen, recRole, recDB, comments)
		}
		var recordPublic, schemaPublic bool
		err = ts.admin.QueryRow(ctx, `SELECT has_table_privilege('public', 'tenantprov.postgres_tenants', 'SELECT,INSERT,UPDATE,DELETE'), has_schema_privilege('public', 'tenantprov', 'USAGE,CREATE')`).
			Scan(&recordPublic, &schemaPublic)
		if err != nil || recordPublic || schemaPublic {
			t.Errorf("PUBLIC has privileges on the system record: table %t, schema %t (%v)", recordPublic, schemaPublic, err)
		}

		// The database: owned by the role, PUBLIC without privileges, the
		// role with CONNECT and TEMPORARY.
		var owner string
		var publicConnect, publicTemp, roleConnect, roleTemp bool
		err = ts.admin.QueryRow(ctx, `SELECT pg_get_userbyid(datdba),
			has_database_privilege('public', oid, 'CONNECT'), has_database_privilege('public', oid, 'TEMPORARY'),
			has_database_privilege($2, oid, 'CONNECT'), has_database_privilege($2, oid, 'TEMPORARY')
			FROM pg_database WHERE datname = $1`, db, role).Scan(&owner, &publicConnect, &publicTemp, &roleConnect, &roleTemp)
		if err != nil {
			t.Fatal(err)
		}
		if owner != role || publicConnect || publicTemp || !roleConnect || !roleTemp {
			t.Errorf("database: owner=%s public connect=%t temp=%t; role connect=%t temp=%t", owner, publicConnect, publicTemp, roleConnect, roleTemp)
		}

		// The public schema inside: owned by the role, nothing for PUBLIC.
		conn, err := ts.connect(ctx, ts.pg.AdminUser, secret.String(ts.pg.AdminPassword), db)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var schemaOwner string
		var publicUsage, publicCreate bool
		err = conn.QueryRow(ctx, `SELECT pg_get_userbyid(nspowner), has_schema_privilege('public', oid, 'USAGE'), has_schema_privilege('public', oid, 'CREATE') FROM pg_namespace WHERE nspname = 'public'`).
			Scan(&schemaOwner, &publicUsage, &publicCreate)
		if err != nil {
			t.Fatal(err)
		}
		if schemaOwner != role || publicUsage || publicCreate {
			t.Errorf("schema public: owner=%s, PUBLIC usage=%t create=%t", schemaOwner, publicUsage, publicCreate)
		}

		// The canary: exists, marked, PUBLIC may not connect.
		var canaryComment string
		var canaryPublic bool
		err = ts.admin.QueryRow(ctx, `SELECT shobj_description(oid, 'pg_database'), has_database_privilege('public', oid, 'CONNECT') FROM pg_database WHERE datname = $1`, events.CanaryDatabase).
			Scan(&canaryComment, &canaryPublic)
		if err != nil {
			t.Fatalf("canary database: %v", err)
		}
		var cm Marker
		if err := json.Unmarshal([]byte(canaryComment), &cm); err != nil || cm.Purpose != "canary" || canaryPublic {
			t.Errorf("canary: comment %q, PUBLIC connect %t", canaryComment, canaryPublic)
		}

		vr, err := ts.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 3, Credential: resp.Credential})
		if err != nil {
			t.Fatal(err)
		}
		requirePassed(t, vr)
	})

	// Postgres stores exactly the verifier we computed, and accepts the
	// password it was computed from.
	t.Run("VerifierStoredVerbatim", func(t *testing.T) {
		ctx := testCtx(t)
		pw := newPassword(t)
		v, err := SCRAMVerifier(pw)
		if err != nil {
			t.Fatal(err)
		}
		lit, _ := quoteLiteral(v)
		if _, err := ts.admin.Exec(ctx, "CREATE ROLE "+ident("verifier-check")+" LOGIN PASSWORD "+lit); err != nil {
			t.Fatal(err)
		}
		// PUBLIC's CONNECT on postgres is revoked by the agent
		// (every database but PG_KEEP_PUBLIC_CONNECT); this role is not a tenant.
		if _, err := ts.admin.Exec(ctx, "GRANT CONNECT ON DATABASE postgres TO "+ident("verifier-check")); err != nil {
			t.Fatal(err)
		}
		var stored string
		if err := ts.admin.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = 'verifier-check'").Scan(&stored); err != nil {
			t.Fatal(err)
		}
		if stored != v {
			t.Fatalf("pg_authid holds %.40s…, want our verifier %.40s… (the server re-hashed it as a plaintext password)", stored, v)
		}
		conn, err := ts.connect(ctx, "verifier-check", pw, "postgres")
		if err != nil {
			t.Fatalf("login with the password: %v", scrubConnectError(err))
		}
		conn.Close(ctx)

		// And the other way round: the verifier PostgreSQL computes itself
		// is the one we compute from its salt.
		if _, err := ts.admin.Exec(ctx, "SET password_encryption = 'scram-sha-256'; ALTER ROLE "+ident("verifier-check")+" PASSWORD 'pencil'"); err != nil {
			t.Fatal(err)
		}
		if err := ts.admin.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = 'verifier-check'").Scan(&stored); err != nil {
			t.Fatal(err)
		}
		m := verifierPattern.FindStringSubmatch(stored)
		if m == nil {
			t.Fatalf("server verifier %q", stored)
		}
		salt, _ := decodeB64(m[2])
		ours, err := scramVerifier("pencil", salt, SCRAMIterations)
		if err != nil || ours != stored {
			t.Errorf("our verifier for the server's salt: %s\nserver's: %s", ours, stored)
		}
	})

	t.Run("ReprovisionResetsPassword", func(t *testing.T) {
		ctx := testCtx(t)
		tenant := events.MustTenantID("again")
		first, pw1 := ts.provision(t, ctx, tenant, 1)
		second, pw2 := ts.provision(t, ctx, tenant, 1)
		if first.Resources["database"] != second.Resources["database"] || first.Resources["role"] != second.Resources["role"] {
			t.Errorf("resources changed: %v → %v", first.Resources, second.Resources)
		}
		if _, err := ts.connect(ctx, tenant.PostgresRole(), pw1, tenant.PostgresDatabase()); sqlState(err) != sqlstateInvalidPassword {
			t.Errorf("the old password: %v, want 28P01", err)
		}
		conn, err := ts.connect(ctx, tenant.PostgresRole(), pw2, tenant.PostgresDatabase())
		if err != nil {
			t.Fatalf("the new password: %v", scrubConnectError(err))
		}
		conn.Close(ctx)
		var roles, dbs int
		_ = ts.admin.QueryRow(ctx, "SELECT (SELECT count(*) FROM pg_roles WHERE rolname LIKE 'tenant_again%'), (SELECT count(*) FROM pg_database WHERE datname LIKE 'tenant_again%')").Scan(&roles, &dbs)
		if roles != 1 || dbs != 1 {
			t.Errorf("%d roles and %d databases, want one each", roles, dbs)
		}
	})

	// A tampered role (someone granted CREATEDB) is reset by re-provision.
	t.Run("ReprovisionResetsAttributes", func(t *testing.T) {
		ctx := testCtx(t)
		tenant := events.MustTenantID("tampered")
		ts.provision(t, ctx, tenant, 1)
		if _, err := ts.admin.Exec(ctx, "ALTER ROLE "+ident(tenant.PostgresRole())+" CREATEDB CREATEROLE INHERIT CONNECTION LIMIT 500"); err != nil {
			t.Fatal(err)
		}
		resp, _ := ts.provision(t, ctx, tenant, 1)
		vr, err := ts.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: resp.Credential})
		if err != nil {
			t.Fatal(err)
		}
		requirePassed(t, vr)
		var inherit bool
		var limit int
		_ = ts.admin.QueryRow(ctx, "SELECT rolinherit, rolconnlimit FROM pg_roles WHERE rolname = $1", tenant.PostgresRole()).Scan(&inherit, &limit)
		if inherit || limit != 20 {
			t.Errorf("inherit=%t connlimit=%d after re-provision", inherit, limit)
		}
	})

	// Verify reports a failed check (not an error) when a privilege leaks.
	t.Run("VerifyCatchesLeakedPrivileges", func(t *testing.T) {
		ctx := testCtx(t)
		tenant := events.MustTenantID("leaky")
		resp, _ := ts.provision(t, ctx, tenant, 1)
		if _, err := ts.admin.Exec(ctx, "GRANT CONNECT ON DATABASE "+ident(events.CanaryDatabase)+" TO "+ident(tenant.PostgresRole())); err != nil {
			t.Fatal(err)
		}
		if _, err := ts.admin.Exec(ctx, "ALTER ROLE "+ident(tenant.PostgresRole())+" CREATEDB"); err != nil {
			t.Fatal(err)
		}
		vr, err := ts.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: resp.Credential})
		if err != nil {
			t.Fatal(err)
		}
		if vr.Passed() || check(vr, agent.CheckCanaryDenied).Passed || check(vr, agent.CheckAdminDenied).Passed || !check(vr, agent.CheckOwnAccess).Passed {
			t.Errorf("checks: %+v", vr.Checks)
		}
		_, _ = ts.admin.Exec(ctx, "REVOKE CONNECT ON DATABASE "+ident(events.CanaryDatabase)+" FROM "+ident(tenant.PostgresRole()))
	})

	t.Run("VerifyRefusesAnotherTenantsCredential", func(t *testing.T) {
		ctx := testCtx(t)
		a, b := events.MustTenantID("cred-a"), events.MustTenantID("cred-b")
		ra, _ := ts.provision(t, ctx, a, 1)
		ts.provision(t, ctx, b, 1)
		_, err := ts.store.Verify(ctx, agent.VerifyRequest{Tenant: b, Generation: 1, Credential: ra.Credential})
		if !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("Verify(b, a's credential) = %v, want ErrInvalidRequest", err)
		}
	})

	t.Run("ForeignResourcesConflict", func(t *testing.T) {
		for _, tc := range []struct {
			name, tenant string
			create       []string
			skipped      int
		}{
			{"role", "foreign-role", []string{"CREATE ROLE %[1]s LOGIN"}, 1},
			{"database", "foreign-db", []string{"CREATE DATABASE %[1]s"}, 1},
			{"database commented by someone else", "foreign-comment", []string{"CREATE DATABASE %[1]s", `COMMENT ON DATABASE %[1]s IS '{"managed_by":"someone"}'`}, 1},
			{"marker for another tenant", "foreign-marker", []string{"CREATE ROLE %[1]s", `COMMENT ON ROLE %[1]s IS '{"managed_by":"tenantprov","tenant":"other"}'`}, 1},
			// Owned by a role of ours, but not this tenant's: not ours.
			// Comments prove nothing: only the system record does.
			{"role and database with tenantprov's old comment markers", "half-foreign", []string{"CREATE ROLE %[1]s", `COMMENT ON ROLE %[1]s IS '{"managed_by":"tenantprov","tenant":"half-foreign","generation":1}'`, "CREATE DATABASE %[1]s OWNER %[1]s", `COMMENT ON DATABASE %[1]s IS '{"managed_by":"tenantprov","tenant":"half-foreign","generation":1}'`}, 2},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ctx := testCtx(t)
				tenant := events.MustTenantID(tc.tenant)
				for _, stmt := range tc.create {
					if _, err := ts.admin.Exec(ctx, fmt.Sprintf(stmt, ident(tenant.PostgresRole()))); err != nil {
						t.Fatal(err)
					}
				}
				// The foreign database is open to PUBLIC, so every tenant's
				// Verify on this server would fail while it exists.
				t.Cleanup(func() {
					_, _ = ts.admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+ident(tenant.PostgresDatabase()))
					_, _ = ts.admin.Exec(context.Background(), "DROP ROLE IF EXISTS "+ident(tenant.PostgresRole()))
				})
				before := snapshot(t, ctx, ts, tenant)
				_, err := ts.store.Provision(ctx, agent.ProvisionRequest{Tenant: tenant, Generation: 1, Password: newPassword(t)})
				if !errors.Is(err, agent.ErrConflict) {
					t.Fatalf("Provision = %v, want ErrConflict", err)
				}
				if perm, reason := agent.Classify(err); !perm || reason != events.ReasonConflict {
					t.Errorf("Classify = %t %s", perm, reason)
				}
				if after := snapshot(t, ctx, ts, tenant); after != before {
					t.Errorf("Provision changed the foreign resources:\nbefore %s\nafter  %s", before, after)
				}
				dr, err := ts.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1})
				if err != nil {
					t.Fatal(err)
				}
				if len(dr.Skipped) != tc.skipped {
					t.Errorf("Skipped = %q, want %d", dr.Skipped, tc.skipped)
				}
				if after := snapshot(t, ctx, ts, tenant); after != before {
					t.Errorf("Deprovision changed the foreign resources:\nbefore %s\nafter  %s", before, after)
				}
			})
		}
	})

	// An agent that died between CREATE DATABASE and COMMENT ON DATABASE
	// leaves an unmarked database owned by our role: the retry adopts it.
	t.Run("InterruptedAfterCreateDatabase", func(t *testing.T) {
		ctx := testCtx(t)
		tenant := events.MustTenantID("crashed")
		if err := ts.interrupt(ctx, tenant, 1, newPassword(t)); err != nil {
			t.Fatal(err)
		}
		if _, err := ts.admin.Exec(ctx, "CREATE DATABASE "+ident(tenant.PostgresDatabase())+" OWNER "+ident(tenant.PostgresRole())); err != nil {
			t.Fatal(err)
		}
		resp, _ := ts.provision(t, ctx, tenant, 1)
		vr, err := ts.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: resp.Credential})
		if err != nil {
			t.Fatal(err)
		}
		requirePassed(t, vr)
		var recorded bool
		_ = ts.admin.QueryRow(ctx, "SELECT t.database_oid = d.oid FROM tenantprov.postgres_tenants t, pg_database d WHERE t.tenant = $1 AND d.datname = $2", string(tenant), tenant.PostgresDatabase()).Scan(&recorded)
		if !recorded {
			t.Error("the system record does not name the database after the retry")
		}
	})

	// A role dropped and recreated under the tenant's name by someone else
	// has another OID: it is foreign, though the record has the tenant.
	t.Run("ReplacedRoleIsForeign", func(t *testing.T) {
		ctx := testCtx(t)
		tenant := events.MustTenantID("replaced")
		ts.provision(t, ctx, tenant, 1)
		role, db := ident(tenant.PostgresRole()), ident(tenant.PostgresDatabase())
		mustExecPool(t, ctx, ts, "DROP DATABASE "+db, "DROP ROLE "+role, "CREATE ROLE "+role+" LOGIN")
		before := snapshot(t, ctx, ts, tenant)
		_, err := ts.store.Provision(ctx, agent.ProvisionRequest{Tenant: tenant, Generation: 1, Password: newPassword(t)})
		if !errors.Is(err, agent.ErrConflict) {
			t.Fatalf("Provision over a replaced role = %v, want ErrConflict", err)
		}
		dr, err := ts.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1})
		if err != nil || len(dr.Skipped) != 1 {
			t.Fatalf("Deprovision = %+v, %v; want the role skipped", dr, err)
		}
		if after := snapshot(t, ctx, ts, tenant); after != before {
			t.Errorf("the replaced role changed:\nbefore %s\nafter  %s", before, after)
		}
	})

	t.Run("StaleGeneration", func(t *testing.T) {
		ctx := testCtx(t)
		tenant := events.MustTenantID("stale")
		resp, pw := ts.provision(t, ctx, tenant, 5)
		_, err := ts.store.Provision(ctx, agent.ProvisionRequest{Tenant: tenant, Generation: 4, Password: newPassword(t)})
		if !errors.Is(err, ErrStaleGeneration) {
			t.Fatalf("Provision(gen 4 after 5) = %v, want ErrStaleGeneration", err)
		}
		dr, err := ts.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 4})
		if err != nil || len(dr.Warnings) != 1 {
			t.Fatalf("Deprovision(gen 4 after 5) = %+v, %v; want one warning", dr, err)
		}
		if ok, _ := ts.exists(ctx, tenant); !ok {
			t.Fatal("a stale deprovision removed the current generation")
		}
		conn, err := ts.connect(ctx, tenant.PostgresRole(), pw, tenant.PostgresDatabase())
		if err != nil {
			t.Fatalf("generation 5's password no longer works: %v", scrubConnectError(err))
		}
		conn.Close(ctx)
		_ = resp
	})

	t.Run("DeprovisionTerminatesSessions", func(t *testing.T) {
		ctx := testCtx(t)
		tenant := events.MustTenantID("busy")
		_, pw := ts.provision(t, ctx, tenant, 1)
		// Two sessions in its own database (postgres itself is closed to
		// tenants: the agent revokes PUBLIC CONNECT everywhere).
		own, err := ts.connect(ctx, tenant.PostgresRole(), pw, tenant.PostgresDatabase())
		if err != nil {
			t.Fatal(scrubConnectError(err))
		}
		defer own.Close(context.Background())
		other, err := ts.connect(ctx, tenant.PostgresRole(), pw, tenant.PostgresDatabase())
		if err != nil {
			t.Fatal(scrubConnectError(err))
		}
		defer other.Close(context.Background())
		if _, err := own.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
			t.Fatal(err)
		}
		if _, err := ts.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1}); err != nil {
			t.Fatal(err)
		}
		for name, c := range map[string]*pgx.Conn{"own": own, "postgres": other} {
			if err := c.Ping(ctx); err == nil {
				t.Errorf("the tenant's session in %s survived deprovision", name)
			}
		}
		if ok, _ := ts.exists(ctx, tenant); ok {
			t.Error("role or database still exists")
		}
		if _, err := ts.connect(ctx, tenant.PostgresRole(), pw, tenant.PostgresDatabase()); err == nil {
			t.Error("the credential still logs in")
		}
		dr, err := ts.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1})
		if err != nil || len(dr.Skipped) != 0 {
			t.Errorf("second Deprovision = %+v, %v", dr, err)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		ctx := testCtx(t)
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for i := range 8 {
			tenant := events.MustTenantID(fmt.Sprintf("conc-%d", i%4)) // each tenant twice at once
			wg.Go(func() {
				pw, _ := secret.Generate()
				resp, err := ts.store.Provision(ctx, agent.ProvisionRequest{Tenant: tenant, Generation: 1, Password: pw})
				if err != nil {
					errs <- fmt.Errorf("provision %s: %w", tenant, err)
					return
				}
				_ = resp
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

// snapshot describes everything under a tenant's names, for "left exactly
// as it was" comparisons.
func snapshot(t *testing.T, ctx context.Context, ts *testServer, tenant events.TenantID) string {
	t.Helper()
	var s string
	err := ts.admin.QueryRow(ctx, `SELECT coalesce((SELECT row(r.*, shobj_description(r.oid, 'pg_authid'))::text FROM pg_authid r WHERE rolname = $1), 'no role') || ' / ' ||
		coalesce((SELECT row(d.datname, d.datdba, d.datacl, d.datconnlimit, shobj_description(d.oid, 'pg_database'))::text FROM pg_database d WHERE datname = $1), 'no database')`,
		tenant.PostgresRole()).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestVerifyFailsUnderTrust: a pg_hba.conf that lets the tenant in without a
// password must fail wrong_password_refused, and so Verify.
func TestVerifyFailsUnderTrust(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := testCtx(t)
	tenant := events.MustTenantID("trusting")
	resp, _ := ts.provision(t, ctx, tenant, 1)

	hba := filepath.Join(ts.pg.DataDir, "pg_hba.conf")
	old, err := os.ReadFile(hba)
	if err != nil {
		t.Fatal(err)
	}
	trust := fmt.Sprintf("host %s %s 127.0.0.1/32 trust\n", tenant.PostgresDatabase(), tenant.PostgresRole())
	if err := os.WriteFile(hba, append([]byte(trust), old...), 0o600); err != nil {
		t.Fatal(err)
	}
	var reloaded bool
	if err := ts.admin.QueryRow(ctx, "SELECT pg_reload_conf()").Scan(&reloaded); err != nil || !reloaded {
		t.Fatalf("reload: %v", err)
	}
	// The reload is asynchronous: wait until the trust line is in force.
	var lines int
	for range 50 {
		_ = ts.admin.QueryRow(ctx, "SELECT count(*) FROM pg_hba_file_rules WHERE auth_method = 'trust'").Scan(&lines)
		if lines > 0 {
			if c, err := ts.connect(ctx, tenant.PostgresRole(), "wrong", tenant.PostgresDatabase()); err == nil {
				c.Close(ctx)
				break
			}
		}
		sleep(ctx, 100)
	}

	vr, err := ts.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: resp.Credential})
	if err != nil {
		t.Fatal(err)
	}
	c := check(vr, agent.CheckWrongPasswordRefused)
	if c.Passed || vr.Passed() {
		t.Fatalf("Verify passed under trust authentication: %+v", vr.Checks)
	}
	if !strings.Contains(c.Detail, "trust") {
		t.Errorf("detail %q does not point at trust", c.Detail)
	}
	if !check(vr, agent.CheckOwnAccess).Passed {
		t.Errorf("own access under trust: %+v", vr.Checks)
	}
}

// TestErrorsNeverContainSecrets drives the failure paths — server down,
// foreign resources, bad credentials — and checks that no error carries the
// password or the URL in any format.
func TestErrorsNeverContainSecrets(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := testCtx(t)
	tenant := events.MustTenantID("leak-check")
	resp, pw := ts.provision(t, ctx, tenant, 1)
	secrets := []string{pw.Reveal(), resp.Credential.Secret("url").Reveal(), ts.pg.AdminPassword}

	var errs []error
	collect := func(what string, err error) {
		if err == nil {
			t.Errorf("%s: no error", what)
			return
		}
		errs = append(errs, fmt.Errorf("%s: %w", what, err))
	}

	// A credential with a password the server does not know (a verify
	// that cannot log in at all reports failed checks, not an error).
	bad := agent.Credential{"user": tenant.PostgresRole(), "database": tenant.PostgresDatabase(), "password": pw + "x"}
	vr, err := ts.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Credential: bad})
	if err != nil {
		collect("verify with a wrong password", err)
	} else {
		for _, c := range vr.Checks {
			for _, s := range secrets {
				if strings.Contains(c.Detail, s) {
					t.Errorf("check %s detail holds a secret", c.Name)
				}
			}
		}
	}
	// Foreign role → conflict.
	other := events.MustTenantID("leak-foreign")
	_, _ = ts.admin.Exec(ctx, "CREATE ROLE "+ident(other.PostgresRole()))
	_, err = ts.store.Provision(ctx, agent.ProvisionRequest{Tenant: other, Generation: 1, Password: pw})
	collect("provision over a foreign role", err)
	// Unsupported password.
	_, err = ts.store.Provision(ctx, agent.ProvisionRequest{Tenant: tenant, Generation: 1, Password: pw + " é"})
	collect("provision with an unsupported password", err)

	// Server down: every call fails.
	ts.pg.Stop(t)
	_, err = ts.store.Provision(ctx, agent.ProvisionRequest{Tenant: tenant, Generation: 1, Password: pw})
	collect("provision, server down", err)
	_, err = ts.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: resp.Credential})
	collect("verify, server down", err)
	_, err = ts.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1})
	collect("deprovision, server down", err)
	collect("ping, server down", ts.store.Ping(ctx))
	// A connect error straight from the tenant path.
	_, err = ts.store.connectTenant(ctx, tenant.PostgresRole(), pw, tenant.PostgresDatabase())
	collect("connect as tenant, server down", err)

	for _, err := range errs {
		if perm, _ := agent.Classify(err); strings.Contains(err.Error(), "server down") && perm {
			t.Errorf("%v: classified permanent, want transient", err)
		}
		for _, format := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
			out := fmt.Sprintf(format, err)
			for _, s := range secrets {
				if strings.Contains(out, s) {
					t.Errorf("%s of %q holds a secret", format, err)
				}
			}
		}
	}
	ts.pg.Start(t)
}

// TestServerLogNeverHoldsPassword logs every statement the server runs
// (log_statement = all) through provision, verify, re-provision and
// deprovision: the log shows the verifiers, never a password.
func TestServerLogNeverHoldsPassword(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := testCtx(t)
	for _, stmt := range []string{"ALTER SYSTEM SET log_statement = 'all'", "ALTER SYSTEM SET log_min_error_statement = 'error'", "SELECT pg_reload_conf()"} {
		if _, err := ts.admin.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	sleep(ctx, 200) // the postmaster signals the reload to every backend
	tenant := events.MustTenantID("logged")
	resp, pw1 := ts.provision(t, ctx, tenant, 1)
	vr, err := ts.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: resp.Credential})
	if err != nil {
		t.Fatal(err)
	}
	requirePassed(t, vr)
	_, pw2 := ts.provision(t, ctx, tenant, 1)
	if _, err := ts.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1}); err != nil {
		t.Fatal(err)
	}

	logPath := filepath.Join(filepath.Dir(ts.pg.DataDir), "postgres.log")
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatalf("server log: %v", err)
	}
	serverLog := string(b)
	for _, want := range []string{`CREATE ROLE "tenant_logged"`, `ALTER ROLE "tenant_logged"`, "PASSWORD 'SCRAM-SHA-256$4096:", `DROP DATABASE IF EXISTS "tenant_logged" WITH (FORCE)`} {
		if !strings.Contains(serverLog, want) {
			t.Fatalf("the server log lacks %q: statement logging did not work (%s)", want, logPath)
		}
	}
	for i, pw := range []secret.String{pw1, pw2} {
		if strings.Contains(serverLog, pw.Reveal()) {
			t.Errorf("password %d is in the server log", i+1)
		}
	}
}
