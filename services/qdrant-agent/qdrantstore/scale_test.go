package qdrantstore

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/testkit"
	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// BenchmarkScale: one tenant's Provision + Verify with 0 and with 1,000
// other tenants present (storetest.BenchScale). The others are provisioned
// (8 at a time) and kept:
//
//	CI=true go test -run '^$' -bench Scale -benchtime 10x ./services/qdrant-agent/qdrantstore/
func BenchmarkScale(b *testing.B) {
	q := testkit.StartQdrant(b)
	e := newEnv(b, q, func(c *Config) { c.VectorSize = DefaultConfig().VectorSize })
	ctx := context.Background()
	if _, _, err := e.store.prepare(ctx); err != nil {
		b.Fatal(err)
	}
	others := 0
	grow := func(n int) {
		work := make(chan int)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for i := range work {
					id := events.MustTenantID(fmt.Sprintf("other-%d", i))
					if _, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: id, Generation: 1, SagaID: "bench"}); err != nil {
						b.Error(err)
					}
				}
			})
		}
		for ; others < n; others++ {
			work <- others
		}
		close(work)
		wg.Wait()
	}
	storetest.BenchScale(b, ctx, e.store, "qdrant="+q.Kind+"/", grow, func(id events.TenantID) agent.ProvisionRequest {
		return agent.ProvisionRequest{Tenant: id, Generation: 1, SagaID: "bench"}
	})
}
