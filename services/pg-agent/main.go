// Command pg-agent provisions each tenant's PostgreSQL slice (DESIGN.md §5):
// a SCRAM login role and a database owned by it, locked down and verified,
// removed on deprovision.
//
// Configuration comes from the environment; see Config (service.Config,
// agent.Config and pgstore.Config). The service serves /healthz, /readyz and
// /metrics on HTTP_ADDR and stops cleanly on SIGTERM.
package main

import (
	"context"
	"errors"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/config"
	"github.com/tenantprov/tenantprov/pkg/service"
	"github.com/tenantprov/tenantprov/pkg/telemetry"
	"github.com/tenantprov/tenantprov/services/pg-agent/pgstore"
)

const name = "pg-agent"

// Config is the service's configuration.
type Config struct {
	service.Config
	Agent    agent.Config
	Postgres pgstore.Config
}

// defaults is Config before the environment is applied.
func defaults() Config {
	return Config{Config: service.Defaults(name), Agent: agent.DefaultConfig(), Postgres: pgstore.Defaults()}
}

// Validate reports every configuration problem at once.
func (c *Config) Validate() error {
	return errors.Join(c.Config.Validate(), c.Agent.Validate(), c.Postgres.Validate())
}

func main() { service.Main(name, run) }

func run(ctx context.Context) error {
	cfg, err := config.Load(defaults())
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

// work builds the store and serves the agent's commands until ctx ends.
func work(cfg Config) service.Work {
	return func(ctx context.Context, svc *service.Service) error {
		store, err := pgstore.New(cfg.Postgres)
		if err != nil {
			return err
		}
		defer store.Close()
		return agent.Run(ctx, svc, store, cfg.Agent)
	}
}
