// Command orchestrator runs the provisioning saga (DESIGN.md §4): it turns
// tenant.requested and tenant.deprovision.requested into store commands,
// collects the agents' results, seals the credentials with SOPS, and rolls
// every store back on failure.
//
// Configuration comes from the environment; see Config, service.Config and
// saga.Config. The service serves /healthz, /readyz and /metrics on
// HTTP_ADDR and stops cleanly on SIGTERM.
package main

import (
	"context"
	"errors"

	"github.com/tenantprov/tenantprov/pkg/config"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/service"
	"github.com/tenantprov/tenantprov/pkg/telemetry"
	"github.com/tenantprov/tenantprov/services/orchestrator/saga"
)

const name = "orchestrator"

// Config is the orchestrator's configuration.
type Config struct {
	service.Config
	Saga saga.Config
	// Observe is drift observation and the orphan sweep (DESIGN.md §10).
	Observe saga.ObserveConfig
}

// Validate reports every configuration problem at once.
func (c *Config) Validate() error {
	return errors.Join(c.Config.Validate(), c.Saga.Validate(), c.Observe.Validate())
}

func main() { service.Main(name, run) }

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
	return service.Run(ctx, name, cfg.Config, func(ctx context.Context, svc *service.Service) error {
		s, err := saga.New(ctx, cfg.Saga, svc.JS, svc.Log, saga.NewMetrics(svc.Metrics))
		if err != nil {
			return err
		}
		svc.WatchConsumer(events.StreamTenants, events.ConsumerOrchestratorRequests)
		svc.WatchConsumer(events.StreamStoreEvents, events.ConsumerOrchestratorResults)
		svc.WatchConsumer(events.StreamTenants, events.ConsumerOrchestratorObserve)
		obs := saga.NewObserver(s, cfg.Observe)
		errs := make(chan error, 1)
		go func() { errs <- obs.Run(ctx) }()
		return errors.Join(s.Run(ctx), <-errs)
	})
}
