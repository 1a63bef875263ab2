// Command audit-sink stores audit events in PostgreSQL (DESIGN.md §7): it
// consumes the AUDIT stream with the durable consumer every replica shares
// and appends each event exactly once to the append-only, hash-chained
// table tenantprov_audit.audit_events, acknowledging only after the
// commit, and anchors the chain head outside the database in the
// JetStream KV bucket audit-anchors (DESIGN.md §11). Messages that can
// never be stored go to deadletter.audit with the reason. Package auditlog
// documents the schema, the chain, the anchors and the role setup; package
// internal/sink the consumer.
//
// Two ways to run it:
//
//	audit-sink migrate   one-shot, as the owner role: migrate the schema and
//	                     grant the writer and readers, then exit
//	audit-sink           the long-running sink, as the writer role only
//
// The owner's URL is given only to `migrate`; the long-running sink refuses
// to start with it, so that no long-running process can disable the
// append-only triggers. Configuration comes from the environment (each
// also as NAME_FILE):
//
//	AUDIT_PG_URL        sink: required; the writer role (SELECT, INSERT only)
//	AUDIT_PG_ADMIN_URL  migrate: required; the owner role (not a superuser)
//	AUDIT_PG_WRITER     migrate: the writer's role name (default: the user
//	                    of AUDIT_PG_URL)
//	AUDIT_PG_READERS    migrate: comma-separated roles granted SELECT only
//	AUDIT_PG_MAX_CONNS  writer pool size (default 4)
//	AUDIT_BATCH_SIZE    most events per transaction (default 100, 1–1000)
//	AUDIT_ACK_WAIT      redelivery timeout of the consumer (default 30s)
//	AUDIT_ANCHOR_INTERVAL  longest the head goes unanchored while the chain
//	                    grows (default 2s; it is also anchored after every
//	                    committed batch)
//
// plus the common NATS_URL, HTTP_ADDR, LOG_LEVEL, … of package service. The
// service serves /healthz, /readyz (NATS and PostgreSQL) and /metrics on
// HTTP_ADDR and stops cleanly on SIGTERM; `audit-sink healthcheck` asks
// /readyz (container health checks).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/config"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/pkg/service"
	"github.com/tenantprov/tenantprov/pkg/telemetry"
	"github.com/tenantprov/tenantprov/services/audit-sink/internal/sink"
)

const name = "audit-sink"

// Config is the service's configuration.
type Config struct {
	service.Config
	// PGURL is the writer role's connection URL: it may SELECT and INSERT
	// on the audit table and nothing more.
	PGURL secret.String `env:"AUDIT_PG_URL"`
	// PGAdminURL must be empty: the owner's URL belongs to `audit-sink
	// migrate` only. It is read so that a deployment that still passes it
	// fails with a clear message.
	PGAdminURL secret.String `env:"AUDIT_PG_ADMIN_URL"`
	// PGMaxConns bounds the writer's connection pool.
	PGMaxConns int32 `env:"AUDIT_PG_MAX_CONNS" envDefault:"4"`
	// BatchSize is the most audit events appended in one transaction.
	BatchSize int `env:"AUDIT_BATCH_SIZE" envDefault:"100"`
	// AckWait is how long a delivered message may stay unacknowledged
	// before it is redelivered.
	AckWait time.Duration `env:"AUDIT_ACK_WAIT" envDefault:"30s"`
	// AnchorInterval is the longest the chain head goes unanchored while
	// the chain grows.
	AnchorInterval time.Duration `env:"AUDIT_ANCHOR_INTERVAL" envDefault:"2s"`
}

// Validate reports every configuration problem at once.
func (c *Config) Validate() error {
	errs := []error{c.Config.Validate()}
	if c.PGURL.IsZero() {
		errs = append(errs, errors.New("AUDIT_PG_URL: required (the audit writer role's PostgreSQL URL)"))
	} else if _, err := pgx.ParseConfig(c.PGURL.Reveal()); err != nil {
		errs = append(errs, fmt.Errorf("AUDIT_PG_URL: %w", err))
	}
	if !c.PGAdminURL.IsZero() {
		errs = append(errs, errors.New("AUDIT_PG_ADMIN_URL: set, but the long-running sink must not hold the owner's URL (the owner can disable the append-only triggers); give it only to the one-shot `audit-sink migrate` and start the sink without it"))
	}
	if c.AnchorInterval < 100*time.Millisecond || c.AnchorInterval > time.Minute {
		errs = append(errs, fmt.Errorf("AUDIT_ANCHOR_INTERVAL: %s outside 100ms–1m", c.AnchorInterval))
	}
	if c.PGMaxConns < 1 || c.PGMaxConns > 100 {
		errs = append(errs, fmt.Errorf("AUDIT_PG_MAX_CONNS: %d outside 1–100", c.PGMaxConns))
	}
	if c.BatchSize < 1 || c.BatchSize > sink.MaxBatchSize {
		errs = append(errs, fmt.Errorf("AUDIT_BATCH_SIZE: %d outside 1–%d", c.BatchSize, sink.MaxBatchSize))
	}
	if c.AckWait < 2*time.Second {
		errs = append(errs, fmt.Errorf("AUDIT_ACK_WAIT: %s, want at least 2s", c.AckWait))
	}
	return errors.Join(errs...)
}

// MigrateConfig is the configuration of `audit-sink migrate`.
type MigrateConfig struct {
	// PGAdminURL is the owner role's URL: it owns the audit schema and
	// must not be a superuser.
	PGAdminURL secret.String `env:"AUDIT_PG_ADMIN_URL"`
	// Writer is the writer's role name; PGURL's user when empty.
	Writer string `env:"AUDIT_PG_WRITER"`
	// PGURL is the writer's URL, read only for its user name.
	PGURL secret.String `env:"AUDIT_PG_URL"`
	// PGReaders are roles granted SELECT only (operators, tenantctl audit).
	PGReaders []string `env:"AUDIT_PG_READERS"`
	// Timeout bounds the whole migration, waiting for PostgreSQL included.
	Timeout time.Duration `env:"AUDIT_MIGRATE_TIMEOUT" envDefault:"2m"`
}

// Validate reports every configuration problem at once.
func (c *MigrateConfig) Validate() error {
	var errs []error
	var admin string
	if c.PGAdminURL.IsZero() {
		errs = append(errs, errors.New("AUDIT_PG_ADMIN_URL: required by migrate (the audit owner role's PostgreSQL URL)"))
	} else if pc, err := pgx.ParseConfig(c.PGAdminURL.Reveal()); err != nil {
		errs = append(errs, fmt.Errorf("AUDIT_PG_ADMIN_URL: %w", err))
	} else {
		admin = pc.User
	}
	if c.Writer == "" && !c.PGURL.IsZero() {
		if pc, err := pgx.ParseConfig(c.PGURL.Reveal()); err != nil {
			errs = append(errs, fmt.Errorf("AUDIT_PG_URL: %w", err))
		} else {
			c.Writer = pc.User
		}
	}
	switch {
	case c.Writer == "":
		errs = append(errs, errors.New("AUDIT_PG_WRITER: required by migrate (the writer's role name), or set AUDIT_PG_URL"))
	case c.Writer == admin:
		errs = append(errs, fmt.Errorf("AUDIT_PG_WRITER and AUDIT_PG_ADMIN_URL: both are role %q; the writer must be a separate role from the owner, or it could disable the append-only triggers", admin))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("AUDIT_MIGRATE_TIMEOUT: %s, want > 0", c.Timeout))
	}
	return errors.Join(errs...)
}

func main() {
	if len(os.Args) == 2 && os.Args[1] == "healthcheck" {
		os.Exit(service.Healthcheck(name, os.Stderr))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var err error
	switch {
	case len(os.Args) == 2 && os.Args[1] == "migrate":
		err = runMigrate(ctx)
	case len(os.Args) > 1:
		err = fmt.Errorf("unknown arguments %q: want no arguments (run the sink), migrate or healthcheck", os.Args[1:])
	default:
		err = run(ctx)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	cfg, err := config.Load(Config{Config: service.Defaults(name)})
	if err != nil {
		return err
	}
	stopTracing, err := telemetry.Setup(ctx, name)
	if err != nil {
		return err
	}
	defer stopTracing()
	return service.Run(ctx, name, cfg.Config, work(cfg))
}

// runMigrate is `audit-sink migrate`.
func runMigrate(ctx context.Context) error {
	cfg, err := config.Load(MigrateConfig{})
	if err != nil {
		return err
	}
	log, err := zap.NewProduction()
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	return migrate(ctx, log.Named(name), cfg)
}

// migrate migrates the audit schema as the owner and grants the writer
// and the readers.
func migrate(ctx context.Context, log *zap.Logger, cfg MigrateConfig) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	return sink.Migrate(ctx, log, sink.MigrateConfig{AdminURL: cfg.PGAdminURL, Writer: cfg.Writer, Readers: cfg.PGReaders})
}

// work prepares the database, then consumes until ctx ends.
func work(cfg Config) service.Work {
	return func(ctx context.Context, s *service.Service) error {
		pool, err := sink.Open(ctx, s.Log, sink.DBConfig{URL: cfg.PGURL, MaxConns: cfg.PGMaxConns})
		if err != nil {
			return err
		}
		defer pool.Close()
		s.AddReadiness("postgres", pool.Ping)
		s.WatchConsumer(events.StreamAudit, events.ConsumerAuditSink)
		sk, err := sink.New(sink.Options{
			JS: s.JS, DB: pool, Log: s.Log, Metrics: sink.NewMetrics(s.Metrics),
			BatchSize: cfg.BatchSize, AckWait: cfg.AckWait, AnchorInterval: cfg.AnchorInterval,
		})
		if err != nil {
			return err
		}
		return sk.Run(ctx)
	}
}
