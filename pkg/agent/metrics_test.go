package agent

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// value reads a counter's or gauge's value.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var pb dto.Metric
	if err := m.Write(&pb); err != nil {
		t.Fatal(err)
	}
	if pb.Counter != nil {
		return pb.GetCounter().GetValue()
	}
	return pb.GetGauge().GetValue()
}

// series counts the series a collector exports.
func series(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 1000)
	c.Collect(ch)
	close(ch)
	return len(ch)
}

func TestInstrumentedStoreRecordsCalls(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	st := Instrument(&scriptStore{kind: events.StoreMinIO, deprovision: func(DeprovisionRequest) (DeprovisionResponse, error) {
		return DeprovisionResponse{}, Conflict("bucket")
	}}, m)
	ctx := context.Background()
	_, _ = st.Provision(ctx, ProvisionRequest{Tenant: "acme", Generation: 1})
	_, _ = st.Verify(ctx, VerifyRequest{Tenant: "acme"})
	_, _ = st.Verify(ctx, VerifyRequest{Tenant: "acme"})
	if _, err := st.Deprovision(ctx, DeprovisionRequest{Tenant: "acme"}); !errors.Is(err, ErrConflict) {
		t.Fatalf("decorator changed the error: %v", err)
	}
	if n := series(m.storeCalls); n != 3 {
		t.Errorf("%d call series, want 3 (provision, verify, deprovision)", n)
	}
	if got := value(t, m.storeCallErrors.WithLabelValues("minio", "deprovision", "true")); got != 1 {
		t.Errorf("permanent deprovision errors = %v, want 1", got)
	}

	// A second runtime in the process shares the series.
	m2, err := NewMetrics(reg)
	if err != nil {
		t.Fatalf("second NewMetrics on one registry: %v", err)
	}
	m.commandDone(events.StoreMinIO, "provision", "provisioned", 0)
	m2.commandDone(events.StoreMinIO, "provision", "provisioned", 0)
	if got := value(t, m.commands.WithLabelValues("minio", "provision", "provisioned")); got != 2 {
		t.Errorf("commands_total = %v, want 2", got)
	}
}

func TestRuntimeCountsCommands(t *testing.T) {
	h := newHarness(t, &scriptStore{})
	h.deliverCmd(t, command(events.ActionProvision), 1)
	h.deliverCmd(t, command(events.ActionDeprovision), 1)
	h.deliver(t, "store.cmd.redis.provision", []byte("{"), 1)
	m := h.rt.metrics
	for _, c := range []struct{ action, outcome string }{{"provision", "provisioned"}, {"deprovision", "deprovisioned"}, {"provision", OutcomeDropped}} {
		if got := value(t, m.commands.WithLabelValues("redis", c.action, c.outcome)); got != 1 {
			t.Errorf("commands_total{%s,%s} = %v, want 1", c.action, c.outcome, got)
		}
	}
	if got := value(t, m.inFlight.WithLabelValues("redis")); got != 0 {
		t.Errorf("in flight = %v after all commands settled", got)
	}
	if n := series(m.commandDuration); n != 2 {
		t.Errorf("%d duration series, want 2", n)
	}
}
