// Package auditlog is tenantprov's audit trail in PostgreSQL (DESIGN.md §7):
// the schema and its migrations, the canonical form of an audit event, the
// hash chain, appending, verification and queries. The audit sink writes
// with it; `tenantctl audit` lists and verifies with it.
//
// # The log
//
// One table, tenantprov_audit.audit_events, one row per audit event:
// seq (gapless from 1, assigned by the writer under a lock, never a
// sequence object, which would leave gaps on rollback), the event's fields
// as columns, canonical (the exact text hashed), prev_hash and hash =
// sha256(prev_hash ‖ canonical), recorded_at (the database's clock). The
// first row's prev_hash is 32 zero bytes. Canonical (see there) is RFC 8785
// JSON of a fixed set of members and is reproducible from the columns, so
// Verify detects a rewritten column as well as a rewritten hash, a broken
// link or a missing row.
//
// The database itself keeps the log append-only and chained: BEFORE UPDATE
// OR DELETE (per row) and BEFORE TRUNCATE (per statement) triggers refuse
// with SQLSTATE 42501 whoever asks, the table owner and superusers
// included, and a BEFORE INSERT trigger refuses a row that does not extend
// the head correctly. Only a role that may disable triggers (the owner, a
// superuser) can get past them — which is why the writer must be neither,
// and why Verify exists.
//
// # Roles: how an operator sets it up
//
// Three roles, so that the role that writes can never rewrite:
//
//   - the owner (AUDIT_PG_ADMIN_URL), e.g. tenantprov_audit_owner: owns the
//     database, runs the migrations and grants the writer. Use it for
//     nothing else; it need not be a superuser.
//   - the writer (AUDIT_PG_URL), e.g. tenantprov_audit_sink: SELECT and
//     INSERT on the table, nothing more. The sink refuses to start as a
//     superuser, the owner or a member of the owner, or a role holding
//     UPDATE, DELETE or TRUNCATE (CheckWriter).
//   - optional readers for tenantctl audit: SELECT only
//     (MigrateOptions.Readers).
//
// One-time setup as a PostgreSQL superuser (set passwords with psql's
// \password so that they never appear in a statement the server logs):
//
//	CREATE ROLE tenantprov_audit_owner LOGIN;
//	CREATE ROLE tenantprov_audit_sink LOGIN CONNECTION LIMIT 20;
//	\password tenantprov_audit_owner
//	\password tenantprov_audit_sink
//	CREATE DATABASE tenantprov_audit OWNER tenantprov_audit_owner;
//	REVOKE ALL ON DATABASE tenantprov_audit FROM PUBLIC;
//	GRANT CONNECT ON DATABASE tenantprov_audit TO tenantprov_audit_sink;
//
// Then start the sink with both URLs; it migrates and grants on every start
// (idempotent, serialised by an advisory lock). Once migrated, the admin
// URL may be left out: the sink then only checks the schema version and
// the writer's privileges, and refuses to start if either is wrong.
//
// # Migrations
//
// A small ordered set of embedded SQL files (migrations/NNNN_name.sql) and
// a version table with checksums, not goose or golang-migrate: the schema
// is PostgreSQL only and a handful of files; PostgreSQL DDL is
// transactional, so Migrate applies every pending file, records it and
// grants the roles in one transaction under one advisory lock — two
// replicas starting together cannot race and a failure leaves nothing half
// done (no "dirty" state to repair by hand, as golang-migrate has); the
// grants need the writer's name from configuration, which a library's
// static files cannot hold; and this package, linked into tenantctl and
// the sink, stays on pgx alone. A changed, already-applied file is refused
// (ErrMigrationChanged); migrations only ever move forward.
//
// # Concurrency
//
// Append takes a transaction-level advisory lock before it reads the head,
// so writers (sink replicas) append one transaction at a time and the
// chain stays gapless and correctly linked; idempotency on event_id is a
// check inside that lock (not ON CONFLICT DO NOTHING, which would burn a
// seq), backed by a unique index. Throughput is therefore one writer's:
// replicas add availability, not speed; batching is what makes it fast.
package auditlog
