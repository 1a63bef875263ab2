package service_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/config"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/service"
	"github.com/tenantprov/tenantprov/testkit"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestRunServesEndpointsEnsuresTopologyAndStops(t *testing.T) {
	n := testkit.StartNATS(t)
	cfg := service.Defaults("test")
	cfg.NATSURL = n.URL
	cfg.LogLevel = "info"
	cfg.JetStreamReplicas = 1
	cfg.ShutdownTimeout = 5 * time.Second

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan *service.Service, 1)
	storeDown := errors.New("store unreachable")
	var storeErr error = storeDown
	done := make(chan error, 1)
	go func() {
		done <- service.RunWithLogger(ctx, "test", cfg, zap.NewNop(), func(ctx context.Context, s *service.Service) error {
			s.AddReadiness("store", func(context.Context) error { return storeErr })
			started <- s
			<-ctx.Done()
			return ctx.Err()
		})
	}()
	var s *service.Service
	select {
	case s = <-started:
	case err := <-done:
		t.Fatalf("Run returned early: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("service did not start")
	}
	base := "http://" + s.HTTPAddr()

	if code, body := get(t, base+"/healthz"); code != 200 || !strings.Contains(body, "ok") {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "store: store unreachable") {
		t.Fatalf("/readyz with a failing check = %d %q, want 503 naming the check", code, body)
	}
	if _, body := get(t, base+"/metrics"); !strings.Contains(body, "\n"+service.MetricReady+" 0\n") {
		t.Fatalf("/metrics while not ready lacks %s 0", service.MetricReady)
	}
	t.Setenv("HTTP_ADDR", s.HTTPAddr())
	if code := service.Healthcheck("test", io.Discard); code != 1 {
		t.Fatalf("healthcheck exit %d while not ready, want 1", code)
	}
	storeErr = nil
	if code, body := get(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz = %d %q", code, body)
	}
	if code := service.Healthcheck("test", io.Discard); code != 0 {
		t.Fatalf("healthcheck exit %d while ready, want 0", code)
	}
	if code, body := get(t, base+"/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") || !strings.Contains(body, "\n"+service.MetricReady+" 1\n") {
		t.Fatalf("/metrics = %d, missing go_goroutines or %s 1", code, service.MetricReady)
	}

	// The whole topology exists.
	js := s.JS
	for _, st := range (events.Topology{}).Streams() {
		if _, err := js.Stream(ctx, st.Name); err != nil {
			t.Errorf("stream %s: %v", st.Name, err)
		}
	}
	if _, err := js.KeyValue(ctx, events.KVTenants); err != nil {
		t.Errorf("kv: %v", err)
	}
	if _, err := js.ObjectStore(ctx, events.ObjectStoreSecrets); err != nil {
		t.Errorf("object store: %v", err)
	}
	// Consumer lag: three audit events nobody has consumed yet are
	// pending on the audit sink's durable consumer.
	if _, err := js.CreateOrUpdateConsumer(ctx, events.StreamAudit, events.AuditSinkConfig(time.Minute)); err != nil {
		t.Fatal(err)
	}
	s.WatchConsumer(events.StreamAudit, events.ConsumerAuditSink)
	for i := range 3 {
		if _, err := js.Publish(ctx, fmt.Sprintf("audit.TEST_%d", i), []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	want := fmt.Sprintf(`%s{consumer=%q,stream=%q} 3`, service.MetricConsumerPending, events.ConsumerAuditSink, events.StreamAudit)
	if _, body := get(t, base+"/metrics"); !strings.Contains(body, want) {
		t.Fatalf("/metrics lacks %q", want)
	}

	// Ensure is idempotent: running it again changes nothing and fails
	// nothing.
	if err := (events.Topology{Replicas: 1}).Ensure(ctx, js); err != nil {
		t.Fatalf("second Ensure: %v", err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("HTTP server still serving after shutdown")
	}
}

func TestRunFailsOnBusyPort(t *testing.T) {
	cfg := service.Defaults("test")
	lis, err := net.Listen("tcp", "127.0.0.1:0") // the port is now taken
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	cfg.HTTPAddr = lis.Addr().String()
	err = service.RunWithLogger(context.Background(), "test", cfg, zap.NewNop(), func(context.Context, *service.Service) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "HTTP_ADDR") {
		t.Fatalf("err = %v, want a listen error naming HTTP_ADDR", err)
	}
}

func TestConfigValidateReportsAll(t *testing.T) {
	_, err := config.LoadFrom(service.Defaults("orchestrator"), map[string]string{
		"NATS_URL": " ", "HTTP_ADDR": "nope", "LOG_LEVEL": "loud", "JETSTREAM_REPLICAS": "2", "SHUTDOWN_TIMEOUT": "0s",
	})
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{"NATS_URL", "HTTP_ADDR", "LOG_LEVEL", "JETSTREAM_REPLICAS", "SHUTDOWN_TIMEOUT"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
	cfg, err := config.LoadFrom(service.Defaults("pg-agent"), map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPAddr != "127.0.0.1:9182" || cfg.NATSURL != "nats://127.0.0.1:4222" {
		t.Fatalf("defaults = %+v", cfg)
	}
}
