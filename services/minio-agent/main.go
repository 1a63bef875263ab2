// Command minio-agent provisions each tenant's MinIO slice (DESIGN.md §5):
// a bucket tagged as tenantprov's, an IAM user with the generated secret
// and a canned policy reaching that bucket only — verified with the
// tenant's own credential, removed on deprovision.
//
// Configuration comes from the environment; see Config (service.Config,
// agent.Config and miniostore.Config). The service serves /healthz, /readyz
// and /metrics on HTTP_ADDR and stops cleanly on SIGTERM.
package main

import (
	"context"
	"errors"
	"os"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/config"
	"github.com/tenantprov/tenantprov/pkg/service"
	"github.com/tenantprov/tenantprov/pkg/telemetry"
	"github.com/tenantprov/tenantprov/services/minio-agent/miniostore"
)

const name = "minio-agent"

// Config is the service's configuration.
type Config struct {
	service.Config
	Agent agent.Config
	MinIO miniostore.Config
}

// defaultMaxInFlight is this agent's AGENT_MAX_IN_FLIGHT unless the
// variable is set: twice the other agents'. Its commands spend most of
// their time waiting for the reads they share with the commands beside
// them (miniostore/rounds.go), so more commands at once share each read
// instead of queueing for a slot: with 32, ten kept bursts of 100 tenants
// slowed 1.17× from the first to the last, with 16 1.24–1.72×
// (docs/PERFORMANCE.md).
const defaultMaxInFlight = 32

// withStoreDefaults applies this agent's own defaults to what lookup (the
// environment) leaves unset.
func withStoreDefaults(cfg Config, lookup func(string) (string, bool)) Config {
	if _, set := lookup("AGENT_MAX_IN_FLIGHT"); !set {
		cfg.Agent.MaxInFlight = defaultMaxInFlight
	}
	return cfg
}

// defaults is Config before the environment is applied.
func defaults() Config {
	return Config{Config: service.Defaults(name), Agent: agent.DefaultConfig()}
}

// Validate reports every configuration problem at once.
func (c *Config) Validate() error {
	return errors.Join(c.Config.Validate(), c.Agent.Validate(), c.MinIO.Validate())
}

func main() { service.Main(name, run) }

func run(ctx context.Context) error {
	cfg, err := config.Load(defaults())
	if err != nil {
		return err
	}
	cfg = withStoreDefaults(cfg, os.LookupEnv)
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
		observe, err := miniostore.NewCallMetrics(svc.Metrics)
		if err != nil {
			return err
		}
		store, err := miniostore.New(cfg.MinIO, miniostore.WithCallObserver(observe))
		if err != nil {
			return err
		}
		return agent.Run(ctx, svc, store, cfg.Agent)
	}
}
