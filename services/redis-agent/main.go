// Command redis-agent provisions each tenant's Redis key space (DESIGN.md
// §5): an ACL user confined to tenant:<id>: for keys and channels, verified
// and persisted, removed with its keys on deprovision.
//
// Configuration comes from the environment; see Config (service.Config,
// agent.Config and redisstore.Config). The service serves /healthz, /readyz
// and /metrics on HTTP_ADDR and stops cleanly on SIGTERM.
package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/config"
	"github.com/tenantprov/tenantprov/pkg/service"
	"github.com/tenantprov/tenantprov/pkg/telemetry"
	"github.com/tenantprov/tenantprov/services/redis-agent/redisstore"
)

const name = "redis-agent"

// Config is the service's configuration.
type Config struct {
	service.Config
	Agent agent.Config
	Redis redisstore.Config
}

// Validate reports every configuration problem at once.
func (c *Config) Validate() error {
	return errors.Join(c.Config.Validate(), c.Agent.Validate(), c.Redis.Validate())
}

func main() { service.Main(name, run) }

func run(ctx context.Context) error {
	cfg, err := config.Load(Config{Config: service.Defaults(name), Agent: agent.DefaultConfig()})
	if err != nil {
		return err
	}
	store, err := redisstore.New(cfg.Redis)
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
		redis.SetLogger(driverLog{svc.Log.Named("go-redis")})
		watchLog := svc.Log.Named("script-watchdog")
		go func() {
			// Only under REDIS_TENANT_SCRIPTING=readonly|allow; returns at
			// once under deny.
			err := store.WatchScripts(ctx, func(k redisstore.ScriptKill) {
				if k.Killed {
					watchLog.Warn("killed a Lua script that kept redis busy", zap.Duration("busy_for", k.BusyFor))
					return
				}
				watchLog.Error("SCRIPT KILL did not stop a Lua script that keeps redis busy (UNKILLABLE: it has written, only SHUTDOWN NOSAVE or waiting ends it)",
					zap.Duration("busy_for", k.BusyFor), zap.String("error", agent.SanitizeText(fmt.Sprint(k.Err))))
			})
			if err != nil {
				watchLog.Error("script watchdog stopped", zap.String("error", agent.SanitizeText(err.Error())))
			}
		}()
		return agent.Run(ctx, svc, store, cfg.Agent)
	})
}

// driverLog sends go-redis's own messages (dial failures, pool trouble),
// which it otherwise prints unstructured to stderr, to the service's JSON
// log, sanitised like every other error text.
type driverLog struct{ log *zap.Logger }

func (d driverLog) Printf(_ context.Context, format string, v ...any) {
	d.log.Warn(agent.SanitizeText(fmt.Sprintf(format, v...)))
}
