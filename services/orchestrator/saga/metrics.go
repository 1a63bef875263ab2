package saga

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the saga's Prometheus metrics.
type Metrics struct {
	sagas    *prometheus.CounterVec
	rejected prometheus.Counter
	// resultsRejected counts store results dropped by reason.
	resultsRejected *prometheus.CounterVec
	duration        *prometheus.HistogramVec
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
	}
	if reg != nil {
		reg.MustRegister(m.sagas, m.rejected, m.resultsRejected, m.duration)
	}
	return m
}
