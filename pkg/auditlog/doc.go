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
// # Anchors: what the database cannot prove by itself
//
// The chain reveals a changed or removed row in its middle, but not rows
// cut from its end, and not a chain rewritten and recomputed from some row
// on by whoever can disable the triggers (the owner, a superuser — and
// pg-agent's admin is often a superuser of the same cluster). So the sink
// anchors the head outside the database: after each committed batch, and
// every few seconds while the chain grows, it writes {seq, hash, event_id,
// rows, recorded_at, anchored_at, anchored_by} under AnchorKey in the
// JetStream KV bucket events.KVAuditAnchors, which keeps the last
// AnchorHistory anchors and which only the sink's NATS identity may write.
// Anchorer never moves the anchor backwards and never past a database
// that contradicts it (ErrAnchorMismatch), so the evidence survives new
// rows. CheckAnchors (`tenantctl audit --verify`) requires every anchored
// row to be present with its anchored hash: a missing one is rows cut
// from the end (ProblemTruncated), another hash a recomputed or refilled
// chain (ProblemAnchorHash).
//
// What anchors cannot reveal: rows cut after the latest anchor (at most
// the anchor interval's worth, a few seconds, or longer while NATS is
// unreachable); tampering by someone who also holds the sink's NATS
// identity or JetStream administration (who could rewrite or purge the
// anchors together with the rows — a purge of the whole bucket together
// with the whole table leaves nothing to compare); and rows that were
// never written (an event the sink never received). The chain is not keyed:
// a key would have to be held by the sink, so it protects no more than the
// anchor bucket's write permission does.
//
// # Roles: how an operator sets it up
//
// Three roles, so that the role that writes can never rewrite:
//
//   - the owner (AUDIT_PG_ADMIN_URL), e.g. tenantprov_audit_owner: owns the
//     database and runs the migrations (`audit-sink migrate`, a one-shot);
//     never a superuser (Migrate refuses one: ErrOwnerPrivileges), and
//     used for nothing else: the long-running sink refuses its URL.
//   - the writer (AUDIT_PG_URL of the sink), e.g. tenantprov_audit_sink:
//     SELECT and INSERT on the table, nothing more. The sink refuses to
//     start as a superuser, the owner or a member of the owner, or a role
//     holding UPDATE, DELETE or TRUNCATE (CheckWriter).
//   - readers for operators and tenantctl audit, e.g.
//     tenantprov_audit_reader: SELECT only (MigrateOptions.Readers,
//     AUDIT_PG_READERS). Operators are given this URL, never the writer's.
//
// One-time setup as a PostgreSQL superuser (set passwords with psql's
// \password so that they never appear in a statement the server logs):
//
//	CREATE ROLE tenantprov_audit_owner LOGIN NOSUPERUSER;
//	CREATE ROLE tenantprov_audit_sink LOGIN CONNECTION LIMIT 20;
//	CREATE ROLE tenantprov_audit_reader LOGIN CONNECTION LIMIT 10;
//	\password tenantprov_audit_owner
//	\password tenantprov_audit_sink
//	\password tenantprov_audit_reader
//	CREATE DATABASE tenantprov_audit OWNER tenantprov_audit_owner;
//	REVOKE ALL ON DATABASE tenantprov_audit FROM PUBLIC;
//	GRANT CONNECT ON DATABASE tenantprov_audit TO tenantprov_audit_sink, tenantprov_audit_reader;
//
// Then run `audit-sink migrate` with the owner's URL (idempotent,
// serialised by an advisory lock; run it on every deploy) and start the
// sinks with the writer's URL only; they check the schema version and the
// writer's privileges and refuse to start if either is wrong.
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
