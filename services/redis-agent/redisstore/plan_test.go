package redisstore

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// snapshot is everything a dry run must not change: the ACL users and
// every key with its value.
func (e *env) snapshot(t *testing.T, ctx context.Context) []string {
	t.Helper()
	users, err := e.admin.Do(ctx, "ACL", "LIST").StringSlice()
	if err != nil {
		t.Fatal(err)
	}
	out := slices.Clone(users)
	keys, err := e.admin.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v, err := e.admin.Dump(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, k+"="+v)
	}
	return out
}

func TestPlanDryRunChangesNothing(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, time.Minute)
	e.provision(t, ctx, "acme", 1)
	if err := e.admin.Do(ctx, "ACL", "SETUSER", "tenant_squat", "on", ">not-ours", "~*", "+get").Err(); err != nil {
		t.Fatal(err)
	}
	plan := &events.Plan{Name: "small", Redis: &events.RedisPlan{DenyCategories: []string{"@hash", "@nosuchcategory"}, DenyCommands: []string{"get", "nosuchcommand"}, MaxMemoryBytes: 1 << 20}}
	before := e.snapshot(t, ctx)
	for _, tenant := range []events.TenantID{"acme", "fresh", "squat"} {
		dr, err := e.store.DryRun(ctx, agent.PlanRequest{Tenant: tenant, Generation: 2, Plan: plan})
		if err != nil {
			t.Fatalf("DryRun(%s): %v", tenant, err)
		}
		text := fmt.Sprint(dr.Operations)
		if !strings.Contains(text, "ACL SETUSER tenant_"+string(tenant)+" reset on #<redacted>") || !strings.Contains(text, "-@hash") {
			t.Errorf("DryRun(%s) operations = %s", tenant, text)
		}
		var kinds []string
		for _, c := range dr.Conflicts {
			kinds = append(kinds, c.Kind+":"+c.Resource)
		}
		want := []string{"unenforceable:max_memory_bytes", "unenforceable:@nosuchcategory", "unenforceable:nosuchcommand"}
		if tenant == "squat" {
			want = append([]string{"name_taken:redis ACL user tenant_squat"}, want...)
		}
		if !slices.Equal(kinds, want) {
			t.Errorf("DryRun(%s) conflicts = %v, want %v", tenant, kinds, want)
		}
	}
	if after := e.snapshot(t, ctx); !reflect.DeepEqual(before, after) {
		t.Fatalf("the dry run changed the server:\nbefore %q\nafter  %q", before, after)
	}
}

func TestPlanApplyEnforcedAndChanged(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 2*time.Minute)
	resp := e.provision(t, ctx, "acme", 1)
	tenant := tenantClient(t, resp.Credential)
	if err := tenant.HSet(ctx, "tenant:acme:h", "f", "v").Err(); err != nil {
		t.Fatalf("HSET before any plan: %v", err)
	}

	small := &events.Plan{Name: "small", Redis: &events.RedisPlan{DenyCategories: []string{"@hash"}}}
	got, err := e.store.ApplyPlan(ctx, agent.PlanRequest{Tenant: "acme", Generation: 1, Plan: small})
	if err != nil {
		t.Fatalf("ApplyPlan(small): %v", err)
	}
	if !slices.Equal(got.Limits.Redis.DenyCategories, []string{"@hash"}) {
		t.Fatalf("read back %+v", got.Limits.Redis)
	}
	if err := tenant.HSet(ctx, "tenant:acme:h", "f", "w").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
		t.Fatalf("HSET under a plan denying @hash (open session): %v, want NOPERM", err)
	}
	if err := tenant.Set(ctx, "tenant:acme:k", "v", 0).Err(); err != nil {
		t.Fatalf("SET under the plan: %v", err)
	}
	vresp, err := e.store.Verify(ctx, agent.VerifyRequest{Tenant: "acme", Generation: 1, Credential: resp.Credential})
	if err != nil || !vresp.Passed() {
		t.Fatalf("Verify under the plan: %+v, %v", vresp.Checks, err)
	}
	obs, err := e.store.Observe(ctx, agent.ObserveRequest{Tenant: "acme", Generation: 1, CredentialVersion: 1, Credential: resp.Credential})
	if err != nil || len(obs.Drift) != 0 {
		t.Fatalf("Observe under the plan: %+v, %v", obs.Drift, err)
	}

	other := &events.Plan{Name: "other", Redis: &events.RedisPlan{DenyCommands: []string{"append"}}}
	if _, err := e.store.ApplyPlan(ctx, agent.PlanRequest{Tenant: "acme", Generation: 1, Plan: other}); err != nil {
		t.Fatalf("ApplyPlan(other): %v", err)
	}
	if err := tenant.HSet(ctx, "tenant:acme:h", "f", "w").Err(); err != nil {
		t.Fatalf("HSET after changing to a plan without @hash: %v", err)
	}
	if err := tenant.Append(ctx, "tenant:acme:k", "x").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
		t.Fatalf("APPEND under a plan denying it: %v, want NOPERM", err)
	}
	if err := tenant.Get(ctx, "tenantprov:canary:x").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
		t.Fatalf("the canary under the plan: %v, want NOPERM", err)
	}

	_, err = e.store.ApplyPlan(ctx, agent.PlanRequest{Tenant: "acme", Generation: 1, Plan: &events.Plan{Name: "big", Redis: &events.RedisPlan{MaxConnections: 5}}})
	if permanent, reason := agent.Classify(err); !permanent || reason != events.ReasonUnsupported {
		t.Fatalf("ApplyPlan(max_connections) = %v, want permanent unsupported", err)
	}
	_, err = e.store.ApplyPlan(ctx, agent.PlanRequest{Tenant: "acme", Generation: 1, Plan: &events.Plan{Name: "typo", Redis: &events.RedisPlan{DenyCommands: []string{"apend"}}}})
	if permanent, reason := agent.Classify(err); !permanent || reason != events.ReasonUnsupported {
		t.Fatalf("ApplyPlan(unknown command) = %v, want permanent unsupported", err)
	}
	if err := tenant.Append(ctx, "tenant:acme:k", "x").Err(); err == nil {
		t.Fatal("the refused plan changed the user")
	}
}
