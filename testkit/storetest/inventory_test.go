package storetest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/inventory"
	"github.com/tenantprov/tenantprov/testkit"
	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// listing is an Inventorier that returns fixed items or an error.
type listing struct {
	items []events.InventoryItem
	err   error
}

func (l listing) Inventory(context.Context, agent.InventoryRequest) (agent.InventoryResponse, error) {
	return agent.InventoryResponse{Items: l.items}, l.err
}

func manyItems(n int) []events.InventoryItem {
	out := make([]events.InventoryItem, n)
	for i := range out {
		out[i] = events.InventoryItem{Kind: events.KindBucket, Name: fmt.Sprintf("tenant-t%05d", i), TenantID: fmt.Sprintf("t%05d", i), Ours: true, Generation: 1}
	}
	return out
}

// TestInventoryOverNATS serves inventories on a real NATS server and
// gathers them with the inventory client: a store with thousands of items
// arrives whole in chunks, from one of two replicas only; a store with no
// agent and a store whose listing fails are reported unanswered with why;
// the tenant filter applies on the agent's side.
func TestInventoryOverNATS(t *testing.T) {
	n := testkit.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const many = 3*events.InventoryChunkItems + 17
	for replica := range 2 {
		stop, err := agent.ServeInventory(ctx, n.Connect(t), events.StoreMinIO, listing{items: manyItems(many)}, zap.NewNop())
		if err != nil {
			t.Fatalf("ServeInventory minio replica %d: %v", replica, err)
		}
		t.Cleanup(stop)
	}
	failing := listing{err: errors.New("dial tcp 10.0.0.1:6379: connection refused")}
	stop, err := agent.ServeInventory(ctx, n.Connect(t), events.StoreRedis, failing, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	stop, err = agent.ServeInventory(ctx, n.Connect(t), events.StoreQdrant, listing{}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)

	c := &inventory.Client{NC: n.Connect(t), Timeout: 10 * time.Second}
	g := c.Gather(ctx, "")
	if got := len(g.Inventories[events.StoreMinIO]); got != many {
		t.Errorf("minio: %d items, want %d (unanswered: %q)", got, many, g.Unanswered[events.StoreMinIO])
	}
	for i, it := range g.Inventories[events.StoreMinIO] {
		if it.Store != events.StoreMinIO || it.TenantID != fmt.Sprintf("t%05d", i) {
			t.Fatalf("minio item %d = %+v: out of order or without its store", i, it)
		}
	}
	if items, ok := g.Inventories[events.StoreQdrant]; !ok || len(items) != 0 {
		t.Errorf("qdrant (empty store): answered %v with %d items, want an empty answer", ok, len(items))
	}
	if why := g.Unanswered[events.StorePostgres]; !strings.Contains(why, "no agent") {
		t.Errorf("postgres (no agent): unanswered = %q, want it to say no agent answers", why)
	}
	if why := g.Unanswered[events.StoreRedis]; !strings.Contains(why, "could not list") {
		t.Errorf("redis (failing listing): unanswered = %q, want the agent's error", why)
	}
	if len(g.Inventories)+len(g.Unanswered) != 4 {
		t.Errorf("every store must be in exactly one map: %d answered, %d unanswered", len(g.Inventories), len(g.Unanswered))
	}

	one, err := c.Ask(ctx, events.StoreMinIO, "t00042")
	if err != nil {
		t.Fatal(err)
	}
	if len(one) != 1 || one[0].TenantID != "t00042" {
		t.Errorf("filtered answer = %+v, want only t00042's bucket", one)
	}
}

// TestAgentServesInventory checks the runtime's hook: an agent whose store
// implements agent.Inventorier answers inventory requests for its store.
func TestAgentServesInventory(t *testing.T) {
	n := testkit.StartNATS(t)
	st := &inventoried{memStore: newMemStore(""), items: manyItems(3)}
	storetest.RunAgent(t, n, st)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := &inventory.Client{NC: n.Connect(t), Timeout: 10 * time.Second}
	items, err := c.Ask(ctx, st.Kind(), "")
	if err != nil {
		t.Fatalf("Ask %s: %v", st.Kind(), err)
	}
	if len(items) != 3 || items[0].Store != st.Kind() {
		t.Errorf("items = %+v, want the store's 3 items of store %s", items, st.Kind())
	}
}

type inventoried struct {
	*memStore
	items []events.InventoryItem
}

func (s *inventoried) Inventory(context.Context, agent.InventoryRequest) (agent.InventoryResponse, error) {
	return agent.InventoryResponse{Items: s.items}, nil
}
