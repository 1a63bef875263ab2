package miniostore

import (
	"testing"

	"github.com/tenantprov/tenantprov/testkit"
	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// TestConformance runs the agent.Store conformance suite against a fresh
// MinIO per subtest with the sequence the agent runs (Optimized).
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) *storetest.Harness {
		return newEnv(t).harness()
	})
}

// TestLifecycleConformance runs the lifecycle conformance suite (rotation, suspend,
// observe with the breakages of lifecycle_conformance_test.go) against a
// fresh MinIO per subtest.
func TestLifecycleConformance(t *testing.T) {
	storetest.RunLifecycle(t, func(t *testing.T) *storetest.Harness {
		e := newEnv(t)
		h := e.harness()
		h.Breakages = e.breakages()
		return h
	})
}

// TestConformanceSequential runs the suite with the Sequential baseline,
// so that the benchmark compares two correct sequences. The subtests share
// one MinIO (each uses its own tenants); the concurrent one serialises on
// Argon2id (about a second per tenant), so the test is skipped with -short.
func TestConformanceSequential(t *testing.T) {
	if testing.Short() {
		t.Skip("the Sequential baseline takes ~20 s under the conformance suite; run without -short")
	}
	m := testkit.StartMinIO(t)
	storetest.Run(t, func(t *testing.T) *storetest.Harness {
		return envOn(t, m, Config{}, WithSequence(Sequential)).harness()
	})
}
