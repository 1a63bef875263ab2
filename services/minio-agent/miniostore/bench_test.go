package miniostore

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/testkit"
)

// BenchmarkProvisionVerifyDeprovision measures one tenant's whole life
// (Provision, Verify, Deprovision) against one real MinIO with each call
// sequence, in the same run:
//
//   - sequential: the baseline — one call after another, madmin's AddUser
//     and AttachPolicy (Argon2id-sealed);
//   - concurrent-only: baseline calls, independent ones concurrent;
//   - fast-iam-only: one call after another, PBKDF2-sealed AddUser and the
//     unencrypted policy mapping (iam.go);
//   - optimized: both — what the agent runs.
//
// Besides ns/op it reports provision-ms/op, verify-ms/op and
// deprovision-ms/op (wall time per phase) and <call>-ms/op for every MinIO
// call (summed time; concurrent calls overlap, so these add up to more than
// the wall time). Run with -benchtime=10x or more: one sequential
// iteration takes about a second.
func BenchmarkProvisionVerifyDeprovision(b *testing.B) {
	m := testkit.StartMinIO(b)
	variants := []struct {
		name                string
		concurrent, fastIAM bool
	}{
		{"sequential", false, false},
		{"concurrent-only", true, false},
		{"fast-iam-only", false, true},
		{"optimized", true, true},
	}
	for vi, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			e := envOn(b, m, Config{})
			e.store.concurrent, e.store.fastIAM = v.concurrent, v.fastIAM
			ctx := ctxT(b)
			if err := e.store.ensureSystem(ctx); err != nil {
				b.Fatal(err)
			}
			e.calls.reset()
			var prov, ver, dep time.Duration
			n := 0
			for b.Loop() {
				tenant := events.MustTenantID(fmt.Sprintf("bench-%d-%d", vi, n))
				n++
				pw := mustGenerate(b)
				t0 := time.Now()
				resp, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: tenant, Generation: 1, Password: pw})
				if err != nil {
					b.Fatalf("Provision: %v", err)
				}
				t1 := time.Now()
				vr, err := e.store.Verify(ctx, agent.VerifyRequest{Tenant: tenant, Generation: 1, Credential: resp.Credential})
				if err != nil || !vr.Passed() {
					b.Fatalf("Verify: %v %+v", err, vr.Checks)
				}
				t2 := time.Now()
				if _, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: 1}); err != nil {
					b.Fatalf("Deprovision: %v", err)
				}
				prov, ver, dep = prov+t1.Sub(t0), ver+t2.Sub(t1), dep+time.Since(t2)
			}
			per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(n) }
			b.ReportMetric(per(prov), "provision-ms/op")
			b.ReportMetric(per(ver), "verify-ms/op")
			b.ReportMetric(per(dep), "deprovision-ms/op")
			e.calls.mu.Lock()
			names := make([]string, 0, len(e.calls.total))
			for name := range e.calls.total {
				names = append(names, name)
			}
			sort.Strings(names)
			for _, name := range names {
				b.ReportMetric(per(e.calls.total[name]), name+"-ms/op")
			}
			e.calls.mu.Unlock()
		})
	}
}
