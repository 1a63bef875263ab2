package sink

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/tenantprov/tenantprov/pkg/auditlog"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/testkit"
)

// Role names and passwords of the test cluster (test-only credentials).
const (
	ownerRole  = "audit_owner"
	writerRole = "audit_writer"
	ownerPW    = "owner-pw"
	writerPW   = "writer-pw"
)

// cluster is one PostgreSQL server shared by the subtests of one top-level
// test; every subtest gets its own database (newDB), so none sees another's
// rows.
type cluster struct {
	pg    *testkit.Postgres
	super *pgx.Conn
	dbs   atomic.Int64
}

// startCluster starts PostgreSQL and creates the owner and writer roles
// the way the auditlog package doc tells an operator to.
func startCluster(t testing.TB) *cluster {
	t.Helper()
	pg := testkit.StartPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	super, err := pgx.Connect(ctx, pg.AdminURL())
	if err != nil {
		t.Fatalf("connect as superuser: %v", err)
	}
	t.Cleanup(func() { super.Close(context.Background()) })
	for _, s := range []string{
		`CREATE ROLE ` + ownerRole + ` LOGIN PASSWORD '` + ownerPW + `'`,
		`CREATE ROLE ` + writerRole + ` LOGIN PASSWORD '` + writerPW + `'`,
	} {
		if _, err := super.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	return &cluster{pg: pg, super: super}
}

// auditDB is one audit database on the cluster.
type auditDB struct {
	name                          string
	superURL, ownerURL, writerURL string
}

// newDB creates a fresh database owned by the owner role, which the
// writer may connect to.
func (c *cluster) newDB(t testing.TB) auditDB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name := "audit_" + strconv.FormatInt(c.dbs.Add(1), 10)
	for _, s := range []string{
		`CREATE DATABASE ` + name + ` OWNER ` + ownerRole,
		`REVOKE ALL ON DATABASE ` + name + ` FROM PUBLIC`,
		`GRANT CONNECT ON DATABASE ` + name + ` TO ` + writerRole,
	} {
		if _, err := c.super.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	return auditDB{
		name:      name,
		superURL:  c.pg.URL(c.pg.AdminUser, c.pg.AdminPassword, name),
		ownerURL:  c.pg.URL(ownerRole, ownerPW, name),
		writerURL: c.pg.URL(writerRole, writerPW, name),
	}
}

// open prepares db as the service does at start (migrate as the owner,
// check as the writer) and returns the writer's pool.
func (d auditDB) open(t testing.TB) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d.migrate(t)
	pool, err := Open(ctx, zap.NewNop(), DBConfig{URL: secret.String(d.writerURL), MaxConns: 4})
	if err != nil {
		t.Fatalf("open audit db: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// migrate runs the migrations as the owner, as `audit-sink migrate` does.
func (d auditDB) migrate(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Migrate(ctx, zap.NewNop(), MigrateConfig{AdminURL: secret.String(d.ownerURL), Writer: writerRole}); err != nil {
		t.Fatalf("migrate audit db: %v", err)
	}
}

// conn connects to db with url, closed at the end of the test.
func conn(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// bus is a NATS server with the tenantprov topology.
type bus struct {
	srv *testkit.NATS
	nc  *nats.Conn
	js  jetstream.JetStream
}

func startBus(t testing.TB) *bus {
	t.Helper()
	srv := testkit.StartNATS(t)
	nc := srv.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := (events.Topology{}).Ensure(ctx, js); err != nil {
		t.Fatalf("ensure topology: %v", err)
	}
	return &bus{srv: srv, nc: nc, js: js}
}

// running is a sink started by startSink.
type running struct {
	sink    *Sink
	metrics *Metrics
	cancel  context.CancelFunc
	done    chan struct{} // closed when Run has returned
	err     error         // what Run returned, once done is closed
}

// stop cancels the sink and returns what Run returned.
func (r *running) stop(t testing.TB) error {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
		return r.err
	case <-time.After(20 * time.Second):
		t.Fatal("sink did not stop within 20s")
		return nil
	}
}

func (r *running) written() int    { return int(testutil.ToFloat64(r.metrics.Written)) }
func (r *running) duplicates() int { return int(testutil.ToFloat64(r.metrics.Duplicates)) }

// startSink runs a sink on its own NATS connection (as a separate replica
// would) until the test ends or stop is called.
func startSink(t testing.TB, b *bus, pool *pgxpool.Pool, mutate func(*Options, *Sink)) *running {
	t.Helper()
	js, err := jetstream.New(b.srv.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	var log *zap.Logger
	if tt, ok := t.(*testing.T); ok {
		log = zaptest.NewLogger(tt, zaptest.Level(zap.WarnLevel))
	} else {
		log = zap.NewNop()
	}
	opts := Options{JS: js, DB: pool, Log: log, Metrics: NewMetrics(prometheus.NewRegistry()), BatchSize: 100, AckWait: 5 * time.Second}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		mutate(&s.opts, s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{sink: s, metrics: opts.Metrics, cancel: cancel, done: make(chan struct{})}
	go func() { r.err = s.Run(ctx); close(r.done) }()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

// event returns a valid audit event numbered i.
func event(i int) *events.AuditEvent {
	return &events.AuditEvent{
		EventID:    fmt.Sprintf("audit:test:g1:e%06d", i),
		Type:       events.AuditStoreProvisioned,
		TenantID:   "acme",
		Generation: 1,
		SagaID:     "saga-1",
		Store:      events.StorePostgres,
		Actor:      "orchestrator",
		OccurredAt: time.Date(2025, 1, 2, 3, 4, 5, i*1000, time.UTC),
		Source:     "test",
		Details:    json.RawMessage(fmt.Sprintf(`{"i": %d, "note": "x"}`, i)),
	}
}

// publish publishes ev on audit.<type>. msgID, when not empty, is the
// Nats-Msg-Id (an empty one lets the same event be published twice, as
// after the duplicate window).
func publish(t testing.TB, js jetstream.JetStream, ev *events.AuditEvent, msgID string) {
	t.Helper()
	data, err := events.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	publishRaw(t, js, events.AuditSubject(ev.Type), data, msgID)
}

func publishRaw(t testing.TB, js jetstream.JetStream, subject string, data []byte, msgID string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m := nats.NewMsg(subject)
	m.Data = data
	if msgID != "" {
		m.Header.Set(events.HeaderMsgID, msgID)
	}
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatalf("publish %s: %v", subject, err)
	}
}

// publishMany publishes n events asynchronously and waits for every ack.
func publishMany(t testing.TB, js jetstream.JetStream, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		data, err := events.Encode(event(i))
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(events.AuditSubject(events.AuditStoreProvisioned))
		m.Data = data
		m.Header.Set(events.HeaderMsgID, event(i).EventID)
		if _, err := js.PublishMsgAsync(m); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("async publishes not acknowledged within 30s")
	}
}

// rowCount counts the audit rows.
func rowCount(t testing.TB, db auditlog.Querier) int {
	t.Helper()
	var n int
	if err := db.QueryRow(context.Background(), `SELECT count(*) FROM `+auditlog.Table).Scan(&n); err != nil {
		t.Fatalf("count rows: %v", err)
	}
	return n
}

// waitFor polls cond every 20ms until it is true or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// verify walks the chain and fails the test unless it verifies with want
// rows.
func verify(t testing.TB, db auditlog.Querier, want int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := auditlog.Verify(ctx, db)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if !rep.OK() || rep.Rows != int64(want) || rep.HeadSeq != int64(want) {
		t.Fatalf("verify: %d rows, head %d, break %v; want %d rows, all verified", rep.Rows, rep.HeadSeq, rep.Err(), want)
	}
}

func counterValue(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }
