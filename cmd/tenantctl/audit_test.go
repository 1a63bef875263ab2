package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantprov/tenantprov/pkg/auditlog"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/testkit"
)

// Test-only roles and passwords of the audit database, set up as
// dev-up.sh and the auditlog package doc do: an ordinary owner that only
// migrates, a writer (the sink) and a reader (operators).
const (
	auditOwner, auditOwnerPW   = "audit_owner", "owner-pw"
	auditWriter, auditWriterPW = "audit_writer", "writer-pw"
	auditReader, auditReaderPW = "audit_reader", "reader-pw"
)

// auditEnv is a PostgreSQL server with the audit roles and a NATS server
// with the topology, shared by the subtests; each subtest gets its own
// database and anchor history (newLog).
type auditEnv struct {
	pg    *testkit.Postgres
	super *pgx.Conn
	nats  *testkit.NATS
	n     int
}

func startAuditEnv(t *testing.T) *auditEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pg := testkit.StartPostgres(t)
	super, err := pgx.Connect(ctx, pg.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { super.Close(context.Background()) })
	for _, s := range []string{
		`CREATE ROLE ` + auditOwner + ` LOGIN PASSWORD '` + auditOwnerPW + `'`,
		`CREATE ROLE ` + auditWriter + ` LOGIN PASSWORD '` + auditWriterPW + `'`,
		`CREATE ROLE ` + auditReader + ` LOGIN PASSWORD '` + auditReaderPW + `'`,
	} {
		if _, err := super.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	return &auditEnv{pg: pg, super: super, nats: testkit.StartNATS(t)}
}

// auditLog is one audit database with its anchors.
type auditLog struct {
	env                                      *auditEnv
	db                                       string
	superURL, ownerURL, writerURL, readerURL string
	writer                                   *pgx.Conn
	anchorer                                 *auditlog.Anchorer
	anchors                                  jetstream.KeyValue
	natsURL                                  string
}

// newLog creates a database owned by the owner, migrated by the owner,
// with the writer and reader granted, and a fresh NATS server for its
// anchors (one anchor history per log).
func (e *auditEnv) newLog(t *testing.T) *auditLog {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e.n++
	db := fmt.Sprintf("audit_%d", e.n)
	for _, s := range []string{
		`CREATE DATABASE ` + db + ` OWNER ` + auditOwner,
		`REVOKE ALL ON DATABASE ` + db + ` FROM PUBLIC`,
		`GRANT CONNECT ON DATABASE ` + db + ` TO ` + auditWriter + `, ` + auditReader,
	} {
		if _, err := e.super.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	l := &auditLog{env: e, db: db,
		superURL:  e.pg.URL(e.pg.AdminUser, e.pg.AdminPassword, db),
		ownerURL:  e.pg.URL(auditOwner, auditOwnerPW, db),
		writerURL: e.pg.URL(auditWriter, auditWriterPW, db),
		readerURL: e.pg.URL(auditReader, auditReaderPW, db),
	}
	owner := connect(t, l.ownerURL)
	if _, err := auditlog.Migrate(ctx, owner, auditlog.MigrateOptions{Writer: auditWriter, Readers: []string{auditReader}}); err != nil {
		t.Fatalf("migrate as the owner: %v", err)
	}
	l.writer = connect(t, l.writerURL)
	if _, err := auditlog.CheckWriter(ctx, l.writer); err != nil {
		t.Fatalf("writer: %v", err)
	}
	ns := testkit.StartNATS(t)
	l.natsURL = ns.URL
	js, err := jetstream.New(ns.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := (events.Topology{}).Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	kv, err := auditlog.OpenAnchors(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	l.anchorer = auditlog.NewAnchorer(kv, l.writer, "test-sink")
	l.anchors = kv
	return l
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// appendAndAnchor appends events from..from+n-1 as the writer, one batch
// each, and anchors the head after each batch, as the sink does.
func (l *auditLog) appendAndAnchor(t *testing.T, from, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := from; i < from+n; i++ {
		e, err := auditlog.Prepare(auditEvent(i))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := auditlog.Append(ctx, l.writer, []*auditlog.Entry{e}); err != nil {
			t.Fatalf("append: %v", err)
		}
		res, err := l.anchorer.Anchor(ctx)
		if err != nil || !res.Written || res.Anchor.Seq != int64(i+1) {
			t.Fatalf("anchor after seq %d: %+v %v", i+1, res, err)
		}
	}
}

func auditEvent(i int) *events.AuditEvent {
	return &events.AuditEvent{
		EventID: fmt.Sprintf("audit:acme:g1:e%04d", i), Type: events.AuditStoreProvisioned, TenantID: "acme", Generation: 1,
		SagaID: "acme-g1", Store: events.StorePostgres, Actor: "orchestrator", Source: "test",
		OccurredAt: time.Date(2026, 1, 2, 3, 4, 5, i*1000, time.UTC), Details: json.RawMessage(fmt.Sprintf(`{"i": %d}`, i)),
	}
}

// verify runs `tenantctl audit --verify` as the reader, with the URL in
// AUDIT_PG_URL (never in argv).
func (l *auditLog) verify(t *testing.T, extra ...string) (int, string) {
	t.Helper()
	t.Setenv("AUDIT_PG_URL", l.readerURL)
	code, out, errOut := tenantctl(t, append([]string{"audit", "--verify", "--nats-url", l.natsURL}, extra...)...)
	return code, out + errOut
}

// tamper runs stmts as url's role with the table's triggers disabled.
func tamper(t *testing.T, url string, stmts ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := connect(t, url)
	all := append([]string{`ALTER TABLE ` + auditlog.Table + ` DISABLE TRIGGER USER`}, stmts...)
	all = append(all, `ALTER TABLE `+auditlog.Table+` ENABLE TRIGGER USER`)
	for _, s := range all {
		if _, err := c.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// recompute rewrites row seq's details as the owner and recomputes the
// canonical text and the hash of every row from seq on, so that the chain
// verifies by itself again.
func recompute(t *testing.T, ownerURL string, seq int64, details string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := connect(t, ownerURL)
	rows, err := c.Query(ctx, `SELECT seq, event_id, type, tenant_id, generation, saga_id, store, actor, occurred_at, source, details::text, prev_hash
		FROM `+auditlog.Table+` WHERE seq >= $1 ORDER BY seq`, seq)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		seq int64
		ev  events.AuditEvent
	}
	var rs []row
	var prev []byte
	for rows.Next() {
		var r row
		var typ, store, det string
		var gen int64
		var ph []byte
		if err := rows.Scan(&r.seq, &r.ev.EventID, &typ, &r.ev.TenantID, &gen, &r.ev.SagaID, &store, &r.ev.Actor, &r.ev.OccurredAt, &r.ev.Source, &det, &ph); err != nil {
			t.Fatal(err)
		}
		r.ev.Type, r.ev.Store, r.ev.Generation, r.ev.Details = events.AuditType(typ), events.Store(store), uint64(gen), json.RawMessage(det)
		r.ev.OccurredAt = r.ev.OccurredAt.UTC()
		if prev == nil {
			prev = ph
		}
		rs = append(rs, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rs[0].ev.Details = json.RawMessage(details)
	var stmts []string
	for _, r := range rs {
		canon, err := auditlog.Canonical(&r.ev)
		if err != nil {
			t.Fatal(err)
		}
		hash := auditlog.ChainHash(prev, canon)
		stmts = append(stmts, fmt.Sprintf(`UPDATE %s SET details = '%s', canonical = '%s', prev_hash = '\x%x', hash = '\x%x' WHERE seq = %d`,
			auditlog.Table, strings.ReplaceAll(string(r.ev.Details), "'", "''"), strings.ReplaceAll(string(canon), "'", "''"), prev, hash, r.seq))
		prev = hash
	}
	tamper(t, ownerURL, stmts...)
}

// TestAuditVerifyDetectsTampering is issue 11's acceptance for the audit
// trail, against real PostgreSQL and NATS: whoever can disable the
// table's triggers (the owner, a superuser) can cut rows from the end or
// recompute the whole chain so that it verifies by itself; `tenantctl
// audit --verify` detects both by the anchors kept outside the database.
func TestAuditVerifyDetectsTampering(t *testing.T) {
	env := startAuditEnv(t)

	t.Run("roles: owner not a superuser, writer insert and select only, reader select only", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		l := env.newLog(t)
		var owner string
		var super bool
		if err := l.writer.QueryRow(ctx, `SELECT r.rolname, r.rolsuper FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE c.oid = $1::regclass`, auditlog.Table).
			Scan(&owner, &super); err != nil {
			t.Fatal(err)
		}
		if owner != auditOwner || super {
			t.Errorf("table owner %q superuser %v; want %s, not a superuser", owner, super, auditOwner)
		}
		// Migrating as a superuser is refused.
		if _, err := auditlog.Migrate(ctx, connect(t, l.superURL), auditlog.MigrateOptions{Writer: auditWriter}); !errors.Is(err, auditlog.ErrOwnerPrivileges) {
			t.Errorf("Migrate as a superuser: %v, want ErrOwnerPrivileges", err)
		}
		for _, c := range []struct {
			role                                 string
			sel, ins, upd, del, trunc, refs, trg bool
		}{
			{auditWriter, true, true, false, false, false, false, false},
			{auditReader, true, false, false, false, false, false, false},
		} {
			var sel, ins, upd, del, trunc, refs, trg bool
			if err := l.writer.QueryRow(ctx, `SELECT has_table_privilege($1, $2, 'SELECT'), has_table_privilege($1, $2, 'INSERT'),
				has_table_privilege($1, $2, 'UPDATE'), has_table_privilege($1, $2, 'DELETE'), has_table_privilege($1, $2, 'TRUNCATE'),
				has_table_privilege($1, $2, 'REFERENCES'), has_table_privilege($1, $2, 'TRIGGER')`, c.role, auditlog.Table).
				Scan(&sel, &ins, &upd, &del, &trunc, &refs, &trg); err != nil {
				t.Fatal(err)
			}
			if sel != c.sel || ins != c.ins || upd || del || trunc || refs || trg {
				t.Errorf("%s: select %v insert %v update %v delete %v truncate %v references %v trigger %v", c.role, sel, ins, upd, del, trunc, refs, trg)
			}
		}
		l.appendAndAnchor(t, 0, 2)
		reader := connect(t, l.readerURL)
		for _, s := range []string{
			`INSERT INTO ` + auditlog.Table + ` (seq, event_id, type, actor, occurred_at, source, canonical, prev_hash, hash) SELECT seq + 1, 'x', type, actor, occurred_at, source, canonical, hash, hash FROM ` + auditlog.Table + ` WHERE seq = 2`,
			`DELETE FROM ` + auditlog.Table,
			`ALTER TABLE ` + auditlog.Table + ` DISABLE TRIGGER USER`,
		} {
			if _, err := reader.Exec(ctx, s); err == nil {
				t.Errorf("the reader could: %s", s)
			}
		}
		// tenantctl audit works as the reader.
		t.Setenv("AUDIT_PG_URL", l.readerURL)
		if code, out, errOut := tenantctl(t, "audit", "--tenant", "acme"); code != exitOK || !strings.Contains(out, "STORE_PROVISIONED") {
			t.Errorf("audit as the reader: exit %d\n%s%s", code, out, errOut)
		}
	})

	t.Run("a clean log verifies intact", func(t *testing.T) {
		l := env.newLog(t)
		l.appendAndAnchor(t, 0, 5)
		code, out := l.verify(t)
		if code != exitOK || !strings.Contains(out, "audit chain intact: 5 rows") || !strings.Contains(out, "latest seq 5") {
			t.Fatalf("exit %d:\n%s", code, out)
		}
		// --db without a password, the password from PGPASSFILE.
		pc, err := pgx.ParseConfig(l.readerURL)
		if err != nil {
			t.Fatal(err)
		}
		passfile := filepath.Join(t.TempDir(), "pgpass")
		line := fmt.Sprintf("%s:%d:%s:%s:%s\n", pc.Host, pc.Port, pc.Database, pc.User, pc.Password)
		if err := os.WriteFile(passfile, []byte(line), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("PGPASSFILE", passfile)
		t.Setenv("AUDIT_PG_URL", "")
		db := fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", pc.User, pc.Host, pc.Port, pc.Database)
		code, stdout, errOut := tenantctl(t, "audit", "--verify", "--db", db, "--nats-url", l.natsURL)
		if code != exitOK || !strings.Contains(stdout, "audit chain intact: 5 rows") {
			t.Fatalf("--db without a password, PGPASSFILE: exit %d:\n%s%s", code, stdout, errOut)
		}
		// An empty log with no anchor verifies too.
		if code, out := env.newLog(t).verify(t); code != exitOK {
			t.Fatalf("empty log: exit %d:\n%s", code, out)
		}
	})

	t.Run("tail cut by the owner after disabling triggers", func(t *testing.T) {
		l := env.newLog(t)
		l.appendAndAnchor(t, 0, 6)
		tamper(t, l.ownerURL, `DELETE FROM `+auditlog.Table+` WHERE seq > 3`)
		// The chain alone cannot tell.
		if code, out := l.verify(t, "--no-anchors"); code != exitOK {
			t.Fatalf("chain alone: exit %d (it should verify: a cut tail leaves a valid chain):\n%s", code, out)
		}
		code, out := l.verify(t)
		if code != exitFailed || !strings.Contains(out, "TAMPERED") || !strings.Contains(out, string(auditlog.ProblemTruncated)) || !strings.Contains(out, "seq 6") {
			t.Fatalf("tail cut not detected: exit %d:\n%s", code, out)
		}
		t.Logf("detected:\n%s", out)
		// The sink refuses to move the anchor onto the cut chain, so the
		// evidence stays even after new rows arrive.
		e, _ := auditlog.Prepare(auditEvent(100))
		if _, err := auditlog.Append(context.Background(), l.writer, []*auditlog.Entry{e}); err != nil {
			t.Fatal(err)
		}
		if _, err := l.anchorer.Anchor(context.Background()); !errors.Is(err, auditlog.ErrAnchorMismatch) {
			t.Fatalf("anchoring a cut chain: %v, want ErrAnchorMismatch", err)
		}
		if code, out := l.verify(t); code != exitFailed || !strings.Contains(out, "TAMPERED") {
			t.Fatalf("after new rows: exit %d:\n%s", code, out)
		}
	})

	t.Run("truncated and refilled by a superuser", func(t *testing.T) {
		l := env.newLog(t)
		l.appendAndAnchor(t, 0, 4)
		tamper(t, l.superURL, `TRUNCATE `+auditlog.Table)
		// Refill with fewer, different events: a chain that verifies.
		for i := 50; i < 53; i++ {
			e, _ := auditlog.Prepare(auditEvent(i))
			if _, err := auditlog.Append(context.Background(), l.writer, []*auditlog.Entry{e}); err != nil {
				t.Fatal(err)
			}
		}
		code, out := l.verify(t)
		if code != exitFailed || !strings.Contains(out, "TAMPERED") {
			t.Fatalf("truncate and refill not detected: exit %d:\n%s", code, out)
		}
		t.Logf("detected:\n%s", out)
	})

	t.Run("whole chain recomputed by the owner after disabling triggers", func(t *testing.T) {
		l := env.newLog(t)
		l.appendAndAnchor(t, 0, 6)
		recompute(t, l.ownerURL, 2, `{"i": 1, "forged": true}`)
		if code, out := l.verify(t, "--no-anchors"); code != exitOK {
			t.Fatalf("the recomputed chain should verify by itself (else this test proves nothing): exit %d:\n%s", code, out)
		}
		code, out := l.verify(t)
		if code != exitFailed || !strings.Contains(out, "TAMPERED") || !strings.Contains(out, string(auditlog.ProblemAnchorHash)) {
			t.Fatalf("recomputed chain not detected: exit %d:\n%s", code, out)
		}
		t.Logf("detected:\n%s", out)
	})

	t.Run("anchor deleted from the bucket", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		l := env.newLog(t)
		l.appendAndAnchor(t, 0, 3)
		tamper(t, l.ownerURL, `DELETE FROM `+auditlog.Table+` WHERE seq > 1`)
		if err := l.anchors.Delete(ctx, auditlog.AnchorKey); err != nil {
			t.Fatal(err)
		}
		// The sink would start a new anchor history on the cut chain …
		if res, err := l.anchorer.Anchor(ctx); err != nil || !res.Written || res.Anchor.Seq != 1 {
			t.Fatalf("anchor after the delete: %+v %v", res, err)
		}
		// … but the delete marker stays in the history.
		code, out := l.verify(t)
		if code != exitFailed || !strings.Contains(out, "TAMPERED") {
			t.Fatalf("deleted anchor not detected: exit %d:\n%s", code, out)
		}
		t.Logf("detected:\n%s", out)
	})

	t.Run("rows but no anchor", func(t *testing.T) {
		l := env.newLog(t)
		e, _ := auditlog.Prepare(auditEvent(1))
		if _, err := auditlog.Append(context.Background(), l.writer, []*auditlog.Entry{e}); err != nil {
			t.Fatal(err)
		}
		if code, out := l.verify(t); code != exitFailed || !strings.Contains(out, "no anchor") {
			t.Fatalf("exit %d:\n%s", code, out)
		}
	})
}

// TestAuditDBURLNeverInArgv: --db with a password is refused without
// echoing it; the URL comes from AUDIT_PG_URL or a file instead.
func TestAuditDBURLNeverInArgv(t *testing.T) {
	for _, db := range []string{
		"postgres://auditor:hunter2@127.0.0.1:1/audit",
		"postgresql://auditor@127.0.0.1:1/audit?password=hunter2",
		"host=127.0.0.1 user=auditor password=hunter2 dbname=audit",
	} {
		code, out, errOut := tenantctl(t, "audit", "--db", db)
		if code != exitUsage || !strings.Contains(errOut, "password") || strings.Contains(out+errOut, "hunter2") {
			t.Errorf("--db %q: exit %d:\n%s%s", db, code, out, errOut)
		}
	}
	t.Setenv("AUDIT_PG_URL", "")
	t.Setenv("AUDIT_PG_URL_FILE", "")
	if code, _, errOut := tenantctl(t, "audit"); code != exitUsage || !strings.Contains(errOut, "AUDIT_PG_URL") {
		t.Errorf("no URL: exit %d: %s", code, errOut)
	}
	// From a file or the environment, the URL (password included) is used:
	// it reaches the connection attempt, and is not echoed.
	f := filepath.Join(t.TempDir(), "audit-url")
	if err := os.WriteFile(f, []byte("postgres://auditor:hunter2@127.0.0.1:1/audit?connect_timeout=2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := tenantctl(t, "audit", "--db-file", f)
	if code != exitUnavailable || strings.Contains(out+errOut, "hunter2") {
		t.Errorf("--db-file: exit %d (want %d, a connection failure):\n%s%s", code, exitUnavailable, out, errOut)
	}
	t.Setenv("AUDIT_PG_URL", "postgres://auditor:hunter2@127.0.0.1:1/audit?connect_timeout=2")
	code, out, errOut = tenantctl(t, "audit")
	if code != exitUnavailable || strings.Contains(out+errOut, "hunter2") {
		t.Errorf("AUDIT_PG_URL: exit %d (want %d):\n%s%s", code, exitUnavailable, out, errOut)
	}
	// --help shows no default taken from the environment.
	_, out, _ = tenantctl(t, "audit", "--help")
	if strings.Contains(out, "hunter2") {
		t.Errorf("--help prints AUDIT_PG_URL's password:\n%s", out)
	}
}
