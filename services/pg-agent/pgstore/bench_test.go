package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// BenchmarkProvisionVerifyDeprovision measures one tenant's whole life on a
// real PostgreSQL (fsync off, as the test kit runs it), with the share of
// each call reported as ms/provision, ms/verify and ms/deprovision.
func BenchmarkProvisionVerifyDeprovision(b *testing.B) {
	ts := newTestServer(b, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// Create the system record and the canary outside the measurement.
	if err := ts.store.prepare(ctx); err != nil {
		b.Fatal(err)
	}
	var prov, ver, deprov time.Duration
	run := make([]byte, 3)
	_, _ = rand.Read(run)
	for i := 0; b.Loop(); i++ {
		tenant := events.MustTenantID("bench-" + hex.EncodeToString(run) + "-" + strconv.Itoa(i))
		pw := newPassword(b)

		t0 := time.Now()
		resp, err := ts.store.Provision(ctx, agent.ProvisionRequest{Tenant: tenant, Generation: 1, Password: pw})
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		vr, err := ts.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: resp.Credential})
		if err != nil || !vr.Passed() {
			b.Fatalf("verify: %+v %v", vr.Checks, err)
		}
		t2 := time.Now()
		if _, err := ts.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1}); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		prov += t1.Sub(t0)
		ver += t2.Sub(t1)
		deprov += t3.Sub(t2)
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(ms(prov), "ms/provision")
	b.ReportMetric(ms(ver), "ms/verify")
	b.ReportMetric(ms(deprov), "ms/deprovision")
}
