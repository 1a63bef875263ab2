package busauth_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/busauth"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/inventory"
)

// TestObservationAndOrphanSweepOnTheAuthenticatedBus: the operator asks for
// an observation (tenant.observe.requested) and reads the orphans bucket;
// the orchestrator consumes observation requests, asks every store for its
// inventory (the orphan sweep) and writes the orphans bucket; a requester
// reads none of it. Each of these fails without the permissions added for
// issue 14.
func TestObservationAndOrphanSweepOnTheAuthenticatedBus(t *testing.T) {
	b, orch := setUp(t)
	ctx := ctxT(t, time.Minute)

	cons, err := orch.js.CreateOrUpdateConsumer(ctx, events.StreamTenants, events.OrchestratorObserveConfig(5*time.Second))
	must(t, "orchestrator creates the observe consumer", err)
	op := b.as(busauth.RoleOperator)
	_, err = op.js.Publish(ctx, events.SubjectTenantObserveRequested, []byte(`{"tenant_id":"acme","requested_by":"doctor"}`))
	must(t, "operator publishes tenant.observe.requested", err)
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	must(t, "orchestrator pulls observation requests", err)
	pulled := 0
	for m := range batch.Messages() {
		pulled++
		must(t, "orchestrator acks", m.Ack())
	}
	if pulled != 1 || batch.Error() != nil {
		t.Fatalf("orchestrator pulled %d observation requests: %v (violations %v)", pulled, batch.Error(), orch.violations)
	}

	items := fixedInventory{{Kind: events.KindBucket, Name: "tenant-gone", TenantID: "gone", Ours: true, Generation: 1}}
	stop, err := agent.ServeInventory(ctx, b.as(busauth.RoleMinIOAgent).nc, events.StoreMinIO, items, zap.NewNop())
	must(t, "minio-agent serves its inventory", err)
	t.Cleanup(stop)
	got, err := (&inventory.Client{NC: orch.nc, Timeout: 10 * time.Second}).Ask(ctx, events.StoreMinIO, "")
	if err != nil || len(got) != 1 {
		t.Fatalf("orchestrator's inventory of minio: %v, %v (violations %v)", got, err, orch.violations)
	}

	kv, err := orch.js.KeyValue(ctx, events.KVOrphans)
	must(t, "orchestrator opens the orphans bucket", err)
	_, err = kv.Put(ctx, events.OrphanKey(events.StoreMinIO, "gone", 1, false), []byte(`{"store":"minio","tenant_id":"gone"}`))
	must(t, "orchestrator writes an orphan", err)

	okv, err := op.js.KeyValue(ctx, events.KVOrphans)
	must(t, "operator opens the orphans bucket", err)
	keys, err := okv.ListKeys(ctx)
	must(t, "operator lists orphans", err)
	n := 0
	for range keys.Keys() {
		n++
	}
	if n != 1 {
		t.Fatalf("operator lists %d orphans, want 1", n)
	}
	if _, err := okv.Put(ctx, "minio.x.g1", []byte("{}")); err == nil {
		t.Fatal("operator could write the orphans bucket")
	}

	req := b.as(busauth.RoleRequester)
	if _, err := req.js.KeyValue(ctx, events.KVOrphans); err == nil {
		t.Fatal("a requester could open the orphans bucket")
	}
}
