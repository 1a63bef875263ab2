package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// Plans on PostgreSQL (DESIGN.md §10): the role's CONNECTION LIMIT and
// role-level settings (ALTER ROLE … SET) on every login role of the tenant
// (the owner role and the rotated version roles). statement_timeout and
// idle_in_transaction_session_timeout are defaults of the role's sessions:
// PostgreSQL lets any session change them (they are user-settable), so a
// tenant that issues SET can raise them for itself. temp_file_limit is
// superuser-only and so binds the tenant.

var (
	_ agent.PlanApplier = (*Store)(nil)
	_ agent.DryRunner   = (*Store)(nil)
)

// planSettings are the role settings a plan manages, in the order they are
// applied; value is the setting for the plan ("" resets it).
func planSettings(p *events.PostgresPlan) []struct{ name, value string } {
	ms := func(d events.Duration) string {
		if d <= 0 {
			return ""
		}
		return strconv.FormatInt(max(1, time.Duration(d).Milliseconds()), 10)
	}
	kb := ""
	if p.TempFileLimitKB > 0 {
		kb = strconv.FormatInt(p.TempFileLimitKB, 10)
	}
	return []struct{ name, value string }{
		{"statement_timeout", ms(p.StatementTimeout)},
		{"idle_in_transaction_session_timeout", ms(p.IdleInTransactionSessionTimeout)},
		{"temp_file_limit", kb},
	}
}

// planStatements are the statements applying p to role.
func (s *Store) planStatements(role string, p *events.PostgresPlan) []string {
	limit := s.cfg.ConnectionLimit
	if p.ConnectionLimit > 0 {
		limit = p.ConnectionLimit
	}
	stmts := []string{fmt.Sprintf("ALTER ROLE %s CONNECTION LIMIT %d", ident(role), limit)}
	for _, set := range planSettings(p) {
		if set.value == "" {
			stmts = append(stmts, fmt.Sprintf("ALTER ROLE %s RESET %s", ident(role), set.name))
		} else {
			stmts = append(stmts, fmt.Sprintf("ALTER ROLE %s SET %s = %s", ident(role), set.name, set.value))
		}
	}
	return stmts
}

// aboveCeiling reports a plan connection limit above PG_CONNECTION_LIMIT,
// which is the ceiling Verify and Observe hold every tenant role to (a
// higher limit would be reported as drift and repaired away).
func (s *Store) aboveCeiling(p *events.PostgresPlan) *events.Conflict {
	if p.ConnectionLimit <= s.cfg.ConnectionLimit {
		return nil
	}
	return &events.Conflict{Kind: events.ConflictUnenforceable, Resource: "connection_limit",
		Detail: fmt.Sprintf("connection limit %d is above this agent's PG_CONNECTION_LIMIT %d, the most any tenant role may have", p.ConnectionLimit, s.cfg.ConnectionLimit)}
}

func postgresSection(p *events.Plan) *events.PostgresPlan {
	if p == nil || p.Postgres == nil {
		return &events.PostgresPlan{}
	}
	return p.Postgres
}

// ApplyPlan sets the plan's connection limit and role settings on every
// login role of the tenant (resetting the settings the plan leaves unset,
// and the connection limit to the agent's default), in one transaction,
// then reads them back from pg_roles and pg_db_role_setting.
func (s *Store) ApplyPlan(ctx context.Context, req agent.PlanRequest) (agent.PlanResponse, error) {
	tenant, err := checkTenant(req.Tenant)
	if err != nil {
		return agent.PlanResponse{}, err
	}
	want := postgresSection(req.Plan)
	if c := s.aboveCeiling(want); c != nil {
		return agent.PlanResponse{}, agent.Permanent(events.ReasonUnsupported, fmt.Errorf("plan for tenant %s: %s", tenant, c.Detail))
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	var (
		got      *events.PostgresPlan
		usage    map[string]int64
		warnings []string
	)
	err = s.withTenantLock(ctx, tenant, func(conn *pgxpool.Conn) error {
		st, err := s.ownedState(ctx, conn, tenant, req.Generation)
		if err != nil {
			return err
		}
		roles := st.loginRoleNames()
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			for _, role := range roles {
				for _, stmt := range s.planStatements(role, want) {
					if _, err := tx.Exec(ctx, stmt); err != nil {
						return fmt.Errorf("%s: %w", stmt, err)
					}
				}
			}
			return nil
		})
		if err != nil {
			return wrap("apply plan to tenant "+string(tenant), err)
		}
		for _, role := range roles {
			g, err := readPlan(ctx, conn, role)
			if err != nil {
				return err
			}
			if err := s.samePlan(want, g); err != nil {
				return fmt.Errorf("role %s after applying the plan: %w", role, err)
			}
			got = g
		}
		// The database's size is reported, not limited: PostgreSQL has
		// no per-database quota. Reading it needs CONNECT on the database
		// (or pg_read_all_stats); without that it is left out.
		var size int64
		if err := conn.QueryRow(ctx, "SELECT pg_database_size($1)", tenant.PostgresDatabase()).Scan(&size); err != nil {
			warnings = append(warnings, "database size not reported: the admin role may not read it (grant pg_read_all_stats)")
		} else {
			usage = map[string]int64{events.UsageDatabaseBytes: size}
		}
		return nil
	})
	if err != nil {
		return agent.PlanResponse{}, err
	}
	name := ""
	if req.Plan != nil {
		name = req.Plan.Name
	}
	return agent.PlanResponse{Limits: &events.Plan{Name: name, Postgres: got}, Usage: usage, Warnings: warnings}, nil
}

// loginRoleNames are the tenant's login roles: the owner role and the
// existing live version roles.
func (st *state) loginRoleNames() []string {
	roles := []string{st.tenant.PostgresRole()}
	for _, c := range st.versionRoles() {
		roles = append(roles, c.name)
	}
	return roles
}

// readPlan reads role's connection limit and plan settings as the server
// holds them.
func readPlan(ctx context.Context, q querier, role string) (*events.PostgresPlan, error) {
	var limit int
	var config []string
	err := q.QueryRow(ctx, `
SELECT r.rolconnlimit, coalesce(s.setconfig, '{}')
FROM pg_roles r LEFT JOIN pg_db_role_setting s ON s.setrole = r.oid AND s.setdatabase = 0
WHERE r.rolname = $1`, role).Scan(&limit, &config)
	if err != nil {
		return nil, wrap("read the limits of role "+role, err)
	}
	p := &events.PostgresPlan{ConnectionLimit: limit}
	for _, kv := range config {
		name, value, _ := strings.Cut(kv, "=")
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil {
			continue // a setting the plan did not write (units, or not ours)
		}
		switch name {
		case "statement_timeout":
			p.StatementTimeout = events.Duration(time.Duration(n) * time.Millisecond)
		case "idle_in_transaction_session_timeout":
			p.IdleInTransactionSessionTimeout = events.Duration(time.Duration(n) * time.Millisecond)
		case "temp_file_limit":
			p.TempFileLimitKB = n
		}
	}
	return p, nil
}

// samePlan reports how got differs from want (the connection limit 0
// meaning the agent's default).
func (s *Store) samePlan(want, got *events.PostgresPlan) error {
	w := *want
	if w.ConnectionLimit == 0 {
		w.ConnectionLimit = s.cfg.ConnectionLimit
	}
	w.StatementTimeout = events.Duration(time.Duration(w.StatementTimeout).Truncate(time.Millisecond))
	w.IdleInTransactionSessionTimeout = events.Duration(time.Duration(w.IdleInTransactionSessionTimeout).Truncate(time.Millisecond))
	if w != *got {
		return fmt.Errorf("%w: read back %+v, want %+v", errPlanNotHeld, *got, w)
	}
	return nil
}

var errPlanNotHeld = errors.New("the plan's limits do not hold")

// DryRun reports the statements a provision with req.Plan would run, the
// names, and every conflict, reading the catalogs only. The password is
// shown as '<redacted>'.
func (s *Store) DryRun(ctx context.Context, req agent.PlanRequest) (events.DryRun, error) {
	tenant, err := checkTenant(req.Tenant)
	if err != nil {
		return events.DryRun{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	role, db := tenant.PostgresRole(), tenant.PostgresDatabase()
	out := events.DryRun{Names: map[string]string{"database": db, "role": role, "pg_hba": HBALine(db, role, s.cfg.TenantCIDR)}}
	stmt := func(text, skip string) {
		out.Operations = append(out.Operations, events.Operation{Kind: "statement", Text: text, Skip: skip})
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return events.DryRun{}, wrap("acquire admin connection", err)
	}
	defer conn.Release()
	var recorded bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL", recordTable, credentialsTable).Scan(&recorded); err != nil {
		return events.DryRun{}, wrap("look for the system record", err)
	}
	st := &state{tenant: tenant}
	if recorded {
		if st, err = readState(ctx, conn, tenant); err != nil {
			return events.DryRun{}, err
		}
	} else {
		stmt("CREATE SCHEMA tenantprov; CREATE TABLE "+recordTable+" …; CREATE TABLE "+credentialsTable+" … (the agent's system record, once per server)", "")
		err := conn.QueryRow(ctx, "SELECT (SELECT oid FROM pg_roles WHERE rolname = $1), (SELECT oid FROM pg_database WHERE datname = $2)", role, db).Scan(&st.roleOID, &st.dbOID)
		if err != nil {
			return events.DryRun{}, wrap("read state of tenant "+string(tenant), err)
		}
	}
	if st.roleOID != nil && !st.roleOurs() {
		out.Conflicts = append(out.Conflicts, events.Conflict{Kind: events.ConflictNameTaken, Resource: "postgres role " + role, Detail: "exists and was not created by tenantprov"})
	}
	if st.dbOID != nil && !st.dbOurs() {
		out.Conflicts = append(out.Conflicts, events.Conflict{Kind: events.ConflictNameTaken, Resource: "postgres database " + db, Detail: "exists and was not created by tenantprov"})
	}
	if st.roleOID == nil {
		stmt(fmt.Sprintf("CREATE ROLE %s WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT CONNECTION LIMIT %d PASSWORD '<redacted>'", ident(role), s.cfg.ConnectionLimit), "")
	} else {
		stmt(fmt.Sprintf("ALTER ROLE %s WITH LOGIN CONNECTION LIMIT %d PASSWORD '<redacted>'", ident(role), s.cfg.ConnectionLimit), "")
	}
	stmt("INSERT INTO "+recordTable+" (tenant, generation, role_oid) VALUES ('"+string(tenant)+"', "+strconv.FormatUint(req.Generation, 10)+", <oid of "+role+">) ON CONFLICT (tenant) DO UPDATE …", "")
	if st.dbOID == nil {
		stmt("CREATE DATABASE "+ident(db)+" OWNER "+ident(role)+" ALLOW_CONNECTIONS false", "")
	} else {
		stmt("CREATE DATABASE "+ident(db)+" OWNER "+ident(role)+" ALLOW_CONNECTIONS false", "the database exists")
	}
	for _, text := range []string{
		"REVOKE ALL ON DATABASE " + ident(db) + " FROM PUBLIC",
		"GRANT CONNECT, TEMPORARY ON DATABASE " + ident(db) + " TO " + ident(role),
		"ALTER DATABASE " + ident(db) + " WITH ALLOW_CONNECTIONS true",
		"CREATE SCHEMA IF NOT EXISTS public AUTHORIZATION " + ident(role),
		"ALTER SCHEMA public OWNER TO " + ident(role),
		"REVOKE ALL ON SCHEMA public FROM PUBLIC",
	} {
		stmt(text, "")
	}
	if req.Plan != nil {
		want := postgresSection(req.Plan)
		if c := s.aboveCeiling(want); c != nil {
			out.Conflicts = append(out.Conflicts, *c)
		}
		for _, text := range s.planStatements(role, want) {
			stmt(text, "")
		}
		if want.TempFileLimitKB > 0 {
			var can bool
			err := conn.QueryRow(ctx, "SELECT rolsuper OR (current_setting('server_version_num')::int >= 150000 AND has_parameter_privilege('temp_file_limit', 'SET')) FROM pg_roles WHERE rolname = current_user").Scan(&can)
			if err != nil {
				return events.DryRun{}, wrap("check the privilege to set temp_file_limit", err)
			}
			if !can {
				out.Conflicts = append(out.Conflicts, events.Conflict{Kind: events.ConflictUnenforceable, Resource: "postgres role " + role,
					Detail: "temp_file_limit needs a superuser admin or GRANT SET ON PARAMETER temp_file_limit (PostgreSQL ≥ 15)"})
			}
		}
	}
	return out, nil
}
