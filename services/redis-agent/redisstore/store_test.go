package redisstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

var (
	acme  = events.MustTenantID("acme")
	other = events.MustTenantID("other-co")
)

// requirePassed fails unless every required check ran and passed.
func requirePassed(t testing.TB, resp agent.VerifyResponse) {
	t.Helper()
	if missing := agent.MissingChecks(resp.Checks); len(missing) > 0 {
		t.Errorf("Verify did not report %v", missing)
	}
	for _, c := range resp.Checks {
		if !c.Passed {
			t.Errorf("check %s failed: %s", c.Name, c.Detail)
		}
	}
	if !resp.Passed() {
		t.FailNow()
	}
}

func TestLifecycle(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 30*time.Second)

	resp := e.provision(t, ctx, acme, 1)
	if len(resp.Warnings) > 0 {
		t.Errorf("warnings with an aclfile: %v", resp.Warnings)
	}
	wantRes := map[string]string{"user": "tenant_acme", "key_prefix": "tenant:acme:", "channel_prefix": "tenant:acme:"}
	if fmt.Sprint(resp.Resources) != fmt.Sprint(wantRes) {
		t.Errorf("Resources = %v, want %v", resp.Resources, wantRes)
	}
	cred := resp.Credential
	if cred.String(CredAddr) != e.addr || cred.String(CredUsername) != "tenant_acme" ||
		cred.String(CredKeyPrefix) != "tenant:acme:" || cred.Secret(CredPassword).IsZero() || len(cred) != 4 {
		t.Errorf("Credential = %#v", cred)
	}

	// The rule as the server holds it, the password only as a hash.
	line, err := e.aclLine(ctx, "tenant_acme")
	if err != nil {
		t.Fatal(err)
	}
	pw := cred.Secret(CredPassword)
	for _, want := range []string{"#" + passwordHash(pw), "~tenant:acme:*", "resetchannels &tenant:acme:*", "-@dangerous", "-scan", "-select", "-client|tracking", "-pubsub"} {
		if !strings.Contains(line, want) {
			t.Errorf("ACL LIST line lacks %q: %s", want, line)
		}
	}
	if strings.Contains(line, pw.Reveal()) {
		t.Error("ACL LIST shows the plaintext password")
	}
	// Persisted: the aclfile has the user, and the canary exists.
	if b, err := os.ReadFile(e.redis.ACLFile); err != nil || !strings.Contains(string(b), "user tenant_acme ") {
		t.Errorf("aclfile lacks tenant_acme after provision (err %v)", err)
	}
	if v, err := e.admin.Get(ctx, CanaryKey).Result(); err != nil || v == "" {
		t.Errorf("canary %s: %q, %v", CanaryKey, v, err)
	}
	rec, err := e.admin.HGet(ctx, ManagedUsersKey, "tenant_acme").Result()
	if err != nil || !strings.Contains(rec, `"tenant":"acme"`) || !strings.Contains(rec, `"generation":1`) {
		t.Errorf("managed record = %q, %v", rec, err)
	}

	v, err := e.store.Verify(ctx, agent.VerifyRequest{Tenant: acme, Generation: 1, Credential: cred})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	requirePassed(t, v)
	if n, _ := e.countKeys(ctx, "tenant:acme:"); n != 0 {
		t.Errorf("Verify left %d keys behind", n)
	}

	// Re-provision: same user, new password; the old password and the
	// sessions opened with it stop working.
	old := tenantClient(t, cred)
	if err := old.Set(ctx, "tenant:acme:data", "1", 0).Err(); err != nil {
		t.Fatalf("tenant SET: %v", err)
	}
	resp2 := e.provision(t, ctx, acme, 1)
	if resp2.Credential.Secret(CredPassword) == pw {
		t.Fatal("re-provision kept the password")
	}
	if err := old.Get(ctx, "tenant:acme:data").Err(); err == nil {
		t.Error("a session of the old password survived re-provision")
	}
	if err := tenantClient(t, cred).Ping(ctx).Err(); !redis.IsAuthError(err) {
		t.Errorf("old password after re-provision: err = %v, want WRONGPASS", err)
	}
	fresh := tenantClient(t, resp2.Credential)
	if got, err := fresh.Get(ctx, "tenant:acme:data").Result(); err != nil || got != "1" {
		t.Errorf("data after re-provision = %q, %v; re-provision must keep the tenant's keys", got, err)
	}
	if users, _ := e.admin.Do(ctx, "ACL", "USERS").StringSlice(); strings.Count(strings.Join(users, " "), "tenant_acme") != 1 {
		t.Errorf("ACL USERS = %v", users)
	}

	// Deprovision, twice.
	for i := range 2 {
		d := e.deprovision(t, ctx, acme, 1)
		if len(d.Skipped)+len(d.Warnings) > 0 {
			t.Errorf("deprovision #%d: skipped %v, warnings %v", i+1, d.Skipped, d.Warnings)
		}
	}
	if ok, _ := e.exists(ctx, acme); ok {
		t.Error("tenant still exists after deprovision")
	}
	if err := fresh.Ping(ctx).Err(); err == nil {
		t.Error("session survived deprovision")
	}
	if b, _ := os.ReadFile(e.redis.ACLFile); strings.Contains(string(b), "tenant_acme") {
		t.Error("aclfile still has tenant_acme after deprovision")
	}
	if v, err := e.admin.Get(ctx, CanaryKey).Result(); err != nil || v == "" {
		t.Errorf("deprovision touched the canary: %q, %v", v, err)
	}

	// Never provisioned.
	e.deprovision(t, ctx, events.MustTenantID("never-seen"), 1)
}

func TestACLSurvivesRestart(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 30*time.Second)
	cred := e.provision(t, ctx, acme, 1).Credential
	e.redis.Stop(t)
	e.redis.Start(t)
	if err := tenantClient(t, cred).Set(ctx, "tenant:acme:x", "1", 0).Err(); err != nil {
		t.Fatalf("tenant after restart: %v", err)
	}
	v, err := e.store.Verify(ctx, agent.VerifyRequest{Tenant: acme, Generation: 1, Credential: cred})
	if err != nil {
		t.Fatal(err)
	}
	requirePassed(t, v)
}

// TestConfinement checks the rule itself, key by key and channel by channel,
// with two tenants side by side.
func TestConfinement(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 30*time.Second)
	a := tenantClient(t, e.provision(t, ctx, acme, 1).Credential)
	bCred := e.provision(t, ctx, other, 1).Credential
	b := tenantClient(t, bCred)
	if err := b.Set(ctx, "tenant:other-co:secret", "s", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.admin.Set(ctx, "unprefixed", "u", 0).Err(); err != nil {
		t.Fatal(err)
	}

	allowed := [][]any{
		{"SET", "tenant:acme:k", "v"}, {"GET", "tenant:acme:k"}, {"EXPIRE", "tenant:acme:k", "100"},
		{"RENAME", "tenant:acme:k", "tenant:acme:k2"}, {"UNLINK", "tenant:acme:k2"},
		{"PUBLISH", "tenant:acme:chan", "m"}, {"SPUBLISH", "tenant:acme:chan", "m"},
		{"MEMORY", "USAGE", "tenant:acme:k"}, {"CLIENT", "SETNAME", "app"}, {"CLIENT", "ID"},
	}
	for _, cmd := range allowed {
		if err := a.Do(ctx, cmd...).Err(); err != nil && !errors.Is(err, redis.Nil) {
			t.Errorf("%v: %v, want allowed", cmd, err)
		}
	}
	denied := [][]any{
		{"GET", "tenant:other-co:secret"}, {"SET", "tenant:other-co:secret", "x"}, {"DEL", "tenant:other-co:secret"},
		{"GET", "unprefixed"}, {"GET", CanaryKey}, {"HGETALL", ManagedUsersKey},
		{"RENAME", "tenant:acme:k", "tenant:other-co:x"}, {"GET", "tenant:acme"}, {"GET", "tenant:acmex:k"},
		{"PUBLISH", "tenant:other-co:chan", "m"}, {"SPUBLISH", "tenant:other-co:chan", "m"}, {"PUBLISH", "news", "m"},
	}
	for _, cmd := range denied {
		if err := a.Do(ctx, cmd...).Err(); !redis.IsPermissionError(err) {
			t.Errorf("%v: err = %v, want NOPERM", cmd, err)
		}
	}
	// Scripts (denied by default): TestScripting.

	// Subscriptions: own channel and the literal own pattern only.
	for _, tc := range []struct {
		name  string
		sub   func() *redis.PubSub
		allow bool
	}{
		{"SUBSCRIBE own", func() *redis.PubSub { return a.Subscribe(ctx, "tenant:acme:chan") }, true},
		{"PSUBSCRIBE own prefix", func() *redis.PubSub { return a.PSubscribe(ctx, "tenant:acme:*") }, true},
		{"SUBSCRIBE other tenant", func() *redis.PubSub { return a.Subscribe(ctx, "tenant:other-co:chan") }, false},
		{"PSUBSCRIBE *", func() *redis.PubSub { return a.PSubscribe(ctx, "*") }, false},
		{"PSUBSCRIBE tenant:*", func() *redis.PubSub { return a.PSubscribe(ctx, "tenant:*") }, false},
		{"SSUBSCRIBE other tenant", func() *redis.PubSub { return a.SSubscribe(ctx, "tenant:other-co:chan") }, false},
	} {
		ps := tc.sub()
		_, err := ps.Receive(ctx)
		ps.Close()
		if tc.allow && err != nil {
			t.Errorf("%s: %v, want allowed", tc.name, err)
		}
		if !tc.allow && (err == nil || !strings.Contains(err.Error(), "NOPERM")) {
			t.Errorf("%s: err = %v, want NOPERM", tc.name, err)
		}
	}
}

// TestServerWideCommandsDenied runs, for real, every command CommandRules
// denies on purpose: each must fail with NOPERM and change nothing.
func TestServerWideCommandsDenied(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 30*time.Second)
	a := tenantClient(t, e.provision(t, ctx, acme, 1).Credential)
	if err := a.Set(ctx, "tenant:acme:k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range [][]any{
		// @dangerous / @admin (DESIGN.md §5 names KEYS, FLUSHALL, CONFIG).
		{"KEYS", "*"}, {"FLUSHALL"}, {"FLUSHDB"}, {"CONFIG", "GET", "*"}, {"CONFIG", "SET", "maxmemory", "1"},
		{"ACL", "LIST"}, {"ACL", "SETUSER", "evil", "on", ">x", "~*", "+@all"}, {"ACL", "WHOAMI"}, {"ACL", "LOG"},
		{"INFO"}, {"SLOWLOG", "GET"}, {"LATENCY", "LATEST"}, {"CLIENT", "LIST"},
		{"CLIENT", "KILL", "USER", "tpadmin"}, {"CLIENT", "PAUSE", "1"}, {"SWAPDB", "0", "1"}, {"SAVE"}, {"BGSAVE"},
		{"LASTSAVE"}, {"SORT", "tenant:acme:k"}, {"MIGRATE", "127.0.0.1", "1", "tenant:acme:k", "0", "1"},
		{"RESTORE", "tenant:acme:r", "0", "x"}, {"REPLICAOF", "127.0.0.1", "1"}, {"MODULE", "LIST"}, {"ROLE"},
		{"SHUTDOWN", "NOSAVE"},
		// Denied on top of the categories (see CommandRules).
		{"SELECT", "1"}, {"MOVE", "tenant:acme:k", "1"}, {"COPY", "tenant:acme:k", "tenant:acme:c", "DB", "1"},
		{"SCAN", "0"}, {"SCAN", "0", "MATCH", "tenant:acme:*"}, {"RANDOMKEY"}, {"DBSIZE"},
		{"PUBSUB", "CHANNELS"}, {"PUBSUB", "NUMSUB", "x"}, {"PUBSUB", "SHARDCHANNELS"},
		{"CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "tenant:other-co:"},
		{"FUNCTION", "LIST"}, {"FUNCTION", "FLUSH"}, {"FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('f', function() return 1 end)"},
		{"FCALL", "f", "0"}, {"SCRIPT", "FLUSH"}, {"SCRIPT", "KILL"},
		{"MEMORY", "STATS"}, {"MEMORY", "DOCTOR"}, {"MEMORY", "PURGE"}, {"MEMORY", "MALLOC-STATS"},
		{"CLUSTER", "GETKEYSINSLOT", "0", "10"}, {"CLUSTER", "COUNTKEYSINSLOT", "0"},
	} {
		if err := a.Do(ctx, cmd...).Err(); !redis.IsPermissionError(err) {
			t.Errorf("%v: err = %v, want NOPERM", cmd, err)
		}
	}
	// DEBUG is refused before the ACL is consulted unless the server enables
	// it (enable-debug-command); either refusal will do.
	if err := a.Do(ctx, "DEBUG", "SLEEP", "0").Err(); err == nil {
		t.Error("DEBUG SLEEP 0 allowed")
	}
	if err := a.Ping(ctx).Err(); err != nil {
		t.Fatalf("server after the probes: %v", err)
	}
	if v, err := a.Get(ctx, "tenant:acme:k").Result(); err != nil || v != "v" {
		t.Errorf("own key after the probes: %q, %v", v, err)
	}
	if v, err := e.admin.Get(ctx, CanaryKey).Result(); err != nil || v == "" {
		t.Errorf("canary after the probes: %q, %v", v, err)
	}
}

// TestVerifyCatchesWeakRule loosens a provisioned user behind the agent's
// back: Verify must report the failures, and must not execute what it
// probes (the canary survives a FLUSHALL the user is now allowed).
func TestVerifyCatchesWeakRule(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 30*time.Second)
	resp := e.provision(t, ctx, acme, 1)
	if err := e.admin.Do(ctx, "ACL", "SETUSER", "tenant_acme", "~*", "&*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	v, err := e.store.Verify(ctx, agent.VerifyRequest{Tenant: acme, Generation: 1, Credential: resp.Credential})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	got := map[string]events.Check{}
	for _, c := range v.Checks {
		got[c.Name] = c
	}
	if !got[agent.CheckOwnAccess].Passed || !got[agent.CheckWrongPasswordRefused].Passed {
		t.Errorf("own access / wrong password should still pass: %+v", v.Checks)
	}
	for _, name := range []string{agent.CheckCanaryDenied, agent.CheckAdminDenied} {
		if got[name].Passed {
			t.Errorf("%s passed with ~* +@all: %s", name, got[name].Detail)
		}
	}
	if !strings.Contains(got[agent.CheckAdminDenied].Detail, "FLUSHALL allowed") {
		t.Errorf("admin_denied detail = %q", got[agent.CheckAdminDenied].Detail)
	}
	if v.Passed() {
		t.Error("Verify passed")
	}
	if n, err := e.admin.Exists(ctx, CanaryKey).Result(); err != nil || n != 1 {
		t.Fatalf("canary gone after Verify (%d, %v): a probe was executed", n, err)
	}

	// A wrong credential in the request is an invalid command, not a check.
	bad := agent.Credential{CredUsername: "tenant_other-co", CredPassword: secret.String("x")}
	if _, err := e.store.Verify(ctx, agent.VerifyRequest{Tenant: acme, Credential: bad}); err == nil {
		t.Error("Verify accepted another tenant's user")
	} else if perm, reason := agent.Classify(err); !perm || reason != events.ReasonInvalid {
		t.Errorf("Verify with another tenant's user: %v (permanent %v, %s)", err, perm, reason)
	}
}

// TestVerifyCatchesOpenDefaultUser: a server whose default user needs no
// password gives every unauthenticated connection its rights.
func TestVerifyCatchesOpenDefaultUser(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 30*time.Second)
	resp := e.provision(t, ctx, acme, 1)
	if err := e.admin.Do(ctx, "ACL", "SETUSER", "default", "on", "nopass", "~*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	v, err := e.store.Verify(ctx, agent.VerifyRequest{Tenant: acme, Generation: 1, Credential: resp.Credential})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range v.Checks {
		if c.Name == agent.CheckWrongPasswordRefused && c.Passed {
			t.Errorf("wrong_password_refused passed with an open default user: %s", c.Detail)
		}
	}
}

func TestDeprovisionDropsConnections(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 30*time.Second)
	cred := e.provision(t, ctx, acme, 1).Credential
	c := tenantClient(t, cred)
	if err := c.Set(ctx, "tenant:acme:k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	ps := c.Subscribe(ctx, "tenant:acme:events")
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	conn := c.Conn() // one pinned, authenticated connection
	defer conn.Close()
	if err := conn.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}

	e.deprovision(t, ctx, acme, 1)

	if err := conn.Get(ctx, "tenant:acme:k").Err(); err == nil || errors.Is(err, redis.Nil) {
		t.Errorf("pinned connection still works after deprovision (err = %v)", err)
	}
	if _, err := ps.ReceiveTimeout(ctx, 2*time.Second); err == nil {
		t.Error("subscription still receives after deprovision")
	}
	list, err := e.admin.ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(list, "user=tenant_acme") {
		t.Errorf("CLIENT LIST still has tenant_acme sessions:\n%s", list)
	}
	if err := tenantClient(t, cred).Ping(ctx).Err(); !redis.IsAuthError(err) {
		t.Errorf("new connection after deprovision: err = %v, want WRONGPASS", err)
	}
}

func TestDeprovisionUnlinksManyKeys(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 30*time.Second)
	e.provision(t, ctx, acme, 1)
	e.provision(t, ctx, other, 1)
	const n = 2500 // more than two SCAN pages of scanCount
	pipe := e.admin.Pipeline()
	for i := range n {
		pipe.Set(ctx, fmt.Sprintf("tenant:acme:k%d", i), i, 0)
	}
	for i := range 10 {
		pipe.Set(ctx, fmt.Sprintf("tenant:other-co:k%d", i), i, 0)
		pipe.Set(ctx, fmt.Sprintf("tenant:acmeish:k%d", i), i, 0) // a prefix of "acme" but not under tenant:acme:
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	e.deprovision(t, ctx, acme, 1)
	for prefix, want := range map[string]int{"tenant:acme:": 0, "tenant:other-co:": 10, "tenant:acmeish:": 10} {
		if got, err := e.countKeys(ctx, prefix); err != nil || got != want {
			t.Errorf("keys under %s after deprovision: %d (%v), want %d", prefix, got, err, want)
		}
	}
}

func TestNoACLFileWarning(t *testing.T) {
	r := startRedisWithoutACLFile(t)
	e := newEnvAt(t, nil, r.addr, r.user, r.password)
	ctx := ctxFor(t, 30*time.Second)
	resp := e.provision(t, ctx, acme, 1)
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "no aclfile") || !strings.Contains(resp.Warnings[0], "tenant_acme") {
		t.Errorf("Warnings = %q, want one naming the missing aclfile", resp.Warnings)
	}
	v, err := e.store.Verify(ctx, agent.VerifyRequest{Tenant: acme, Generation: 1, Credential: resp.Credential})
	if err != nil {
		t.Fatal(err)
	}
	requirePassed(t, v)
	d := e.deprovision(t, ctx, acme, 1)
	if len(d.Warnings) != 0 {
		t.Errorf("deprovision warnings without aclfile: %v (nothing on disk can bring the user back)", d.Warnings)
	}
}

func TestAdminWithoutACLSave(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 30*time.Second)
	// An admin that may do everything but ACL SAVE (as on some managed
	// services): provisioning works and says the user is not persisted.
	if err := e.admin.Do(ctx, "ACL", "SETUSER", "limited", "on", ">limited-pw", "~*", "&*", "+@all", "-acl|save").Err(); err != nil {
		t.Fatal(err)
	}
	limited := newEnvAt(t, e.redis, e.addr, "limited", "limited-pw")
	resp := limited.provision(t, ctx, acme, 1)
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "ACL SAVE is not permitted") {
		t.Errorf("Warnings = %q", resp.Warnings)
	}
	d := limited.deprovision(t, ctx, acme, 1)
	if len(d.Warnings) != 1 {
		t.Errorf("deprovision warnings = %q", d.Warnings)
	}
}

func TestForeignUser(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 30*time.Second)
	if err := e.createForeign(ctx, acme); err != nil {
		t.Fatal(err)
	}
	_, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: acme, Generation: 1, Password: password(t)})
	if !errors.Is(err, agent.ErrConflict) {
		t.Fatalf("Provision over a foreign user: %v, want ErrConflict", err)
	}
	if perm, reason := agent.Classify(err); !perm || reason != events.ReasonConflict {
		t.Errorf("Classify = %v, %s", perm, reason)
	}
	d := e.deprovision(t, ctx, acme, 1)
	if len(d.Skipped) != 1 || !strings.Contains(d.Skipped[0], "tenant_acme") {
		t.Errorf("Skipped = %q", d.Skipped)
	}
	if err := e.foreignIntact(ctx, acme); err != nil {
		t.Error(err)
	}
}

func TestGenerations(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 30*time.Second)
	cred := e.provision(t, ctx, acme, 2).Credential

	// A stale provision must not rotate the newer generation's password.
	_, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: acme, Generation: 1, Password: password(t)})
	if !errors.Is(err, ErrStaleGeneration) {
		t.Fatalf("stale Provision: %v, want ErrStaleGeneration", err)
	}
	if perm, _ := agent.Classify(err); !perm {
		t.Error("stale Provision error is transient")
	}
	// A stale deprovision leaves the newer generation in place.
	d := e.deprovision(t, ctx, acme, 1)
	if len(d.Warnings) != 1 {
		t.Errorf("stale deprovision warnings = %q", d.Warnings)
	}
	if err := tenantClient(t, cred).Ping(ctx).Err(); err != nil {
		t.Fatalf("generation 2 after a stale deprovision: %v", err)
	}
	// After deprovision, provision again (any generation): fresh credential.
	e.deprovision(t, ctx, acme, 2)
	cred3 := e.provision(t, ctx, acme, 3).Credential
	if err := tenantClient(t, cred).Ping(ctx).Err(); !redis.IsAuthError(err) {
		t.Errorf("generation 2 password after re-provision: %v", err)
	}
	if err := tenantClient(t, cred3).Ping(ctx).Err(); err != nil {
		t.Error(err)
	}
}

func TestInvalidRequests(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 10*time.Second)
	for name, req := range map[string]agent.ProvisionRequest{
		"invalid tenant": {Tenant: events.TenantID("Bad*ID"), Password: password(t)},
		"reserved":       {Tenant: events.TenantID("tenantprov-x"), Password: password(t)},
		"no password":    {Tenant: acme},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := e.store.Provision(ctx, req)
			if perm, reason := agent.Classify(err); err == nil || !perm || reason != events.ReasonInvalid {
				t.Errorf("err = %v (permanent %v, reason %s), want permanent invalid", err, perm, reason)
			}
		})
	}
	if _, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: events.TenantID("a:*")}); err == nil {
		t.Error("Deprovision accepted an invalid tenant")
	}
}

// TestErrors: a server that is down gives transient errors that carry no
// secret; Ping reports it.
func TestErrors(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 30*time.Second)
	if err := e.store.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	e.redis.Stop(t)
	pw := password(t)
	_, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: acme, Generation: 1, Password: pw})
	if err == nil {
		t.Fatal("Provision against a stopped server succeeded")
	}
	if perm, _ := agent.Classify(err); perm {
		t.Errorf("connection error classified permanent: %v", err)
	}
	for _, s := range []string{pw.Reveal(), passwordHash(pw)} {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error leaks a secret: %v", err)
		}
	}
	if err := e.store.Ping(ctx); err == nil {
		t.Error("Ping against a stopped server succeeded")
	}
	if _, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: acme}); err == nil {
		t.Error("Deprovision against a stopped server succeeded")
	}
	e.redis.Start(t)

	// A wrong admin password is permanent: retrying cannot fix it.
	bad := newEnvAt(t, e.redis, e.addr, e.redis.AdminUser, "wrong")
	_, err = bad.store.Provision(ctx, agent.ProvisionRequest{Tenant: acme, Generation: 1, Password: pw})
	if perm, reason := agent.Classify(err); err == nil || !perm || reason != events.ReasonStoreError {
		t.Errorf("wrong admin password: %v (permanent %v, %s)", err, perm, reason)
	}
}

func TestStoreErrorRedacts(t *testing.T) {
	pw := secret.String("s3cret-password")
	hash := passwordHash(pw)
	raw := redisError("ERR Error in ACL SETUSER modifier '#" + hash + "': Syntax error")
	err := storeError("acl setuser tenant_acme", raw, hash, pw.Reveal())
	if strings.Contains(err.Error(), hash) {
		t.Errorf("hash not redacted: %v", err)
	}
	if !strings.Contains(err.Error(), secret.Redacted) || !strings.Contains(err.Error(), "acl setuser tenant_acme") {
		t.Errorf("err = %v", err)
	}
	if perm, reason := agent.Classify(err); !perm || reason != events.ReasonStoreError {
		t.Errorf("ACL SETUSER syntax error: permanent %v, %s", perm, reason)
	}
	if errors.Is(err, raw) {
		t.Error("the unredacted error is still in the chain")
	}
	if perm, _ := agent.Classify(storeError("x", redisError("LOADING Redis is loading the dataset in memory"))); perm {
		t.Error("LOADING classified permanent")
	}
	if perm, _ := agent.Classify(storeError("x", context.DeadlineExceeded)); perm {
		t.Error("deadline classified permanent")
	}
}

// redisError is an error reply as go-redis returns it.
type redisError string

func (e redisError) Error() string { return string(e) }
func (e redisError) RedisError()   {}

func TestEscapeGlob(t *testing.T) {
	for in, want := range map[string]string{
		"tenant:acme:": "tenant:acme:",
		"a*b?c[d]e\\f": `a\*b\?c\[d\]e\\f`,
	} {
		if got := escapeGlob(in); got != want {
			t.Errorf("escapeGlob(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestConcurrentTenants provisions, verifies and deprovisions tenants in
// parallel on one server.
func TestConcurrentTenants(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 60*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := events.MustTenantID(fmt.Sprintf("t%02d", i))
			resp, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: id, Generation: 1, Password: password(t)})
			if err != nil {
				errs <- err
				return
			}
			v, err := e.store.Verify(ctx, agent.VerifyRequest{Tenant: id, Generation: 1, Credential: resp.Credential})
			if err != nil || !v.Passed() {
				errs <- fmt.Errorf("verify %s: %v %+v", id, err, v.Checks)
				return
			}
			if _, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: id, Generation: 1}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n, err := e.admin.HLen(ctx, ManagedUsersKey).Result(); err != nil || n != 0 {
		t.Errorf("records left: %d, %v", n, err)
	}
}

// agentACLCommands are the command rules of the least-privilege admin user
// that README.md documents for the agent.
const agentACLCommands = "-@all +ping +acl|setuser +acl|getuser +acl|deluser +acl|list +acl|dryrun +acl|save +client|kill +script|kill +scan +unlink +set +hget +hset +hdel"

// TestLeastPrivilegeAdmin runs the whole life of a tenant as an admin user
// holding only what README.md says the agent needs.
func TestLeastPrivilegeAdmin(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 30*time.Second)
	args := []any{"ACL", "SETUSER", "tpagent", "on", ">agent-password", "~tenant:*", "~tenantprov:*", "resetchannels"}
	for _, r := range strings.Fields(agentACLCommands) {
		args = append(args, r)
	}
	if err := e.admin.Do(ctx, args...).Err(); err != nil {
		t.Fatal(err)
	}
	// testkit's own superuser reaches every key: trusted, as an operator's
	// superuser would be (REDIS_TRUSTED_USERS).
	agentEnv := newEnvAt(t, e.redis, e.addr, "tpagent", "agent-password", func(c *Config) { c.TrustedUsers = []string{e.redis.AdminUser} })
	resp := agentEnv.provision(t, ctx, acme, 1)
	if len(resp.Warnings) > 0 {
		t.Errorf("warnings: %v", resp.Warnings)
	}
	v, err := agentEnv.store.Verify(ctx, agent.VerifyRequest{Tenant: acme, Generation: 1, Credential: resp.Credential})
	if err != nil {
		t.Fatal(err)
	}
	requirePassed(t, v)
	if err := tenantClient(t, resp.Credential).Set(ctx, "tenant:acme:k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	agentEnv.provision(t, ctx, acme, 1) // re-provision: CLIENT KILL USER
	agentEnv.deprovision(t, ctx, acme, 1)
	if ok, err := e.exists(ctx, acme); err != nil || ok {
		t.Errorf("tenant left after deprovision (%v, %v)", ok, err)
	}
	if err := agentEnv.store.Ping(ctx); err != nil {
		t.Error(err)
	}
}
