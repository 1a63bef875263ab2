package pgstore

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// Drift kinds Observe reports (agent.Drift.Kind). Each is found by the same
// catalog inspection that Verify's inward checks and other_databases_denied
// run; the comment says whether Observe with Repair puts it back.
const (
	// The system record (tenantprov's marker).
	DriftMarkerMissing    = "marker_missing"    // no record, or it names another role/database: not repaired (ownership cannot be proven)
	DriftMarkerIncomplete = "marker_incomplete" // the record lacks the database's OID, the database is the role's: repaired
	DriftMarkerGeneration = "marker_generation" // the record holds another generation: not repaired
	// Resources.
	DriftRoleMissing       = "role_missing"       // the owner role is gone: not repaired
	DriftCredentialMissing = "credential_missing" // a recorded credential's login role is gone: not repaired (rotate)
	DriftDatabaseMissing   = "database_missing"   // the database is gone: DataLost, never recreated
	// Roles (inward and outward).
	DriftRoleAttributes    = "role_attributes"         // SUPERUSER, CREATEDB, … or INHERIT of a version role: repaired
	DriftRoleLogin         = "role_login"              // LOGIN other than the record says (suspended, retired): repaired
	DriftRoleConnLimit     = "role_connection_limit"   // unset or above PG_CONNECTION_LIMIT: repaired
	DriftRoleMemberAdded   = "role_member_added"       // another role is a member of a tenant role (inward): repaired (REVOKE)
	DriftRoleMemberOf      = "role_member_of"          // a tenant role is a member of another role (outward): repaired (REVOKE)
	DriftRoleMembership    = "role_membership_missing" // a version role is no longer a member of the owner role: repaired
	DriftRoleSetting       = "role_setting"            // a version role's sessions no longer start as the owner role: repaired
	DriftDatabaseOwner     = "database_owner"          // the database is owned by another role: repaired (ALTER OWNER)
	DriftDatabaseTemplate  = "database_template"       // the database was made a template: repaired
	DriftGrantAdded        = "grant_added"             // PUBLIC or another role holds a privilege on the database (inward): repaired
	DriftGrantMissing      = "grant_missing"           // the tenant lost CONNECT or TEMPORARY on its database: repaired
	DriftSchemaOwner       = "schema_owner"            // a schema in the tenant's database owned by another role: reported only
	DriftSchemaGrant       = "schema_grant_added"      // a schema grants to PUBLIC or another role: repaired
	DriftOutwardDatabase   = "outward_database"        // a tenant role may connect to another database (outward): repaired
	DriftCredentialRefused = "credential_refused"      // the current credential does not log in: not repaired (rotate)
)

// finding is one way the tenant's slice differs from what was provisioned:
// it fails one Verify check and is one Observe drift.
type finding struct {
	check    string // the Verify check it fails
	kind     string // the drift kind
	resource string
	detail   string
	dataLost bool
	// repair puts it back; nil: it is only reported.
	repair []repairStmt
}

// repairStmt is one statement of a repair; db "" is the admin database.
type repairStmt struct{ db, sql string }

// inspect compares the tenant's roles, database and schemas with the system
// record, in both directions, from the catalogs with the admin credential.
// generation 0 accepts any. conn is an admin connection (the tenant lock may
// be held on it).
func (s *Store) inspect(ctx context.Context, conn querier, st *state, generation uint64) ([]finding, error) {
	out, err := s.inspectAll(ctx, conn, st, generation)
	if err != nil {
		return nil, err
	}
	// What the record does not name is not tenantprov's: it is reported,
	// never changed.
	if !st.roleOurs() || (st.dbOID != nil && !st.dbOurs()) {
		for i := range out {
			out[i].repair = nil
		}
	}
	return out, nil
}

func (s *Store) inspectAll(ctx context.Context, conn querier, st *state, generation uint64) ([]finding, error) {
	var out []finding
	out = append(out, recordFindings(st, generation)...)
	roles, err := s.roleFindings(ctx, conn, st)
	if err != nil {
		return nil, err
	}
	out = append(out, roles...)
	if st.dbOID == nil {
		out = append(out, finding{check: CheckDatabasePrivate, kind: DriftDatabaseMissing, resource: st.tenant.PostgresDatabase(),
			detail: "database " + st.tenant.PostgresDatabase() + " does not exist", dataLost: true})
		return out, nil
	}
	if st.roleOID == nil {
		return out, nil
	}
	db, err := s.databaseFindings(ctx, conn, st)
	if err != nil {
		return nil, err
	}
	out = append(out, db...)
	outward, err := s.outwardFindings(ctx, conn, st)
	if err != nil {
		return nil, err
	}
	out = append(out, outward...)
	if st.dbAllowConn {
		schemas, err := s.schemaFindings(ctx, st)
		if err != nil {
			return nil, err
		}
		out = append(out, schemas...)
	}
	return out, nil
}

func recordFindings(st *state, generation uint64) []finding {
	role, db := st.tenant.PostgresRole(), st.tenant.PostgresDatabase()
	f := func(kind, resource, detail string, repair ...repairStmt) finding {
		return finding{check: CheckSystemRecord, kind: kind, resource: resource, detail: detail, repair: repair}
	}
	var out []finding
	switch {
	case !st.recExists:
		return []finding{f(DriftMarkerMissing, string(st.tenant), "no system record for tenant "+string(st.tenant))}
	case st.roleOID == nil:
		out = append(out, finding{check: CheckRoleLockedDown, kind: DriftRoleMissing, resource: role, detail: "role " + role + " does not exist"})
	case !st.roleOurs():
		out = append(out, f(DriftMarkerMissing, role, "the system record does not name role "+role+" (missing or replaced)"))
	}
	switch {
	case st.dbOID == nil:
		// database_missing, reported by inspect
	case !st.dbOurs():
		out = append(out, f(DriftMarkerMissing, db, "the system record does not name database "+db+" (missing or replaced)"))
	case st.recDBOID == nil:
		out = append(out, f(DriftMarkerIncomplete, db, "the system record holds no database OID; "+db+" is owned by the tenant's role",
			repairStmt{sql: "UPDATE " + recordTable + " SET database_oid = " + fmt.Sprint(*st.dbOID) + ", updated_at = now() WHERE tenant = " + mustLiteral(string(st.tenant))}))
	}
	if generation > 0 && st.generation() != generation {
		out = append(out, f(DriftMarkerGeneration, string(st.tenant), fmt.Sprintf("the system record holds generation %d, want %d", st.generation(), generation)))
	}
	for _, c := range st.creds {
		want := versionRole(st.tenant, c.version)
		switch {
		case c.version == 1:
			// the owner role, checked above
		case !c.exists:
			out = append(out, f(DriftCredentialMissing, want, fmt.Sprintf("credential v%d: its login role %s does not exist", c.version, want)))
		case c.name != want:
			out = append(out, f(DriftMarkerMissing, want, fmt.Sprintf("credential v%d: the recorded login role is named %s", c.version, c.name)))
		}
	}
	return out
}

// mustLiteral quotes a tenant ID (validated, plain ASCII) as a literal.
func mustLiteral(s string) string {
	q, err := quoteLiteral(s)
	if err != nil {
		panic(err)
	}
	return q
}

// roleInfo is one role as the catalogs show it.
type roleInfo struct {
	name                                                                string
	super, createDB, createRole, replication, bypassRLS, login, inherit bool
	connLimit                                                           int
	members, memberOf                                                   []uint32 // the admin left out of members
	memberNames, memberOfNames                                          []string
	roleSetting                                                         string // "role=…" among its settings, "" if none
}

func readRole(ctx context.Context, q querier, oid uint32) (*roleInfo, error) {
	r := &roleInfo{}
	err := q.QueryRow(ctx, `
SELECT r.rolname::text, r.rolsuper, r.rolcreatedb, r.rolcreaterole, r.rolreplication, r.rolbypassrls, r.rolcanlogin, r.rolinherit, r.rolconnlimit,
       coalesce((SELECT array_agg(m.member ORDER BY m.member) FROM pg_auth_members m WHERE m.roleid = r.oid AND m.member <> `+adminOID+`), '{}'),
       coalesce((SELECT array_agg(pg_get_userbyid(m.member)::text ORDER BY m.member) FROM pg_auth_members m WHERE m.roleid = r.oid AND m.member <> `+adminOID+`), '{}'),
       coalesce((SELECT array_agg(m.roleid ORDER BY m.roleid) FROM pg_auth_members m WHERE m.member = r.oid), '{}'),
       coalesce((SELECT array_agg(pg_get_userbyid(m.roleid)::text ORDER BY m.roleid) FROM pg_auth_members m WHERE m.member = r.oid), '{}'),
       coalesce((SELECT s FROM pg_db_role_setting d, unnest(d.setconfig) AS s WHERE d.setrole = r.oid AND d.setdatabase = 0 AND s LIKE 'role=%' LIMIT 1), '')
FROM pg_roles r WHERE r.oid = $1`, oid).Scan(&r.name, &r.super, &r.createDB, &r.createRole, &r.replication, &r.bypassRLS, &r.login, &r.inherit, &r.connLimit,
		&r.members, &r.memberNames, &r.memberOf, &r.memberOfNames, &r.roleSetting)
	if err != nil {
		return nil, wrap("read role "+fmt.Sprint(oid), err)
	}
	return r, nil
}

// roleFindings checks the owner role and every live version role: least
// privilege, LOGIN exactly as the record says (live and not suspended),
// the connection limit, and memberships — nobody but the admin and the
// tenant's own version roles acts as the owner role, the owner role is a
// member of nothing, a version role is a member of the owner role only and
// its sessions start as the owner role.
func (s *Store) roleFindings(ctx context.Context, q querier, st *state) ([]finding, error) {
	if st.roleOID == nil {
		return nil, nil
	}
	owner := st.tenant.PostgresRole()
	versions := map[uint32]bool{}
	for _, c := range st.versionRoles() {
		versions[c.roleOID] = true
	}
	type expect struct {
		oid     uint32
		login   bool
		version bool
	}
	// A tenant without a record is judged as provisioned: one credential.
	ownerLogin := (st.ownerLogin() || len(st.creds) == 0) && !st.suspended
	want := []expect{{oid: *st.roleOID, login: ownerLogin}}
	for _, c := range st.versionRoles() {
		want = append(want, expect{oid: c.roleOID, login: !st.suspended && !c.retiring, version: true})
	}
	var out []finding
	for _, e := range want {
		r, err := readRole(ctx, q, e.oid)
		if err != nil {
			return nil, err
		}
		name := ident(r.name)
		f := func(kind, detail string, repair ...string) {
			var stmts []repairStmt
			for _, sql := range repair {
				stmts = append(stmts, repairStmt{sql: sql})
			}
			out = append(out, finding{check: CheckRoleLockedDown, kind: kind, resource: r.name, detail: detail, repair: stmts})
		}
		var off []string
		for _, a := range []struct {
			on   bool
			name string
		}{{r.super, "NOSUPERUSER"}, {r.createDB, "NOCREATEDB"}, {r.createRole, "NOCREATEROLE"}, {r.replication, "NOREPLICATION"}, {r.bypassRLS, "NOBYPASSRLS"}} {
			if a.on {
				off = append(off, a.name)
			}
		}
		if e.version && !r.inherit {
			off = append(off, "INHERIT")
		}
		if len(off) > 0 {
			f(DriftRoleAttributes, fmt.Sprintf("attributes superuser=%t createdb=%t createrole=%t replication=%t bypassrls=%t inherit=%t", r.super, r.createDB, r.createRole, r.replication, r.bypassRLS, r.inherit),
				"ALTER ROLE "+name+" WITH "+strings.Join(off, " "))
		}
		if r.login != e.login {
			stmt := "ALTER ROLE " + name + " NOLOGIN"
			if e.login {
				stmt = "ALTER ROLE " + name + " LOGIN"
			}
			f(DriftRoleLogin, fmt.Sprintf("login=%t, want %t (suspended=%t, live credentials %s)", r.login, e.login, st.suspended, versionsText(st.versions())), stmt)
		}
		if r.connLimit < 1 || r.connLimit > s.cfg.ConnectionLimit {
			f(DriftRoleConnLimit, fmt.Sprintf("connection limit %d, want 1..%d", r.connLimit, s.cfg.ConnectionLimit),
				fmt.Sprintf("ALTER ROLE %s CONNECTION LIMIT %d", name, s.cfg.ConnectionLimit))
		}
		for i, m := range r.members {
			if !e.version && versions[m] {
				continue
			}
			f(DriftRoleMemberAdded, "granted to (acts as the tenant): "+r.memberNames[i],
				"REVOKE "+name+" FROM "+ident(r.memberNames[i]))
		}
		inOwner := false
		for i, m := range r.memberOf {
			if e.version && m == *st.roleOID {
				inOwner = true
				continue
			}
			f(DriftRoleMemberOf, "member of: "+r.memberOfNames[i], "REVOKE "+ident(r.memberOfNames[i])+" FROM "+name)
		}
		if e.version && !inOwner {
			f(DriftRoleMembership, "not a member of "+owner+": its sessions cannot act as the tenant", "GRANT "+ident(owner)+" TO "+name)
		}
		if e.version && r.roleSetting != "role="+owner && r.roleSetting != `role="`+owner+`"` {
			f(DriftRoleSetting, fmt.Sprintf("sessions start as %q, want role=%s", r.roleSetting, owner), "ALTER ROLE "+name+" SET role = "+ident(owner))
		}
	}
	return out, nil
}

// aclGrantee renders an aclexplode grantee for messages.
const aclGrantee = "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee)::text END"

// databaseFindings checks the database: owned by the owner role, not a
// template, nothing granted to PUBLIC or any role but the tenant's and the
// admin, and the owner role's CONNECT and TEMPORARY in place.
func (s *Store) databaseFindings(ctx context.Context, q querier, st *state) ([]finding, error) {
	role, db := st.tenant.PostgresRole(), st.tenant.PostgresDatabase()
	var (
		owner              string
		owned, template    bool
		connect, temporary bool
		grantees, privs    []string
	)
	err := q.QueryRow(ctx, `
SELECT pg_get_userbyid(d.datdba)::text, d.datdba = $2, d.datistemplate,
       has_database_privilege($2, d.oid, 'CONNECT'), has_database_privilege($2, d.oid, 'TEMPORARY'),
       coalesce((SELECT array_agg(g ORDER BY g) FROM (SELECT DISTINCT `+aclGrantee+` AS g FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
                 WHERE a.grantee <> ALL($3) AND a.grantee <> `+adminOID+`) x), '{}'),
       coalesce((SELECT array_agg(p ORDER BY p) FROM (SELECT `+aclGrantee+` || ' ' || string_agg(a.privilege_type, ',' ORDER BY a.privilege_type) AS p FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
                 WHERE a.grantee <> ALL($3) AND a.grantee <> `+adminOID+` GROUP BY a.grantee) x), '{}')
FROM pg_database d WHERE d.oid = $1`, *st.dbOID, *st.roleOID, st.tenantRoleOIDs()).Scan(&owner, &owned, &template, &connect, &temporary, &grantees, &privs)
	if err != nil {
		return nil, wrap("inspect database "+db, err)
	}
	var out []finding
	f := func(kind, detail string, repair ...string) {
		var stmts []repairStmt
		for _, sql := range repair {
			stmts = append(stmts, repairStmt{sql: sql})
		}
		out = append(out, finding{check: CheckDatabasePrivate, kind: kind, resource: db, detail: detail, repair: stmts})
	}
	if !owned {
		f(DriftDatabaseOwner, "owned by "+owner, "ALTER DATABASE "+ident(db)+" OWNER TO "+ident(role))
	}
	if template {
		f(DriftDatabaseTemplate, "a template (any role with CREATEDB can copy it)", "ALTER DATABASE "+ident(db)+" WITH IS_TEMPLATE false")
	}
	if len(grantees) > 0 {
		var stmts []string
		for _, g := range grantees {
			if g == "PUBLIC" {
				stmts = append(stmts, "REVOKE ALL ON DATABASE "+ident(db)+" FROM PUBLIC")
			} else {
				stmts = append(stmts, "REVOKE ALL ON DATABASE "+ident(db)+" FROM "+ident(g))
			}
		}
		f(DriftGrantAdded, "granted to others: "+strings.Join(privs, "; "), stmts...)
	}
	if owned && (!connect || !temporary) {
		f(DriftGrantMissing, fmt.Sprintf("the tenant role's CONNECT=%t TEMPORARY=%t", connect, temporary),
			"GRANT CONNECT, TEMPORARY ON DATABASE "+ident(db)+" TO "+ident(role))
	}
	return out, nil
}

// outwardFindings lists every database but its own (and
// Config.KeepPublicConnect) that one of the tenant's roles may connect to.
// The repair revokes the tenant roles' privileges there and, outside the
// tenant namespace, PUBLIC's CONNECT and TEMPORARY (as the agent does at
// start); a foreign tenant-named database open to PUBLIC stays as it is
// and stays reported.
func (s *Store) outwardFindings(ctx context.Context, q querier, st *state) ([]finding, error) {
	oids := st.tenantRoleOIDs()
	if len(oids) == 0 {
		return nil, nil
	}
	rows, err := q.Query(ctx, `
SELECT d.datname::text, d.datname LIKE 'tenant\_%', array_agg(r.rolname::text ORDER BY r.rolname)
FROM pg_database d, pg_roles r
WHERE r.oid = ANY($1) AND d.datallowconn AND d.datname <> $2 AND NOT (d.datname = ANY($3)) AND has_database_privilege(r.oid, d.oid, 'CONNECT')
GROUP BY 1, 2 ORDER BY 1`, oids, st.tenant.PostgresDatabase(), s.cfg.keepPublicConnect())
	if err != nil {
		return nil, wrap("inspect databases reachable by "+st.tenant.PostgresRole(), err)
	}
	var out []finding
	var name string
	var tenantNS bool
	var roles []string
	_, err = pgx.ForEachRow(rows, []any{&name, &tenantNS, &roles}, func() error {
		var repair []repairStmt
		for _, r := range st.tenantRoleNames() {
			repair = append(repair, repairStmt{sql: "REVOKE ALL ON DATABASE " + ident(name) + " FROM " + ident(r)})
		}
		if !tenantNS {
			repair = append(repair, repairStmt{sql: "REVOKE CONNECT, TEMPORARY ON DATABASE " + ident(name) + " FROM PUBLIC"})
		}
		out = append(out, finding{check: CheckOtherDatabasesDenied, kind: DriftOutwardDatabase, resource: name,
			detail: strings.Join(roles, ", ") + " may connect to " + name, repair: repair})
		return nil
	})
	if err != nil {
		return nil, wrap("inspect databases reachable by "+st.tenant.PostgresRole(), err)
	}
	return out, nil
}

// tenantRoleNames are the names of tenantRoleOIDs.
func (st *state) tenantRoleNames() []string {
	var names []string
	if st.roleOurs() {
		names = append(names, st.tenant.PostgresRole())
	}
	for _, c := range st.versionRoles() {
		names = append(names, c.name)
	}
	return names
}

// schemaFindings checks, inside the tenant's database, that every schema
// but the system ones is owned by a tenant role and grants nothing to
// PUBLIC or any other role (pg_database_owner stands for the tenant).
func (s *Store) schemaFindings(ctx context.Context, st *state) ([]finding, error) {
	db := st.tenant.PostgresDatabase()
	conn, err := s.adminConnect(ctx, db)
	if err != nil {
		return nil, err
	}
	defer closeConn(ctx, conn)
	rows, err := conn.Query(ctx, `
SELECT n.nspname::text, pg_get_userbyid(n.nspowner)::text, n.nspowner = ANY($1),
       coalesce((SELECT array_agg(g ORDER BY g) FROM (SELECT DISTINCT `+aclGrantee+` AS g FROM aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
                 WHERE a.grantee <> ALL($1) AND a.grantee <> `+adminOID+` AND a.grantee <> coalesce((SELECT oid FROM pg_roles WHERE rolname = 'pg_database_owner'), 0)) x), '{}')
FROM pg_namespace n
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND n.nspname NOT LIKE 'pg\_temp\_%' AND n.nspname NOT LIKE 'pg\_toast\_temp\_%'
ORDER BY 1`, st.tenantRoleOIDs())
	if err != nil {
		return nil, wrap("inspect schemas of "+db, err)
	}
	var out []finding
	var name, owner string
	var owned bool
	var grantees []string
	_, err = pgx.ForEachRow(rows, []any{&name, &owner, &owned, &grantees}, func() error {
		if !owned {
			out = append(out, finding{check: CheckSchemasPrivate, kind: DriftSchemaOwner, resource: db + "." + name,
				detail: "schema " + name + " owned by " + owner})
		}
		if len(grantees) > 0 {
			var repair []repairStmt
			for _, g := range grantees {
				to := "PUBLIC"
				if g != "PUBLIC" {
					to = ident(g)
				}
				repair = append(repair, repairStmt{db: db, sql: "REVOKE ALL ON SCHEMA " + ident(name) + " FROM " + to})
			}
			out = append(out, finding{check: CheckSchemasPrivate, kind: DriftSchemaGrant, resource: db + "." + name,
				detail: "schema " + name + " granted to others: " + strings.Join(grantees, ", "), repair: repair})
		}
		return nil
	})
	if err != nil {
		return nil, wrap("inspect schemas of "+db, err)
	}
	return out, nil
}

// checksFrom turns findings into Verify's checks: one per name, passed when
// no finding fails it.
func checksFrom(findings []finding, names ...string) []events.Check {
	checks := make([]events.Check, len(names))
	for i, n := range names {
		var details []string
		for _, f := range findings {
			if f.check == n {
				details = append(details, f.detail)
			}
		}
		checks[i] = events.Check{Name: n, Passed: len(details) == 0, Detail: strings.Join(details, "; ")}
	}
	return checks
}
