package qdrantstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/testkit"
)

// BenchmarkProvisionVerifyDeprovision measures one tenant's whole life on
// Qdrant — Provision, Verify, Deprovision, with the production vector size
// — and reports each call's mean time (provision-ms/op, verify-ms/op,
// deprovision-ms/op) besides the total. The server probe and system
// collections are set up before the timer starts (once per minute in
// production). The sub-benchmark names the Qdrant that ran.
func BenchmarkProvisionVerifyDeprovision(b *testing.B) {
	q := testkit.StartQdrant(b)
	b.Run("qdrant="+q.Kind, func(b *testing.B) {
		e := newEnv(b, q, func(c *Config) { c.VectorSize = DefaultConfig().VectorSize })
		ctx := context.Background()
		if _, _, err := e.store.prepare(ctx); err != nil {
			b.Fatal(err)
		}
		var prov, ver, deprov time.Duration
		for i := 0; b.Loop(); i++ {
			tenant := events.MustTenantID(fmt.Sprintf("bench-%d", i))
			t0 := time.Now()
			r, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: tenant, Generation: 1, SagaID: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			v, err := e.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: r.Credential})
			if err != nil || !v.Passed() {
				b.Fatalf("verify: %v %+v", err, v.Checks)
			}
			t2 := time.Now()
			if _, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1, SagaID: "bench"}); err != nil {
				b.Fatal(err)
			}
			t3 := time.Now()
			prov += t1.Sub(t0)
			ver += t2.Sub(t1)
			deprov += t3.Sub(t2)
		}
		per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
		b.ReportMetric(per(prov), "provision-ms/op")
		b.ReportMetric(per(ver), "verify-ms/op")
		b.ReportMetric(per(deprov), "deprovision-ms/op")
	})
}
