// Command qdrant-agent provisions each tenant's Qdrant slice (DESIGN.md §5):
// a collection tenant_<id> and a JWT confined to it by Qdrant's JWT RBAC,
// revocable through a value_exists point. It serves the store commands of
// store.cmd.qdrant.> through the shared agent runtime (pkg/agent).
//
// Configuration comes from the environment; see Config (service, agent and
// QDRANT_* variables). The service serves /healthz, /readyz and /metrics on
// HTTP_ADDR and stops cleanly on SIGTERM. It talks to whatever Qdrant
// QDRANT_HOST names and never starts or chooses the test stand-in itself.
package main

import (
	"context"
	"errors"
	"net"

	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/config"
	"github.com/tenantprov/tenantprov/pkg/service"
	"github.com/tenantprov/tenantprov/pkg/telemetry"
	"github.com/tenantprov/tenantprov/services/qdrant-agent/qdrantstore"
)

const name = "qdrant-agent"

// Config is the service's configuration: the common service settings, the
// agent runtime's and the Qdrant store's.
type Config struct {
	service.Config
	Agent  agent.Config
	Qdrant qdrantstore.Config
}

// Validate reports every configuration problem at once.
func (c *Config) Validate() error {
	return errors.Join(c.Config.Validate(), c.Agent.Validate(), c.Qdrant.Validate())
}

// defaults is the configuration before the environment is applied.
func defaults() Config {
	return Config{Config: service.Defaults(name), Agent: agent.DefaultConfig(), Qdrant: qdrantstore.DefaultConfig()}
}

func main() { service.Main(name, run) }

func run(ctx context.Context) error {
	cfg, err := config.Load(defaults())
	if err != nil {
		return err
	}
	store, err := qdrantstore.New(cfg.Qdrant)
	if err != nil {
		return err
	}
	defer store.Close()
	stopTracing, err := telemetry.Setup(ctx, name)
	if err != nil {
		return err
	}
	defer stopTracing()
	return service.Run(ctx, name, cfg.Config, func(ctx context.Context, svc *service.Service) error {
		q := cfg.Qdrant
		svc.Log.Info("qdrant store",
			zap.String("host", q.Host), zap.Int("grpc_port", q.GRPCPort), zap.Bool("tls", q.UseTLS),
			zap.String("isolation", q.Isolation), zap.Uint64("vector_size", q.VectorSize), zap.String("distance", q.Distance),
			zap.Duration("token_ttl", q.TokenTTL))
		if !q.UseTLS && !loopback(q.Host) {
			svc.Log.Warn("QDRANT_USE_TLS is off for a non-loopback host: the admin API key and tenant tokens cross the network in plain text",
				zap.String("host", q.Host))
		}
		return agent.Run(ctx, svc, store, cfg.Agent)
	})
}

// loopback reports whether host names this machine.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
