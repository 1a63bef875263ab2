// Command redis-agent provisions one store's slice per tenant (DESIGN.md §5).
//
// Configuration comes from the environment; see Config. The service serves
// /healthz, /readyz and /metrics on HTTP_ADDR and stops cleanly on SIGTERM.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/tenantprov/tenantprov/pkg/config"
	"github.com/tenantprov/tenantprov/pkg/service"
)

const name = "redis-agent"

// Config is the service's configuration.
type Config struct {
	service.Config
}

// Validate reports every configuration problem at once.
func (c *Config) Validate() error { return c.Config.Validate() }

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
	return service.Run(ctx, name, cfg.Config, work)
}

// work is the service's own logic; it arrives with a later issue. Until
// then the service only keeps the topology and its endpoints up.
func work(ctx context.Context, s *service.Service) error {
	<-ctx.Done()
	return nil
}
