package service

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics every service exports from the skeleton (deploy/prometheus
// alerts on them).
const (
	// MetricReady is 1 while /readyz would answer ready, else 0.
	MetricReady = "tenantprov_service_ready"
	// MetricConsumerPending is NumPending of each durable consumer the
	// service reads (labels stream, consumer): messages not yet delivered.
	MetricConsumerPending = "tenantprov_consumer_pending_messages"
	// MetricConsumerAckPending is NumAckPending: delivered, not yet acked.
	MetricConsumerAckPending = "tenantprov_consumer_ack_pending_messages"
)

// scrapeTimeout bounds what a /metrics scrape waits for the checks and
// consumer infos it reports.
const scrapeTimeout = 3 * time.Second

// SkeletonCollectors are the collectors every service's registry gets
// from the skeleton, reading s (exported for the metric-name tests of
// deploy/).
func SkeletonCollectors(s *Service) []prometheus.Collector {
	return []prometheus.Collector{prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: MetricReady,
		Help: "1 while the service is ready (/readyz: NATS connected, topology ensured, every dependency check passing), else 0.",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
		defer cancel()
		if len(s.problems(ctx)) == 0 {
			return 1
		}
		return 0
	}), &consumerCollector{s: s}}
}

// WatchConsumer adds a durable consumer of stream to the consumer lag the
// service exports (MetricConsumerPending, MetricConsumerAckPending),
// read from the server's consumer info at scrape time.
func (s *Service) WatchConsumer(stream, durable string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.consumers {
		if c == [2]string{stream, durable} {
			return
		}
	}
	s.consumers = append(s.consumers, [2]string{stream, durable})
}

var (
	pendingDesc = prometheus.NewDesc(MetricConsumerPending,
		"Messages of the stream not yet delivered to this durable consumer (its lag), from the consumer's info at scrape time.",
		[]string{"stream", "consumer"}, nil)
	ackPendingDesc = prometheus.NewDesc(MetricConsumerAckPending,
		"Messages delivered to this durable consumer and not yet acknowledged, from the consumer's info at scrape time.",
		[]string{"stream", "consumer"}, nil)
)

type consumerCollector struct{ s *Service }

func (c *consumerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- pendingDesc
	ch <- ackPendingDesc
}

// Collect asks the server for each watched consumer's info, concurrently
// and bounded by scrapeTimeout; a consumer whose info cannot be read is
// left out of this scrape (its series goes stale rather than lying).
func (c *consumerCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	s.mu.Lock()
	consumers := append([][2]string(nil), s.consumers...)
	s.mu.Unlock()
	if s.JS == nil || len(consumers) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, sc := range consumers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			info, err := consumerInfo(ctx, s.JS, sc[0], sc[1])
			if err != nil {
				return
			}
			ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(info.NumPending), sc[0], sc[1])
			ch <- prometheus.MustNewConstMetric(ackPendingDesc, prometheus.GaugeValue, float64(info.NumAckPending), sc[0], sc[1])
		}()
	}
	wg.Wait()
}

func consumerInfo(ctx context.Context, js jetstream.JetStream, stream, durable string) (*jetstream.ConsumerInfo, error) {
	cons, err := js.Consumer(ctx, stream, durable)
	if err != nil {
		return nil, err
	}
	return cons.Info(ctx)
}
