package miniostore

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/minio/madmin-go/v3"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// TestConcurrentVerifiesShareFreshReads: Verifies running at once share
// the policy, attachment and key listings (fewer reads than Verifies), and
// a grant made while other Verifies keep the rounds busy is still seen by
// the next Verify — sharing never hands out a read older than the caller.
func TestConcurrentVerifiesShareFreshReads(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	const n = 8
	tenants := make([]events.TenantID, n)
	creds := make([]agent.Credential, n)
	for i := range n {
		tenants[i] = events.MustTenantID(fmt.Sprintf("share-%d", i))
		creds[i] = e.provision(t, tenants[i], 1).Credential
	}
	verify := func(ctx context.Context, i int) (agent.VerifyResponse, error) {
		return e.store.Verify(ctx, agent.VerifyRequest{Tenant: tenants[i], Generation: 1, Credential: creds[i]})
	}

	e.calls.reset()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := verify(ctx, i)
			if err != nil || !v.Passed() {
				t.Errorf("verify %s: %v %+v", tenants[i], err, v.Checks)
			}
		}()
	}
	wg.Wait()
	e.calls.mu.Lock()
	grants, keys := e.calls.count["iam.grant_snapshot"], e.calls.count["iam.list_keys_bulk"]
	e.calls.mu.Unlock()
	t.Logf("%d concurrent Verifies: %d policy snapshots, %d key listings", n, grants, keys)
	if grants == 0 || grants >= n || keys == 0 || keys >= n {
		t.Fatalf("%d concurrent Verifies made %d policy snapshots and %d key listings: want at least one and fewer than %d each", n, grants, keys, n)
	}

	// Keep the rounds busy with Verifies of the other tenants while a
	// grant on every tenant's bucket appears.
	busy, stop := context.WithCancel(ctx)
	for i := 1; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for busy.Err() == nil {
				_, _ = verify(busy, i)
			}
		}()
	}
	const spy = "spy-user"
	if err := e.admin.AddUser(ctx, spy, "spy-secret-12345"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.AttachPolicy(ctx, madmin.PolicyAssociationReq{Policies: []string{"readonly"}, User: spy}); err != nil {
		t.Fatal(err)
	}
	v, err := verify(ctx, 0)
	stop()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range v.Checks {
		if c.Name == CheckNoForeignGrants && c.Passed {
			t.Fatalf("a grant made before the Verify was missed: %s", c.Detail)
		}
	}
}
