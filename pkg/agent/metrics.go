package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// Metric names, part of the operator surface (dashboards, alerts).
const (
	MetricCommandsTotal        = "tenantprov_agent_commands_total"
	MetricCommandDuration      = "tenantprov_agent_command_duration_seconds"
	MetricStoreCallDuration    = "tenantprov_agent_store_call_duration_seconds"
	MetricStoreCallErrorsTotal = "tenantprov_agent_store_call_errors_total"
	MetricCommandsInFlight     = "tenantprov_agent_commands_in_flight"
	MetricLockWait             = "tenantprov_agent_lock_wait_seconds"
)

// Values of the outcome label of MetricCommandsTotal besides the
// events.Outcome values (provisioned, provision_failed, deprovisioned,
// deprovision_failed), which count commands answered with that outcome.
const (
	// OutcomeRetried counts deliveries that failed transiently and were
	// handed back to JetStream for redelivery.
	OutcomeRetried = "retried"
	// OutcomeDropped counts commands terminated without any reply because
	// not even their tenant could be read.
	OutcomeDropped = "dropped"
	// OutcomePublishFailed counts deliveries whose reply could not be
	// published; the command is redelivered.
	OutcomePublishFailed = "publish_failed"
	// OutcomeInterrupted counts commands handed back unfinished: received
	// while the agent was stopping, still running at SHUTDOWN_TIMEOUT, or
	// cut short by the loss of their tenant's lock.
	OutcomeInterrupted = "interrupted"
	// OutcomeLocked counts deliveries handed back because another command
	// held the tenant's lock for longer than the agent waits for it.
	OutcomeLocked = "locked"
)

// durationBuckets span a fast Redis ACL change (milliseconds) to a slow
// PostgreSQL DROP DATABASE under load (a minute or two).
var durationBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}

// Metrics are the agent runtime's Prometheus collectors. One Metrics may
// serve several stores (every series carries the store label).
type Metrics struct {
	commands        *prometheus.CounterVec
	commandDuration *prometheus.HistogramVec
	storeCalls      *prometheus.HistogramVec
	storeCallErrors *prometheus.CounterVec
	inFlight        *prometheus.GaugeVec
	lockWait        *prometheus.HistogramVec
}

// NewMetrics creates the collectors and registers them with reg. A
// collector that is already registered (a second runtime in the same
// process) is reused, so NewMetrics on the same registry twice succeeds and
// both Metrics feed the same series.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricCommandsTotal,
			Help: "Store commands handled, by store, action (provision, deprovision, rotate, retire, suspend, resume, observe) and outcome (the result's outcome, e.g. provisioned, rotate_failed, observed; or retried, dropped, publish_failed, interrupted, locked).",
		}, []string{"store", "action", "outcome"}),
		commandDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricCommandDuration,
			Help:    "Time from receiving a store command to settling it (reply published and command acked, terminated or handed back).",
			Buckets: durationBuckets,
		}, []string{"store", "action"}),
		storeCalls: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricStoreCallDuration,
			Help:    "Duration of calls into the store implementation, by call (provision, verify, deprovision, rotate, retire, suspend, resume, observe).",
			Buckets: durationBuckets,
		}, []string{"store", "call"}),
		storeCallErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricStoreCallErrorsTotal,
			Help: "Calls into the store implementation that returned an error, by call and whether the error was permanent.",
		}, []string{"store", "call", "permanent"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricCommandsInFlight,
			Help: "Store commands this replica is working on.",
		}, []string{"store"}),
		lockWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricLockWait,
			Help:    "Time a command waited for its tenant's lock (held by another command of the same tenant, on any replica), whether it got it or not.",
			Buckets: durationBuckets,
		}, []string{"store"}),
	}
	var errs []error
	m.commands = register(reg, m.commands, &errs)
	m.commandDuration = register(reg, m.commandDuration, &errs)
	m.storeCalls = register(reg, m.storeCalls, &errs)
	m.storeCallErrors = register(reg, m.storeCallErrors, &errs)
	m.inFlight = register(reg, m.inFlight, &errs)
	m.lockWait = register(reg, m.lockWait, &errs)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("register agent metrics: %w", err)
	}
	return m, nil
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C, errs *[]error) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		*errs = append(*errs, err)
	}
	return c
}

// commandDone counts one settled command delivery.
func (m *Metrics) commandDone(store events.Store, action, outcome string, d time.Duration) {
	m.commands.WithLabelValues(string(store), action, outcome).Inc()
	m.commandDuration.WithLabelValues(string(store), action).Observe(d.Seconds())
}

func (m *Metrics) lockWaited(store events.Store, d time.Duration) {
	m.lockWait.WithLabelValues(string(store)).Observe(d.Seconds())
}

func (m *Metrics) inFlightAdd(store events.Store, delta float64) {
	m.inFlight.WithLabelValues(string(store)).Add(delta)
}

// Instrument returns a Store that records the duration of every Provision,
// Verify and Deprovision call (MetricStoreCallDuration) and counts those
// that fail (MetricStoreCallErrorsTotal). It changes no result.
func Instrument(next Store, m *Metrics) Store { return instrumentedStore{next: next, m: m} }

type instrumentedStore struct {
	next Store
	m    *Metrics
}

var _ Store = instrumentedStore{}

func (s instrumentedStore) Kind() events.Store { return s.next.Kind() }

func (s instrumentedStore) observe(call string, start time.Time, err error) {
	store := string(s.next.Kind())
	s.m.storeCalls.WithLabelValues(store, call).Observe(time.Since(start).Seconds())
	if err != nil {
		permanent, _ := Classify(err)
		s.m.storeCallErrors.WithLabelValues(store, call, fmt.Sprint(permanent)).Inc()
	}
}

func (s instrumentedStore) Provision(ctx context.Context, req ProvisionRequest) (ProvisionResponse, error) {
	start := time.Now()
	resp, err := s.next.Provision(ctx, req)
	s.observe("provision", start, err)
	return resp, err
}

func (s instrumentedStore) Verify(ctx context.Context, req VerifyRequest) (VerifyResponse, error) {
	start := time.Now()
	resp, err := s.next.Verify(ctx, req)
	s.observe("verify", start, err)
	return resp, err
}

func (s instrumentedStore) Deprovision(ctx context.Context, req DeprovisionRequest) (DeprovisionResponse, error) {
	start := time.Now()
	resp, err := s.next.Deprovision(ctx, req)
	s.observe("deprovision", start, err)
	return resp, err
}

func (s instrumentedStore) Ping(ctx context.Context) error { return s.next.Ping(ctx) }
