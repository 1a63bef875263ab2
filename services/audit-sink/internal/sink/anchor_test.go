package sink

import (
	"context"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantprov/tenantprov/pkg/auditlog"
)

// TestSinkAnchors runs sinks against real PostgreSQL and NATS: the head
// is anchored in the audit-anchors bucket after the events are written
// (two replicas keep one forward-only anchor), and after the database is
// tampered with the sink refuses to move the anchor, counting it.
func TestSinkAnchors(t *testing.T) {
	c := startCluster(t)

	latest := func(t *testing.T, b *bus) (auditlog.Anchor, int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		kv, err := auditlog.OpenAnchors(ctx, b.js)
		if err != nil {
			t.Fatal(err)
		}
		as, err := auditlog.ReadAnchors(ctx, kv)
		if err != nil {
			t.Fatal(err)
		}
		if len(as) == 0 {
			return auditlog.Anchor{}, 0
		}
		return as[len(as)-1], len(as)
	}
	anchoredAt := func(t *testing.T, b *bus, pool *pgxpool.Pool, n int64) {
		t.Helper()
		waitFor(t, 30*time.Second, "head anchored", func() bool { a, _ := latest(t, b); return a.Seq == n })
		seq, hash, err := auditlog.Head(context.Background(), pool)
		a, _ := latest(t, b)
		if err != nil || seq != n || a.Hash != hex.EncodeToString(hash) || a.Rows != n || a.EventID == "" || a.AnchoredBy == "" || a.AnchoredAt.IsZero() {
			t.Fatalf("anchor %+v, head %d %x (%v)", a, seq, hash, err)
		}
	}

	t.Run("two replicas anchor the head, never backwards", func(t *testing.T) {
		db, b := c.newDB(t), startBus(t)
		pool := db.open(t)
		r1 := startSink(t, b, pool, nil)
		r2 := startSink(t, b, db.open(t), nil)
		publishMany(t, b.js, 0, 300)
		waitFor(t, 60*time.Second, "300 rows", func() bool { return r1.written()+r2.written() >= 300 })
		anchoredAt(t, b, pool, 300)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		kv, _ := auditlog.OpenAnchors(ctx, b.js)
		as, err := auditlog.ReadAnchors(ctx, kv)
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i < len(as); i++ {
			if as[i].Seq <= as[i-1].Seq {
				t.Fatalf("anchor %d went from seq %d to %d", i, as[i-1].Seq, as[i].Seq)
			}
		}
		rep, err := auditlog.CheckAnchors(ctx, pool, as)
		if err != nil || !rep.OK() || rep.Checked != len(as) {
			t.Fatalf("anchors vs database: %+v %v", rep, err)
		}
		t.Logf("%d anchors kept, written by the replicas: %v + %v", len(as), counterValue(r1.metrics.Anchors), counterValue(r2.metrics.Anchors))
	})

	t.Run("a cut tail stops anchoring and is counted", func(t *testing.T) {
		db, b := c.newDB(t), startBus(t)
		pool := db.open(t)
		r := startSink(t, b, pool, func(o *Options, _ *Sink) { o.AnchorInterval = 200 * time.Millisecond })
		publishMany(t, b.js, 0, 10)
		anchoredAt(t, b, pool, 10)
		_, before := latest(t, b)
		su := conn(t, db.superURL)
		for _, s := range []string{
			`ALTER TABLE ` + auditlog.Table + ` DISABLE TRIGGER USER`,
			`DELETE FROM ` + auditlog.Table + ` WHERE seq > 6`,
			`ALTER TABLE ` + auditlog.Table + ` ENABLE TRIGGER USER`,
		} {
			if _, err := su.Exec(context.Background(), s); err != nil {
				t.Fatal(err)
			}
		}
		// New events land on the cut chain (the chain is valid again) …
		publishMany(t, b.js, 100, 10)
		waitFor(t, 30*time.Second, "new events written", func() bool { return rowCount(t, pool) == 16 })
		waitFor(t, 30*time.Second, "mismatch counted", func() bool { return counterValue(r.metrics.AnchorMismatches) > 0 })
		// … but the anchor stays where it was: the evidence.
		a, after := latest(t, b)
		if a.Seq != 10 || after != before {
			t.Fatalf("anchor moved to seq %d (%d anchors, %d before) after the tail was cut", a.Seq, after, before)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		kv, _ := auditlog.OpenAnchors(ctx, b.js)
		_, err := auditlog.NewAnchorer(kv, pool, "check").Anchor(ctx)
		var m *auditlog.AnchorMismatch
		if !errors.As(err, &m) || m.Problem != auditlog.ProblemAnchorHash {
			t.Fatalf("Anchor after the cut: %v, want a hash mismatch at seq 10", err)
		}
	})
}
