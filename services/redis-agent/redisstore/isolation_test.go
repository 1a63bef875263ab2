package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

func TestGlobReaches(t *testing.T) {
	const prefix = "tenant:acme:"
	for _, tc := range []struct {
		pattern string
		want    bool
	}{
		{"*", true},
		{"tenant:*", true},
		{"tenant:acme:*", true},
		{"tenant:acme:", true}, // the bare prefix is a name of the tenant's
		{"tenant:acme:x", true},
		{"tenant:ac*", true},
		{"*:acme:*", true},
		{"*acme*", true},
		{"t?nant:*", true},
		{"[a-z]*", true},
		{"[z-a]enant:*", true}, // ranges in either order
		{"[^x]enant:*", true},
		{"tenant\\:acme\\:*", true},
		{"tenant:acme:???", true},
		{"[", true},          // unterminated class: unsure, so reaches
		{"tenant:[ab", true}, // likewise
		{"tenant:acme:[]x", true},
		{"tenant:other-co:*", false},
		{"tenant:acme-x:*", false},
		{"tenant:acmex:*", false},
		{"tenant:acme", false},
		{"tenantprov:*", false},
		{"tenant\\*", false},
		{"[^t]*", false},
		{"?", false},
		{"tenant:acm", false},
		{"foo", false},
		{"", false},
		{"t[a-d]nant:*", false},
		{"tenant:acme\\", false},
	} {
		if got := globReaches(tc.pattern, prefix); got != tc.want {
			t.Errorf("globReaches(%q, %q) = %v, want %v", tc.pattern, prefix, got, tc.want)
		}
	}
}

func TestACLPatterns(t *testing.T) {
	line := "user spy on sanitize-payload #abc ~foo %R~tenant:* %W~bar resetchannels &news -@all +get (~sel:* resetchannels &c* +get) (~x)y &z)"
	keys, channels := aclPatterns(strings.Fields(line)[2:])
	for _, want := range []string{"foo", "tenant:*", "bar", "sel:*", "x)y"} {
		if !contains(keys, want) {
			t.Errorf("keys %q lack %q", keys, want)
		}
	}
	for _, want := range []string{"news", "c*", "z)", "z"} {
		if !contains(channels, want) {
			t.Errorf("channels %q lack %q", channels, want)
		}
	}
	keys, channels = aclPatterns([]string{"on", "allkeys", "allchannels", "%R"})
	if !contains(keys, "*") || !contains(channels, "*") || len(keys) != 2 || keys[1] != "*" {
		t.Errorf("allkeys/allchannels/%%R: keys %q channels %q", keys, channels)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestTenantCannotStallServer is scenario 5 of issue 10 against the real
// server, under the default stance (deny): SCRIPT DEBUG SYNC, an endless
// EVAL and SCRIPT EXISTS of another's script are refused. The stalling
// commands are only queued inside MULTI and discarded, so that a rule that
// wrongly allows them fails the test without freezing the server.
func TestTenantCannotStallServer(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 60*time.Second)
	resp := e.provision(t, ctx, acme, 1)
	a := tenantClient(t, resp.Credential)
	// Someone else's cached script (here loaded by the admin).
	sha, err := e.admin.ScriptLoad(ctx, `return "the other tenant's script"`).Result()
	if err != nil {
		t.Fatal(err)
	}

	conn := a.Conn()
	defer conn.Close()
	if err := conn.Do(ctx, "MULTI").Err(); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range [][]any{
		{"SCRIPT", "DEBUG", "SYNC"}, {"SCRIPT", "DEBUG", "YES"},
		{"EVAL", "while true do end", "0"}, {"EVAL_RO", "while true do end", "0"},
		{"EVALSHA", sha, "0"}, {"EVALSHA_RO", sha, "0"},
		{"SCRIPT", "EXISTS", sha}, {"SCRIPT", "LOAD", "return 1"},
		{"FUNCTION", "LOAD", "#!lua name=spin\nredis.register_function('spin', function() while true do end end)"},
		{"FCALL", "spin", "0"}, {"FUNCTION", "LIST", "WITHCODE"}, {"FUNCTION", "DUMP"}, {"FUNCTION", "FLUSH"},
		{"FUNCTION", "DELETE", "spin"}, {"FUNCTION", "RESTORE", "x"},
	} {
		if err := conn.Do(ctx, cmd...).Err(); !redis.IsPermissionError(err) {
			t.Errorf("%.40v: err = %v, want NOPERM", cmd, err)
		}
	}
	_ = conn.Do(ctx, "DISCARD").Err()

	// SCRIPT EXISTS outside a transaction, as an attacker would run it.
	if got, err := a.Do(ctx, "SCRIPT", "EXISTS", sha).Result(); !redis.IsPermissionError(err) {
		t.Errorf("SCRIPT EXISTS of another's script: %v, %v; want NOPERM", got, err)
	}
	if err := e.admin.Ping(ctx).Err(); err != nil {
		t.Fatalf("server after the probes: %v", err)
	}
	v, err := e.store.Verify(ctx, agent.VerifyRequest{Tenant: acme, Generation: 1, Credential: resp.Credential})
	if err != nil {
		t.Fatal(err)
	}
	requirePassed(t, v)
	if c := checkNamed(v.Checks, CheckScriptingConfined); !c.Passed || !strings.HasPrefix(c.Detail, "stance deny") {
		t.Errorf("%s: %+v", CheckScriptingConfined, c)
	}
}

func checkNamed(checks []events.Check, name string) events.Check {
	for _, c := range checks {
		if c.Name == name {
			return c
		}
	}
	return events.Check{Name: name, Detail: "not reported"}
}

// TestScripting covers the readonly and allow stances: SCRIPT DEBUG, SCRIPT
// EXISTS and FUNCTION stay denied, the allowed scripts run and are confined
// by the tenant's ACL, and Verify passes.
func TestScripting(t *testing.T) {
	for _, stance := range []Scripting{ScriptingReadOnly, ScriptingAllow} {
		t.Run(string(stance), func(t *testing.T) {
			e := newEnvWith(t, func(c *Config) { c.TenantScripting = stance })
			ctx := ctxFor(t, 60*time.Second)
			resp := e.provision(t, ctx, acme, 1)
			a := tenantClient(t, resp.Credential)
			sha, err := e.admin.ScriptLoad(ctx, `return "someone else's script"`).Result()
			if err != nil {
				t.Fatal(err)
			}
			if err := e.admin.Set(ctx, "tenant:other-co:secret", "s", 0).Err(); err != nil {
				t.Fatal(err)
			}
			for _, cmd := range [][]any{
				{"SCRIPT", "DEBUG", "SYNC"}, {"SCRIPT", "EXISTS", sha}, {"SCRIPT", "FLUSH"}, {"SCRIPT", "KILL"},
				{"FUNCTION", "LIST"}, {"FUNCTION", "FLUSH"}, {"FCALL", "f", "0"},
				{"EVAL_RO", "return 1", "1", "tenant:other-co:secret"},
			} {
				if err := a.Do(ctx, cmd...).Err(); !redis.IsPermissionError(err) {
					t.Errorf("%v: err = %v, want NOPERM", cmd, err)
				}
			}
			if n, err := a.Do(ctx, "EVAL_RO", "return redis.call('EXISTS', KEYS[1])", "1", "tenant:acme:k").Int(); err != nil || n != 0 {
				t.Errorf("EVAL_RO on own key: %d, %v", n, err)
			}
			// Inside a script the tenant's ACL applies to every call.
			err = a.Do(ctx, "EVAL_RO", "return redis.call('GET', 'tenant:other-co:secret')", "0").Err()
			if err == nil || !strings.Contains(err.Error(), "can't access") {
				t.Errorf("script reading another tenant's key: err = %v, want refused", err)
			}
			evalErr := a.Do(ctx, "EVAL", "return redis.call('SET', KEYS[1], 'x')", "1", "tenant:acme:lua").Err()
			if stance == ScriptingAllow && evalErr != nil {
				t.Errorf("EVAL under allow: %v", evalErr)
			}
			if stance == ScriptingReadOnly && !redis.IsPermissionError(evalErr) {
				t.Errorf("EVAL under readonly: err = %v, want NOPERM", evalErr)
			}
			v, err := e.store.Verify(ctx, agent.VerifyRequest{Tenant: acme, Generation: 1, Credential: resp.Credential})
			if err != nil {
				t.Fatal(err)
			}
			requirePassed(t, v)
			t.Logf("%s: %s", CheckScriptingConfined, checkNamed(v.Checks, CheckScriptingConfined).Detail)
		})
	}
}

// TestScriptWatchdog lets a tenant (stance allow) run an endless script and
// expects the watchdog to kill it. The test always recovers the server: the
// script's call has a deadline, and a cleanup runs SCRIPT KILL before the
// server is stopped.
func TestScriptWatchdog(t *testing.T) {
	e := newEnvWith(t, func(c *Config) {
		c.TenantScripting = ScriptingAllow
		c.ScriptKillAfter = 200 * time.Millisecond
		c.ScriptWatchdogInterval = 50 * time.Millisecond
	})
	ctx := ctxFor(t, 90*time.Second)
	if err := e.admin.ConfigSet(ctx, "busy-reply-threshold", "100").Err(); err != nil {
		t.Fatal(err)
	}
	resp := e.provision(t, ctx, acme, 1)
	a := tenantClient(t, resp.Credential)
	t.Cleanup(func() {
		// Whatever happened, no script may keep the server busy.
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.admin.Do(c, "SCRIPT", "KILL").Err()
	})

	wctx, stop := context.WithCancel(ctx)
	kills := make(chan ScriptKill, 10)
	watched := make(chan error, 1)
	go func() { watched <- e.store.WatchScripts(wctx, func(k ScriptKill) { kills <- k }) }()
	t.Cleanup(func() {
		stop()
		if err := <-watched; err != nil {
			t.Errorf("WatchScripts: %v", err)
		}
	})

	evalCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	err := a.Do(evalCtx, "EVAL", "while true do end", "0").Err()
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("endless EVAL: err = %v, want it killed by the watchdog", err)
	}
	select {
	case k := <-kills:
		if !k.Killed || k.Err != nil {
			t.Errorf("watchdog report: %+v", k)
		}
	case <-ctx.Done():
		t.Fatal("no watchdog report")
	}
	if err := a.Set(ctx, "tenant:acme:after", "v", 0).Err(); err != nil {
		t.Errorf("server after the kill: %v", err)
	}

	// Under deny the watchdog has nothing to do and returns at once.
	deny := newEnvAt(t, e.redis, e.addr, e.redis.AdminUser, e.redis.AdminPassword)
	if err := deny.store.WatchScripts(ctx, nil); err != nil {
		t.Errorf("WatchScripts under deny: %v", err)
	}
}

// TestVerifyCatchesBrokenIsolation: deliberate breakages made by the admin
// between Provision and Verify, inward (another user reaching the tenant's
// prefix, an open default user) and outward (a widened tenant user); each
// must make Verify fail, naming the check that caught it.
func TestVerifyCatchesBrokenIsolation(t *testing.T) {
	leaky := events.MustTenantID("leaky")
	user := leaky.RedisUser()
	for _, tc := range []struct {
		name     string
		breakage [][]any
		catch    []string // checks that must fail (others may fail too)
	}{
		{"another user ~tenant:*", [][]any{{"ACL", "SETUSER", "spy", "on", ">spy-pw", "~tenant:*", "+get"}},
			[]string{CheckInwardIsolation}},
		{"another user allkeys", [][]any{{"ACL", "SETUSER", "spy", "on", ">spy-pw", "allkeys", "+@read"}},
			[]string{CheckInwardIsolation}},
		{"another user %R~ with a glob", [][]any{{"ACL", "SETUSER", "spy", "off", "%R~t[a-f]nant:lea?y:*", "+get"}},
			[]string{CheckInwardIsolation}},
		{"another user's selector", [][]any{{"ACL", "SETUSER", "spy", "on", ">spy-pw", "~spy:*", "(~tenant:le* +get)"}},
			[]string{CheckInwardIsolation}},
		{"another user &*", [][]any{{"ACL", "SETUSER", "spy", "on", ">spy-pw", "resetchannels", "&*", "+subscribe"}},
			[]string{CheckInwardIsolation}},
		{"another tenant's user widened", [][]any{{"ACL", "SETUSER", other.RedisUser(), "~tenant:*"}},
			[]string{CheckInwardIsolation}},
		{"default user on with ~*", [][]any{{"ACL", "SETUSER", "default", "on", "nopass", "~*", "+@all"}},
			[]string{CheckInwardIsolation, agent.CheckWrongPasswordRefused}},
		{"default user on with other keys", [][]any{{"ACL", "SETUSER", "default", "on", ">d-pw", "~cache:*", "+get"}},
			[]string{CheckInwardIsolation}},
		{"extra password on the tenant user", [][]any{{"ACL", "SETUSER", user, ">x"}},
			[]string{CheckRuleAsProvisioned}},
		{"nopass on the tenant user", [][]any{{"ACL", "SETUSER", user, "nopass"}},
			[]string{CheckRuleAsProvisioned, agent.CheckWrongPasswordRefused}},
		{"+@admin on the tenant user", [][]any{{"ACL", "SETUSER", user, "+@admin"}},
			[]string{CheckRuleAsProvisioned, agent.CheckAdminDenied}},
		{"~* on the tenant user", [][]any{{"ACL", "SETUSER", user, "~*"}},
			[]string{CheckRuleAsProvisioned, agent.CheckCanaryDenied}},
		{"a harmless-looking extra command", [][]any{{"ACL", "SETUSER", user, "+script|debug"}},
			[]string{CheckRuleAsProvisioned, CheckScriptingConfined}},
		{"a selector on the tenant user", [][]any{{"ACL", "SETUSER", user, "(~tenantprov:* +get)"}},
			[]string{CheckRuleAsProvisioned, agent.CheckCanaryDenied}},
		{"an extra channel on the tenant user", [][]any{{"ACL", "SETUSER", user, "&news"}},
			[]string{CheckRuleAsProvisioned}},
		{"another user may MONITOR", [][]any{{"ACL", "SETUSER", "ops", "on", ">ops-pw", "-@all", "+monitor"}},
			[]string{CheckInwardIsolation}},
		{"another user may FLUSHALL", [][]any{{"ACL", "SETUSER", "ops", "on", ">ops-pw", "~ops:*", "+@all"}},
			[]string{CheckInwardIsolation}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			ctx := ctxFor(t, 60*time.Second)
			resp := e.provision(t, ctx, leaky, 1)
			e.provision(t, ctx, other, 1)
			v, err := e.store.Verify(ctx, agent.VerifyRequest{Tenant: leaky, Generation: 1, Credential: resp.Credential})
			if err != nil {
				t.Fatal(err)
			}
			requirePassed(t, v) // intact before the breakage
			for _, cmd := range tc.breakage {
				if err := e.admin.Do(ctx, cmd...).Err(); err != nil {
					t.Fatalf("%v: %v", cmd, err)
				}
			}
			v, err = e.store.Verify(ctx, agent.VerifyRequest{Tenant: leaky, Generation: 1, Credential: resp.Credential})
			if err != nil {
				t.Fatal(err)
			}
			if v.Passed() {
				t.Fatalf("Verify passed after %q: %+v", tc.name, v.Checks)
			}
			for _, name := range tc.catch {
				c := checkNamed(v.Checks, name)
				if c.Passed {
					t.Errorf("%s passed: %s", name, c.Detail)
				} else {
					t.Logf("%s: %s", name, c.Detail)
				}
			}
			pw := resp.Credential.Secret(CredPassword).Reveal()
			for _, c := range v.Checks {
				if strings.Contains(c.Detail, pw) || strings.Contains(c.Detail, passwordHash(resp.Credential.Secret(CredPassword))) {
					t.Errorf("%s detail holds the password or its hash", c.Name)
				}
			}
			// The scratch user of rule_as_provisioned is gone again.
			lines, err := e.admin.Do(ctx, "ACL", "USERS").StringSlice()
			if err != nil {
				t.Fatal(err)
			}
			for _, u := range lines {
				if strings.HasPrefix(u, events.ReservedPrefix) {
					t.Errorf("scratch user %s left", u)
				}
			}
		})
	}

	// Not breakages: users that cannot reach tenant:leaky: pass.
	t.Run("neighbours are not breakages", func(t *testing.T) {
		e := newEnvWith(t, func(c *Config) { c.TrustedUsers = []string{"backup"} })
		ctx := ctxFor(t, 60*time.Second)
		resp := e.provision(t, ctx, leaky, 1)
		e.provision(t, ctx, events.MustTenantID("leaky-two"), 1)
		for _, cmd := range [][]any{
			{"ACL", "SETUSER", "app", "on", ">app-pw", "~cache:*", "~tenant:leaky-two:*", "&tenant:leakyx:*", "%R~tenant:lea", "+@read", "+@write", "-@dangerous", "-scan", "-randomkey", "-pubsub", "-client"},
			{"ACL", "SETUSER", "backup", "on", ">b-pw", "~*", "&*", "+@read"},
			{"ACL", "SETUSER", "default", "on", "nopass", "-@all", "+ping"},
		} {
			if err := e.admin.Do(ctx, cmd...).Err(); err != nil {
				t.Fatalf("%v: %v", cmd, err)
			}
		}
		v, err := e.store.Verify(ctx, agent.VerifyRequest{Tenant: leaky, Generation: 1, Credential: resp.Credential})
		if err != nil {
			t.Fatal(err)
		}
		requirePassed(t, v)
	})
}

// TestDeprovisionRequiresRemoval: the removal check behind Deprovision's
// success reports a user that still exists and keys that are still there.
func TestDeprovisionRequiresRemoval(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 30*time.Second)
	a := tenantClient(t, e.provision(t, ctx, acme, 1).Credential)
	if err := a.Set(ctx, "tenant:acme:k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.store.checkRemoved(ctx, acme); !errors.Is(err, ErrNotRemoved) || !strings.Contains(err.Error(), "still exists") {
		t.Errorf("with the user: %v", err)
	}
	if err := e.admin.Do(ctx, "ACL", "DELUSER", acme.RedisUser()).Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.store.checkRemoved(ctx, acme); !errors.Is(err, ErrNotRemoved) || !strings.Contains(err.Error(), "1 keys left") {
		t.Errorf("with a key: %v", err)
	}
	if perm, _ := agent.Classify(e.store.checkRemoved(ctx, acme)); perm {
		t.Error("ErrNotRemoved is permanent; it must be retried")
	}
	e.deprovision(t, ctx, acme, 1)
	if err := e.store.checkRemoved(ctx, acme); err != nil {
		t.Errorf("after Deprovision: %v", err)
	}
}

// TestScriptWatchdogUnkillable: under allow, a script that writes and then
// loops cannot be killed; the watchdog says so (once) instead of claiming a
// kill. This is why deny is the default. The server stays busy until the
// test's server is stopped (SIGKILL, by testkit's cleanup); the script's
// call has a deadline.
func TestScriptWatchdogUnkillable(t *testing.T) {
	e := newEnvWith(t, func(c *Config) {
		c.TenantScripting = ScriptingAllow
		c.ScriptKillAfter = 100 * time.Millisecond
		c.ScriptWatchdogInterval = 50 * time.Millisecond
	})
	ctx := ctxFor(t, 90*time.Second)
	if err := e.admin.ConfigSet(ctx, "busy-reply-threshold", "100").Err(); err != nil {
		t.Fatal(err)
	}
	a := tenantClient(t, e.provision(t, ctx, acme, 1).Credential)

	wctx, stop := context.WithCancel(ctx)
	kills := make(chan ScriptKill, 10)
	watched := make(chan error, 1)
	go func() { watched <- e.store.WatchScripts(wctx, func(k ScriptKill) { kills <- k }) }()
	defer func() { stop(); <-watched }()

	evalCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	evalDone := make(chan error, 1)
	go func() {
		evalDone <- a.Do(evalCtx, "EVAL", "redis.call('SET', KEYS[1], '1') while true do end", "1", "tenant:acme:x").Err()
	}()
	defer func() { cancel(); <-evalDone }()

	select {
	case k := <-kills:
		if k.Killed || k.Err == nil || !strings.Contains(k.Err.Error(), "UNKILLABLE") {
			t.Errorf("watchdog report: %+v, want UNKILLABLE", k)
		}
	case err := <-evalDone:
		t.Fatalf("the writing script ended: %v", err)
	case <-ctx.Done():
		t.Fatal("no watchdog report")
	}
	// Reported once per busy spell, not every interval.
	select {
	case k := <-kills:
		t.Errorf("second report for the same script: %+v", k)
	case <-time.After(500 * time.Millisecond):
	}
}

func TestCommandShape(t *testing.T) {
	a := strings.Fields("on #h1 ~tenant:a:* resetchannels &tenant:a:* +@all -keys (~x:* &y +get)")
	b := strings.Fields("off nopass ~tenant:b:* resetchannels &* +@all -keys (~z:* +get)")
	c := strings.Fields("on #h1 ~tenant:a:* +@all -keys +get")
	if commandShape(a) != commandShape(b) {
		t.Errorf("same commands, different shapes:\n%q\n%q", commandShape(a), commandShape(b))
	}
	if commandShape(a) == commandShape(c) {
		t.Errorf("a selector's command and a root command share a shape: %q", commandShape(a))
	}
}

// TestRecordEvictedByTenant: a tenant cannot write tenantprov's record, but
// under maxmemory-policy allkeys-lru it can get it evicted by filling memory.
// Provision warns about such a policy; the tenant's user, now without a
// record, must not be reported deprovisioned while it can still log in.
func TestRecordEvictedByTenant(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 120*time.Second)
	if err := e.admin.ConfigSet(ctx, "maxmemory-policy", "allkeys-lru").Err(); err != nil {
		t.Fatal(err)
	}
	resp := e.provision(t, ctx, acme, 1)
	if !strings.Contains(strings.Join(resp.Warnings, "\n"), "maxmemory-policy is allkeys-lru") {
		t.Errorf("no warning about the eviction policy: %q", resp.Warnings)
	}
	used, err := e.admin.Info(ctx, "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	var usedBytes int64
	for _, line := range strings.Split(used, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			fmt.Sscan(v, &usedBytes)
		}
	}
	if err := e.admin.ConfigSet(ctx, "maxmemory", fmt.Sprint(usedBytes+4<<20)).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.admin.ConfigSet(context.Background(), "maxmemory", "0").Err() })

	// The tenant fills memory with its own keys until the record is gone.
	a := tenantClient(t, resp.Credential)
	blob := strings.Repeat("x", 4096)
	evicted := false
	for i := 0; i < 20000 && !evicted; i += 100 {
		pipe := a.Pipeline()
		for j := i; j < i+100; j++ {
			pipe.Set(ctx, fmt.Sprintf("tenant:acme:fill:%d", j), blob, 0)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatalf("tenant fill: %v", err)
		}
		n, err := e.admin.Exists(ctx, ManagedUsersKey).Result()
		if err != nil {
			t.Fatal(err)
		}
		evicted = n == 0
	}
	if !evicted {
		t.Fatal("the record survived 80 MB of tenant writes over maxmemory")
	}

	_, err = e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: acme, Generation: 1})
	if !errors.Is(err, ErrRecordLost) {
		t.Fatalf("Deprovision without the record: %v, want ErrRecordLost", err)
	}
	if perm, _ := agent.Classify(err); perm {
		t.Error("ErrRecordLost is permanent; it must be retried and surfaced")
	}
	if err := a.Ping(ctx).Err(); err != nil {
		t.Errorf("the tenant's session: %v", err)
	}
	if ok, err := e.userExists(ctx, acme.RedisUser()); err != nil || !ok {
		t.Errorf("user deleted without a record (%v, %v)", ok, err)
	}
	_, err = e.store.Provision(ctx, agent.ProvisionRequest{Tenant: acme, Generation: 2, Password: password(t)})
	if !errors.Is(err, agent.ErrConflict) || !strings.Contains(err.Error(), "no record") {
		t.Errorf("Provision over the record-less user: %v", err)
	}

	// The operator decides it is ours and restores the record; deprovision
	// then removes the user and every key.
	if err := e.admin.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.admin.HSet(ctx, ManagedUsersKey, acme.RedisUser(), `{"tenant":"acme","generation":1}`).Err(); err != nil {
		t.Fatal(err)
	}
	e.deprovision(t, ctx, acme, 1)
	if ok, err := e.exists(ctx, acme); err != nil || ok {
		t.Errorf("tenant left after deprovision (%v, %v)", ok, err)
	}
}

// TestGlobReachesAgainstRedis checks globReaches against Redis's own
// matcher: for random patterns, any key under the prefix that ACL DRYRUN
// says a user holding the pattern may read must be predicted by
// globReaches (it may say "reaches" more often — that is its conservative
// side — but never less).
func TestGlobReachesAgainstRedis(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 120*time.Second)
	const prefix = "tenant:ab:"
	alphabet := []byte("tenant:ab**??[]^-\\x")
	suffixes := []string{"", "x", "a", ":", "ab:x", "*", "]", "-"}
	rnd := uint64(1)
	next := func(n int) int { // xorshift: deterministic, no timing
		rnd ^= rnd << 13
		rnd ^= rnd >> 7
		rnd ^= rnd << 17
		return int(rnd % uint64(n))
	}
	checked, reaching := 0, 0
	for round := 0; round < 200; round++ {
		var patterns []string
		for i := 0; i < 25; i++ {
			var b []byte
			if next(2) == 0 {
				b = append(b, prefix[:next(len(prefix)+1)]...)
			}
			for n := next(6); n > 0; n-- {
				b = append(b, alphabet[next(len(alphabet))])
			}
			patterns = append(patterns, string(b))
		}
		pipe := e.admin.Pipeline()
		var dry [][]*redis.Cmd
		for i, p := range patterns {
			u := fmt.Sprintf("glob%d", i)
			pipe.Do(ctx, "ACL", "SETUSER", u, "reset", "on", "nopass", "~"+p, "+get")
			var cmds []*redis.Cmd
			for _, s := range suffixes {
				cmds = append(cmds, pipe.Do(ctx, "ACL", "DRYRUN", u, "GET", prefix+s))
			}
			dry = append(dry, cmds)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for i, p := range patterns {
			redisReaches := false
			for _, c := range dry[i] {
				redisReaches = redisReaches || c.Val() == "OK"
			}
			checked++
			if redisReaches {
				reaching++
				if !globReaches(p, prefix) {
					t.Errorf("Redis lets pattern %q read a key under %q; globReaches says no", p, prefix)
				}
			}
		}
	}
	if reaching == 0 {
		t.Fatalf("none of %d patterns reached the prefix: the test checks nothing", checked)
	}
	t.Logf("%d random patterns, %d reach %s per Redis", checked, reaching, prefix)
}
