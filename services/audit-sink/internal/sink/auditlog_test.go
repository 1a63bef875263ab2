package sink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/auditlog"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// TestAuditLog checks pkg/auditlog against a real PostgreSQL: the roles
// and triggers that make the table append-only, the chain under
// concurrent writers, Verify against tampering, migrations and queries.
// (These tests live here, not in pkg, to keep the test kit's dependencies
// out of the shared module.)
func TestAuditLog(t *testing.T) {
	c := startCluster(t)

	t.Run("writer role may only insert and select", func(t *testing.T) {
		db := c.newDB(t)
		pool := db.open(t)
		appendN(t, pool, 0, 3)
		w := conn(t, db.writerURL)
		for _, stmt := range []string{
			`UPDATE ` + auditlog.Table + ` SET actor = 'mallory' WHERE seq = 2`,
			`DELETE FROM ` + auditlog.Table + ` WHERE seq = 3`,
			`TRUNCATE ` + auditlog.Table,
			`ALTER TABLE ` + auditlog.Table + ` DISABLE TRIGGER audit_events_no_update_delete`,
			`DROP TABLE ` + auditlog.Table,
		} {
			expectRefused(t, w, stmt, "42501", "")
		}
		// Even an INSERT must extend the chain correctly.
		expectRefused(t, w, `INSERT INTO `+auditlog.Table+` (seq, event_id, type, actor, occurred_at, source, canonical, prev_hash, hash)
			VALUES (10, 'forged', 'X', 'a', now(), 's', '{}', decode(repeat('00',32),'hex'), decode(repeat('00',32),'hex'))`, "23000", "does not follow the head")
		expectRefused(t, w, `INSERT INTO `+auditlog.Table+` (seq, event_id, type, actor, occurred_at, source, canonical, prev_hash, hash)
			SELECT 4, 'forged', 'X', 'a', now(), 's', '{}', hash, hash FROM `+auditlog.Table+` WHERE seq = 3`, "23000", "hash of seq 4")
		verify(t, pool, 3)
	})

	t.Run("table owner cannot update delete or truncate", func(t *testing.T) {
		db := c.newDB(t)
		pool := db.open(t)
		appendN(t, pool, 0, 3)
		o := conn(t, db.ownerURL)
		var owner string
		if err := o.QueryRow(context.Background(), `SELECT tableowner FROM pg_tables WHERE schemaname = $1 AND tablename = 'audit_events'`, auditlog.Schema).Scan(&owner); err != nil || owner != ownerRole {
			t.Fatalf("table owner %q (%v), want %s", owner, err, ownerRole)
		}
		for _, stmt := range []string{
			`UPDATE ` + auditlog.Table + ` SET actor = 'mallory' WHERE seq = 2`,
			`DELETE FROM ` + auditlog.Table + ` WHERE seq = 3`,
			`TRUNCATE ` + auditlog.Table,
		} {
			expectRefused(t, o, stmt, "42501", "append-only")
		}
		// A superuser is refused the same way while the triggers are on.
		expectRefused(t, conn(t, db.superURL), `DELETE FROM `+auditlog.Table, "42501", "append-only")
		verify(t, pool, 3)
	})

	t.Run("tampering is detected", func(t *testing.T) {
		cases := []struct {
			name    string
			tamper  string // run as superuser with the user triggers disabled
			seq     int64
			problem auditlog.Problem
		}{
			{"details rewritten", `UPDATE ` + auditlog.Table + ` SET details = '{"i": 999}' WHERE seq = 4`, 4, auditlog.ProblemContent},
			{"column rewritten", `UPDATE ` + auditlog.Table + ` SET tenant_id = 'other' WHERE seq = 2`, 2, auditlog.ProblemContent},
			{"canonical rewritten", `UPDATE ` + auditlog.Table + ` SET canonical = replace(canonical, '"i":3', '"i":4') WHERE seq = 4`, 4, auditlog.ProblemHash},
			{"row re-hashed", `UPDATE ` + auditlog.Table + ` SET canonical = replace(canonical, '"i":3', '"i":4'),
				details = '{"i": 4, "note": "x"}',
				hash = sha256(prev_hash || convert_to(replace(canonical, '"i":3', '"i":4'), 'UTF8')) WHERE seq = 4`, 5, auditlog.ProblemPrevHash},
			{"row deleted", `DELETE FROM ` + auditlog.Table + ` WHERE seq = 3`, 4, auditlog.ProblemGap},
			{"first row deleted", `DELETE FROM ` + auditlog.Table + ` WHERE seq = 1`, 2, auditlog.ProblemGap},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				db := c.newDB(t)
				pool := db.open(t)
				appendN(t, pool, 0, 6)
				verify(t, pool, 6)
				su := conn(t, db.superURL)
				for _, s := range []string{
					`ALTER TABLE ` + auditlog.Table + ` DISABLE TRIGGER USER`,
					tc.tamper,
					`ALTER TABLE ` + auditlog.Table + ` ENABLE TRIGGER USER`,
				} {
					if tag, err := su.Exec(ctx, s); err != nil || (strings.HasPrefix(s, "UPDATE") || strings.HasPrefix(s, "DELETE")) && tag.RowsAffected() != 1 {
						t.Fatalf("%s: %v (%s)", s, err, tag)
					}
				}
				rep, err := auditlog.Verify(ctx, pool)
				if err != nil {
					t.Fatal(err)
				}
				if rep.OK() {
					t.Fatalf("tampering not detected: %+v", rep)
				}
				b := rep.Break
				if b.Seq != tc.seq || b.Problem != tc.problem || b.EventID == "" || !errors.Is(rep.Err(), auditlog.ErrChainBroken) {
					t.Fatalf("break %v; want seq %d, %s", rep.Err(), tc.seq, tc.problem)
				}
				t.Logf("detected: %v", rep.Err())
			})
		}
	})

	t.Run("concurrent writers keep the chain gapless", func(t *testing.T) {
		db := c.newDB(t)
		pools := []*pgxpool.Pool{db.open(t), db.open(t), db.open(t)}
		const writers, each = 6, 40
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					// Every event twice, from two writers: half are duplicates.
					n := (w/2)*each + i
					e, err := auditlog.Prepare(event(n))
					if err != nil {
						errs <- err
						return
					}
					if _, err := auditlog.Append(context.Background(), pools[w%len(pools)], []*auditlog.Entry{e}); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		verify(t, pools[0], writers/2*each)
	})

	t.Run("duplicates within one append", func(t *testing.T) {
		db := c.newDB(t)
		pool := db.open(t)
		e1, _ := auditlog.Prepare(event(1))
		e2, _ := auditlog.Prepare(event(2))
		outs, err := auditlog.Append(context.Background(), pool, []*auditlog.Entry{e1, e2, e1})
		if err != nil {
			t.Fatal(err)
		}
		if outs[0] != (auditlog.Outcome{Seq: 1}) || outs[1] != (auditlog.Outcome{Seq: 2}) || outs[2] != (auditlog.Outcome{Seq: 1, Duplicate: true}) {
			t.Fatalf("outcomes %+v", outs)
		}
		outs, err = auditlog.Append(context.Background(), pool, []*auditlog.Entry{e2})
		if err != nil || outs[0] != (auditlog.Outcome{Seq: 2, Duplicate: true}) {
			t.Fatalf("re-append: %+v %v", outs, err)
		}
		verify(t, pool, 2)
	})

	t.Run("concurrent first starts migrate once", func(t *testing.T) {
		db := c.newDB(t)
		var wg sync.WaitGroup
		pools := make([]*pgxpool.Pool, 4)
		for i := range pools {
			wg.Go(func() { pools[i] = db.open(t) })
		}
		wg.Wait()
		var n int
		if err := pools[0].QueryRow(context.Background(), `SELECT count(*) FROM `+auditlog.Schema+`.schema_migrations`).Scan(&n); err != nil || n != auditlog.SchemaVersion() {
			t.Fatalf("%d migration rows (%v), want %d", n, err, auditlog.SchemaVersion())
		}
	})

	t.Run("startup refuses unsafe or unready writers", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		db := c.newDB(t)
		// Not migrated and no admin URL: the schema is not ready (and
		// Open keeps waiting for a replica that migrates).
		short, cancelShort := context.WithTimeout(ctx, 700*time.Millisecond)
		_, err := Open(short, zap.NewNop(), DBConfig{URL: secret.String(db.writerURL)})
		cancelShort()
		if !errors.Is(err, auditlog.ErrSchemaNotReady) {
			t.Errorf("Open before migration: %v, want ErrSchemaNotReady", err)
		}
		db.open(t)
		// The owner or a superuser as the writer: refused.
		for _, url := range []string{db.ownerURL, db.superURL} {
			if _, err := Open(ctx, zap.NewNop(), DBConfig{URL: secret.String(url)}); !errors.Is(err, auditlog.ErrWriterPrivileges) {
				t.Errorf("Open as a privileged writer: %v, want ErrWriterPrivileges", err)
			}
		}
		// Migrate refuses to grant the owner itself as the writer.
		o := conn(t, db.ownerURL)
		if _, err := auditlog.Migrate(ctx, o, auditlog.MigrateOptions{Writer: ownerRole}); !errors.Is(err, auditlog.ErrWriterPrivileges) {
			t.Errorf("Migrate with the owner as writer: %v", err)
		}
		// A writer that was granted UPDATE behind the sink's back: refused.
		if _, err := o.Exec(ctx, `GRANT UPDATE ON `+auditlog.Table+` TO `+writerRole); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(ctx, zap.NewNop(), DBConfig{URL: secret.String(db.writerURL)}); !errors.Is(err, auditlog.ErrWriterPrivileges) {
			t.Errorf("Open with UPDATE granted: %v, want ErrWriterPrivileges", err)
		}
		// The next migration puts the privileges right.
		db.open(t)
		// A table owned by a superuser (migrated as one, or handed over):
		// refused, and the migration refuses to run as a superuser.
		su := conn(t, db.superURL)
		if _, err := su.Exec(ctx, `ALTER TABLE `+auditlog.Table+` OWNER TO `+c.pg.AdminUser); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(ctx, zap.NewNop(), DBConfig{URL: secret.String(db.writerURL)}); !errors.Is(err, auditlog.ErrOwnerPrivileges) {
			t.Errorf("Open with a superuser-owned table: %v, want ErrOwnerPrivileges", err)
		}
		if err := Migrate(ctx, zap.NewNop(), MigrateConfig{AdminURL: secret.String(db.superURL), Writer: writerRole}); !errors.Is(err, auditlog.ErrOwnerPrivileges) {
			t.Errorf("Migrate as a superuser: %v, want ErrOwnerPrivileges", err)
		}
		if _, err := su.Exec(ctx, `ALTER TABLE `+auditlog.Table+` OWNER TO `+ownerRole); err != nil {
			t.Fatal(err)
		}
		// A changed migration is refused.
		if _, err := o.Exec(ctx, `UPDATE `+auditlog.Schema+`.schema_migrations SET checksum = 'x'`); err != nil {
			t.Fatal(err)
		}
		if _, err := auditlog.Migrate(ctx, o, auditlog.MigrateOptions{}); !errors.Is(err, auditlog.ErrMigrationChanged) {
			t.Errorf("Migrate after a checksum change: %v, want ErrMigrationChanged", err)
		}
	})

	t.Run("queries newest first with keyset pages", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		db := c.newDB(t)
		pool := db.open(t)
		base := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
		var entries []*auditlog.Entry
		for i := range 30 {
			ev := event(i)
			ev.TenantID = []string{"acme", "globex", "initech"}[i%3]
			if i%5 == 0 {
				ev.Type = events.AuditTenantProvisioned
			}
			ev.OccurredAt = base.Add(time.Duration(i) * time.Minute)
			e, err := auditlog.Prepare(ev)
			if err != nil {
				t.Fatal(err)
			}
			entries = append(entries, e)
		}
		if _, err := auditlog.Append(ctx, pool, entries); err != nil {
			t.Fatal(err)
		}
		// By tenant, pages of 4: 10 records, newest first, no overlap.
		var seqs []int64
		f := auditlog.Filter{TenantID: "globex", Limit: 4}
		for pages := 0; ; pages++ {
			p, err := auditlog.List(ctx, pool, f)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range p.Records {
				if r.TenantID != "globex" {
					t.Fatalf("record of tenant %s", r.TenantID)
				}
				seqs = append(seqs, r.Seq)
			}
			if p.Next == 0 {
				if pages != 2 {
					t.Errorf("%d pages, want 3", pages+1)
				}
				break
			}
			f.Before = p.Next
		}
		want := []int64{29, 26, 23, 20, 17, 14, 11, 8, 5, 2}
		if fmt.Sprint(seqs) != fmt.Sprint(want) {
			t.Errorf("globex seqs %v, want %v", seqs, want)
		}
		// By type.
		p, err := auditlog.List(ctx, pool, auditlog.Filter{Type: events.AuditTenantProvisioned})
		if err != nil || len(p.Records) != 6 || p.Records[0].Seq != 26 || p.Next != 0 {
			t.Errorf("by type: %d records, first %+v, next %d, %v", len(p.Records), p.Records[0].Seq, p.Next, err)
		}
		// By time range [10m, 20m), combined with tenant.
		p, err = auditlog.List(ctx, pool, auditlog.Filter{TenantID: "acme", Since: base.Add(10 * time.Minute), Until: base.Add(20 * time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		var got []int64
		for _, r := range p.Records {
			got = append(got, r.Seq)
		}
		if fmt.Sprint(got) != "[19 16 13]" {
			t.Errorf("acme in [10m,20m): seqs %v, want [19 16 13]", got)
		}
		// Records round-trip the event.
		r := p.Records[0]
		if r.OccurredAt != base.Add(18*time.Minute) || r.Actor != "orchestrator" || r.Store != events.StorePostgres || len(r.Hash) != auditlog.HashSize || r.CheckContent() != nil {
			t.Errorf("record %+v", r)
		}
		seq, hash, err := auditlog.Head(ctx, pool)
		if err != nil || seq != 30 || len(hash) != auditlog.HashSize {
			t.Errorf("head %d %x %v", seq, hash, err)
		}
	})
}

// appendN appends events from..from+n-1, one transaction each.
func appendN(t testing.TB, db auditlog.TxBeginner, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		e, err := auditlog.Prepare(event(i))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := auditlog.Append(context.Background(), db, []*auditlog.Entry{e}); err != nil {
			t.Fatalf("append: %v", err)
		}
	}
}

// expectRefused runs stmt and requires PostgreSQL to refuse it with code
// (and a message containing msg).
func expectRefused(t *testing.T, c *pgx.Conn, stmt, code, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.Exec(ctx, stmt)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != code || !strings.Contains(pgErr.Message, msg) {
		t.Errorf("%s\n  got %v, want SQLSTATE %s %q", firstLine(stmt), err, code, msg)
		return
	}
	t.Logf("refused as expected: %s: %s (%s)", firstLine(stmt), pgErr.Message, pgErr.Code)
}

func firstLine(s string) string { l, _, _ := strings.Cut(s, "\n"); return l }
