package qdrantstore

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/testkit"
)

// BenchmarkScale shows whether one tenant's Provision + Verify costs more
// when many other tenants exist (issue 13: flat per-tenant cost), one
// tenant at a time and 16 at once. The others are provisioned (8 at a
// time) and kept. Timings are reported, never asserted:
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
	for _, n := range []int{0, 1000} {
		work := make(chan int)
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range work {
					id := events.MustTenantID(fmt.Sprintf("other-%d", i))
					if _, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: id, Generation: 1, SagaID: "bench"}); err != nil {
						b.Error(err)
					}
				}
			}()
		}
		for ; others < n; others++ {
			work <- others
		}
		close(work)
		wg.Wait()
		for _, parallel := range []int{1, 16} {
			b.Run(fmt.Sprintf("qdrant=%s/others=%d/parallel=%d", q.Kind, n, parallel), func(b *testing.B) {
				var mu sync.Mutex
				var prov, ver time.Duration
				calls, i := 0, 0
				for b.Loop() {
					var wg sync.WaitGroup
					for range parallel {
						id := events.MustTenantID(fmt.Sprintf("scale-%d-%d-%d", n, parallel, i))
						i++
						wg.Add(1)
						go func() {
							defer wg.Done()
							t0 := time.Now()
							r, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: id, Generation: 1, SagaID: "bench"})
							if err != nil {
								b.Error(err)
								return
							}
							t1 := time.Now()
							v, err := e.store.Verify(ctx, agent.VerifyRequest{Tenant: id, Generation: 1, Credential: r.Credential})
							if err != nil || !v.Passed() {
								b.Errorf("verify: %v %+v", err, v.Checks)
							}
							t2 := time.Now()
							_, _ = e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: id, Generation: 1, SagaID: "bench"})
							mu.Lock()
							prov, ver, calls = prov+t1.Sub(t0), ver+t2.Sub(t1), calls+1
							mu.Unlock()
						}()
					}
					wg.Wait()
				}
				ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / float64(calls) }
				b.ReportMetric(ms(prov), "ms/provision")
				b.ReportMetric(ms(ver), "ms/verify")
			})
		}
	}
}
