package redisstore

import (
	"fmt"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// BenchmarkProvisionVerifyDeprovision measures one tenant's whole life on a
// local redis-server with an aclfile (so every Provision and Deprovision
// includes an ACL SAVE, an fsync'd file rewrite). It reports the mean of
// each call besides ns/op for all three.
func BenchmarkProvisionVerifyDeprovision(b *testing.B) {
	e := newEnv(b)
	ctx := ctxFor(b, 10*time.Minute)
	var prov, ver, deprov time.Duration
	i := 0
	for b.Loop() {
		id := events.MustTenantID(fmt.Sprintf("bench-%d", i))
		i++
		t0 := time.Now()
		resp, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: id, Generation: 1, Password: password(b)})
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		v, err := e.store.Verify(ctx, agent.VerifyRequest{Tenant: id, Generation: 1, Credential: resp.Credential})
		if err != nil || !v.Passed() {
			b.Fatalf("Verify: %v %+v", err, v.Checks)
		}
		t2 := time.Now()
		if _, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: id, Generation: 1}); err != nil {
			b.Fatal(err)
		}
		prov, ver, deprov = prov+t1.Sub(t0), ver+t2.Sub(t1), deprov+time.Since(t2)
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / float64(i) }
	b.ReportMetric(ms(prov), "ms/provision")
	b.ReportMetric(ms(ver), "ms/verify")
	b.ReportMetric(ms(deprov), "ms/deprovision")
}
