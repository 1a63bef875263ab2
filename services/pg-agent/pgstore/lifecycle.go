package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// The lifecycle after provisioning (DESIGN.md §10).
//
// PostgreSQL keeps one password per role, so a second credential is a
// second login role. Credential version 1 is the owner role "tenant_<id>"
// that Provision creates; version N ≥ 2 is the login role
// "tenant_<id>__vN":
//
//   - LOGIN, NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS,
//     the same CONNECTION LIMIT, a SCRAM verifier computed here;
//   - a member of the owner role, with INHERIT (its sessions pass the
//     database's CONNECT check through the owner's grant);
//   - ALTER ROLE … SET role = "tenant_<id>": its sessions start as the
//     owner role (current_user is "tenant_<id>", session_user the version
//     role), so what either credential creates is owned by the owner role
//     and reachable by the other — and RESET ROLE returns to the owner, not
//     to the version role;
//   - in the tenant's database, default privileges FOR ROLE the version
//     role that grant the owner role everything the version role creates
//     after an explicit SET ROLE NONE.
//
// Both are recorded by OID in credentialsTable. Retire revokes a version:
// NOLOGIN, its sessions terminated, then for a version role REASSIGN OWNED
// to the owner role in the tenant's database, DROP OWNED and DROP ROLE; for
// version 1 (the owner role, which keeps owning the database and its
// objects) NOLOGIN and PASSWORD NULL. The database, its owner and the
// objects never change hands, so the tenant's data stays reachable by the
// kept credential.

var (
	_ agent.Rotator   = (*Store)(nil)
	_ agent.Suspender = (*Store)(nil)
	_ agent.Observer  = (*Store)(nil)
)

// maxVersion bounds credential versions so that a version role's name stays
// well within PostgreSQL's 63-byte identifiers.
const maxVersion = 1_000_000

// sessionsGoneWait is how long Retire and Suspend wait for terminated
// sessions to end (pg_terminate_backend only signals).
const sessionsGoneWait = 15 * time.Second

// Rotate creates (or resets) the login role of credential req.Version next
// to the tenant's current credentials; see the package's lifecycle notes.
// The credential it returns names that role as "user" — rotated
// credentials' user is "tenant_<id>__vN", not "tenant_<id>" (the database,
// its owner and the tenant's objects keep the DESIGN.md §2 names). A
// suspended tenant's new role is created NOLOGIN; Resume enables it. A role
// with the version role's name that the record does not name is foreign:
// Rotate fails with agent.ErrConflict and leaves it untouched.
func (s *Store) Rotate(ctx context.Context, req agent.RotateRequest) (agent.RotateResponse, error) {
	tenant, err := checkTenant(req.Tenant)
	if err != nil {
		return agent.RotateResponse{}, err
	}
	if req.Version < 2 || req.Version > maxVersion {
		return agent.RotateResponse{}, invalid(fmt.Errorf("%w: tenant %s: credential version %d (a rotated credential is version 2 or later)", ErrInvalidRequest, tenant, req.Version))
	}
	verifier, err := SCRAMVerifier(req.Password)
	if err != nil {
		return agent.RotateResponse{}, invalid(fmt.Errorf("tenant %s: %w", tenant, err))
	}
	pw, err := quoteLiteral(verifier)
	if err != nil {
		return agent.RotateResponse{}, fmt.Errorf("tenant %s: verifier: %w", tenant, err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if err := s.prepare(ctx); err != nil {
		return agent.RotateResponse{}, err
	}
	owner, db, vrole := tenant.PostgresRole(), tenant.PostgresDatabase(), versionRole(tenant, req.Version)
	var resp agent.RotateResponse
	err = s.withTenantLock(ctx, tenant, func(conn *pgxpool.Conn) error {
		st, err := s.ownedState(ctx, conn, tenant, req.Generation)
		if err != nil {
			return err
		}
		if _, ok := st.cred(req.CurrentVersion); !ok {
			resp.Warnings = append(resp.Warnings, fmt.Sprintf("credential version %d is not live (live: %s)", req.CurrentVersion, versionsText(st.versions())))
		}
		var (
			oid                                                 *uint32
			super, createDB, createRole, replication, bypassRLS bool
		)
		err = conn.QueryRow(ctx, "SELECT oid, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls FROM pg_roles WHERE rolname = $1", vrole).
			Scan(&oid, &super, &createDB, &createRole, &replication, &bypassRLS)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return wrap("look up role "+vrole, err)
		}
		if rec, ok := st.cred(req.Version); oid != nil && (!ok || rec.roleOID != *oid) {
			return agent.Conflict("postgres role " + vrole + " exists and was not created by tenantprov")
		}
		login := "LOGIN"
		if st.suspended {
			login = "NOLOGIN"
		}
		var stmts []string
		if oid == nil {
			stmts = append(stmts, fmt.Sprintf("CREATE ROLE %s WITH %s NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT %d PASSWORD %s IN ROLE %s",
				ident(vrole), login, s.cfg.ConnectionLimit, pw, ident(owner)))
		} else {
			attrs := login + " INHERIT"
			for _, a := range []struct {
				on   bool
				name string
			}{{super, "NOSUPERUSER"}, {createDB, "NOCREATEDB"}, {createRole, "NOCREATEROLE"}, {replication, "NOREPLICATION"}, {bypassRLS, "NOBYPASSRLS"}} {
				if a.on {
					attrs += " " + a.name
				}
			}
			stmts = append(stmts,
				fmt.Sprintf("ALTER ROLE %s WITH %s CONNECTION LIMIT %d PASSWORD %s", ident(vrole), attrs, s.cfg.ConnectionLimit, pw))
			if !st.isMember(ctx, conn, *oid) {
				stmts = append(stmts, "GRANT "+ident(owner)+" TO "+ident(vrole))
			}
		}
		stmts = append(stmts, "ALTER ROLE "+ident(vrole)+" SET role = "+ident(owner))
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			for _, stmt := range stmts {
				if _, err := tx.Exec(ctx, stmt); err != nil {
					return err
				}
			}
			// A tenant recorded before credentials were has no row for
			// version 1 yet; it gets one, so that both versions are live.
			if _, err := tx.Exec(ctx, `
INSERT INTO `+credentialsTable+` (tenant, version, role_oid)
SELECT tenant, 1, role_oid FROM `+recordTable+` t
WHERE t.tenant = $1 AND t.role_oid IS NOT NULL AND NOT EXISTS (SELECT 1 FROM `+credentialsTable+` c WHERE c.tenant = $1)`, string(tenant)); err != nil {
				return err
			}
			return recordCredential(ctx, tx, tenant, req.Version, vrole)
		})
		if err != nil {
			return wrap("create login role "+vrole, err)
		}
		return s.grantOwnerDefaults(ctx, db, vrole, owner)
	})
	if err != nil {
		return agent.RotateResponse{}, err
	}
	resp.Credential = agent.Credential{
		"host":     s.publicHost,
		"port":     s.publicPort,
		"database": db,
		"user":     vrole,
		"password": req.Password,
		"url":      s.tenantURL(vrole, req.Password, db),
	}
	resp.Warnings = append(resp.Warnings, s.warnings()...)
	return resp, nil
}

// ownedState reads the tenant's state and fails unless tenantprov's record
// names its role and database at generation (0: any).
func (s *Store) ownedState(ctx context.Context, conn *pgxpool.Conn, tenant events.TenantID, generation uint64) (*state, error) {
	st, err := readState(ctx, conn, tenant)
	if err != nil {
		return nil, err
	}
	if !st.roleOurs() || !st.dbOurs() {
		return nil, invalid(fmt.Errorf("tenant %s: %w (tenantprov's record names no role and database of it)", tenant, ErrNotProvisioned))
	}
	if gen := st.generation(); generation > 0 && gen != generation {
		return nil, invalid(fmt.Errorf("tenant %s: role and database belong to generation %d, the command to generation %d: %w", tenant, gen, generation, ErrStaleGeneration))
	}
	return st, nil
}

// isMember reports whether the role member is a direct member of the
// tenant's owner role.
func (st *state) isMember(ctx context.Context, q querier, member uint32) bool {
	var ok bool
	err := q.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_auth_members WHERE roleid = $1 AND member = $2)", *st.roleOID, member).Scan(&ok)
	return err == nil && ok
}

// versions lists the live credential versions.
func (st *state) versions() []int {
	vs := make([]int, len(st.creds))
	for i, c := range st.creds {
		vs[i] = c.version
	}
	return vs
}

// grantOwnerDefaults makes everything vrole creates in the tenant's
// database (after SET ROLE NONE) reachable by the owner role, hence by
// every other credential.
func (s *Store) grantOwnerDefaults(ctx context.Context, db, vrole, owner string) error {
	conn, err := s.adminConnect(ctx, db)
	if err != nil {
		return err
	}
	defer closeConn(ctx, conn)
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, kind := range []string{"TABLES", "SEQUENCES", "FUNCTIONS", "TYPES", "SCHEMAS"} {
			if _, err := tx.Exec(ctx, "ALTER DEFAULT PRIVILEGES FOR ROLE "+ident(vrole)+" GRANT ALL ON "+kind+" TO "+ident(owner)); err != nil {
				return err
			}
		}
		return nil
	})
	return wrap("default privileges of "+vrole+" in "+db, err)
}

// Retire revokes every live credential of the tenant but req.Keep (see the
// package's lifecycle notes) and confirms each is refused: the role is
// gone, or (version 1) cannot log in, and none of its sessions is left.
// Open sessions of a retired credential are terminated. It refuses, and
// changes nothing, when req.Keep is not a live credential whose role
// exists: retiring would lock the tenant out.
func (s *Store) Retire(ctx context.Context, req agent.RetireRequest) (agent.RetireResponse, error) {
	tenant, err := checkTenant(req.Tenant)
	if err != nil {
		return agent.RetireResponse{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if err := s.prepare(ctx); err != nil {
		return agent.RetireResponse{}, err
	}
	owner, db := tenant.PostgresRole(), tenant.PostgresDatabase()
	var resp agent.RetireResponse
	err = s.withTenantLock(ctx, tenant, func(conn *pgxpool.Conn) error {
		st, err := s.ownedState(ctx, conn, tenant, req.Generation)
		if err != nil {
			return err
		}
		if keep, ok := st.cred(req.Keep); !ok || !keep.exists {
			return invalid(fmt.Errorf("%w: tenant %s: credential version %d is not live (live: %s); nothing retired", ErrInvalidRequest, tenant, req.Keep, versionsText(st.versions())))
		}
		var retired []string
		for _, c := range st.creds {
			if c.version == req.Keep {
				continue
			}
			if err := s.retireOne(ctx, conn, st, c, owner, db); err != nil {
				return err
			}
			resp.Retired = append(resp.Retired, c.version)
			retired = append(retired, versionRole(tenant, c.version))
		}
		return confirmRefused(ctx, conn, retired)
	})
	if err != nil {
		return agent.RetireResponse{}, err
	}
	return resp, nil
}

// retireOne revokes one credential; the record's row goes in the
// transaction that drops the role (or disables the owner role).
func (s *Store) retireOne(ctx context.Context, conn *pgxpool.Conn, st *state, c credential, owner, db string) error {
	deleteRow := func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "DELETE FROM "+credentialsTable+" WHERE tenant = $1 AND version = $2", string(st.tenant), c.version)
		return err
	}
	if c.version == 1 {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "ALTER ROLE "+ident(owner)+" WITH NOLOGIN PASSWORD NULL"); err != nil {
				return err
			}
			// A tenant recorded before credentials were has no rows: its
			// other (kept) version was recorded by Rotate, so delete just v1.
			return deleteRow(tx)
		})
		if err != nil {
			return wrap("retire credential v1 of "+string(st.tenant), err)
		}
		return terminateSessions(ctx, conn, []string{owner})
	}
	if !c.exists {
		err := pgx.BeginFunc(ctx, conn, deleteRow)
		return wrap("retire credential of "+string(st.tenant), err)
	}
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "ALTER ROLE "+ident(c.name)+" NOLOGIN"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "UPDATE "+credentialsTable+" SET retiring = true WHERE tenant = $1 AND version = $2", string(st.tenant), c.version)
		return err
	})
	if err != nil {
		return wrap("alter role "+c.name+" nologin", err)
	}
	if err := terminateSessions(ctx, conn, []string{c.name}); err != nil {
		return err
	}
	if err := waitSessionsGone(ctx, conn, []string{c.name}); err != nil {
		return err
	}
	// What the version role owns in the tenant's database becomes the
	// owner role's (reachable by the kept credential); what is left there
	// afterwards is privileges and default privileges, which DROP OWNED
	// removes.
	tconn, err := s.adminConnect(ctx, db)
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, tconn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "REASSIGN OWNED BY "+ident(c.name)+" TO "+ident(owner)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "DROP OWNED BY "+ident(c.name))
		return err
	})
	closeConn(ctx, tconn)
	if err != nil {
		return wrap("reassign what "+c.name+" owns in "+db, err)
	}
	if err := s.dropOwnedElsewhere(ctx, conn, c.name, c.roleOID); err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "DROP OWNED BY "+ident(c.name)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "DROP ROLE "+ident(c.name)); err != nil {
			return err
		}
		return deleteRow(tx)
	})
	return wrap("drop role "+c.name, err)
}

// errNotRefused reports a retired or suspended credential that still logs
// in or still has a session; it is transient, so the command is retried.
var errNotRefused = errors.New("still accepted")

// confirmRefused checks that none of roles can log in (dropped or NOLOGIN)
// and that none has a session left.
func confirmRefused(ctx context.Context, q querier, roles []string) error {
	if len(roles) == 0 {
		return nil
	}
	var canLogin []string
	rows, err := q.Query(ctx, "SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1) AND rolcanlogin ORDER BY 1", roles)
	if err == nil {
		canLogin, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil {
		return wrap("confirm that retired credentials are refused", err)
	}
	if len(canLogin) > 0 {
		return fmt.Errorf("login roles %v: %w", canLogin, errNotRefused)
	}
	return waitSessionsGone(ctx, q, roles)
}

// waitSessionsGone waits (up to sessionsGoneWait) until no session is
// logged in as one of roles.
func waitSessionsGone(ctx context.Context, q querier, roles []string) error {
	deadline := time.Now().Add(sessionsGoneWait)
	for {
		var n int
		if err := q.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = ANY($1) AND pid <> pg_backend_pid()", roles).Scan(&n); err != nil {
			return wrap("count sessions of "+fmt.Sprint(roles), err)
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d sessions of %v after termination: %w", n, roles, errNotRefused)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Suspend records the tenant as suspended, makes every live credential's
// role NOLOGIN (one transaction) and terminates their sessions. Nothing
// else changes: the database, its objects, grants and passwords stay.
func (s *Store) Suspend(ctx context.Context, req agent.SuspendRequest) error {
	return s.setSuspended(ctx, req, true)
}

// Resume clears the suspension and gives every live credential's role
// LOGIN back; their passwords never changed, so the same credentials work.
func (s *Store) Resume(ctx context.Context, req agent.SuspendRequest) error {
	return s.setSuspended(ctx, req, false)
}

func (s *Store) setSuspended(ctx context.Context, req agent.SuspendRequest, suspend bool) error {
	tenant, err := checkTenant(req.Tenant)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if err := s.prepare(ctx); err != nil {
		return err
	}
	login, what := "LOGIN", "resume"
	if suspend {
		login, what = "NOLOGIN", "suspend"
	}
	return s.withTenantLock(ctx, tenant, func(conn *pgxpool.Conn) error {
		st, err := s.ownedState(ctx, conn, tenant, req.Generation)
		if err != nil {
			return err
		}
		var roles []string
		for _, c := range st.creds {
			if c.exists && !(c.retiring && !suspend) {
				roles = append(roles, c.name)
			}
		}
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "UPDATE "+recordTable+" SET suspended = $2, updated_at = now() WHERE tenant = $1", string(tenant), suspend); err != nil {
				return err
			}
			for _, r := range roles {
				if _, err := tx.Exec(ctx, "ALTER ROLE "+ident(r)+" "+login); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return wrap(what+" tenant "+string(tenant), err)
		}
		if !suspend {
			return nil
		}
		all := append(roles, tenant.PostgresRole())
		if err := terminateSessions(ctx, conn, all); err != nil {
			return err
		}
		return confirmRefused(ctx, conn, all)
	})
}
