package busauth_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/busauth"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/inventory"
)

type fixedInventory []events.InventoryItem

func (f fixedInventory) Inventory(context.Context, agent.InventoryRequest) (agent.InventoryResponse, error) {
	return agent.InventoryResponse{Items: f}, nil
}

// TestInventoryOnTheAuthenticatedBus: the operator (tenantctl doctor) asks
// an agent for its store's inventory and receives every chunk of a
// multi-chunk answer; an agent may serve only its own store's subject, and
// a requester may not ask.
func TestInventoryOnTheAuthenticatedBus(t *testing.T) {
	b, _ := setUp(t)
	ctx := ctxT(t, time.Minute)
	items := make(fixedInventory, 2*events.InventoryChunkItems+3)
	for i := range items {
		items[i] = events.InventoryItem{Kind: events.KindBucket, Name: fmt.Sprintf("tenant-t%04d", i), TenantID: fmt.Sprintf("t%04d", i), Ours: true}
	}
	minio := b.as(busauth.RoleMinIOAgent)
	stop, err := agent.ServeInventory(ctx, minio.nc, events.StoreMinIO, items, zap.NewNop())
	must(t, "minio-agent serves its inventory", err)
	t.Cleanup(stop)

	op := b.as(busauth.RoleOperator)
	got, err := (&inventory.Client{NC: op.nc, Timeout: 10 * time.Second}).Ask(ctx, events.StoreMinIO, "")
	if err != nil || len(got) != len(items) {
		t.Fatalf("operator's inventory of minio: %d items, %v (agent violations %v, operator violations %v)", len(got), err, minio.violations, op.violations)
	}

	// An agent cannot listen on another store's inventory subject.
	if _, err := minio.nc.SubscribeSync(events.InventorySubject(events.StorePostgres)); err == nil {
		_ = minio.nc.Flush()
		time.Sleep(200 * time.Millisecond)
		if !minio.sawViolation(events.InventorySubject(events.StorePostgres)) {
			t.Error("minio-agent could subscribe to postgres's inventory subject")
		}
	}
	// A requester cannot ask.
	req := b.as(busauth.RoleRequester)
	_ = req.nc.Publish(events.InventorySubject(events.StoreMinIO), []byte("{}"))
	_ = req.nc.Flush()
	time.Sleep(200 * time.Millisecond)
	if !req.sawViolation(events.InventorySubject(events.StoreMinIO)) {
		t.Error("a requester could publish an inventory request")
	}
}
