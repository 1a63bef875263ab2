package saga

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the saga's Prometheus metrics.
type Metrics struct {
	sagas    *prometheus.CounterVec
	rejected prometheus.Counter
	// resultsRejected counts store results dropped by reason.
	resultsRejected *prometheus.CounterVec
	duration        *prometheus.HistogramVec
	// candidates is the size of the reconciler's set: the records that
	// may need it (in flight or unsettled), not all tenants.
	candidates prometheus.Gauge
	// pastDeadline is, per saga kind, how many tenants the reconciler's
	// last pass found past their deadline (pastDeadline in reconcile.go).
	pastDeadline *prometheus.GaugeVec
	// compensationRetries counts deprovision commands re-sent because an
	// earlier one of the same round was not confirmed in time.
	compensationRetries *prometheus.CounterVec
	// observationsDeferred is how many periodic observations that fell
	// due wait for the sagas in flight to settle (OBSERVE_MAX_DEFER).
	observationsDeferred prometheus.Gauge
}

// NewMetrics registers the saga's metrics with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics { return newMetrics(reg) }

func newMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		sagas: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantprov_orchestrator_sagas_total",
			Help: "Sagas and lifecycle operations started and settled, by kind (provision, deprovision, rotate, retire, suspend, resume, retain, restore, purge) and state.",
		}, []string{"kind", "state"}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tenantprov_orchestrator_requests_rejected_total",
			Help: "Requests answered with tenant.rejected.",
		}),
		resultsRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantprov_orchestrator_results_rejected_total",
			Help: "Store results dropped because they did not belong to the saga, generation, store or run in flight (or were invalid), by reason.",
		}, []string{"reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tenantprov_orchestrator_saga_duration_seconds",
			Help:    "Time from request to settled state.",
			Buckets: prometheus.ExponentialBuckets(0.1, 2, 12),
		}, []string{"kind"}),
		pastDeadline: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tenantprov_orchestrator_sagas_past_deadline",
			Help: "Tenants whose saga the reconciler's last pass found past its deadline, by kind: a provisioning past its (extended) deadline after the tick that should have extended or rolled it back, or a rollback, deprovisioning or lifecycle operation unchanged for longer than SAGA_MAX_TIMEOUT.",
		}, []string{"kind"}),
		compensationRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantprov_orchestrator_compensation_retries_total",
			Help: "Deprovision commands re-sent to a store because an earlier one of the same compensation round was not confirmed in time, by store.",
		}, []string{"store"}),
		candidates: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tenantprov_orchestrator_reconcile_candidates",
			Help: "Registry records the reconciler looked at in its last pass (in flight or unsettled; settled tenants are not visited).",
		}),
		observationsDeferred: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tenantprov_orchestrator_observations_deferred",
			Help: "Periodic drift observations that fell due and wait while sagas are in flight (at most OBSERVE_MAX_DEFER); they go out oldest first at twice the steady rate once none is.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.sagas, m.rejected, m.resultsRejected, m.duration, m.candidates, m.pastDeadline, m.compensationRetries, m.observationsDeferred)
	}
	return m
}
