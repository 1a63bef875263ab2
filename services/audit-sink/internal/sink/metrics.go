package sink

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the sink's Prometheus metrics.
type Metrics struct {
	Written      prometheus.Counter
	Duplicates   prometheus.Counter
	DeadLetters  *prometheus.CounterVec
	WriteErrors  prometheus.Counter
	WriteSeconds prometheus.Histogram
	BatchSize    prometheus.Histogram
	// AnchoredSeq is the seq of the chain head this sink last saw
	// anchored in events.KVAuditAnchors.
	AnchoredSeq prometheus.Gauge
	// Anchors counts anchors written by this sink.
	Anchors prometheus.Counter
	// AnchorMismatches counts anchoring attempts refused because the
	// database contradicts the anchor (tampering: alert on any).
	AnchorMismatches prometheus.Counter
	// AnchorErrors counts anchoring attempts that failed otherwise (NATS
	// or PostgreSQL unreachable); they are retried.
	AnchorErrors prometheus.Counter
}

// NewMetrics creates the sink's metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tenantprov_audit_events_written_total",
			Help: "Audit events appended to the chain (committed).",
		}),
		Duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tenantprov_audit_duplicates_skipped_total",
			Help: "Audit events skipped because their event_id was already stored (redelivery, republish).",
		}),
		DeadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantprov_audit_dead_letters_total",
			Help: "Audit messages moved to the dead-letter subject, by reason.",
		}, []string{"reason"}),
		WriteErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tenantprov_audit_write_errors_total",
			Help: "Append transactions that failed and were retried (messages nak'ed with delay).",
		}),
		WriteSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tenantprov_audit_write_duration_seconds",
			Help:    "Duration of one append transaction (lock, insert, commit), whatever its batch size.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		BatchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tenantprov_audit_batch_size",
			Help:    "Audit events per append transaction.",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000},
		}),
		AnchoredSeq: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tenantprov_audit_anchored_seq",
			Help: "Seq of the audit chain head last seen anchored outside the database.",
		}),
		Anchors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tenantprov_audit_anchors_written_total",
			Help: "Chain heads this sink anchored in the audit-anchors bucket.",
		}),
		AnchorMismatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tenantprov_audit_anchor_mismatches_total",
			Help: "Anchoring refused because the database contradicts the anchored head (rows cut or chain recomputed): tampering.",
		}),
		AnchorErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tenantprov_audit_anchor_errors_total",
			Help: "Anchoring attempts that failed for another reason (retried).",
		}),
	}
	for _, r := range Reasons() {
		m.DeadLetters.WithLabelValues(r) // export zeroes, so alerts see the series
	}
	reg.MustRegister(m.Written, m.Duplicates, m.DeadLetters, m.WriteErrors, m.WriteSeconds, m.BatchSize,
		m.AnchoredSeq, m.Anchors, m.AnchorMismatches, m.AnchorErrors)
	return m
}
