package pgstore

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/testkit"
	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// testServer is one test's PostgreSQL with a Store on it and an admin pool
// for the probes.
type testServer struct {
	pg    *testkit.Postgres
	store *Store
	admin *pgxpool.Pool
}

// newTestServer starts a fresh PostgreSQL and a Store on it. mutate may
// adjust the Config before New.
func newTestServer(t testing.TB, mutate func(*Config)) *testServer {
	t.Helper()
	pg := testkit.StartPostgres(t)
	return newTestServerOn(t, pg, mutate)
}

func newTestServerOn(t testing.TB, pg *testkit.Postgres, mutate func(*Config)) *testServer {
	t.Helper()
	cfg := Defaults()
	cfg.AdminURL = secret.String(pg.AdminURL())
	cfg.SSLMode = "disable" // the test cluster has no TLS
	cfg.AdminMaxConns = 8
	cfg.Timeout = 30 * time.Second
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(s.Close)
	admin, err := pgxpool.New(context.Background(), pg.AdminURL())
	if err != nil {
		t.Fatalf("admin pool: %v", err)
	}
	t.Cleanup(admin.Close)
	return &testServer{pg: pg, store: s, admin: admin}
}

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// connect opens a session with an explicit user, password and database on
// the test server.
func (ts *testServer) connect(ctx context.Context, user string, password secret.String, db string) (*pgx.Conn, error) {
	return pgx.Connect(ctx, ts.pg.URL(user, password.Reveal(), db))
}

// harness is the storetest.Harness for PostgreSQL.
func (ts *testServer) harness() *storetest.Harness {
	return &storetest.Harness{
		Store:         ts.store,
		OwnAccess:     ts.ownAccess,
		CrossAccess:   ts.crossAccess,
		Exists:        ts.exists,
		CreateForeign: ts.createForeign,
		ForeignIntact: ts.foreignIntact,
		Interrupt:     ts.interrupt,
	}
}

// ownAccess connects with the credential's URL (what a tenant application
// would use) and writes and reads a row in its own database.
func (ts *testServer) ownAccess(ctx context.Context, tenant events.TenantID, cred agent.Credential) error {
	u := cred.Secret("url")
	if u.IsZero() {
		return errors.New("credential has no url")
	}
	conn, err := pgx.Connect(ctx, u.Reveal())
	if err != nil {
		return fmt.Errorf("connect with the credential's url: %w", scrubConnectError(err))
	}
	defer conn.Close(ctx)
	var db, user string
	if err := conn.QueryRow(ctx, "SELECT current_database(), current_user").Scan(&db, &user); err != nil {
		return err
	}
	if db != tenant.PostgresDatabase() || user != tenant.PostgresRole() {
		return fmt.Errorf("connected to %s as %s, want %s as %s", db, user, tenant.PostgresDatabase(), tenant.PostgresRole())
	}
	for _, stmt := range []string{
		"CREATE TABLE IF NOT EXISTS app_data (id serial PRIMARY KEY, v text)",
		"INSERT INTO app_data (v) VALUES ('hello')",
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("%s: %w", stmt, err)
		}
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM app_data WHERE v = 'hello'").Scan(&n); err != nil || n < 1 {
		return fmt.Errorf("read back: n=%d err=%v", n, err)
	}
	return nil
}

// crossAccess tries to connect with cred to other's database.
func (ts *testServer) crossAccess(ctx context.Context, cred agent.Credential, other events.TenantID) error {
	conn, err := ts.connect(ctx, cred.String("user"), credPassword(cred), other.PostgresDatabase())
	if err == nil {
		conn.Close(ctx)
		return fmt.Errorf("%s connected to %s", cred.String("user"), other.PostgresDatabase())
	}
	if code := sqlState(err); code != sqlstateInsufficientPrivilege {
		return fmt.Errorf("want SQLSTATE 42501 connecting to %s, got %v", other.PostgresDatabase(), scrubConnectError(err))
	}
	return nil
}

func (ts *testServer) exists(ctx context.Context, tenant events.TenantID) (bool, error) {
	var n int
	// The owner role, the rotated credentials' login roles
	// (tenant_<id>__vN) and the database.
	err := ts.admin.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_roles WHERE rolname = $1 OR starts_with(rolname, $3)) + (SELECT count(*) FROM pg_database WHERE datname = $2)`,
		tenant.PostgresRole(), tenant.PostgresDatabase(), tenant.PostgresRole()+versionSep).Scan(&n)
	return n > 0, err
}

// createForeign makes the tenant's role and database as another system
// would: not in tenantprov's record, the database owned by the admin, with
// data in it. The foreign database admits its own role but not PUBLIC: one
// that PUBLIC may connect to is reachable by every tenant, and every
// tenant's Verify reports it (other_databases_denied) — the suite's other
// subtests share this server.
func (ts *testServer) createForeign(ctx context.Context, tenant events.TenantID) error {
	role, db := tenant.PostgresRole(), tenant.PostgresDatabase()
	for _, stmt := range []string{
		"CREATE ROLE " + ident(role) + " LOGIN PASSWORD 'foreign-password' CONNECTION LIMIT 3",
		"CREATE DATABASE " + ident(db),
		"REVOKE CONNECT, TEMPORARY ON DATABASE " + ident(db) + " FROM PUBLIC",
		"GRANT CONNECT ON DATABASE " + ident(db) + " TO " + ident(role),
	} {
		if _, err := ts.admin.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("%s: %w", stmt, err)
		}
	}
	conn, err := ts.connect(ctx, ts.pg.AdminUser, secret.String(ts.pg.AdminPassword), db)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE TABLE foreign_data (v text); INSERT INTO foreign_data VALUES ('theirs')")
	return err
}

// foreignIntact checks that createForeign's role and database are exactly as
// it left them.
func (ts *testServer) foreignIntact(ctx context.Context, tenant events.TenantID) error {
	role, db := tenant.PostgresRole(), tenant.PostgresDatabase()
	var (
		roleComment, dbComment *string
		canLogin               bool
		connLimit              int
		owner                  string
		publicConnect, connect bool
	)
	err := ts.admin.QueryRow(ctx, `SELECT shobj_description(oid, 'pg_authid'), rolcanlogin, rolconnlimit FROM pg_roles WHERE rolname = $1`, role).
		Scan(&roleComment, &canLogin, &connLimit)
	if err != nil {
		return fmt.Errorf("role %s: %w", role, err)
	}
	if roleComment != nil || !canLogin || connLimit != 3 {
		return fmt.Errorf("role %s changed: comment=%v login=%t connlimit=%d", role, roleComment, canLogin, connLimit)
	}
	err = ts.admin.QueryRow(ctx, `SELECT shobj_description(oid, 'pg_database'), pg_get_userbyid(datdba), has_database_privilege('public', oid, 'CONNECT'), has_database_privilege($2, oid, 'CONNECT') FROM pg_database WHERE datname = $1`, db, role).
		Scan(&dbComment, &owner, &publicConnect, &connect)
	if err != nil {
		return fmt.Errorf("database %s: %w", db, err)
	}
	if dbComment != nil || owner != ts.pg.AdminUser || publicConnect || !connect {
		return fmt.Errorf("database %s changed: comment=%v owner=%s public connect=%t role connect=%t", db, dbComment, owner, publicConnect, connect)
	}
	// The foreign role still logs in with its own password, and the data is
	// still there.
	conn, err := ts.connect(ctx, role, "foreign-password", db)
	if err != nil {
		return fmt.Errorf("foreign role can no longer log in: %w", scrubConnectError(err))
	}
	conn.Close(ctx)
	conn, err = ts.connect(ctx, ts.pg.AdminUser, secret.String(ts.pg.AdminPassword), db)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, "SELECT v FROM foreign_data").Scan(&v); err != nil || v != "theirs" {
		return fmt.Errorf("foreign data: %q, %v", v, err)
	}
	return nil
}

// interrupt leaves what an agent that died right after creating the role
// leaves: the role with its verifier and its system record, no database.
func (ts *testServer) interrupt(ctx context.Context, tenant events.TenantID, generation uint64, password secret.String) error {
	verifier, err := SCRAMVerifier(password)
	if err != nil {
		return err
	}
	if err := ts.store.prepare(ctx); err != nil {
		return err
	}
	return ts.store.withTenantLock(ctx, tenant, func(conn *pgxpool.Conn) error {
		st, err := readState(ctx, conn, tenant)
		if err != nil {
			return err
		}
		return ts.store.ensureRole(ctx, conn, st, verifier, generation)
	})
}

func decodeB64(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }

// sleep waits ms milliseconds or until ctx is done.
func sleep(ctx context.Context, ms int) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Duration(ms) * time.Millisecond):
	}
}
