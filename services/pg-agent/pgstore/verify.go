package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// SQLSTATEs the checks expect.
const (
	sqlstateInsufficientPrivilege = "42501"
	sqlstateInvalidPassword       = "28P01"
)

// Verify runs the isolation checks in both directions (DESIGN.md §5).
//
// Outward — what the tenant's credential reaches, tried with it:
//
//   - own_access: in its database, CREATE TABLE / INSERT / SELECT / DROP TABLE
//     in schema public work;
//   - admin_denied: the role has none of SUPERUSER, CREATEDB, CREATEROLE,
//     REPLICATION, BYPASSRLS, and CREATE DATABASE and CREATE ROLE fail with
//     42501;
//   - canary_denied: connecting to tenantprov_canary fails with 42501
//     (no CONNECT privilege);
//   - other_databases_denied: in pg_database, one query — no role of the
//     tenant has CONNECT (has_database_privilege) on a connectable database
//     but its own and Config.KeepPublicConnect;
//   - wrong_password_refused: logging in with a random wrong password fails
//     with 28P01 — a server that lets it in (trust authentication) fails
//     the check.
//
// Inward — who else reaches the tenant's slice, read from the catalogs with
// the admin credential (inspect, the code Observe runs too). "The tenant's
// roles" are the owner role and the live version roles the system record
// names by OID (credentialsTable; see Rotate):
//
//   - role_locked_down: none of the tenant's roles has SUPERUSER, CREATEDB,
//     CREATEROLE, REPLICATION, BYPASSRLS; LOGIN is on exactly for the live
//     credentials (none while suspended); the connection limit is set
//     (1..PG_CONNECTION_LIMIT); no role but the agent's admin and the
//     recorded version roles is a member of the owner role (a member acts
//     as the tenant), the owner role is a member of no role, and a version
//     role is a member of the owner role only, with INHERIT, its sessions
//     starting as the owner role;
//   - database_private: the database is owned by the owner role, is not a
//     template (which any role with CREATEDB may copy), its ACL
//     (aclexplode) grants nothing to PUBLIC or to any role but the tenant's
//     and the admin, and the owner role keeps CONNECT and TEMPORARY;
//   - schemas_private: in the tenant's database, every schema but the
//     system ones is owned by one of the tenant's roles and grants nothing
//     to PUBLIC or any other role;
//   - system_record: tenantprov's record names this role and database (by
//     OID) at this generation, every recorded version role exists under its
//     name, and the credential's user is one of them.
//
// The outward other_databases_denied covers every one of the tenant's
// roles, and admin_denied looks at both the session user (the login role)
// and the current user (the owner role a rotated credential acts as).
//
// It connects to the admin URL's host and port (with its TLS settings), not
// to the public endpoint: the agent is known to reach that address, and what
// is checked — the role, its grants and the server's authentication — is the
// same server behind either. The public host may be a name or proxy the
// agent's network cannot reach.
//
// A check that fails is reported in the response; an error means the checks
// could not run (the server is unreachable, say).
func (s *Store) Verify(ctx context.Context, req agent.VerifyRequest) (agent.VerifyResponse, error) {
	tenant, err := checkTenant(req.Tenant)
	if err != nil {
		return agent.VerifyResponse{}, err
	}
	role, db := tenant.PostgresRole(), tenant.PostgresDatabase()
	user, database, password := req.Credential.String("user"), req.Credential.String("database"), credPassword(req.Credential)
	if !tenantLogin(tenant, user) || database != db || password.IsZero() {
		return agent.VerifyResponse{}, invalid(fmt.Errorf("%w: the credential is not tenant %s's (want user %s or one of its rotated roles, database %s and a password)", ErrInvalidRequest, tenant, role, db))
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if err := s.prepare(ctx); err != nil {
		return agent.VerifyResponse{}, err
	}

	var resp agent.VerifyResponse
	own, admin, err := s.checkOwnAndAdmin(ctx, user, password, db)
	if err != nil {
		return agent.VerifyResponse{}, err
	}
	resp.Checks = append(resp.Checks, own, admin)
	canary, err := s.checkRefused(ctx, agent.CheckCanaryDenied, user, password, events.CanaryDatabase, sqlstateInsufficientPrivilege,
		"the tenant credential connected to "+events.CanaryDatabase)
	if err != nil {
		return agent.VerifyResponse{}, err
	}
	resp.Checks = append(resp.Checks, canary)
	wrong, err := secret.Generate()
	if err != nil {
		return agent.VerifyResponse{}, err
	}
	wrongPw, err := s.checkRefused(ctx, agent.CheckWrongPasswordRefused, user, wrong, db, sqlstateInvalidPassword,
		"a wrong password logged in: the server does not check this role's password (trust authentication?)")
	if err != nil {
		return agent.VerifyResponse{}, err
	}
	resp.Checks = append(resp.Checks, wrongPw)

	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return agent.VerifyResponse{}, wrap("verify: acquire admin connection", err)
	}
	defer conn.Release()
	st, err := readState(ctx, conn, tenant)
	if err != nil {
		return agent.VerifyResponse{}, err
	}
	findings, err := s.inspect(ctx, conn, st, req.Generation)
	if err != nil {
		return agent.VerifyResponse{}, err
	}
	if _, ok := st.loginRole(user); !ok && !(len(st.creds) == 0 && user == role) {
		findings = append(findings, finding{check: CheckSystemRecord, kind: DriftMarkerMissing, resource: user,
			detail: "the system record names no live credential with login role " + user})
	}
	resp.Checks = append(resp.Checks, checksFrom(findings, CheckOtherDatabasesDenied, CheckRoleLockedDown, CheckDatabasePrivate, CheckSchemasPrivate, CheckSystemRecord)...)
	return resp, nil
}

// tenantLogin: user is a login role name of tenant — its owner role
// (credential version 1) or a version role "tenant_<id>__vN".
func tenantLogin(tenant events.TenantID, user string) bool {
	if user == tenant.PostgresRole() {
		return true
	}
	rest, ok := strings.CutPrefix(user, tenant.PostgresRole()+versionSep)
	if !ok {
		return false
	}
	v, err := strconv.Atoi(rest)
	return err == nil && v >= 2 && v <= maxVersion && strconv.Itoa(v) == rest
}

// pg-agent's own checks, beyond the four every store runs (Verify says what
// each proves).
const (
	CheckOtherDatabasesDenied = "other_databases_denied"
	CheckRoleLockedDown       = "role_locked_down"
	CheckDatabasePrivate      = "database_private"
	CheckSchemasPrivate       = "schemas_private"
	CheckSystemRecord         = "system_record"
)

// adminOID is the OID of the role the agent's admin sessions run as; it
// may legitimately hold grants on, or membership in, a tenant's role (a
// non-superuser CREATEROLE admin on PostgreSQL ≥ 16 is made a member of
// every role it creates).
const adminOID = "(SELECT oid FROM pg_roles WHERE rolname = current_user)"

// checkOwnAndAdmin runs own_access and admin_denied on one tenant session.
func (s *Store) checkOwnAndAdmin(ctx context.Context, user string, password secret.String, db string) (own, admin events.Check, err error) {
	own = events.Check{Name: agent.CheckOwnAccess}
	admin = events.Check{Name: agent.CheckAdminDenied}
	conn, err := s.connectTenant(ctx, user, password, db)
	if err != nil {
		if sqlState(err) == "" {
			return own, admin, wrap("verify: connect to "+db+" as "+user, err)
		}
		own.Detail = "cannot connect: " + pgDetail(err)
		admin.Detail = "not run: " + own.Detail
		return own, admin, nil
	}
	defer closeConn(ctx, conn)

	probe, err := probeName()
	if err != nil {
		return own, admin, err
	}
	if detail, err := ownAccess(ctx, conn, probe); err != nil {
		if sqlState(err) == "" {
			return own, admin, wrap("verify: own access in "+db, err)
		}
		own.Detail = detail + ": " + pgDetail(err)
	} else {
		own.Passed = true
	}

	admin.Passed, admin.Detail, err = s.adminDenied(ctx, conn, probe)
	if err != nil {
		return own, admin, err
	}
	return own, admin, nil
}

// ownAccess creates, fills, reads and drops a probe table in public; the
// returned string names the step that failed.
func ownAccess(ctx context.Context, conn *pgx.Conn, probe string) (string, error) {
	table := pgx.Identifier{"public", probe}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE TABLE "+table+" (id int PRIMARY KEY, v text NOT NULL)"); err != nil {
		return "create table", err
	}
	dropped := false
	defer func() {
		if !dropped {
			_, _ = conn.Exec(ctx, "DROP TABLE IF EXISTS "+table)
		}
	}()
	if _, err := conn.Exec(ctx, "INSERT INTO "+table+" (id, v) VALUES ($1, $2)", 1, probe); err != nil {
		return "insert", err
	}
	var got string
	if err := conn.QueryRow(ctx, "SELECT v FROM "+table+" WHERE id = $1", 1).Scan(&got); err != nil {
		return "select", err
	}
	if got != probe {
		return "select", fmt.Errorf("read back %q, wrote %q", got, probe)
	}
	if _, err := conn.Exec(ctx, "DROP TABLE "+table); err != nil {
		return "drop table", err
	}
	dropped = true
	return "", nil
}

// adminDenied checks the role's attributes and that CREATE DATABASE and
// CREATE ROLE are refused. Whatever a failed check did create is removed
// with the admin credential.
func (s *Store) adminDenied(ctx context.Context, conn *pgx.Conn, probe string) (bool, string, error) {
	var super, createDB, createRole, replication, bypassRLS bool
	// Both the session user (the login role) and the current user (the
	// owner role a rotated credential's sessions start as).
	err := conn.QueryRow(ctx, "SELECT bool_or(rolsuper), bool_or(rolcreatedb), bool_or(rolcreaterole), bool_or(rolreplication), bool_or(rolbypassrls) FROM pg_roles WHERE rolname IN (current_user, session_user)").
		Scan(&super, &createDB, &createRole, &replication, &bypassRLS)
	if err != nil {
		if sqlState(err) == "" {
			return false, "", wrap("verify: read role attributes", err)
		}
		return false, "read role attributes: " + pgDetail(err), nil
	}
	if super || createDB || createRole || replication || bypassRLS {
		return false, fmt.Sprintf("role attributes: superuser=%t createdb=%t createrole=%t replication=%t bypassrls=%t", super, createDB, createRole, replication, bypassRLS), nil
	}
	for _, op := range []struct{ what, create, drop string }{
		{"CREATE DATABASE", "CREATE DATABASE " + ident(probe), "DROP DATABASE IF EXISTS " + ident(probe) + " WITH (FORCE)"},
		{"CREATE ROLE", "CREATE ROLE " + ident(probe), "DROP ROLE IF EXISTS " + ident(probe)},
	} {
		_, err := conn.Exec(ctx, op.create)
		switch code := sqlState(err); {
		case err == nil:
			if _, derr := s.pool.Exec(ctx, op.drop); derr != nil {
				return false, "", wrap("verify: remove "+probe+" created by the tenant", derr)
			}
			return false, op.what + " succeeded with the tenant credential", nil
		case code == sqlstateInsufficientPrivilege:
			// denied, as it must be
		case code == "":
			return false, "", wrap("verify: "+op.what, err)
		default:
			return false, op.what + ": want SQLSTATE 42501, got " + pgDetail(err), nil
		}
	}
	return true, "", nil
}

// checkRefused connects as user to db and passes if the server refuses with
// SQLSTATE want.
func (s *Store) checkRefused(ctx context.Context, name, user string, password secret.String, db, want, ifAdmitted string) (events.Check, error) {
	c := events.Check{Name: name}
	conn, err := s.connectTenant(ctx, user, password, db)
	switch code := sqlState(err); {
	case err == nil:
		closeConn(ctx, conn)
		c.Detail = ifAdmitted
	case code == want:
		c.Passed = true
	case code == "":
		return c, wrap("verify: connect to "+db+" as "+user, err)
	default:
		c.Detail = "want SQLSTATE " + want + ", got " + pgDetail(err)
	}
	return c, nil
}

// connectTenant opens a session as the tenant on the admin host and port,
// with the admin URL's TLS settings.
func (s *Store) connectTenant(ctx context.Context, user string, password secret.String, db string) (*pgx.Conn, error) {
	cc := s.admin.Copy()
	cc.User = user
	cc.Password = password.Reveal()
	cc.Database = db
	cc.RuntimeParams["application_name"] = applicationName + "-verify"
	// The role's and database's defaults are the tenant's to set; the
	// checks' catalog lookups must not resolve to its objects.
	cc.RuntimeParams["search_path"] = adminSessionParams["search_path"]
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, scrubConnectError(err)
	}
	return conn, nil
}

// pgDetail is a server error's SQLSTATE and message, for check details (no
// statement text, no secret).
func pgDetail(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code + " " + pe.Message
	}
	return err.Error()
}

// probeName is a fresh name for verification objects, in the reserved
// tenantprov namespace.
func probeName() (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("probe name: %w", err)
	}
	return "tenantprov_probe_" + hex.EncodeToString(b), nil
}

// credPassword reads the password from a credential as Provision returns it
// (secret.String) or as it arrives after a JSON round trip (string).
func credPassword(c agent.Credential) secret.String {
	if s := c.Secret("password"); !s.IsZero() {
		return s
	}
	if s, ok := c["password"].(string); ok {
		return secret.String(s)
	}
	return ""
}
