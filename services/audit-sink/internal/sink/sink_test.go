package sink

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantprov/tenantprov/pkg/auditlog"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// TestSink runs the acceptance scenarios against real PostgreSQL
// and NATS: one PostgreSQL server for all, a fresh database and a fresh
// NATS server per scenario.
func TestSink(t *testing.T) {
	c := startCluster(t)

	t.Run("duplicate delivery writes one row", func(t *testing.T) {
		db, b := c.newDB(t), startBus(t)
		pool := db.open(t)
		r := startSink(t, b, pool, nil)
		// The same event published twice without a Nats-Msg-Id is two
		// stream messages (as after JetStream's duplicate window), likely
		// in one batch; a third copy arrives after the first is stored.
		ev := event(1)
		publish(t, b.js, ev, "")
		publish(t, b.js, ev, "")
		waitFor(t, 10*time.Second, "two deliveries handled", func() bool { return r.written()+r.duplicates() == 2 })
		publish(t, b.js, ev, "")
		waitFor(t, 10*time.Second, "third delivery handled", func() bool { return r.duplicates() == 2 })
		if n := rowCount(t, pool); n != 1 || r.written() != 1 {
			t.Fatalf("%d rows, %d written; want 1", n, r.written())
		}
		verify(t, pool, 1)
	})

	t.Run("two replicas and 1000 events give a gapless verifying chain", func(t *testing.T) {
		db, b := c.newDB(t), startBus(t)
		pool1, pool2 := db.open(t), db.open(t)
		r1 := startSink(t, b, pool1, nil)
		r2 := startSink(t, b, pool2, nil)
		const n = 1000
		publishMany(t, b.js, 0, n)
		waitFor(t, 60*time.Second, "1000 rows", func() bool { return r1.written()+r2.written() >= n })
		if got := rowCount(t, pool1); got != n {
			t.Fatalf("%d rows, want %d", got, n)
		}
		verify(t, pool1, n)
		t.Logf("replica 1 wrote %d, replica 2 wrote %d, duplicates %d", r1.written(), r2.written(), r1.duplicates()+r2.duplicates())
		if r1.written() == 0 || r2.written() == 0 {
			t.Errorf("one replica wrote nothing (%d, %d): the consumer was not shared", r1.written(), r2.written())
		}
	})

	t.Run("sink killed between commit and ack leaves no duplicate", func(t *testing.T) {
		db, b := c.newDB(t), startBus(t)
		pool := db.open(t)
		const ackWait = 2 * time.Second
		crashed := startSink(t, b, pool, func(o *Options, s *Sink) {
			o.AckWait = ackWait
			s.afterCommit = func() error { return errors.New("power cut") }
		})
		const n = 20
		publishMany(t, b.js, 0, n)
		select {
		case <-crashed.done:
		case <-time.After(20 * time.Second):
			t.Fatal("sink with the crash hook did not stop")
		}
		if err := crashed.err; !errors.Is(err, errCrashed) {
			t.Fatalf("Run: %v, want errCrashed", err)
		}
		committed := rowCount(t, pool)
		if committed == 0 {
			t.Fatal("nothing committed before the crash")
		}
		// A new instance gets the unacked messages again after AckWait.
		r := startSink(t, b, pool, func(o *Options, _ *Sink) { o.AckWait = ackWait })
		waitFor(t, 20*time.Second, "every event handled after restart", func() bool { return r.written()+r.duplicates() >= n })
		if got := rowCount(t, pool); got != n {
			t.Fatalf("%d rows after restart, want %d", got, n)
		}
		if r.duplicates() < committed {
			t.Errorf("restarted sink skipped %d duplicates, want at least the %d rows committed before the crash", r.duplicates(), committed)
		}
		verify(t, pool, n)
	})

	t.Run("malformed events are dead-lettered without stopping the rest", func(t *testing.T) {
		db, b := c.newDB(t), startBus(t)
		pool := db.open(t)
		r := startSink(t, b, pool, nil)
		subject := events.AuditSubject(events.AuditStoreProvisioned)
		noActor := event(2)
		noActor.Actor = ""
		noActorJSON, _ := json.Marshal(noActor)
		nul := event(3)
		nul.Details = json.RawMessage(`{"a":"\u0000"}`)
		nulJSON, _ := json.Marshal(nul)
		bad := []struct {
			data   []byte
			reason string
		}{
			{[]byte(`not json at all`), ReasonMalformed},
			{noActorJSON, ReasonInvalid},
			{nulJSON, ReasonUnstorable},
			{[]byte(`{"event_id":` + strings.Repeat(" ", 70<<10) + `"x"}`), ReasonTooLarge},
		}
		for _, m := range bad {
			publishRaw(t, b.js, subject, m.data, "")
		}
		publish(t, b.js, event(1), "")
		waitFor(t, 10*time.Second, "the good event stored", func() bool { return rowCount(t, pool) == 1 })

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		dl, err := b.js.Stream(ctx, events.StreamDeadLetters)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "dead letters stored", func() bool {
			info, err := dl.Info(ctx)
			return err == nil && info.State.Msgs == uint64(len(bad))
		})
		for i, want := range bad {
			m, err := dl.GetMsg(ctx, uint64(i+1))
			if err != nil {
				t.Fatal(err)
			}
			if m.Subject != events.DeadLetterSubject("audit") || m.Header.Get(HeaderDeadLetterReason) != want.reason ||
				m.Header.Get(HeaderDeadLetterSubject) != subject || m.Header.Get(HeaderDeadLetterError) == "" ||
				string(m.Data) != string(want.data) {
				t.Errorf("dead letter %d: subject %s, headers %v, %d bytes; want reason %s and the original payload",
					i+1, m.Subject, m.Header, len(m.Data), want.reason)
			}
			if got := int(testutilCount(r.metrics, want.reason)); got != 1 {
				t.Errorf("tenantprov_audit_dead_letters_total{reason=%q} = %d, want 1", want.reason, got)
			}
		}
		// Nothing is left pending on the consumer: the bad messages were
		// terminated, not left to be redelivered.
		cons, err := b.js.Consumer(ctx, events.StreamAudit, events.ConsumerAuditSink)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "no pending audit messages", func() bool {
			info, err := cons.Info(ctx)
			return err == nil && info.NumPending == 0 && info.NumAckPending == 0
		})
		verify(t, pool, 1)
	})

	t.Run("a row the database refuses is dead-lettered alone", func(t *testing.T) {
		db, b := c.newDB(t), startBus(t)
		pool := db.open(t)
		// A constraint the sink knows nothing about stands in for any
		// data error PostgreSQL may raise on one row of a batch.
		if _, err := conn(t, db.superURL).Exec(context.Background(),
			`ALTER TABLE `+auditlog.Table+` ADD CONSTRAINT test_no_evil CHECK (actor <> 'evil')`); err != nil {
			t.Fatal(err)
		}
		publishMany(t, b.js, 0, 2)
		evil := event(2)
		evil.Actor = "evil"
		publish(t, b.js, evil, "")
		publishMany(t, b.js, 3, 2)
		r := startSink(t, b, pool, nil) // all five arrive in one batch
		waitFor(t, 10*time.Second, "four rows and one dead letter", func() bool {
			return r.written() == 4 && testutilCount(r.metrics, ReasonRejected) == 1
		})
		verify(t, pool, 4)
	})

	t.Run("shutdown finishes in-flight work and a restart resumes", func(t *testing.T) {
		db, b := c.newDB(t), startBus(t)
		pool := db.open(t)
		r := startSink(t, b, pool, nil)
		publishMany(t, b.js, 0, 50)
		waitFor(t, 10*time.Second, "a first write", func() bool { return r.written() > 0 })
		if err := r.stop(t); err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
		r2 := startSink(t, b, pool, nil)
		publishMany(t, b.js, 50, 50)
		waitFor(t, 20*time.Second, "100 rows", func() bool { return rowCount(t, pool) == 100 })
		_ = r2
		verify(t, pool, 100)
	})

	t.Run("consumer is the shared durable one", func(t *testing.T) {
		db, b := c.newDB(t), startBus(t)
		startSink(t, b, db.open(t), nil)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		waitFor(t, 10*time.Second, "consumer created", func() bool {
			_, err := b.js.Consumer(ctx, events.StreamAudit, events.ConsumerAuditSink)
			return err == nil
		})
		cons, _ := b.js.Consumer(ctx, events.StreamAudit, events.ConsumerAuditSink)
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.Durable != events.ConsumerAuditSink || info.Config.AckPolicy != jetstream.AckExplicitPolicy {
			t.Errorf("consumer config %+v", info.Config)
		}
	})
}

func testutilCount(m *Metrics, reason string) float64 {
	return counterValue(m.DeadLetters.WithLabelValues(reason))
}

// TestSinkSurvivesRestarts: events published while PostgreSQL is down, and
// across a NATS restart, are all stored once the servers are back, without
// restarting the sink.
func TestSinkSurvivesRestarts(t *testing.T) {
	c := startCluster(t)
	db, b := c.newDB(t), startBus(t)
	pool := db.open(t)
	r := startSink(t, b, pool, func(o *Options, _ *Sink) {
		o.AckWait = 2 * time.Second
		o.RetryDelay, o.MaxRetryDelay = 50*time.Millisecond, 500*time.Millisecond
	})
	publishMany(t, b.js, 0, 10)
	waitFor(t, 10*time.Second, "10 rows", func() bool { return r.written() == 10 })

	c.pg.Stop(t)
	publishMany(t, b.js, 10, 10)
	waitFor(t, 10*time.Second, "a failed write", func() bool { return counterValue(r.metrics.WriteErrors) > 0 })
	c.pg.Start(t)
	waitFor(t, 30*time.Second, "20 rows after the PostgreSQL restart", func() bool { return r.written() == 20 })

	b.srv.Shutdown()
	b.srv.Restart(t)
	publishMany(t, b.js, 20, 10)
	waitFor(t, 30*time.Second, "30 rows after the NATS restart", func() bool { return r.written() == 30 })
	verify(t, pool, 30)
}
