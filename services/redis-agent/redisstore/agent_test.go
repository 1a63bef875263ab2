package redisstore

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/testkit"
	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// TestAgentEndToEnd serves the store behind the real agent runtime on a
// real NATS server: provision (with Verify) and deprovision arrive as
// commands, and neither the tenant's password, nor its hash, nor the admin
// password appears in any message on the server or any line the agent logs.
func TestAgentEndToEnd(t *testing.T) {
	e := newEnv(t)
	n := testkit.StartNATS(t)
	a := storetest.RunAgent(t, n, e.store)
	ctx := ctxFor(t, time.Minute)

	res, cred := a.Provision(ctx, t, acme, 1)
	if keys := slices.Sorted(maps.Keys(cred)); !slices.Equal(keys, []string{"addr", "key_prefix", "password", "username"}) {
		t.Errorf("credential keys = %v, want DESIGN.md §6's addr, key_prefix, password, username", keys)
	}
	pw, _ := cred["password"].(string)
	if len(pw) != 43 {
		t.Fatalf("credential password has %d characters, want a 43-character generated secret", len(pw))
	}
	if res.Verification == nil || !res.Verification.Passed || len(agent.MissingChecks(res.Verification.Checks)) > 0 {
		t.Errorf("verification = %+v", res.Verification)
	}
	if res.Resources["user"] != "tenant_acme" || len(res.Warnings) > 0 {
		t.Errorf("resources %v, warnings %v", res.Resources, res.Warnings)
	}
	tc := newClient(t, cred["addr"].(string), cred["username"].(string), pw)
	if err := tc.Set(ctx, "tenant:acme:hello", "world", 0).Err(); err != nil {
		t.Fatalf("tenant with the sealed credential: %v", err)
	}

	// A foreign user with another tenant's name: provision_failed, conflict.
	foreign := events.MustTenantID("foreign-co")
	if err := e.createForeign(ctx, foreign); err != nil {
		t.Fatal(err)
	}
	after := a.Cursor(ctx, t)
	a.Send(ctx, t, a.NewCommand(foreign, 1, events.ActionProvision))
	r := a.Await(ctx, t, after, storetest.For(foreign, 1))
	if r.Outcome != events.OutcomeProvisionFailed || r.Reason != events.ReasonConflict {
		t.Errorf("provision over a foreign user: %s (%s): %s", r.Outcome, r.Reason, r.Error)
	}
	a.Deprovision(ctx, t, foreign, 1)
	if err := e.foreignIntact(ctx, foreign); err != nil {
		t.Error(err)
	}

	a.Deprovision(ctx, t, acme, 1)
	if ok, err := e.exists(ctx, acme); err != nil || ok {
		t.Errorf("tenant left after deprovision (%v, %v)", ok, err)
	}
	a.AssertNoSecret(t, pw, passwordHash(secret.String(pw)), e.store.cfg.AdminPassword.Reveal())
}
