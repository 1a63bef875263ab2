package auditlog

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Schema is the PostgreSQL schema that holds the audit log.
const Schema = "tenantprov_audit"

// Table is the audit table, qualified by Schema.
const Table = Schema + ".audit_events"

// migrationsTable records which migrations ran, with their checksums.
const migrationsTable = Schema + ".schema_migrations"

// Advisory lock keys (two-int form): the class is "tpau" in ASCII, shared
// by every tenantprov audit lock; the object picks the lock.
const (
	lockClass   = 0x74706175
	lockChain   = 1 // held by every append, for the whole transaction
	lockMigrate = 2 // held by Migrate, for the whole transaction
)

//go:embed migrations/*.sql
var migrationFS embed.FS

var migrationName = regexp.MustCompile(`^(\d{4})_[a-z0-9_]+\.sql$`)

// Migration is one embedded schema change.
type Migration struct {
	Version  int    // from the file name, 1, 2, … without gaps
	Name     string // file name, e.g. 0001_audit_events.sql
	SQL      string
	Checksum string // hex SHA-256 of SQL
}

// Migrations returns the embedded migrations in version order. It fails if
// a file is misnamed or versions do not run 1, 2, 3, … without gaps.
func Migrations() ([]Migration, error) {
	names, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []Migration
	for _, p := range names {
		name := path.Base(p)
		m := migrationName.FindStringSubmatch(name)
		if m == nil {
			return nil, fmt.Errorf("migration %s: name must be NNNN_lower_snake.sql", name)
		}
		v, _ := strconv.Atoi(m[1])
		sql, err := migrationFS.ReadFile(p)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(sql)
		ms = append(ms, Migration{Version: v, Name: name, SQL: string(sql), Checksum: hex.EncodeToString(sum[:])})
	}
	slices.SortFunc(ms, func(a, b Migration) int { return a.Version - b.Version })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migration %s: version %d, want %d (versions run 1, 2, … without gaps)", m.Name, m.Version, i+1)
		}
	}
	return ms, nil
}

// SchemaVersion is the schema version this code needs: the highest
// embedded migration.
func SchemaVersion() int {
	ms, err := Migrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].Version
}

// MigrateOptions tunes Migrate.
type MigrateOptions struct {
	// Writer is the login role the sink writes as (the user of
	// AUDIT_PG_URL). When set, Migrate grants it exactly USAGE on the
	// schema and SELECT, INSERT on the audit table (revoking anything
	// else), in the same transaction. It must exist and must not be the
	// role Migrate runs as.
	Writer string
	// Readers are roles that get USAGE and SELECT only (tenantctl audit).
	Readers []string
}

// MigrateResult says what Migrate did.
type MigrateResult struct {
	Applied []int // versions applied by this call, in order
	Version int   // schema version after the call
}

// Migrate brings the audit schema up to SchemaVersion and grants the
// writer and readers their privileges. It runs as the role conn is
// connected as, which becomes the owner of everything it creates: use a
// dedicated owner role that the sink never writes as (see the package doc).
// That role must not be a superuser (ErrOwnerPrivileges): the fewer roles
// can disable the append-only triggers, the better, and the owner is used
// for nothing but migrating.
//
// Everything happens in one transaction under an advisory lock, so any
// number of replicas may call Migrate at once: one applies the pending
// migrations, the others wait and then find nothing to do. PostgreSQL DDL
// is transactional, so a failed migration leaves no half-applied state.
// Applied migrations are checked against their recorded checksums
// (ErrMigrationChanged). A database already at a newer version than this
// code knows is left alone.
func Migrate(ctx context.Context, conn interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}, opts MigrateOptions) (MigrateResult, error) {
	var res MigrateResult
	ms, err := Migrations()
	if err != nil {
		return res, err
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, lockClass, lockMigrate); err != nil {
			return fmt.Errorf("take migration lock: %w", err)
		}
		var owner string
		var super bool
		if err := tx.QueryRow(ctx, `SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&owner, &super); err != nil {
			return fmt.Errorf("check the migrating role: %w", err)
		}
		if super {
			return fmt.Errorf("%w: role %q is a superuser; run the migrations as a dedicated, ordinary owner role (see the auditlog package doc), never as a superuser", ErrOwnerPrivileges, owner)
		}
		if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+Schema); err != nil {
			return fmt.Errorf("create schema %s: %w", Schema, err)
		}
		if _, err := tx.Exec(ctx, `REVOKE ALL ON SCHEMA `+Schema+` FROM PUBLIC`); err != nil {
			return fmt.Errorf("lock down schema %s: %w", Schema, err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+migrationsTable+` (
			version    integer     PRIMARY KEY,
			name       text        NOT NULL,
			checksum   text        NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return fmt.Errorf("create %s: %w", migrationsTable, err)
		}
		applied := map[int]string{}
		rows, err := tx.Query(ctx, `SELECT version, checksum FROM `+migrationsTable)
		if err != nil {
			return fmt.Errorf("read %s: %w", migrationsTable, err)
		}
		for rows.Next() {
			var v int
			var sum string
			if err := rows.Scan(&v, &sum); err != nil {
				return err
			}
			applied[v] = sum
			res.Version = max(res.Version, v)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read %s: %w", migrationsTable, err)
		}
		for _, m := range ms {
			if sum, ok := applied[m.Version]; ok {
				if sum != m.Checksum {
					return fmt.Errorf("%w: %s (recorded %s, embedded %s)", ErrMigrationChanged, m.Name, sum, m.Checksum)
				}
				continue
			}
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("apply migration %s: %w", m.Name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO `+migrationsTable+` (version, name, checksum) VALUES ($1, $2, $3)`,
				m.Version, m.Name, m.Checksum); err != nil {
				return fmt.Errorf("record migration %s: %w", m.Name, err)
			}
			res.Applied = append(res.Applied, m.Version)
			res.Version = max(res.Version, m.Version)
		}
		if opts.Writer != "" {
			if err := grantWriter(ctx, tx, opts.Writer); err != nil {
				return err
			}
		}
		for _, r := range opts.Readers {
			if err := grantReader(ctx, tx, r); err != nil {
				return err
			}
		}
		return nil
	})
	return res, err
}

// grantWriter gives role exactly what appending needs.
func grantWriter(ctx context.Context, tx pgx.Tx, role string) error {
	var self bool
	if err := tx.QueryRow(ctx, `SELECT $1::text = current_user OR pg_has_role($1::text, current_user, 'MEMBER')`, role).Scan(&self); err != nil {
		return roleError("writer", role, err)
	}
	if self {
		return fmt.Errorf("%w: writer %q is, or is a member of, the role that runs the migrations and owns the table; the writer must be a separate role so that it cannot disable the append-only triggers", ErrWriterPrivileges, role)
	}
	id := pgx.Identifier{role}.Sanitize()
	stmts := []string{
		`GRANT USAGE ON SCHEMA ` + Schema + ` TO ` + id,
		`REVOKE ALL ON ` + Table + ` FROM ` + id,
		`GRANT SELECT, INSERT ON ` + Table + ` TO ` + id,
		`REVOKE ALL ON ` + migrationsTable + ` FROM ` + id,
		`GRANT SELECT ON ` + migrationsTable + ` TO ` + id,
	}
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			return roleError("writer", role, err)
		}
	}
	return nil
}

// grantReader gives role read access only.
func grantReader(ctx context.Context, tx pgx.Tx, role string) error {
	id := pgx.Identifier{role}.Sanitize()
	stmts := []string{
		`GRANT USAGE ON SCHEMA ` + Schema + ` TO ` + id,
		`REVOKE ALL ON ` + Table + ` FROM ` + id,
		`GRANT SELECT ON ` + Table + ` TO ` + id,
		`GRANT SELECT ON ` + migrationsTable + ` TO ` + id,
	}
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			return roleError("reader", role, err)
		}
	}
	return nil
}

func roleError(kind, role string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42704" { // undefined_object
		return fmt.Errorf("grant %s role %q: the role does not exist; create it first (see the auditlog package doc): %w", kind, role, err)
	}
	return fmt.Errorf("grant %s role %q: %w", kind, role, err)
}

// WriterStatus is what CheckWriter found about the role a connection uses.
type WriterStatus struct {
	Role          string
	SchemaVersion int
}

// CheckWriter verifies, as the connection's own role, that the audit log
// is ready for it and that it is safe to write with: the schema is at
// least SchemaVersion (else ErrSchemaNotReady); the role can SELECT and
// INSERT; it cannot UPDATE, DELETE or TRUNCATE, is not a superuser and is
// neither the table's owner nor a member of it, so it cannot disable the
// append-only triggers (else ErrWriterPrivileges); and the table's owner
// is not a superuser (else ErrOwnerPrivileges).
func CheckWriter(ctx context.Context, db Querier) (WriterStatus, error) {
	var st WriterStatus
	var exists bool
	if err := db.QueryRow(ctx, `SELECT current_user, to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL`,
		Table, migrationsTable).Scan(&st.Role, &exists); err != nil {
		return st, fmt.Errorf("check audit schema: %w", err)
	}
	if !exists {
		return st, fmt.Errorf("%w: %s does not exist or role %q cannot see it; start the sink once with AUDIT_PG_ADMIN_URL set, or grant the role", ErrSchemaNotReady, Table, st.Role)
	}
	var version *int
	if err := db.QueryRow(ctx, `SELECT max(version) FROM `+migrationsTable).Scan(&version); err != nil {
		return st, fmt.Errorf("%w: read %s as %q: %v", ErrSchemaNotReady, migrationsTable, st.Role, err)
	}
	if version != nil {
		st.SchemaVersion = *version
	}
	if want := SchemaVersion(); st.SchemaVersion < want {
		return st, fmt.Errorf("%w: schema version %d, this sink needs %d; start it with AUDIT_PG_ADMIN_URL set to migrate", ErrSchemaNotReady, st.SchemaVersion, want)
	}
	var super, owner, sel, ins, upd, del, trunc, superOwner bool
	var ownerName string
	err := db.QueryRow(ctx, `
		SELECT o.rolname, o.rolsuper,
		       r.rolsuper,
		       pg_has_role(current_user, c.relowner, 'MEMBER'),
		       has_table_privilege(c.oid, 'SELECT'),
		       has_table_privilege(c.oid, 'INSERT'),
		       has_table_privilege(c.oid, 'UPDATE'),
		       has_table_privilege(c.oid, 'DELETE'),
		       has_table_privilege(c.oid, 'TRUNCATE')
		FROM pg_roles r, pg_class c JOIN pg_roles o ON o.oid = c.relowner
		WHERE r.rolname = current_user AND c.oid = $1::regclass`, Table).
		Scan(&ownerName, &superOwner, &super, &owner, &sel, &ins, &upd, &del, &trunc)
	if err != nil {
		return st, fmt.Errorf("check privileges of %q: %w", st.Role, err)
	}
	if superOwner {
		return st, fmt.Errorf("%w: %s is owned by %q, a superuser; the owner must be an ordinary role used only to migrate (ALTER TABLE %s OWNER TO the owner role, as a superuser)", ErrOwnerPrivileges, Table, ownerName, Table)
	}
	var problems []string
	if super {
		problems = append(problems, "is a superuser")
	}
	if owner {
		problems = append(problems, "owns (or is a member of the owner of) "+Table)
	}
	if upd || del || trunc {
		problems = append(problems, "holds UPDATE, DELETE or TRUNCATE")
	}
	if !sel || !ins {
		problems = append(problems, "lacks SELECT or INSERT")
	}
	if len(problems) > 0 {
		return st, fmt.Errorf("%w: role %q %v; the writer must hold SELECT and INSERT only (AUDIT_PG_ADMIN_URL grants exactly that)", ErrWriterPrivileges, st.Role, problems)
	}
	return st, nil
}
