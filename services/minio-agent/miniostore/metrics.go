package miniostore

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// MetricCallDuration is the histogram of every MinIO call the store makes,
// by call ("user.add", "bucket.make", …) and result ("ok", "error"): the
// per-call breakdown behind the agent's provisioning time.
const MetricCallDuration = "tenantprov_minio_call_duration_seconds"

// NewCallMetrics registers MetricCallDuration with reg and returns the
// observer that feeds it (for WithCallObserver). Registering twice on the
// same registry reuses the first histogram.
func NewCallMetrics(reg prometheus.Registerer) (CallObserver, error) {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    MetricCallDuration,
		Help:    "Duration of MinIO calls made by the minio agent, by call and result.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"call", "result"})
	if err := reg.Register(h); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, fmt.Errorf("register %s: %w", MetricCallDuration, err)
		}
		existing, ok := are.ExistingCollector.(*prometheus.HistogramVec)
		if !ok {
			return nil, fmt.Errorf("register %s: %w", MetricCallDuration, err)
		}
		h = existing
	}
	return func(call string, d time.Duration, err error) {
		result := "ok"
		if err != nil {
			result = "error"
		}
		h.WithLabelValues(call, result).Observe(d.Seconds())
	}, nil
}
