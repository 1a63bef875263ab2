package sink

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/auditlog"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// DBConfig says how the sink reaches PostgreSQL.
type DBConfig struct {
	// URL is the writer role's connection URL (AUDIT_PG_URL).
	URL secret.String
	// MaxConns bounds the writer pool (default 4).
	MaxConns int32
}

// MigrateConfig says how `audit-sink migrate` reaches PostgreSQL.
type MigrateConfig struct {
	// AdminURL is the owner role's URL (AUDIT_PG_ADMIN_URL). The owner
	// must not be a superuser (auditlog.ErrOwnerPrivileges).
	AdminURL secret.String
	// Writer is the writer's role name: it is granted SELECT, INSERT.
	Writer string
	// Readers are granted SELECT only.
	Readers []string
}

// Migrate migrates the audit schema as the owner and grants the writer and
// the readers (auditlog.Migrate). While PostgreSQL is unreachable it
// retries with backoff until ctx ends; a configuration problem (a
// superuser owner, wrong privileges, a changed migration, bad
// credentials) fails at once.
func Migrate(ctx context.Context, log *zap.Logger, cfg MigrateConfig) error {
	acfg, err := pgx.ParseConfig(cfg.AdminURL.Reveal())
	if err != nil {
		return fmt.Errorf("AUDIT_PG_ADMIN_URL: %w", err)
	}
	acfg.RuntimeParams["application_name"] = "tenantprov-audit-sink-migrate"
	return retry(ctx, log, "migrate audit schema", func() error {
		conn, err := pgx.ConnectConfig(ctx, acfg)
		if err != nil {
			return err
		}
		defer conn.Close(context.WithoutCancel(ctx))
		res, err := auditlog.Migrate(ctx, conn, auditlog.MigrateOptions{Writer: cfg.Writer, Readers: cfg.Readers})
		if err != nil {
			return err
		}
		log.Info("audit schema ready", zap.Ints("applied", res.Applied), zap.Int("version", res.Version),
			zap.String("owner", acfg.User), zap.String("writer", cfg.Writer), zap.Strings("readers", cfg.Readers))
		return nil
	})
}

// Open returns the writer's pool after checking, as the writer, the
// schema version and that the writer can append but not rewrite
// (auditlog.CheckWriter). The schema must have been migrated (Migrate,
// `audit-sink migrate`); until it is, Open waits. While PostgreSQL is
// unreachable it retries with backoff until ctx ends; a configuration
// problem (wrong privileges, bad credentials) fails at once.
func Open(ctx context.Context, log *zap.Logger, cfg DBConfig) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(cfg.URL.Reveal())
	if err != nil {
		return nil, fmt.Errorf("AUDIT_PG_URL: %w", err)
	}
	if cfg.MaxConns > 0 {
		pcfg.MaxConns = cfg.MaxConns
	}
	pcfg.ConnConfig.RuntimeParams["application_name"] = "tenantprov-audit-sink"
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("AUDIT_PG_URL: %w", err)
	}
	err = retry(ctx, log, "check audit writer", func() error {
		st, err := auditlog.CheckWriter(ctx, pool)
		if err == nil {
			log.Info("audit writer ready", zap.String("role", st.Role), zap.Int("schema_version", st.SchemaVersion))
		}
		return err
	})
	if err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// retry runs op until it succeeds, fails permanently or ctx ends.
func retry(ctx context.Context, log *zap.Logger, what string, op func() error) error {
	backoff := 250 * time.Millisecond
	for {
		err := op()
		if err == nil {
			return nil
		}
		if permanent(err) {
			return fmt.Errorf("%s: %w", what, err)
		}
		log.Warn(what+" failed; retrying", zap.Error(err), zap.Duration("in", backoff))
		if !sleep(ctx, backoff) {
			return fmt.Errorf("%s: %w", what, errors.Join(ctx.Err(), err))
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// permanent reports errors that waiting cannot cure. A schema that is not
// migrated yet is not one of them: another replica with the admin URL may
// be migrating it right now.
func permanent(err error) bool {
	if errors.Is(err, auditlog.ErrWriterPrivileges) || errors.Is(err, auditlog.ErrMigrationChanged) || errors.Is(err, auditlog.ErrOwnerPrivileges) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case "28", "3D", "42": // auth, unknown database, privileges/syntax/unknown objects
			return true
		}
	}
	return false
}
