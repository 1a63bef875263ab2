package busauth_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantprov/tenantprov/pkg/busauth"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// TestOperatorCannotConsumeResultsOrRequests: `tenantctl watch` reads the
// registry (KV watch) and the outcome subjects, never STORE_EVENTS or
// TENANTS through a consumer. It must stay so: the server does not
// authorize a pull request's reply subject, and a pull from STORE_EVENTS
// aimed at store.evt.postgres.provisioned writes a real, earlier result
// back into STORE_EVENTS (a forged result by replay). Neither creating a
// consumer there nor pulling from the orchestrator's is allowed.
func TestOperatorCannotConsumeResultsOrRequests(t *testing.T) {
	b, orch := setUp(t)
	ctx := ctxT(t, 2*time.Minute)
	_, err := orch.js.CreateOrUpdateConsumer(ctx, events.StreamStoreEvents, events.OrchestratorResultsConfig(30*time.Second))
	must(t, "orchestrator creates its results consumer", err)
	op := b.as(busauth.RoleOperator)
	for _, stream := range []string{events.StreamStoreEvents, events.StreamTenants} {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := op.js.OrderedConsumer(cctx, stream, jetstream.OrderedConsumerConfig{})
		cancel()
		if err == nil {
			t.Errorf("the operator created a consumer on %s", stream)
		}
		waitViolation(t, op, "$JS.API.CONSUMER.CREATE."+stream)
	}
	next := "$JS.API.CONSUMER.MSG.NEXT." + events.StreamStoreEvents + "." + events.ConsumerOrchestratorResults
	must(t, "publish", op.nc.PublishRequest(next, events.EventSubject(events.StorePostgres, events.OutcomeProvisioned), []byte(`{"batch":1}`)))
	waitViolation(t, op, next)
}

func waitViolation(t *testing.T, c *client, subject string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !c.sawViolation(subject) {
		if time.Now().After(deadline) {
			c.mu.Lock()
			defer c.mu.Unlock()
			t.Errorf("no permissions violation for %s (violations: %v)", subject, c.violations)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
