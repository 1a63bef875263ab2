package service

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
)

// Config is what every service reads from the environment. Services embed
// it in their own configuration struct.
type Config struct {
	// NATSURL is one or more comma-separated NATS server URLs.
	NATSURL string `env:"NATS_URL" envDefault:"nats://127.0.0.1:4222"`
	// NATSCredsFile is the service's NATS identity: the path of its .creds
	// file (user JWT and seed, issued by pkg/busauth for the role named
	// like the service). It is the one documented way a service gets an
	// identity; a missing, unreadable, foreign or refused credential stops
	// the service at start. Empty only against an unauthenticated
	// development server.
	NATSCredsFile string `env:"NATS_CREDS"`
	// HTTPAddr is where /healthz, /readyz and /metrics are served. Each
	// service has its own default port (see Defaults).
	HTTPAddr string `env:"HTTP_ADDR"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `env:"LOG_LEVEL" envDefault:"info"`
	// JetStreamReplicas for streams, KV and object store: 1 on a single
	// server, 3 on a cluster.
	JetStreamReplicas int `env:"JETSTREAM_REPLICAS" envDefault:"1"`
	// ShutdownTimeout bounds the drain on SIGTERM.
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"30s"`
}

// Default health/metrics ports, one per service, so that all six can run on
// one machine without configuration.
var defaultPorts = map[string]int{
	"orchestrator": 9180, "minio-agent": 9181, "pg-agent": 9182,
	"qdrant-agent": 9183, "redis-agent": 9184, "audit-sink": 9185,
}

// Defaults returns the common configuration for service name before the
// environment is applied.
func Defaults(name string) Config {
	addr := "127.0.0.1:0"
	if p, ok := defaultPorts[name]; ok {
		addr = fmt.Sprintf("127.0.0.1:%d", p)
	}
	return Config{HTTPAddr: addr}
}

// Validate reports every problem with the common settings.
func (c *Config) Validate() error {
	var errs []error
	if strings.TrimSpace(c.NATSURL) == "" {
		errs = append(errs, errors.New("NATS_URL: required"))
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		errs = append(errs, fmt.Errorf("HTTP_ADDR: %q is not host:port: %w", c.HTTPAddr, err))
	}
	if _, err := zapcore.ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("LOG_LEVEL: %q is not one of debug, info, warn, error", c.LogLevel))
	}
	if c.JetStreamReplicas != 1 && c.JetStreamReplicas != 3 && c.JetStreamReplicas != 5 {
		errs = append(errs, fmt.Errorf("JETSTREAM_REPLICAS: %d, want 1, 3 or 5", c.JetStreamReplicas))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("SHUTDOWN_TIMEOUT: %s must be positive", c.ShutdownTimeout))
	}
	return errors.Join(errs...)
}
