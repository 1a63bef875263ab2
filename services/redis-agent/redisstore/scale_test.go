package redisstore

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// BenchmarkScale shows whether one tenant's Provision + Verify costs more
// when many other tenants exist (issue 13: flat per-tenant cost). The
// other tenants are ACL users with exactly the rules Provision gives, made
// directly (ACL SETUSER, pipelined) to keep the setup short. It reports the
// mean of each call, one tenant at a time and 16 at once (the agent's
// concurrency under a burst). Timings are reported, never asserted:
//
//	CI=true go test -run '^$' -bench Scale -benchtime 20x ./services/redis-agent/redisstore/
func BenchmarkScale(b *testing.B) {
	e := newEnv(b)
	ctx := ctxFor(b, 20*time.Minute)
	others := 0
	for _, n := range []int{0, 1000} {
		pipe := e.admin.Pipeline()
		for ; others < n; others++ {
			id := events.MustTenantID(fmt.Sprintf("other-%d", others))
			args := []any{"ACL", "SETUSER", id.RedisUser()}
			for _, r := range userRules(id, []string{passwordHash(password(b))}, true, ScriptingDeny) {
				args = append(args, r)
			}
			pipe.Do(ctx, args...)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
		for _, parallel := range []int{1, 16} {
			b.Run(fmt.Sprintf("others=%d/parallel=%d", n, parallel), func(b *testing.B) {
				var mu sync.Mutex
				var prov, ver time.Duration
				calls := 0
				i := 0
				for b.Loop() {
					var wg sync.WaitGroup
					for range parallel {
						id := events.MustTenantID(fmt.Sprintf("scale-%d-%d-%d", n, parallel, i))
						i++
						wg.Add(1)
						go func() {
							defer wg.Done()
							t0 := time.Now()
							resp, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: id, Generation: 1, Password: password(b)})
							if err != nil {
								b.Error(err)
								return
							}
							t1 := time.Now()
							v, err := e.store.Verify(ctx, agent.VerifyRequest{Tenant: id, Generation: 1, Credential: resp.Credential})
							if err != nil || !v.Passed() {
								b.Errorf("Verify: %v %+v", err, v.Checks)
							}
							t2 := time.Now()
							_, _ = e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: id, Generation: 1})
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
