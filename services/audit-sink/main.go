// Command audit-sink stores audit events in PostgreSQL (DESIGN.md §7): it
// consumes the AUDIT stream with the durable consumer every replica shares
// and appends each event exactly once to the append-only, hash-chained
// table tenantprov_audit.audit_events, acknowledging only after the
// commit. Messages that can never be stored go to deadletter.audit with
// the reason. Package auditlog documents the schema, the chain and the
// role setup; package internal/sink the consumer.
//
// Configuration comes from the environment (see Config):
//
//	AUDIT_PG_URL        required; the writer role (SELECT, INSERT only)
//	AUDIT_PG_ADMIN_URL  optional; the owner role: migrate and grant at start
//	AUDIT_PG_READERS    optional; comma-separated roles granted SELECT
//	AUDIT_PG_MAX_CONNS  writer pool size (default 4)
//	AUDIT_BATCH_SIZE    most events per transaction (default 100, 1–1000)
//	AUDIT_ACK_WAIT      redelivery timeout of the consumer (default 30s)
//
// plus the common NATS_URL, HTTP_ADDR, LOG_LEVEL, … of package service. The
// service serves /healthz, /readyz (NATS and PostgreSQL) and /metrics on
// HTTP_ADDR and stops cleanly on SIGTERM.
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

	"github.com/tenantprov/tenantprov/pkg/config"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/pkg/service"
	"github.com/tenantprov/tenantprov/services/audit-sink/internal/sink"
)

const name = "audit-sink"

// Config is the service's configuration.
type Config struct {
	service.Config
	// PGURL is the writer role's connection URL: it may SELECT and INSERT
	// on the audit table and nothing more.
	PGURL secret.String `env:"AUDIT_PG_URL"`
	// PGAdminURL is the owner role's URL; when set, the schema is migrated
	// and the writer granted at every start.
	PGAdminURL secret.String `env:"AUDIT_PG_ADMIN_URL"`
	// PGReaders are roles granted read access (tenantctl audit) when
	// PGAdminURL is set.
	PGReaders []string `env:"AUDIT_PG_READERS"`
	// PGMaxConns bounds the writer's connection pool.
	PGMaxConns int32 `env:"AUDIT_PG_MAX_CONNS" envDefault:"4"`
	// BatchSize is the most audit events appended in one transaction.
	BatchSize int `env:"AUDIT_BATCH_SIZE" envDefault:"100"`
	// AckWait is how long a delivered message may stay unacknowledged
	// before it is redelivered.
	AckWait time.Duration `env:"AUDIT_ACK_WAIT" envDefault:"30s"`
}

// Validate reports every configuration problem at once.
func (c *Config) Validate() error {
	errs := []error{c.Config.Validate()}
	var writer, admin string
	if c.PGURL.IsZero() {
		errs = append(errs, errors.New("AUDIT_PG_URL: required (the audit writer role's PostgreSQL URL)"))
	} else if pc, err := pgx.ParseConfig(c.PGURL.Reveal()); err != nil {
		errs = append(errs, fmt.Errorf("AUDIT_PG_URL: %w", err))
	} else {
		writer = pc.User
	}
	if !c.PGAdminURL.IsZero() {
		if pc, err := pgx.ParseConfig(c.PGAdminURL.Reveal()); err != nil {
			errs = append(errs, fmt.Errorf("AUDIT_PG_ADMIN_URL: %w", err))
		} else {
			admin = pc.User
		}
	}
	if writer != "" && writer == admin {
		errs = append(errs, fmt.Errorf("AUDIT_PG_URL and AUDIT_PG_ADMIN_URL: both use role %q; the writer must be a separate role from the owner, or it could disable the append-only triggers", writer))
	}
	if len(c.PGReaders) > 0 && c.PGAdminURL.IsZero() {
		errs = append(errs, errors.New("AUDIT_PG_READERS: needs AUDIT_PG_ADMIN_URL to grant them"))
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

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	cfg, err := config.Load(Config{Config: service.Defaults(name)})
	if err != nil {
		return err
	}
	return service.Run(ctx, name, cfg.Config, work(cfg))
}

// work prepares the database, then consumes until ctx ends.
func work(cfg Config) service.Work {
	return func(ctx context.Context, s *service.Service) error {
		pool, err := sink.Open(ctx, s.Log, sink.DBConfig{
			URL: cfg.PGURL, AdminURL: cfg.PGAdminURL, Readers: cfg.PGReaders, MaxConns: cfg.PGMaxConns,
		})
		if err != nil {
			return err
		}
		defer pool.Close()
		s.AddReadiness("postgres", pool.Ping)
		sk, err := sink.New(sink.Options{
			JS: s.JS, DB: pool, Log: s.Log, Metrics: sink.NewMetrics(s.Metrics),
			BatchSize: cfg.BatchSize, AckWait: cfg.AckWait,
		})
		if err != nil {
			return err
		}
		return sk.Run(ctx)
	}
}
