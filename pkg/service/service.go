// Package service is the process skeleton every tenantprov service shares:
// JSON logging, a NATS connection, the JetStream topology, /healthz, /readyz
// and /metrics, and a clean shutdown on SIGTERM. A service's main calls Run
// with its own work function; everything the work needs arrives in *Service.
package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/logging"
)

// ReadinessCheck reports whether one dependency is usable; nil means ready.
// It must return within the context's deadline.
type ReadinessCheck func(ctx context.Context) error

// Service is what a running service's work function gets.
type Service struct {
	Name    string
	Log     *zap.Logger
	NATS    *nats.Conn
	JS      jetstream.JetStream
	Metrics *prometheus.Registry

	httpAddr atomic.Value // string, the bound address
	topology atomic.Bool

	mu     sync.Mutex
	checks map[string]ReadinessCheck
}

// AddReadiness registers a check that /readyz runs on every request.
func (s *Service) AddReadiness(name string, check ReadinessCheck) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks[name] = check
}

// HTTPAddr is the address /healthz, /readyz and /metrics are served on.
func (s *Service) HTTPAddr() string { v, _ := s.httpAddr.Load().(string); return v }

// Work is a service's own logic. It runs until ctx is cancelled (SIGTERM)
// and must then stop taking new work, finish what is in flight and return.
type Work func(ctx context.Context, s *Service) error

// Run starts the shared skeleton for service name and calls work. It returns
// when ctx is cancelled and work has returned, or when anything fails; the
// NATS connection is drained and the HTTP server shut down before it
// returns.
func Run(ctx context.Context, name string, cfg Config, work Work) error {
	log, err := logging.New(name, cfg.LogLevel)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	return RunWithLogger(ctx, name, cfg, log, work)
}

// RunWithLogger is Run with a caller-supplied logger (tests capture logs
// through it).
func RunWithLogger(ctx context.Context, name string, cfg Config, log *zap.Logger, work Work) error {
	s := &Service{Name: name, Log: log, Metrics: prometheus.NewRegistry(), checks: map[string]ReadinessCheck{}}
	s.Metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	lis, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on HTTP_ADDR %s: %w", cfg.HTTPAddr, err)
	}
	s.httpAddr.Store(lis.Addr().String())
	srv := &http.Server{Handler: s.mux(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", zap.Error(err))
		}
	}()
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("serving health and metrics", zap.String("addr", s.HTTPAddr()))

	nc, err := connect(name, cfg, log)
	if err != nil {
		return err
	}
	s.NATS = nc
	defer drain(nc, cfg.ShutdownTimeout, log)
	s.JS, err = jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}

	if err := ensureTopology(ctx, s, events.Topology{Replicas: cfg.JetStreamReplicas}); err != nil {
		return err
	}

	log.Info("started", zap.String("nats", nc.ConnectedUrlRedacted()))
	err = work(ctx, s)
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Error("stopped with error", zap.Error(err))
		return err
	}
	log.Info("stopped")
	return nil
}

func connect(name string, cfg Config, log *zap.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("nats disconnected", zap.Error(err))
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("nats reconnected", zap.String("url", c.ConnectedUrlRedacted()))
		}),
	}
	if cfg.NATSCredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.NATSCredsFile))
	}
	nc, err := nats.Connect(cfg.NATSURL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	return nc, nil
}

// ensureTopology retries until the topology exists: NATS may still be
// starting (compose, a rolling restart), and a service that cannot reach it
// should wait and say so rather than crash-loop.
func ensureTopology(ctx context.Context, s *Service, topo events.Topology) error {
	backoff := 250 * time.Millisecond
	for {
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := topo.Ensure(tctx, s.JS)
		cancel()
		if err == nil {
			s.topology.Store(true)
			return nil
		}
		s.Log.Warn("jetstream topology not ready; retrying", zap.Error(err), zap.Duration("in", backoff))
		select {
		case <-ctx.Done():
			return fmt.Errorf("ensure jetstream topology: %w", errors.Join(ctx.Err(), err))
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func drain(nc *nats.Conn, timeout time.Duration, log *zap.Logger) {
	done := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(done) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	select {
	case <-done:
	case <-time.After(timeout):
		log.Warn("nats drain timed out; closing")
		nc.Close()
	}
}

func (s *Service) mux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.Metrics, promhttp.HandlerOpts{Registry: s.Metrics}))
	return mux
}

func (s *Service) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	problems := map[string]string{}
	if s.NATS == nil || !s.NATS.IsConnected() {
		problems["nats"] = "not connected"
	}
	if !s.topology.Load() {
		problems["jetstream"] = "topology not ensured yet"
	}
	s.mu.Lock()
	checks := make(map[string]ReadinessCheck, len(s.checks))
	for k, v := range s.checks {
		checks[k] = v
	}
	s.mu.Unlock()
	for name, check := range checks {
		if err := check(ctx); err != nil {
			problems[name] = err.Error()
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if len(problems) == 0 {
		_, _ = fmt.Fprintln(w, "ready")
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	names := make([]string, 0, len(problems))
	for n := range problems {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		_, _ = fmt.Fprintf(w, "%s: %s\n", n, problems[n])
	}
}
