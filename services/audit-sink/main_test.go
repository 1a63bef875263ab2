package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap/zaptest"

	"github.com/tenantprov/tenantprov/pkg/auditlog"
	"github.com/tenantprov/tenantprov/pkg/config"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/service"
	"github.com/tenantprov/tenantprov/testkit"
)

func TestConfig(t *testing.T) {
	defaults := Config{Config: service.Defaults(name)}
	t.Run("valid", func(t *testing.T) {
		cfg, err := config.LoadFrom(defaults, map[string]string{
			"AUDIT_PG_URL":     "postgres://sink:s3cret@db:5432/audit",
			"AUDIT_BATCH_SIZE": "250",
		})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.BatchSize != 250 || cfg.AckWait != 30*time.Second || cfg.PGMaxConns != 4 || cfg.AnchorInterval != 2*time.Second {
			t.Errorf("config %+v", cfg)
		}
		mc, err := config.LoadFrom(MigrateConfig{}, map[string]string{
			"AUDIT_PG_URL":       "postgres://sink:s3cret@db:5432/audit",
			"AUDIT_PG_ADMIN_URL": "postgres://owner:0wner@db:5432/audit",
			"AUDIT_PG_READERS":   "auditor,tenantctl",
		})
		if err != nil {
			t.Fatal(err)
		}
		if mc.Writer != "sink" || len(mc.PGReaders) != 2 || mc.Timeout != 2*time.Minute {
			t.Errorf("migrate config %+v", mc)
		}
		if s := cfg.PGURL.String(); strings.Contains(s, "s3cret") {
			t.Errorf("AUDIT_PG_URL prints its password: %s", s)
		}
	})
	t.Run("every problem at once, no password", func(t *testing.T) {
		_, err := config.LoadFrom(defaults, map[string]string{
			"AUDIT_PG_ADMIN_URL": "postgres://owner:hunter2@db:5432/audit?sslmode=bogus",
			"AUDIT_BATCH_SIZE":   "0",
			"AUDIT_ACK_WAIT":     "1s",
			"AUDIT_PG_MAX_CONNS": "0",
		})
		if !errors.Is(err, config.ErrInvalid) {
			t.Fatalf("err %v", err)
		}
		for _, want := range []string{"AUDIT_PG_URL: required", "AUDIT_PG_ADMIN_URL", "AUDIT_BATCH_SIZE", "AUDIT_ACK_WAIT", "AUDIT_PG_MAX_CONNS"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not mention %s:\n%v", want, err)
			}
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error leaks a password:\n%v", err)
		}
	})
	t.Run("writer and owner must differ", func(t *testing.T) {
		_, err := config.LoadFrom(MigrateConfig{}, map[string]string{
			"AUDIT_PG_URL":       "postgres://same:a@db/audit",
			"AUDIT_PG_ADMIN_URL": "postgres://same:b@db/audit",
		})
		if err == nil || !strings.Contains(err.Error(), "separate role") {
			t.Errorf("err %v", err)
		}
	})
	t.Run("the long-running sink refuses the owner's URL", func(t *testing.T) {
		_, err := config.LoadFrom(defaults, map[string]string{
			"AUDIT_PG_URL":       "postgres://sink:a@db/audit",
			"AUDIT_PG_ADMIN_URL": "postgres://owner:hunter2@db/audit",
		})
		if err == nil || !strings.Contains(err.Error(), "audit-sink migrate") || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("err %v", err)
		}
	})
}

// TestService runs the service as main does, against real PostgreSQL and
// NATS: it migrates as the owner, writes as the writer, reports ready and
// exports its metrics.
func TestService(t *testing.T) {
	pg := testkit.StartPostgres(t)
	ns := testkit.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	su, err := pgx.Connect(ctx, pg.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer su.Close(ctx)
	for _, s := range []string{
		`CREATE ROLE tenantprov_audit_owner LOGIN PASSWORD 'owner-pw'`,
		`CREATE ROLE tenantprov_audit_sink LOGIN PASSWORD 'sink-pw'`,
		`CREATE ROLE auditor NOLOGIN`,
		`CREATE DATABASE tenantprov_audit OWNER tenantprov_audit_owner`,
		`REVOKE ALL ON DATABASE tenantprov_audit FROM PUBLIC`,
		`GRANT CONNECT ON DATABASE tenantprov_audit TO tenantprov_audit_sink`,
	} {
		if _, err := su.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	cfg, err := config.LoadFrom(Config{Config: service.Defaults(name)}, map[string]string{
		"NATS_URL":     ns.URL,
		"HTTP_ADDR":    "127.0.0.1:0",
		"AUDIT_PG_URL": pg.URL("tenantprov_audit_sink", "sink-pw", "tenantprov_audit"),
	})
	if err != nil {
		t.Fatal(err)
	}
	// `audit-sink migrate`, as the owner, before the sink starts.
	mcfg, err := config.LoadFrom(MigrateConfig{}, map[string]string{
		"AUDIT_PG_URL":       pg.URL("tenantprov_audit_sink", "sink-pw", "tenantprov_audit"),
		"AUDIT_PG_ADMIN_URL": pg.URL("tenantprov_audit_owner", "owner-pw", "tenantprov_audit"),
		"AUDIT_PG_READERS":   "auditor",
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate(ctx, zaptest.NewLogger(t), mcfg); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	runCtx, stop := context.WithCancel(ctx)
	started := make(chan *service.Service, 1)
	done := make(chan error, 1)
	go func() {
		done <- service.RunWithLogger(runCtx, name, cfg.Config, zaptest.NewLogger(t), func(ctx context.Context, s *service.Service) error {
			started <- s
			return work(cfg)(ctx, s)
		})
	}()
	var s *service.Service
	select {
	case s = <-started:
	case err := <-done:
		t.Fatalf("service stopped: %v", err)
	}

	nc := ns.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	data, err := events.Encode(&events.AuditEvent{EventID: "e1", Type: events.AuditTenantProvisioned, TenantID: "acme",
		Actor: "orchestrator", Source: "test", OccurredAt: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, events.AuditSubject(events.AuditTenantProvisioned), data); err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + s.HTTPAddr() + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := get("/metrics")
		if code == http.StatusOK && strings.Contains(body, "tenantprov_audit_events_written_total 1") {
			for _, m := range []string{"tenantprov_audit_duplicates_skipped_total", "tenantprov_audit_write_duration_seconds_bucket",
				`tenantprov_audit_dead_letters_total{reason="malformed"} 0`} {
				if !strings.Contains(body, m) {
					t.Errorf("/metrics lacks %s", m)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("event not written within 20s; /metrics:\n%s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The head is anchored outside the database.
	anchors, err := auditlog.OpenAnchors(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		as, err := auditlog.ReadAnchors(ctx, anchors)
		if err == nil && len(as) > 0 && as[len(as)-1].Seq == 1 && as[len(as)-1].EventID == "e1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("head not anchored within 20s: %+v %v", as, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz %d: %s", code, body)
	}
	// The reader role can read, not write.
	auditSU, err := pgx.Connect(ctx, pg.URL(pg.AdminUser, pg.AdminPassword, "tenantprov_audit"))
	if err != nil {
		t.Fatal(err)
	}
	defer auditSU.Close(ctx)
	var canSelect, canInsert bool
	if err := auditSU.QueryRow(ctx, `SELECT has_table_privilege('auditor', 'tenantprov_audit.audit_events', 'SELECT'),
		has_table_privilege('auditor', 'tenantprov_audit.audit_events', 'INSERT')`).Scan(&canSelect, &canInsert); err != nil {
		t.Fatal(err)
	}
	if !canSelect || canInsert {
		t.Errorf("reader role: select %v insert %v", canSelect, canInsert)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("service: %v", err)
	}
}
