package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
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

// Verify runs the isolation checks with the tenant's own credential:
//
//   - own_access: in its database, CREATE TABLE / INSERT / SELECT / DROP TABLE
//     in schema public work;
//   - admin_denied: the role has none of SUPERUSER, CREATEDB, CREATEROLE,
//     REPLICATION, BYPASSRLS, and CREATE DATABASE and CREATE ROLE fail with
//     42501;
//   - canary_denied: connecting to tenantprov_canary fails with 42501
//     (no CONNECT privilege);
//   - wrong_password_refused: logging in with a random wrong password fails
//     with 28P01 — a server that lets it in (trust authentication) fails
//     the check.
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
	if user != role || database != db || password.IsZero() {
		return agent.VerifyResponse{}, invalid(fmt.Errorf("%w: the credential is not tenant %s's (want user and database %s and a password)", ErrInvalidRequest, tenant, role))
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if err := s.ensureCanary(ctx); err != nil {
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
	for _, shared := range s.cfg.SharedDatabases {
		if shared = strings.TrimSpace(shared); shared == "" {
			continue
		}
		c, err := s.checkRefused(ctx, CheckSharedDatabaseDenied, user, password, shared, sqlstateInsufficientPrivilege,
			"the tenant credential connected to the shared database "+shared)
		if err != nil {
			return agent.VerifyResponse{}, err
		}
		if c.Detail == "" {
			c.Detail = "refused: " + shared
		} else {
			c.Detail = shared + ": " + c.Detail
		}
		resp.Checks = append(resp.Checks, c)
	}
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
	return resp, nil
}

// CheckSharedDatabaseDenied is pg-agent's own check, beyond the four every
// store runs: the tenant cannot connect to the server's shared databases
// (Config.SharedDatabases).
const CheckSharedDatabaseDenied = "shared_database_denied"

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
	err := conn.QueryRow(ctx, "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls FROM pg_roles WHERE rolname = current_user").
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
