package redisstore

import (
	"strings"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/testkit"
	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// TestPlanThroughTheAgent sends a provision with a plan, an apply_plan
// and a dry run to the real agent runtime on a real NATS server.
func TestPlanThroughTheAgent(t *testing.T) {
	e := newEnv(t)
	n := testkit.StartNATS(t)
	a := storetest.RunAgent(t, n, e.store)
	ctx := ctxFor(t, 2*time.Minute)
	small := &events.Plan{Name: "small", Redis: &events.RedisPlan{DenyCategories: []string{"@hash"}}, MinIO: &events.MinIOPlan{BucketQuotaBytes: 1 << 20}}

	after := a.Cursor(ctx, t)
	cmd := a.NewCommand("acme", 1, events.ActionProvision)
	cmd.Plan = small
	a.Send(ctx, t, cmd)
	r := a.Await(ctx, t, after, storetest.For("acme", 1, events.OutcomeProvisioned, events.OutcomeProvisionFailed))
	if r.Outcome != events.OutcomeProvisioned || r.Limits == nil || r.Limits.Redis == nil || r.Limits.MinIO != nil {
		t.Fatalf("provision with a plan: %s (%s) %s, limits %+v", r.Outcome, r.Reason, r.Error, r.Limits)
	}
	cred := a.Open(t, r.StoreResult)
	tc := newClient(t, cred["addr"].(string), cred["username"].(string), cred["password"].(string))
	if err := tc.HSet(ctx, "tenant:acme:h", "f", "v").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
		t.Fatalf("HSET under the provisioned plan: %v, want NOPERM", err)
	}

	after = a.Cursor(ctx, t)
	cmd = a.NewCommand("acme", 1, events.ActionApplyPlan)
	cmd.Plan = &events.Plan{Name: "open"}
	a.Send(ctx, t, cmd)
	r = a.Await(ctx, t, after, storetest.For("acme", 1, events.OutcomePlanApplied, events.OutcomeApplyPlanFailed))
	if r.Outcome != events.OutcomePlanApplied || r.Limits == nil || r.Limits.Name != "open" {
		t.Fatalf("apply_plan: %s (%s) %s, limits %+v", r.Outcome, r.Reason, r.Error, r.Limits)
	}
	if err := tc.HSet(ctx, "tenant:acme:h", "f", "v").Err(); err != nil {
		t.Fatalf("HSET after changing to a plan without limits: %v", err)
	}

	after = a.Cursor(ctx, t)
	cmd = a.NewCommand("beta", 1, events.ActionPlan)
	cmd.Plan = &events.Plan{Name: "big", Redis: &events.RedisPlan{MaxConnections: 5}}
	a.Send(ctx, t, cmd)
	r = a.Await(ctx, t, after, storetest.For("beta", 1, events.OutcomePlanned, events.OutcomePlanFailed))
	if r.Outcome != events.OutcomePlanned || r.DryRun == nil || len(r.DryRun.Conflicts) != 1 || r.DryRun.Conflicts[0].Kind != events.ConflictUnenforceable {
		t.Fatalf("plan (dry run): %s (%s) %s, dry run %+v", r.Outcome, r.Reason, r.Error, r.DryRun)
	}
	if ok, err := e.store.userExists(ctx, "tenant_beta"); err != nil || ok {
		t.Fatalf("the dry run created tenant_beta (%v)", err)
	}
	pw := cred["password"].(string)
	for _, m := range a.Published() {
		if strings.Contains(string(m.Data), pw) || strings.Contains(string(m.Data), passwordHash(secret.String(pw))) {
			t.Fatalf("a message on %s carries the tenant's password or its hash", m.Subject)
		}
	}
}
