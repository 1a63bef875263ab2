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
//   - a row in the system record (recordTable, in the admin database: schema
//     tenantprov, owned by the admin role, nothing granted to PUBLIC) with
//     the tenant's generation and the OIDs of its role and database. It is
//     tenantprov's mark of origin, and the only one trusted: a tenant owns
//     its database and can rewrite its COMMENT, but it cannot reach the
//     record, nor give a role or database another OID. A role or database
//     with a tenant's name that the record does not name is foreign: it is
//     never adopted (Provision fails with agent.ErrConflict), changed or
//     dropped.
//
// After Rotate the tenant also has login roles "tenant_<id>__vN" that act
// as "tenant_<id>", recorded by OID in credentialsTable (lifecycle.go).
//
// PUBLIC's CONNECT and TEMPORARY are revoked on every other database of the
// server (except those in Config.KeepPublicConnect and the tenant namespace),
// at start and before every provision, so a tenant reaches its own database
// and no other; Verify proves it against pg_database.
//
// The database "tenantprov_canary" exists for Verify to prove that a tenant
// credential is refused there.
//
// Names enter SQL only through pgx.Identifier.Sanitize (tenant names keep
// their hyphens and are always quoted); the only literals not sent as bind
// parameters — the verifier and the canary's comment, in statements that
// take none — go through quoteLiteral.
package pgstore

import (
	"context"
	"encoding/json"
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
	"github.com/jackc/pgx/v5/pgconn"
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

	prepared atomic.Bool
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
// role's verifier to one for req.Password and the system record to
// req.Generation. A role or database with the tenant's name that the system
// record does not name (by OID) is foreign: Provision fails with
// agent.ErrConflict (permanent) before anything is changed. A request for an
// older generation than the record's fails with ErrStaleGeneration.
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
	// Databases created since the last provision (PostgreSQL gives PUBLIC
	// CONNECT on each) are closed before a new credential exists; the first
	// call's prepare does that already.
	prepared := s.prepared.Load()
	if err := s.prepare(ctx); err != nil {
		return agent.ProvisionResponse{}, err
	}
	if prepared {
		if err := s.closeOtherDatabases(ctx, s.pool); err != nil {
			return agent.ProvisionResponse{}, err
		}
	}
	role, db := tenant.PostgresRole(), tenant.PostgresDatabase()
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
		if err := s.ensureRole(ctx, conn, st, verifier, req.Generation); err != nil {
			return err
		}
		if err := s.ensureDatabase(ctx, conn, st); err != nil {
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

// Deprovision removes the tenant's role and database if the system record
// names them (by OID): the role loses LOGIN, its sessions are terminated,
// the database is dropped WITH (FORCE), then whatever the role owns or was
// granted in any other database, the role itself and the record. It returns
// nil only when none of them is left: anything that remains is an error (a
// transient one, so the command is retried and the failure surfaces). Absent
// resources are not an error; foreign ones are left untouched and named in
// Skipped. A request for an older generation than the record's changes
// nothing and says so in Warnings: those resources are the newer
// generation's, not the ones being deprovisioned.
func (s *Store) Deprovision(ctx context.Context, req agent.DeprovisionRequest) (agent.DeprovisionResponse, error) {
	tenant, err := checkTenant(req.Tenant)
	if err != nil {
		return agent.DeprovisionResponse{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if err := s.prepare(ctx); err != nil {
		return agent.DeprovisionResponse{}, err
	}
	role, db := tenant.PostgresRole(), tenant.PostgresDatabase()
	var resp agent.DeprovisionResponse
	err = s.withTenantLock(ctx, tenant, func(conn *pgxpool.Conn) error {
		st, err := readState(ctx, conn, tenant)
		if err != nil {
			return err
		}
		if st.roleOID != nil && !st.roleOurs() {
			resp.Skipped = append(resp.Skipped, "role "+role+" (not created by tenantprov)")
		}
		if st.dbOID != nil && !st.dbOurs() {
			resp.Skipped = append(resp.Skipped, "database "+db+" (not created by tenantprov)")
		}
		if gen := st.generation(); req.Generation > 0 && gen > req.Generation {
			resp.Warnings = append(resp.Warnings, fmt.Sprintf("role and database belong to generation %d, the command to generation %d: left in place", gen, req.Generation))
			return nil
		}
		// The rotated credentials' login roles (recorded by OID) go first:
		// each is a member of the owner role and acts as it.
		vroles := st.versionRoles()
		var logins []string
		for _, c := range vroles {
			if _, err := conn.Exec(ctx, "ALTER ROLE "+ident(c.name)+" NOLOGIN"); err != nil {
				return wrap("alter role "+c.name+" nologin", err)
			}
			logins = append(logins, c.name)
		}
		if st.roleOurs() {
			if _, err := conn.Exec(ctx, "ALTER ROLE "+ident(role)+" NOLOGIN"); err != nil {
				return wrap("alter role "+role+" nologin", err)
			}
			logins = append(logins, role)
		}
		if err := terminateSessions(ctx, conn, logins); err != nil {
			return err
		}
		if st.dbOurs() && st.dbTemplate {
			if _, err := conn.Exec(ctx, "ALTER DATABASE "+ident(db)+" WITH IS_TEMPLATE false"); err != nil {
				return wrap("alter database "+db+" is_template false", err)
			}
		}
		if st.dbOurs() {
			if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(db)+" WITH (FORCE)"); err != nil {
				return wrap("drop database "+db, err)
			}
		}
		for _, c := range vroles {
			if err := s.dropOwnedElsewhere(ctx, conn, c.name, c.roleOID); err != nil {
				return err
			}
		}
		if st.roleOurs() {
			if err := s.dropOwnedElsewhere(ctx, conn, role, *st.roleOID); err != nil {
				return err
			}
		}
		// DROP OWNED in the admin database removes the role's privileges on
		// shared objects (other databases) and anything it owns here; the
		// record goes in the same transaction as the role.
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			for _, c := range vroles {
				if _, err := tx.Exec(ctx, "DROP OWNED BY "+ident(c.name)); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, "DROP ROLE "+ident(c.name)); err != nil {
					return err
				}
			}
			if st.roleOurs() {
				if _, err := tx.Exec(ctx, "DROP OWNED BY "+ident(role)); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, "DROP ROLE "+ident(role)); err != nil {
					return err
				}
			}
			_, err := tx.Exec(ctx, "DELETE FROM "+recordTable+" WHERE tenant = $1", string(tenant))
			return err
		})
		if err != nil {
			return wrap("drop role "+role, err)
		}
		return st.confirmGone(ctx, conn)
	})
	if err != nil {
		return agent.DeprovisionResponse{}, err
	}
	return resp, nil
}

// dropOwnedElsewhere runs DROP OWNED BY in every other database where the
// role owns an object or holds a privilege (pg_shdepend), so that DROP ROLE
// cannot fail on them and nothing of the tenant's survives there.
func (s *Store) dropOwnedElsewhere(ctx context.Context, conn *pgxpool.Conn, role string, roleOID uint32) error {
	rows, err := conn.Query(ctx, `
SELECT DISTINCT d.datname FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid
WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid = $1 AND d.datallowconn AND d.datname <> current_database()
ORDER BY 1`, roleOID)
	if err != nil {
		return wrap("find the databases that hold objects of "+role, err)
	}
	dbs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return wrap("find the databases that hold objects of "+role, err)
	}
	for _, other := range dbs {
		c, err := s.adminConnect(ctx, other)
		if err != nil {
			return err
		}
		_, err = c.Exec(ctx, "DROP OWNED BY "+ident(role))
		closeConn(ctx, c)
		if err != nil {
			return wrap("drop what "+role+" owns in "+other, err)
		}
	}
	return nil
}

// adminSessionParams override, for the agent's admin sessions in databases
// it does not own, the defaults that the database's owner — a tenant — can
// set with ALTER DATABASE … SET (parameters sent at connection start take
// precedence over them). Above all search_path: with the tenant's schema
// before pg_catalog, a catalog function or operator the admin calls there
// would resolve to the tenant's, run with the admin's privileges.
var adminSessionParams = map[string]string{
	"search_path":                         "pg_catalog, pg_temp",
	"role":                                "none",
	"default_transaction_read_only":       "off",
	"default_transaction_isolation":       "read committed",
	"statement_timeout":                   "0",
	"lock_timeout":                        "0",
	"idle_in_transaction_session_timeout": "0",
}

// adminConnect opens an admin session in db (a tenant's database, or
// another database holding a tenant's objects) that ignores db's defaults.
func (s *Store) adminConnect(ctx context.Context, db string) (*pgx.Conn, error) {
	cc := s.admin.Copy()
	cc.Database = db
	for k, v := range adminSessionParams {
		cc.RuntimeParams[k] = v
	}
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, wrap("connect to database "+db+" as admin", err)
	}
	return conn, nil
}

// terminateSessions ends every session logged in as one of roles (their
// session user), but the caller's own.
func terminateSessions(ctx context.Context, q querier, roles []string) error {
	if len(roles) == 0 {
		return nil
	}
	_, err := q.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY($1) AND pid <> pg_backend_pid()", roles)
	return wrap("terminate sessions of "+strings.Join(roles, ", "), err)
}

// errStillExists reports a deprovision that did not remove everything; it
// is transient, so the command is retried.
var errStillExists = errors.New("still exists after deprovision")

// confirmGone checks, by OID, that the role and database the record named
// are gone.
func (st *state) confirmGone(ctx context.Context, conn *pgxpool.Conn) error {
	var roleLeft, dbLeft bool
	err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE oid = $1), EXISTS (SELECT 1 FROM pg_database WHERE oid = $2)",
		oidOrZero(st.roleOID, st.roleOurs()), oidOrZero(st.dbOID, st.dbOurs())).Scan(&roleLeft, &dbLeft)
	if err != nil {
		return wrap("confirm deprovision of "+string(st.tenant), err)
	}
	for _, c := range st.versionRoles() {
		var left bool
		if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE oid = $1)", c.roleOID).Scan(&left); err != nil {
			return wrap("confirm deprovision of "+string(st.tenant), err)
		}
		if left {
			return fmt.Errorf("role %s: %w", c.name, errStillExists)
		}
	}
	switch {
	case roleLeft:
		return fmt.Errorf("role %s: %w", st.tenant.PostgresRole(), errStillExists)
	case dbLeft:
		return fmt.Errorf("database %s: %w", st.tenant.PostgresDatabase(), errStillExists)
	}
	return nil
}

func oidOrZero(oid *uint32, ours bool) uint32 {
	if oid == nil || !ours {
		return 0
	}
	return *oid
}

// recordTable is the system record of what pg-agent created: one row per
// tenant with its generation and the OIDs of its role and database. It lives
// in the schema tenantprov of the admin database, owned by the admin role,
// with no privilege for PUBLIC — nothing a tenant can write (DESIGN.md §5).
// A role or database whose OID the record does not hold is not
// tenantprov's, whatever its name or comment says; an object dropped and
// recreated under the same name gets a new OID and is not ours either.
const recordTable = "tenantprov.postgres_tenants"

// state is what exists under a tenant's names, and what the system record
// says of them.
type state struct {
	tenant events.TenantID

	roleOID *uint32 // nil: no role with the tenant's name
	// Attributes that must be off; ALTER ROLE names only those that are
	// on, so that an admin without superuser (which PostgreSQL < 16
	// requires for naming SUPERUSER, REPLICATION or BYPASSRLS at all) can
	// re-provision.
	rolSuper, rolCreateDB, rolCreateRole, rolReplication, rolBypassRLS, rolInherit bool

	dbOID   *uint32 // nil: no database with the tenant's name
	dbOwner *uint32
	// dbTemplate: the database is a template. Its owner (the tenant) can
	// make it one; PostgreSQL then refuses to drop it, and lets any role
	// with CREATEDB clone it.
	dbTemplate bool
	// dbAllowConn: datallowconn. Provision creates the database with
	// connections disallowed and allows them once PUBLIC's CONNECT is gone.
	dbAllowConn bool

	recExists  bool
	recGen     int64
	recRoleOID *uint32
	recDBOID   *uint32 // nil: no database recorded yet (or one being created)
	// suspended: Suspend disabled every credential (the record says so, so
	// that Verify and Observe expect NOLOGIN and Resume knows what to undo).
	suspended bool

	// creds are the live credentials (loadCredentials); nil until loaded.
	creds []credential
}

func readState(ctx context.Context, conn *pgxpool.Conn, tenant events.TenantID) (*state, error) {
	st := &state{tenant: tenant}
	err := conn.QueryRow(ctx, `
SELECT r.oid,
       coalesce(r.rolsuper, false), coalesce(r.rolcreatedb, false), coalesce(r.rolcreaterole, false),
       coalesce(r.rolreplication, false), coalesce(r.rolbypassrls, false), coalesce(r.rolinherit, false),
       d.oid, d.datdba, coalesce(d.datistemplate, false), coalesce(d.datallowconn, false),
       t.tenant IS NOT NULL, coalesce(t.generation, 0), t.role_oid, t.database_oid, coalesce(t.suspended, false)
FROM (VALUES (1)) AS one (x)
LEFT JOIN pg_roles r ON r.rolname = $1
LEFT JOIN pg_database d ON d.datname = $2
LEFT JOIN `+recordTable+` t ON t.tenant = $3`, tenant.PostgresRole(), tenant.PostgresDatabase(), string(tenant)).Scan(
		&st.roleOID,
		&st.rolSuper, &st.rolCreateDB, &st.rolCreateRole, &st.rolReplication, &st.rolBypassRLS, &st.rolInherit,
		&st.dbOID, &st.dbOwner, &st.dbTemplate, &st.dbAllowConn,
		&st.recExists, &st.recGen, &st.recRoleOID, &st.recDBOID, &st.suspended)
	if err != nil {
		return nil, wrap("read state of tenant "+string(tenant), err)
	}
	if err := loadCredentials(ctx, conn, st); err != nil {
		return nil, err
	}
	return st, nil
}

// roleOurs: the record names this very role.
func (st *state) roleOurs() bool {
	return st.roleOID != nil && st.recRoleOID != nil && *st.roleOID == *st.recRoleOID
}

// dbOurs: the record names this very database — or the record holds no
// database yet and this one is owned by our role. Provision clears the
// record's database OID before CREATE DATABASE (which cannot share a
// transaction with the record's update), so an agent that dies between the
// two leaves exactly that. Only a role that may act as our role (the admin,
// a superuser) can create a database owned by it: the tenant role has
// NOCREATEDB, and its membership is checked by Verify.
func (st *state) dbOurs() bool {
	if st.dbOID == nil || !st.recExists {
		return false
	}
	if st.recDBOID != nil {
		return *st.dbOID == *st.recDBOID
	}
	return st.roleOurs() && st.dbOwner != nil && *st.dbOwner == *st.roleOID
}

// conflict returns agent.ErrConflict naming every foreign resource.
func (st *state) conflict() error {
	var foreign []string
	if st.roleOID != nil && !st.roleOurs() {
		foreign = append(foreign, "postgres role "+st.tenant.PostgresRole())
	}
	if st.dbOID != nil && !st.dbOurs() {
		foreign = append(foreign, "postgres database "+st.tenant.PostgresDatabase())
	}
	switch len(foreign) {
	case 0:
		return nil
	case 1:
		return agent.Conflict(foreign[0] + " exists and was not created by tenantprov")
	default:
		return agent.Conflict(foreign[0] + " and " + foreign[1] + " exist and were not created by tenantprov")
	}
}

// generation is the system record's generation (0 if there is none).
func (st *state) generation() uint64 {
	if !st.recExists || st.recGen < 0 {
		return 0
	}
	return uint64(st.recGen)
}

// ensureRole creates the role, or resets an existing (ours) one to the
// least-privilege attributes and the new verifier, and writes the system
// record — in one transaction, so a role never exists without its record.
func (s *Store) ensureRole(ctx context.Context, conn *pgxpool.Conn, st *state, verifier string, generation uint64) error {
	role := st.tenant.PostgresRole()
	pw, err := quoteLiteral(verifier)
	if err != nil {
		return fmt.Errorf("role %s: verifier: %w", role, err)
	}
	var stmt string
	if st.roleOID == nil {
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
		_, err := tx.Exec(ctx, `
INSERT INTO `+recordTable+` AS t (tenant, generation, role_oid)
VALUES ($1, $2, (SELECT oid FROM pg_roles WHERE rolname = $3))
ON CONFLICT (tenant) DO UPDATE SET generation = greatest(t.generation, excluded.generation), role_oid = excluded.role_oid, suspended = false, updated_at = now()`,
			string(st.tenant), int64(generation), role)
		if err != nil {
			return err
		}
		// The role Provision (re)sets is credential version 1, live.
		return recordCredential(ctx, tx, st.tenant, 1, role)
	})
	if err != nil {
		if st.roleOID != nil {
			return wrap("alter role "+role, err)
		}
		return wrap("create role "+role, err)
	}
	return nil
}

// ensureDatabase creates the database owned by the role (outside any
// transaction, as PostgreSQL requires; the record's database OID is cleared
// first, see dbOurs), then applies the database-level grants and records
// the database's OID in one transaction.
func (s *Store) ensureDatabase(ctx context.Context, conn *pgxpool.Conn, st *state) error {
	role, db := st.tenant.PostgresRole(), st.tenant.PostgresDatabase()
	if st.dbOID == nil {
		if _, err := conn.Exec(ctx, "UPDATE "+recordTable+" SET database_oid = NULL, updated_at = now() WHERE tenant = $1", string(st.tenant)); err != nil {
			return wrap("record database of "+string(st.tenant), err)
		}
		// PostgreSQL grants PUBLIC CONNECT on a new database: until that is
		// revoked, nobody may connect (another tenant could otherwise get
		// in, and on PostgreSQL ≤ 14 plant objects in its public schema).
		// A concurrent creator (not us: we hold the tenant lock) makes this
		// fail with 42P04, which is transient: the retry re-reads the state
		// and reports the conflict.
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident(db)+" OWNER "+ident(role)+" ALLOW_CONNECTIONS false"); err != nil {
			return wrap("create database "+db, err)
		}
	} else {
		if st.dbOwner == nil || st.roleOID == nil || *st.dbOwner != *st.roleOID {
			if _, err := conn.Exec(ctx, "ALTER DATABASE "+ident(db)+" OWNER TO "+ident(role)); err != nil {
				return wrap("alter database "+db+" owner", err)
			}
		}
		if st.dbTemplate {
			if _, err := conn.Exec(ctx, "ALTER DATABASE "+ident(db)+" WITH IS_TEMPLATE false"); err != nil {
				return wrap("alter database "+db+" is_template false", err)
			}
		}
	}
	stmts := []string{
		"REVOKE ALL ON DATABASE " + ident(db) + " FROM PUBLIC",
		"GRANT CONNECT, TEMPORARY ON DATABASE " + ident(db) + " TO " + ident(role),
	}
	if st.dbOID == nil || !st.dbAllowConn {
		stmts = append(stmts, "ALTER DATABASE "+ident(db)+" WITH ALLOW_CONNECTIONS true")
	}
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, stmt := range stmts {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, "UPDATE "+recordTable+" SET database_oid = (SELECT oid FROM pg_database WHERE datname = $2), updated_at = now() WHERE tenant = $1", string(st.tenant), db)
		return err
	})
	return wrap("grant on database "+db, err)
}

// lockDownSchema makes the role the only one with any privilege on the
// tenant database's public schema (PostgreSQL < 15 grants CREATE on it to
// PUBLIC; ≥ 15 still grants USAGE). It recreates the schema if the tenant
// dropped it.
func (s *Store) lockDownSchema(ctx context.Context, db, role string) error {
	conn, err := s.adminConnect(ctx, db)
	if err != nil {
		return err
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

// setupLockKey serialises the agent's server-wide statements (the system
// record's DDL, the PUBLIC revocations) across replicas: concurrent GRANT or
// REVOKE on one database fail with "tuple concurrently updated".
const setupLockKey int64 = 0x74656e616e747072 // "tenantpr"

// prepare runs once per process, after it first succeeds: the system
// record, the canary database, and closing the server's other databases.
//
// It holds the setup lock for the whole sequence (CREATE DATABASE of the
// canary cannot run in a transaction, so a transaction-level lock cannot
// cover it): replicas starting together would otherwise race to create
// the canary.
func (s *Store) prepare(ctx context.Context) error {
	if s.prepared.Load() {
		return nil
	}
	err := s.withSessionLock(ctx, setupLockKey, "lock the agent's setup", func(conn *pgxpool.Conn) error {
		if err := s.ensureSystemRecord(ctx, conn); err != nil {
			return err
		}
		if err := s.ensureCanary(ctx, conn); err != nil {
			return err
		}
		return s.closeOtherDatabases(ctx, conn)
	})
	if err != nil {
		return err
	}
	s.prepared.Store(true)
	return nil
}

// adminDB is the admin pool or one of its connections.
type adminDB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// ensureSystemRecord creates the schema tenantprov and recordTable in the
// admin database, owned by the admin role, with every PUBLIC privilege
// revoked. An existing schema tenantprov owned by another role is refused:
// whoever owns it could rewrite the record.
func (s *Store) ensureSystemRecord(ctx context.Context, db adminDB) error {
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		var owner, me string
		err := tx.QueryRow(ctx, "SELECT coalesce((SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'tenantprov'), ''), current_user").Scan(&owner, &me)
		if err != nil {
			return err
		}
		if owner != "" && owner != me {
			return agent.Permanent(events.ReasonStoreError, fmt.Errorf("schema tenantprov (the system record) is owned by %s, not by the agent's admin role %s", owner, me))
		}
		var fresh bool
		if err := tx.QueryRow(ctx, "SELECT to_regclass($1) IS NULL", recordTable).Scan(&fresh); err != nil {
			return err
		}
		for _, stmt := range []string{
			"CREATE SCHEMA IF NOT EXISTS tenantprov",
			"REVOKE ALL ON SCHEMA tenantprov FROM PUBLIC",
			`CREATE TABLE IF NOT EXISTS ` + recordTable + ` (
    tenant       text PRIMARY KEY,
    generation   bigint NOT NULL,
    role_oid     oid,
    database_oid oid,
    updated_at   timestamptz NOT NULL DEFAULT now()
)`,
			"REVOKE ALL ON TABLE " + recordTable + " FROM PUBLIC",
			"ALTER TABLE " + recordTable + " ADD COLUMN IF NOT EXISTS suspended boolean NOT NULL DEFAULT false",
			`CREATE TABLE IF NOT EXISTS ` + credentialsTable + ` (
    tenant   text NOT NULL REFERENCES ` + recordTable + ` (tenant) ON DELETE CASCADE,
    version  integer NOT NULL CHECK (version >= 1),
    role_oid oid NOT NULL,
    PRIMARY KEY (tenant, version)
)`,
			"ALTER TABLE " + credentialsTable + " ADD COLUMN IF NOT EXISTS retiring boolean NOT NULL DEFAULT false",
			"REVOKE ALL ON TABLE " + credentialsTable + " FROM PUBLIC",
		} {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		if fresh {
			return importRoleMarkers(ctx, tx)
		}
		return nil
	})
	return wrap("create the system record "+recordTable, err)
}

// legacyMarker is the COMMENT that agents before the system record wrote on
// tenant roles and databases.
type legacyMarker struct {
	ManagedBy  string `json:"managed_by"`
	Tenant     string `json:"tenant"`
	Generation int64  `json:"generation"`
}

// importRoleMarkers fills a just-created system record with the tenants an
// older agent provisioned, so that an upgrade does not turn them into
// foreign resources that Deprovision leaves behind. It runs once per
// server, in the transaction that creates the record, and trusts only the
// ROLE's comment: COMMENT ON ROLE needs CREATEROLE (or superuser), which a
// tenant role never has, whereas a tenant owns its database and can rewrite
// that comment (issue 10). The database is imported only if the role owns
// it — a role without CREATEDB cannot make that so.
func importRoleMarkers(ctx context.Context, tx pgx.Tx) error {
	rows, err := tx.Query(ctx, `
SELECT r.rolname, shobj_description(r.oid, 'pg_authid'), r.oid, d.oid
FROM pg_roles r LEFT JOIN pg_database d ON d.datname = r.rolname AND d.datdba = r.oid
WHERE r.rolname LIKE 'tenant\_%' AND shobj_description(r.oid, 'pg_authid') IS NOT NULL`)
	if err != nil {
		return err
	}
	type found struct {
		tenant     string
		generation int64
		roleOID    uint32
		dbOID      *uint32
	}
	var legacy []found
	var name, comment string
	var roleOID uint32
	var dbOID *uint32
	_, err = pgx.ForEachRow(rows, []any{&name, &comment, &roleOID, &dbOID}, func() error {
		var m legacyMarker
		if json.Unmarshal([]byte(comment), &m) != nil || m.ManagedBy != ManagedBy || m.Generation < 0 {
			return nil
		}
		if id, err := events.ParseTenantID(m.Tenant); err != nil || id.PostgresRole() != name {
			return nil
		}
		legacy = append(legacy, found{m.Tenant, m.Generation, roleOID, dbOID})
		return nil
	})
	if err != nil {
		return err
	}
	for _, f := range legacy {
		if _, err := tx.Exec(ctx, "INSERT INTO "+recordTable+" (tenant, generation, role_oid, database_oid) VALUES ($1, $2, $3, $4) ON CONFLICT (tenant) DO NOTHING",
			f.tenant, f.generation, f.roleOID, f.dbOID); err != nil {
			return err
		}
	}
	return nil
}

// closeOtherDatabases revokes PUBLIC's CONNECT and TEMPORARY on every
// database that has them, except the tenant namespace (tenantprov's tenant
// databases are closed by Provision, foreign ones are never touched),
// databases nobody can connect to (template0) and Config.KeepPublicConnect.
// PostgreSQL grants both to PUBLIC on every new database, so this runs at
// start and before every provision.
func (s *Store) closeOtherDatabases(ctx context.Context, db adminDB) error {
	keep := s.cfg.keepPublicConnect()
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
SELECT datname FROM pg_database
WHERE datallowconn AND datname NOT LIKE 'tenant\_%' AND NOT (datname = ANY($1))
  AND (has_database_privilege('public', oid, 'CONNECT') OR has_database_privilege('public', oid, 'TEMPORARY'))
ORDER BY 1`, keep)
		if err != nil {
			return err
		}
		open, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil || len(open) == 0 {
			return err
		}
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", setupLockKey); err != nil {
			return err
		}
		for _, db := range open {
			if _, err := tx.Exec(ctx, "REVOKE CONNECT, TEMPORARY ON DATABASE "+ident(db)+" FROM PUBLIC"); err != nil {
				return err
			}
		}
		return nil
	})
	return wrap("revoke PUBLIC CONNECT on the server's other databases", err)
}

// ensureCanary makes sure the canary database exists, carries a comment
// saying what it is and admits nobody but superusers (PUBLIC's CONNECT and
// TEMPORARY revoked). Names beginning "tenantprov" are reserved for the
// system (DESIGN.md §2), so an existing canary is ours whatever its comment.
func (s *Store) ensureCanary(ctx context.Context, conn adminDB) error {
	db := events.CanaryDatabase
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", db).Scan(&exists); err != nil {
		return wrap("look up canary database", err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident(db)); err != nil && sqlState(err) != "42P04" {
			return wrap("create canary database "+db, err)
		}
	}
	comment, err := Marker{ManagedBy: ManagedBy, Purpose: "canary"}.literal()
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "COMMENT ON DATABASE "+ident(db)+" IS "+comment); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "REVOKE ALL ON DATABASE "+ident(db)+" FROM PUBLIC")
		return err
	})
	return wrap("mark canary database "+db, err)
}

// withTenantLock runs fn on one admin connection holding a session-level
// advisory lock for the tenant, so that two replicas (or a redelivered
// command) never interleave on the same tenant.
func (s *Store) withTenantLock(ctx context.Context, tenant events.TenantID, fn func(conn *pgxpool.Conn) error) error {
	return s.withSessionLock(ctx, lockKey(tenant), "lock tenant "+string(tenant), fn)
}

// withSessionLock runs fn on one admin connection holding the session-level
// advisory lock key. The lock dies with the session if the unlock fails.
func (s *Store) withSessionLock(ctx context.Context, key int64, what string, fn func(conn *pgxpool.Conn) error) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return wrap("acquire admin connection", err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", key); err != nil {
		conn.Release()
		return wrap(what, err)
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
