// Package pgstore is pg-agent's agent.Store: it gives each tenant a login
// role and a database of its own on one PostgreSQL server (DESIGN.md §5).
//
// What Provision leaves behind for tenant <id>:
//
//   - role "tenant_<id>": LOGIN, NOSUPERUSER NOCREATEDB NOCREATEROLE
//     NOREPLICATION NOBYPASSRLS NOINHERIT, CONNECTION LIMIT from Config, and a
//     SCRAM-SHA-256 verifier computed here (the password never reaches the
//     server, so no server log can hold it);
//   - database "tenant_<id>" owned by that role, with CONNECT and TEMPORARY
//     revoked from PUBLIC, and its public schema owned by the role with every
//     PUBLIC privilege revoked;
//   - on both, a COMMENT holding a Marker — tenantprov's mark of origin. A
//     role or database with a tenant's name and no marker is foreign: it is
//     never adopted (Provision fails with agent.ErrConflict), changed or
//     dropped.
//
// The database "tenantprov_canary" exists for Verify to prove that a tenant
// credential is refused there.
//
// Names enter SQL only through pgx.Identifier.Sanitize (tenant names keep
// their hyphens and are always quoted); the only literals not sent as bind
// parameters — the verifier and the marker, in statements that take none —
// go through quoteLiteral.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// applicationName is what the agent's sessions show in pg_stat_activity.
const applicationName = "tenantprov-pg-agent"

// Store provisions tenants on one PostgreSQL server. It is safe for
// concurrent use; calls for the same tenant are serialised by a PostgreSQL
// advisory lock, so several agent replicas may share one server.
type Store struct {
	cfg        Config
	admin      *pgx.ConnConfig // template for the admin's connections into tenant databases and for tenant connections
	pool       *pgxpool.Pool
	publicHost string
	publicPort int

	canaryReady atomic.Bool
}

var _ agent.Store = (*Store)(nil)

// New validates cfg and returns a Store. It does not connect: the admin pool
// dials on first use, so an agent can start (and report not ready) while
// PostgreSQL is down. Close releases the pool.
func New(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, invalid(err)
	}
	pc, err := pgxpool.ParseConfig(cfg.AdminURL.Reveal())
	if err != nil {
		return nil, invalid(errors.New("PG_ADMIN_URL: not a valid PostgreSQL connection string"))
	}
	pc.MaxConns = cfg.AdminMaxConns
	pc.MinConns = 0
	pc.MaxConnLifetime = 30 * time.Minute
	pc.MaxConnIdleTime = 5 * time.Minute
	pc.HealthCheckPeriod = time.Minute
	cc := pc.ConnConfig
	if cc.ConnectTimeout <= 0 || cc.ConnectTimeout > cfg.ConnectTimeout {
		cc.ConnectTimeout = cfg.ConnectTimeout
	}
	if _, ok := cc.RuntimeParams["application_name"]; !ok {
		cc.RuntimeParams["application_name"] = applicationName
	}
	s := &Store{
		cfg:        cfg,
		admin:      cc.Copy(),
		publicHost: cfg.PublicHost,
		publicPort: cfg.PublicPort,
	}
	if s.publicHost == "" {
		s.publicHost = cc.Host
	}
	if s.publicPort == 0 {
		s.publicPort = int(cc.Port)
	}
	s.pool, err = pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, invalid(fmt.Errorf("admin pool: %w", err))
	}
	return s, nil
}

// Close closes the admin pool. Calls in flight fail.
func (s *Store) Close() { s.pool.Close() }

// Kind returns events.StorePostgres.
func (s *Store) Kind() events.Store { return events.StorePostgres }

// Ping runs SELECT 1 with the admin credential.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	var one int
	if err := s.pool.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return wrap("ping postgres", err)
	}
	return nil
}

// Provision creates (or converges) the tenant's role and database; see the
// package documentation for what exists afterwards. A re-provision resets the
// role's verifier to one for req.Password and the markers to req.Generation.
// A foreign role or database with the tenant's name fails with
// agent.ErrConflict before anything is changed; a request for an older
// generation than the existing resources' fails with ErrStaleGeneration.
func (s *Store) Provision(ctx context.Context, req agent.ProvisionRequest) (agent.ProvisionResponse, error) {
	tenant, err := checkTenant(req.Tenant)
	if err != nil {
		return agent.ProvisionResponse{}, err
	}
	verifier, err := SCRAMVerifier(req.Password)
	if err != nil {
		return agent.ProvisionResponse{}, invalid(fmt.Errorf("tenant %s: %w", tenant, err))
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if err := s.ensureCanary(ctx); err != nil {
		return agent.ProvisionResponse{}, err
	}
	role, db := tenant.PostgresRole(), tenant.PostgresDatabase()
	mark := Marker{ManagedBy: ManagedBy, Tenant: string(tenant), Generation: req.Generation}
	err = s.withTenantLock(ctx, tenant, func(conn *pgxpool.Conn) error {
		st, err := readState(ctx, conn, tenant)
		if err != nil {
			return err
		}
		if err := st.conflict(); err != nil {
			return err
		}
		if gen := st.generation(); req.Generation > 0 && gen > req.Generation {
			return invalid(fmt.Errorf("tenant %s: role and database belong to generation %d, the command to generation %d: %w", tenant, gen, req.Generation, ErrStaleGeneration))
		}
		if err := s.ensureRole(ctx, conn, st, verifier, mark); err != nil {
			return err
		}
		if err := s.ensureDatabase(ctx, conn, st, mark); err != nil {
			return err
		}
		return s.lockDownSchema(ctx, db, role)
	})
	if err != nil {
		return agent.ProvisionResponse{}, err
	}
	return agent.ProvisionResponse{
		Resources: map[string]string{
			"database": db,
			"role":     role,
			"pg_hba":   HBALine(db, role, s.cfg.TenantCIDR),
		},
		Credential: agent.Credential{
			"host":     s.publicHost,
			"port":     s.publicPort,
			"database": db,
			"user":     role,
			"password": req.Password,
			"url":      s.tenantURL(role, req.Password, db),
		},
		Warnings: s.warnings(),
	}, nil
}

// Deprovision removes the tenant's role and database if they are
// tenantprov's: the role loses LOGIN, its sessions are terminated, the
// database is dropped WITH (FORCE), then whatever the role still owns and the
// role itself. Absent resources are not an error; foreign ones are left
// untouched and named in Skipped. A request for an older generation than
// the existing resources' changes nothing and says so in Warnings.
func (s *Store) Deprovision(ctx context.Context, req agent.DeprovisionRequest) (agent.DeprovisionResponse, error) {
	tenant, err := checkTenant(req.Tenant)
	if err != nil {
		return agent.DeprovisionResponse{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	role, db := tenant.PostgresRole(), tenant.PostgresDatabase()
	var resp agent.DeprovisionResponse
	err = s.withTenantLock(ctx, tenant, func(conn *pgxpool.Conn) error {
		st, err := readState(ctx, conn, tenant)
		if err != nil {
			return err
		}
		if st.roleExists && !st.roleOurs() {
			resp.Skipped = append(resp.Skipped, "role "+role+" (not created by tenantprov)")
		}
		if st.dbExists && !st.dbOurs() {
			resp.Skipped = append(resp.Skipped, "database "+db+" (not created by tenantprov)")
		}
		if gen := st.generation(); req.Generation > 0 && gen > req.Generation {
			resp.Warnings = append(resp.Warnings, fmt.Sprintf("role and database belong to generation %d, the command to generation %d: left in place", gen, req.Generation))
			return nil
		}
		if st.roleOurs() {
			if _, err := conn.Exec(ctx, "ALTER ROLE "+ident(role)+" NOLOGIN"); err != nil {
				return wrap("alter role "+role+" nologin", err)
			}
			if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()", role); err != nil {
				return wrap("terminate sessions of "+role, err)
			}
		}
		if st.dbOurs() {
			if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(db)+" WITH (FORCE)"); err != nil {
				return wrap("drop database "+db, err)
			}
		}
		if st.roleOurs() {
			// DROP OWNED in the admin database removes the role's
			// privileges on shared objects and anything it owns here; its
			// own database is gone already.
			err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, "DROP OWNED BY "+ident(role)); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, "DROP ROLE IF EXISTS "+ident(role))
				return err
			})
			if err != nil {
				return wrap("drop role "+role, err)
			}
		}
		return nil
	})
	if err != nil {
		return agent.DeprovisionResponse{}, err
	}
	return resp, nil
}

// state is what exists under a tenant's names.
type state struct {
	tenant events.TenantID

	roleExists  bool
	roleComment *string
	// Attributes that must be off; ALTER ROLE names only those that are
	// on, so that an admin without superuser (which PostgreSQL < 16
	// requires for naming SUPERUSER, REPLICATION or BYPASSRLS at all) can
	// re-provision.
	rolSuper, rolCreateDB, rolCreateRole, rolReplication, rolBypassRLS, rolInherit bool

	dbExists  bool
	dbComment *string
	dbOwner   string
}

func readState(ctx context.Context, conn *pgxpool.Conn, tenant events.TenantID) (*state, error) {
	st := &state{tenant: tenant}
	err := conn.QueryRow(ctx, `
SELECT r.rolname IS NOT NULL, shobj_description(r.oid, 'pg_authid'),
       coalesce(r.rolsuper, false), coalesce(r.rolcreatedb, false), coalesce(r.rolcreaterole, false),
       coalesce(r.rolreplication, false), coalesce(r.rolbypassrls, false), coalesce(r.rolinherit, false),
       d.datname IS NOT NULL, shobj_description(d.oid, 'pg_database'), coalesce(pg_get_userbyid(d.datdba)::text, '')
FROM (VALUES (1)) AS one (x)
LEFT JOIN pg_roles r ON r.rolname = $1
LEFT JOIN pg_database d ON d.datname = $2`, tenant.PostgresRole(), tenant.PostgresDatabase()).Scan(
		&st.roleExists, &st.roleComment,
		&st.rolSuper, &st.rolCreateDB, &st.rolCreateRole, &st.rolReplication, &st.rolBypassRLS, &st.rolInherit,
		&st.dbExists, &st.dbComment, &st.dbOwner)
	if err != nil {
		return nil, wrap("read state of tenant "+string(tenant), err)
	}
	return st, nil
}

// roleOurs: the role carries our marker for this tenant.
func (st *state) roleOurs() bool {
	m, ok := parseMarker(st.roleComment)
	return st.roleExists && ok && m.Tenant == string(st.tenant)
}

// dbOurs: the database carries our marker for this tenant — or it has no
// comment at all and is owned by our (marked) role. CREATE DATABASE cannot
// share a transaction with COMMENT ON DATABASE, so an agent that dies between
// the two leaves exactly that; the owner proves the origin, since only the
// admin can create a database owned by the tenant role (which has
// NOCREATEDB).
func (st *state) dbOurs() bool {
	if !st.dbExists {
		return false
	}
	if m, ok := parseMarker(st.dbComment); ok {
		return m.Tenant == string(st.tenant)
	}
	return st.dbComment == nil && st.roleOurs() && st.dbOwner == st.tenant.PostgresRole()
}

// conflict returns agent.ErrConflict naming every foreign resource.
func (st *state) conflict() error {
	var foreign []string
	if st.roleExists && !st.roleOurs() {
		foreign = append(foreign, "postgres role "+st.tenant.PostgresRole())
	}
	if st.dbExists && !st.dbOurs() {
		foreign = append(foreign, "postgres database "+st.tenant.PostgresDatabase())
	}
	switch len(foreign) {
	case 0:
		return nil
	case 1:
		return agent.Conflict(foreign[0])
	default:
		return agent.Conflict(foreign[0] + " and " + foreign[1])
	}
}

// generation is the newest generation in our markers (0 if none).
func (st *state) generation() uint64 {
	var gen uint64
	if m, ok := parseMarker(st.roleComment); ok && st.roleOurs() {
		gen = m.Generation
	}
	if m, ok := parseMarker(st.dbComment); ok && st.dbOurs() {
		gen = max(gen, m.Generation)
	}
	return gen
}

// ensureRole creates the role, or resets an existing (ours) one to the
// least-privilege attributes and the new verifier, and writes the marker —
// in one transaction, so a role never exists without its marker.
func (s *Store) ensureRole(ctx context.Context, conn *pgxpool.Conn, st *state, verifier string, mark Marker) error {
	role := st.tenant.PostgresRole()
	pw, err := quoteLiteral(verifier)
	if err != nil {
		return fmt.Errorf("role %s: verifier: %w", role, err)
	}
	comment, err := mark.literal()
	if err != nil {
		return err
	}
	var stmt string
	if !st.roleExists {
		stmt = fmt.Sprintf("CREATE ROLE %s WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT CONNECTION LIMIT %d PASSWORD %s",
			ident(role), s.cfg.ConnectionLimit, pw)
	} else {
		attrs := "LOGIN"
		for _, a := range []struct {
			on   bool
			name string
		}{
			{st.rolSuper, "NOSUPERUSER"}, {st.rolCreateDB, "NOCREATEDB"}, {st.rolCreateRole, "NOCREATEROLE"},
			{st.rolReplication, "NOREPLICATION"}, {st.rolBypassRLS, "NOBYPASSRLS"}, {st.rolInherit, "NOINHERIT"},
		} {
			if a.on {
				attrs += " " + a.name
			}
		}
		stmt = fmt.Sprintf("ALTER ROLE %s WITH %s CONNECTION LIMIT %d PASSWORD %s", ident(role), attrs, s.cfg.ConnectionLimit, pw)
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "COMMENT ON ROLE "+ident(role)+" IS "+comment)
		return err
	})
	if err != nil {
		if st.roleExists {
			return wrap("alter role "+role, err)
		}
		return wrap("create role "+role, err)
	}
	return nil
}

// ensureDatabase creates the database owned by the role (outside any
// transaction, as PostgreSQL requires), then marks it and applies the
// database-level grants in one transaction.
func (s *Store) ensureDatabase(ctx context.Context, conn *pgxpool.Conn, st *state, mark Marker) error {
	role, db := st.tenant.PostgresRole(), st.tenant.PostgresDatabase()
	if !st.dbExists {
		// A concurrent creator (not us: we hold the tenant lock) makes this
		// fail with 42P04, which is transient: the retry re-reads the state
		// and reports the conflict.
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident(db)+" OWNER "+ident(role)); err != nil {
			return wrap("create database "+db, err)
		}
	} else if st.dbOwner != role {
		if _, err := conn.Exec(ctx, "ALTER DATABASE "+ident(db)+" OWNER TO "+ident(role)); err != nil {
			return wrap("alter database "+db+" owner", err)
		}
	}
	comment, err := mark.literal()
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, stmt := range []string{
			"COMMENT ON DATABASE " + ident(db) + " IS " + comment,
			"REVOKE ALL ON DATABASE " + ident(db) + " FROM PUBLIC",
			"GRANT CONNECT, TEMPORARY ON DATABASE " + ident(db) + " TO " + ident(role),
		} {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	})
	return wrap("grant on database "+db, err)
}

// lockDownSchema makes the role the only one with any privilege on the
// tenant database's public schema (PostgreSQL < 15 grants CREATE on it to
// PUBLIC; ≥ 15 still grants USAGE). It recreates the schema if the tenant
// dropped it.
func (s *Store) lockDownSchema(ctx context.Context, db, role string) error {
	cc := s.admin.Copy()
	cc.Database = db
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return wrap("connect to database "+db+" as admin", err)
	}
	defer closeConn(ctx, conn)
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, stmt := range []string{
			"CREATE SCHEMA IF NOT EXISTS public AUTHORIZATION " + ident(role),
			"ALTER SCHEMA public OWNER TO " + ident(role),
			"REVOKE ALL ON SCHEMA public FROM PUBLIC",
		} {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	})
	return wrap("lock down schema public in "+db, err)
}

// ensureCanary makes sure the canary database exists, carries a marker and
// admits nobody but superusers (PUBLIC's CONNECT and TEMPORARY revoked).
// Names beginning "tenantprov" are reserved for the system (DESIGN.md §2),
// so an existing canary is ours whatever its comment. It runs once per
// process after it first succeeds.
func (s *Store) ensureCanary(ctx context.Context) error {
	if s.canaryReady.Load() {
		return nil
	}
	db := events.CanaryDatabase
	var exists bool
	if err := s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", db).Scan(&exists); err != nil {
		return wrap("look up canary database", err)
	}
	if !exists {
		if _, err := s.pool.Exec(ctx, "CREATE DATABASE "+ident(db)); err != nil && sqlState(err) != "42P04" {
			return wrap("create canary database "+db, err)
		}
	}
	comment, err := Marker{ManagedBy: ManagedBy, Purpose: "canary"}.literal()
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "COMMENT ON DATABASE "+ident(db)+" IS "+comment); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "REVOKE ALL ON DATABASE "+ident(db)+" FROM PUBLIC"); err != nil {
			return err
		}
		for _, shared := range s.cfg.SharedDatabases {
			if shared = strings.TrimSpace(shared); shared == "" {
				continue
			}
			if _, err := tx.Exec(ctx, "REVOKE CONNECT, TEMPORARY ON DATABASE "+ident(shared)+" FROM PUBLIC"); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return wrap("mark canary database "+db, err)
	}
	s.canaryReady.Store(true)
	return nil
}

// withTenantLock runs fn on one admin connection holding a session-level
// advisory lock for the tenant, so that two replicas (or a redelivered
// command) never interleave on the same tenant. The lock dies with the
// session if the unlock fails.
func (s *Store) withTenantLock(ctx context.Context, tenant events.TenantID, fn func(conn *pgxpool.Conn) error) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return wrap("acquire admin connection", err)
	}
	key := lockKey(tenant)
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", key); err != nil {
		conn.Release()
		return wrap("lock tenant "+string(tenant), err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		var released bool
		if err := conn.QueryRow(uctx, "SELECT pg_advisory_unlock($1)", key).Scan(&released); err != nil || !released {
			_ = conn.Conn().Close(uctx) // the pool discards it; the lock goes with the session
		}
		conn.Release()
	}()
	return fn(conn)
}

// lockKey is the tenant's advisory-lock key. A collision between two
// tenants only serialises them.
func lockKey(tenant events.TenantID) int64 {
	h := fnv.New64a()
	h.Write([]byte("tenantprov/postgres/" + string(tenant)))
	return int64(h.Sum64())
}

// tenantURL is postgres://user:password@host:port/database?sslmode=…, every
// part escaped by net/url.
func (s *Store) tenantURL(user string, password secret.String, db string) secret.String {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(user, password.Reveal()),
		Host:     net.JoinHostPort(s.publicHost, strconv.Itoa(s.publicPort)),
		Path:     "/" + db,
		RawQuery: url.Values{"sslmode": {s.cfg.SSLMode}}.Encode(),
	}
	return secret.String(u.String())
}

func (s *Store) warnings() []string {
	switch s.cfg.SSLMode {
	case "disable", "allow":
		return []string{fmt.Sprintf("PG_SSLMODE=%s: the tenant URL may connect without TLS, which the rendered hostssl pg_hba.conf line refuses", s.cfg.SSLMode)}
	}
	return nil
}

// checkTenant re-validates the ID: events.TenantID is a string type, and a
// name must be proven safe before it is derived into any identifier.
func checkTenant(id events.TenantID) (events.TenantID, error) {
	t, err := events.ParseTenantID(string(id))
	if err != nil {
		return "", invalid(fmt.Errorf("%w: %w", ErrInvalidRequest, err))
	}
	return t, nil
}

// closeConn closes conn even when ctx is already done.
func closeConn(ctx context.Context, conn *pgx.Conn) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = conn.Close(cctx)
}
