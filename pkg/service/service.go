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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/busauth"
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

	role     busauth.Role // from NATS_CREDS; "" without
	httpAddr atomic.Value // string, the bound address
	topology atomic.Bool

	mu        sync.Mutex
	checks    map[string]ReadinessCheck
	consumers [][2]string // stream, durable (WatchConsumer)
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
	s.Metrics.MustRegister(SkeletonCollectors(s)...)

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

	nc, role, err := connect(ctx, name, cfg, log)
	if err != nil {
		return err
	}
	s.role = role
	s.NATS = nc
	defer drain(nc, cfg.ShutdownTimeout, log)
	s.JS, err = jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}

	if err := ensureTopology(ctx, s, cfg, events.Topology{Replicas: cfg.JetStreamReplicas}); err != nil {
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

// connect opens the service's NATS connection with the identity in
// NATS_CREDS. A credential problem — missing or unreadable file, a creds
// file for another role, a credential the server refuses — ends the
// service at once with one line naming the identity and what is wrong: no
// retry can fix it. Only an unreachable server is waited for (logged on
// every attempt), because NATS may still be starting.
func connect(ctx context.Context, name string, cfg Config, log *zap.Logger) (*nats.Conn, busauth.Role, error) {
	ident := "no NATS identity (NATS_CREDS is not set)"
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("nats disconnected", zap.Error(err))
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("nats reconnected", zap.String("url", c.ConnectedUrlRedacted()))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Error("nats error", zap.Error(err))
		}),
	}
	var role busauth.Role
	if cfg.NATSCredsFile != "" {
		id, err := busauth.ReadCreds(cfg.NATSCredsFile)
		if err != nil {
			return nil, "", fmt.Errorf("NATS identity for %s (NATS_CREDS): %w", name, err)
		}
		ident = fmt.Sprintf("NATS identity %q (NATS_CREDS=%s)", id.Name, cfg.NATSCredsFile)
		if want, err := busauth.ParseRole(name); err == nil && id.Role != "" && id.Role != want {
			return nil, "", fmt.Errorf("%s is for role %s, not %s: give %s its own creds file", ident, id.Role, name, name)
		}
		if role = id.Role; role == "" {
			role = busauth.Role(name)
		}
		opts = append(opts, nats.UserCredentials(cfg.NATSCredsFile), nats.CustomInboxPrefix(role.InboxPrefix()))
		log.Info("nats identity", zap.String("identity", id.Name), zap.String("role", string(id.Role)))
	}
	backoff := 250 * time.Millisecond
	for {
		nc, err := nats.Connect(cfg.NATSURL, opts...)
		if err == nil {
			return nc, role, nil
		}
		if isAuthError(err) {
			hint := "is this credential from this deployment's authority, unexpired and not revoked?"
			if cfg.NATSCredsFile == "" {
				hint = "set NATS_CREDS to " + name + "'s creds file"
			}
			return nil, "", fmt.Errorf("%s refused by NATS at %s: %v (%s)", ident, cfg.NATSURL, err, hint)
		}
		log.Warn("nats not reachable; retrying", zap.String("url", cfg.NATSURL), zap.Error(err), zap.Duration("in", backoff))
		select {
		case <-ctx.Done():
			return nil, "", fmt.Errorf("connect to NATS at %s as %s: %w", cfg.NATSURL, ident, errors.Join(ctx.Err(), err))
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// isAuthError reports whether a connect error is the server refusing the
// identity (as opposed to the server being unreachable).
func isAuthError(err error) bool {
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired) {
		return true
	}
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "authorization") || strings.Contains(msg, "authentication")
}

// TopologyOwner is the service that creates and updates the JetStream
// topology (streams, KV buckets, object store). Every other service only
// binds to what exists and fails at start, saying so, when something is
// missing: under the authenticated bus (NATS_CREDS) no other identity may
// create or change a stream. Without NATS_CREDS (tests, an unauthenticated
// development server) every service ensures the topology itself, as there
// are no roles to respect.
const TopologyOwner = "orchestrator"

// ensureTopology retries until the topology exists: NATS may still be
// starting (compose, a rolling restart), and a service that cannot reach it
// should wait and say so rather than crash-loop. A stream that does not
// exist, for a service that may not create it, ends the service.
func ensureTopology(ctx context.Context, s *Service, cfg Config, topo events.Topology) error {
	owner := s.Name == TopologyOwner || s.role == busauth.RoleOrchestrator || cfg.NATSCredsFile == ""
	backoff := 250 * time.Millisecond
	for {
		// Ensure bounds each request and asks again when one goes
		// unanswered; this bounds a whole attempt, so a NATS that cannot be
		// reached is reported every 20 s.
		tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		var err error
		if owner {
			err = EnsureTopology(tctx, s.JS, topo)
		} else {
			err = bindTopology(tctx, s.role, s.JS, topo)
		}
		cancel()
		if err == nil {
			s.topology.Store(true)
			return nil
		}
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("%w: %s does not create the JetStream topology; start %s first (it creates it)", err, s.Name, TopologyOwner)
		}
		if le := s.NATS.LastError(); le != nil && errors.Is(le, nats.ErrPermissionViolation) {
			return fmt.Errorf("jetstream topology: the NATS identity of %s is not allowed what it needs (%v); is NATS_CREDS this service's own creds file?", s.Name, le)
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

// bindTopology checks that every stream the identity's role works with
// exists (busauth.BoundStreams; all of topo for an unknown role).
func bindTopology(ctx context.Context, role busauth.Role, js jetstream.JetStream, topo events.Topology) error {
	names, err := busauth.BoundStreams(role)
	if err != nil {
		names = []string{"KV_" + events.KVTenants, "OBJ_" + events.ObjectStoreSecrets}
		for _, sc := range topo.Streams() {
			names = append(names, sc.Name)
		}
	}
	for _, n := range names {
		if _, err := js.Stream(ctx, n); err != nil {
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				return fmt.Errorf("JetStream stream %s does not exist: %w", n, err)
			}
			return fmt.Errorf("bind stream %s: %w", n, err)
		}
	}
	return nil
}

// EnsureTopology is what the topology owner (the orchestrator) does at
// start: create or update every stream, KV bucket and the object store of
// topo, the agent-locks and audit-anchors buckets included.
func EnsureTopology(ctx context.Context, js jetstream.JetStream, topo events.Topology) error {
	return topo.Ensure(ctx, js)
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

// problems runs the readiness checks: what is wrong, by check name (empty
// when ready).
func (s *Service) problems(ctx context.Context) map[string]string {
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
	return problems
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
	problems := s.problems(ctx)
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
