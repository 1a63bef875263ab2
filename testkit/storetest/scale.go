package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// BenchScale shows whether one tenant's Provision + Verify costs more when
// many other tenants exist (issue 13: flat per-tenant cost). For 0 and then
// 1,000 others (grow(n) brings the store to n other tenants) it runs
// sub-benchmarks "<label>others=N/parallel=P": P tenants at once (1, and
// 16 — an agent's concurrency under a burst), each provisioned with
// request(id), verified and deprovisioned. It reports the mean of each
// call as ms/provision and ms/verify; timings are reported, never asserted.
func BenchScale(b *testing.B, ctx context.Context, st agent.Store, label string, grow func(n int), request func(events.TenantID) agent.ProvisionRequest) {
	for _, n := range []int{0, 1000} {
		grow(n)
		for _, parallel := range []int{1, 16} {
			b.Run(fmt.Sprintf("%sothers=%d/parallel=%d", label, n, parallel), func(b *testing.B) {
				var (
					mu        sync.Mutex
					prov, ver time.Duration
					calls, i  int
				)
				for b.Loop() {
					var wg sync.WaitGroup
					for range parallel {
						req := request(events.MustTenantID(fmt.Sprintf("scale-%d-%d-%d", n, parallel, i)))
						i++
						wg.Go(func() {
							t0 := time.Now()
							resp, err := st.Provision(ctx, req)
							if err != nil {
								b.Error(err)
								return
							}
							t1 := time.Now()
							v, err := st.Verify(ctx, agent.VerifyRequest{Tenant: req.Tenant, Generation: req.Generation, Credential: resp.Credential})
							if err != nil || !v.Passed() {
								b.Errorf("verify: %v %+v", err, v.Checks)
							}
							t2 := time.Now()
							_, _ = st.Deprovision(ctx, agent.DeprovisionRequest{Tenant: req.Tenant, Generation: req.Generation, SagaID: req.SagaID})
							mu.Lock()
							prov, ver, calls = prov+t1.Sub(t0), ver+t2.Sub(t1), calls+1
							mu.Unlock()
						})
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
