package pgstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// credentialsTable records, next to recordTable and as unreachable for
// tenants, every login credential a tenant has: one row per credential
// version with the OID of its login role. Version 1 is the owner role
// "tenant_<id>" itself (the role Provision creates, which owns the
// database); version N ≥ 2 is the login role "tenant_<id>__vN", a member
// of the owner role whose sessions act as it (see Rotate). A version is
// live while its row exists: Retire deletes the rows of the versions it
// revokes. Verify accepts exactly the recorded roles as the tenant's.
const credentialsTable = "tenantprov.postgres_credentials"

// versionSep separates the owner role's name from a credential version in
// a version role's name. Tenant IDs contain no "_", so "tenant_<id>__v2"
// is never another tenant's role.
const versionSep = "__v"

// versionRole is the login role of credential version v of tenant.
func versionRole(tenant events.TenantID, v int) string {
	if v <= 1 {
		return tenant.PostgresRole()
	}
	return tenant.PostgresRole() + versionSep + strconv.Itoa(v)
}

// credential is one live login credential of a tenant, as recorded.
type credential struct {
	version int
	roleOID uint32
	// exists: a role with roleOID exists (it may have been dropped behind
	// the agent's back); name is then its current name.
	exists bool
	name   string
	// retiring: Retire has disabled it (NOLOGIN) and not yet dropped it;
	// a redelivered Retire finishes the job, nothing turns LOGIN back on.
	retiring bool
}

// querier is what the record's readers need: the pool, a connection or a
// transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// loadCredentials reads the tenant's live credentials into st.creds,
// ordered by version. A tenant recorded before credentials were recorded
// (no row) has one: version 1, the recorded owner role.
func loadCredentials(ctx context.Context, q querier, st *state) error {
	st.creds = nil
	if !st.recExists {
		return nil
	}
	rows, err := q.Query(ctx, `
SELECT c.version, c.role_oid, r.oid IS NOT NULL, coalesce(r.rolname::text, ''), c.retiring
FROM `+credentialsTable+` c LEFT JOIN pg_roles r ON r.oid = c.role_oid
WHERE c.tenant = $1 ORDER BY c.version`, string(st.tenant))
	if err != nil {
		return wrap("read credentials of tenant "+string(st.tenant), err)
	}
	var c credential
	_, err = pgx.ForEachRow(rows, []any{&c.version, &c.roleOID, &c.exists, &c.name, &c.retiring}, func() error {
		st.creds = append(st.creds, c)
		return nil
	})
	if err != nil {
		return wrap("read credentials of tenant "+string(st.tenant), err)
	}
	if len(st.creds) == 0 && st.recRoleOID != nil {
		c := credential{version: 1, roleOID: *st.recRoleOID}
		if st.roleOurs() {
			c.exists, c.name = true, st.tenant.PostgresRole()
		}
		st.creds = []credential{c}
	}
	return nil
}

// cred returns the live credential of version v.
func (st *state) cred(v int) (credential, bool) {
	for _, c := range st.creds {
		if c.version == v {
			return c, true
		}
	}
	return credential{}, false
}

// ownerLogin: the owner role (version 1) is a live credential, so it must
// be able to log in unless the tenant is suspended.
func (st *state) ownerLogin() bool {
	c, ok := st.cred(1)
	return ok && !c.retiring
}

// versionRoles are the live credentials of version ≥ 2 whose roles exist.
func (st *state) versionRoles() []credential {
	var out []credential
	for _, c := range st.creds {
		if c.version >= 2 && c.exists {
			out = append(out, c)
		}
	}
	return out
}

// tenantRoleOIDs are the OIDs of every role that is the tenant: the owner
// role (if ours) and the existing live version roles.
func (st *state) tenantRoleOIDs() []uint32 {
	oids := []uint32{} // never NULL in SQL: x = ANY(NULL) is NULL
	if st.roleOurs() {
		oids = append(oids, *st.roleOID)
	}
	for _, c := range st.versionRoles() {
		oids = append(oids, c.roleOID)
	}
	return oids
}

// loginRole returns the live credential whose role is named user.
func (st *state) loginRole(user string) (credential, bool) {
	for _, c := range st.creds {
		if c.exists && c.name == user && c.name == versionRole(st.tenant, c.version) {
			return c, true
		}
	}
	return credential{}, false
}

// versionsText lists credential versions for messages: "v1, v2".
func versionsText(vs []int) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = fmt.Sprintf("v%d", v)
	}
	return strings.Join(parts, ", ")
}

// recordCredential records role (by name, resolved to its OID in the same
// statement) as credential version v of the tenant.
func recordCredential(ctx context.Context, tx pgx.Tx, tenant events.TenantID, v int, role string) error {
	_, err := tx.Exec(ctx, `
INSERT INTO `+credentialsTable+` (tenant, version, role_oid)
VALUES ($1, $2, (SELECT oid FROM pg_roles WHERE rolname = $3))
ON CONFLICT (tenant, version) DO UPDATE SET role_oid = excluded.role_oid`, string(tenant), v, role)
	return err
}
