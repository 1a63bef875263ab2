package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// foreignTenantPrefix is a tenant key and channel prefix no tenant can own:
// tenant IDs never start with "tenantprov". Verify probes it as "another
// tenant's" key space without touching a real one.
const foreignTenantPrefix = "tenant:" + events.ReservedPrefix + ":"

// verifyKey is the key, inside the tenant's own prefix, that the own-access
// check writes, reads and deletes. It expires on its own should Verify die
// before the DEL.
const verifyKey = "tenantprov:verify"

// probe is a command the tenant must be refused with NOPERM.
type probe struct {
	name string
	args []any
}

// canaryProbes reach outside the tenant's keys and channels.
func canaryProbes(id events.TenantID) []probe {
	return []probe{
		{"GET " + CanaryKey, []any{"GET", CanaryKey}},
		{"SET " + CanaryKey, []any{"SET", CanaryKey, "x"}},
		{"GET " + foreignTenantPrefix + "x (another tenant's key)", []any{"GET", foreignTenantPrefix + "x"}},
		{"SET " + foreignTenantPrefix + "x (another tenant's key)", []any{"SET", foreignTenantPrefix + "x", "x"}},
		{"RENAME own key to " + foreignTenantPrefix + "x", []any{"RENAME", id.RedisKeyPrefix() + verifyKey, foreignTenantPrefix + "x"}},
		{"HGETALL " + ManagedUsersKey, []any{"HGETALL", ManagedUsersKey}},
		{"PUBLISH " + CanaryKey, []any{"PUBLISH", CanaryKey, "x"}},
		{"PUBLISH " + foreignTenantPrefix + "x (another tenant's channel)", []any{"PUBLISH", foreignTenantPrefix + "x", "x"}},
	}
}

// adminProbes are DESIGN.md §5's admin operations (KEYS, FLUSHALL, CONFIG)
// and the server-wide commands CommandRules denies.
func adminProbes(id events.TenantID) []probe {
	own := id.RedisKeyPrefix() + verifyKey
	p := func(args ...any) probe {
		parts := make([]string, 0, 2)
		for _, a := range args[:min(2, len(args))] {
			parts = append(parts, fmt.Sprint(a))
		}
		return probe{name: strings.Join(parts, " "), args: args}
	}
	return []probe{
		p("KEYS", "*"), p("FLUSHALL"), p("FLUSHDB"), p("CONFIG", "GET", "*"), p("ACL", "LIST"),
		p("ACL", "SETUSER", "tenantprov-verify"), p("INFO"), p("MONITOR"),
		p("SLOWLOG", "GET"), p("CLIENT", "LIST"), p("CLIENT", "KILL", "USER", "default"),
		p("SCAN", "0"), p("RANDOMKEY"), p("DBSIZE"), p("SELECT", "1"), p("SWAPDB", "0", "1"),
		p("MOVE", own, "1"), p("COPY", own, own+":copy", "DB", "1"),
		p("PUBSUB", "CHANNELS"), p("CLIENT", "TRACKING", "ON", "BCAST"),
		p("FUNCTION", "LIST"), p("FUNCTION", "FLUSH"), p("SCRIPT", "FLUSH"), p("MEMORY", "STATS"),
	}
}

// Verify runs the isolation checks with the tenant's credential against the
// agent's own address (REDIS_ADDR; the credential's addr is what tenants use
// and may not be reachable from the agent):
//
//   - own_access: SET/GET/DEL of a key and PUBLISH to a channel in its prefix;
//   - canary_denied: the canary key, another tenant's key and channel, and
//     tenantprov's record are refused with NOPERM;
//   - wrong_password_refused: AUTH with a wrong password gets WRONGPASS, and a
//     connection without credentials cannot read the canary (catches an open
//     default user);
//   - admin_denied: KEYS, FLUSHALL, CONFIG, ACL and the other server-wide
//     commands of CommandRules are refused with NOPERM.
//
// Denials are probed inside MULTI and then discarded, so a probe the server
// wrongly allows is queued but never executed (a bad rule cannot make
// Verify flush the server). An error means a check could not run.
func (s *Store) Verify(ctx context.Context, req agent.VerifyRequest) (agent.VerifyResponse, error) {
	id, err := tenantOf(req.Tenant)
	if err != nil {
		return agent.VerifyResponse{}, err
	}
	user := req.Credential.String(CredUsername)
	password := req.Credential.Secret(CredPassword)
	if user != id.RedisUser() || password.IsZero() {
		return agent.VerifyResponse{}, agent.Permanent(events.ReasonInvalid,
			fmt.Errorf("redis: verify %s: credential has username %q and no password or another tenant's user", id, user))
	}
	tenant, err := s.client(user, password)
	if err != nil {
		return agent.VerifyResponse{}, err
	}
	defer tenant.Close()

	var resp agent.VerifyResponse
	for _, check := range []func(context.Context) (events.Check, error){
		func(ctx context.Context) (events.Check, error) { return s.checkOwnAccess(ctx, tenant, id) },
		func(ctx context.Context) (events.Check, error) {
			return checkDenied(ctx, tenant, agent.CheckCanaryDenied, canaryProbes(id))
		},
		func(ctx context.Context) (events.Check, error) { return s.checkWrongPassword(ctx, user) },
		func(ctx context.Context) (events.Check, error) {
			return checkDenied(ctx, tenant, agent.CheckAdminDenied, adminProbes(id))
		},
	} {
		c, err := check(ctx)
		if err != nil {
			return agent.VerifyResponse{}, err
		}
		resp.Checks = append(resp.Checks, c)
	}
	return resp, nil
}

// client returns a client that authenticates as user on the agent's
// address. The caller closes it.
func (s *Store) client(user string, password secret.String) (*redis.Client, error) {
	opts, err := s.options(user, password)
	if err != nil {
		return nil, err
	}
	opts.PoolSize = 2
	opts.MaxRetries = -1 // a refusal must come back as it is, at once
	return redis.NewClient(opts), nil
}

func (s *Store) checkOwnAccess(ctx context.Context, tenant *redis.Client, id events.TenantID) (events.Check, error) {
	check := events.Check{Name: agent.CheckOwnAccess}
	key := id.RedisKeyPrefix() + verifyKey
	token := randomToken()
	fail := func(step string, err error) (events.Check, error) {
		if err != nil && !isRedisReply(err) && !errors.Is(err, redis.Nil) {
			return check, storeError("verify own access: "+step, err)
		}
		check.Detail = step
		if err != nil {
			check.Detail += ": " + err.Error()
		}
		return check, nil
	}
	if err := tenant.Set(ctx, key, token, time.Minute).Err(); err != nil {
		return fail("SET "+key, err)
	}
	got, err := tenant.Get(ctx, key).Result()
	if err != nil {
		return fail("GET "+key, err)
	}
	if got != token {
		return fail("GET "+key+" returned another value than was SET", nil)
	}
	if n, err := tenant.Del(ctx, key).Result(); err != nil || n != 1 {
		return fail(fmt.Sprintf("DEL %s (removed %d)", key, n), err)
	}
	channel := id.RedisChannelPrefix() + verifyKey
	if err := tenant.Publish(ctx, channel, "probe").Err(); err != nil {
		return fail("PUBLISH "+channel, err)
	}
	check.Passed = true
	check.Detail = "SET/GET/DEL " + key + " and PUBLISH " + channel + " succeeded"
	return check, nil
}

func (s *Store) checkWrongPassword(ctx context.Context, user string) (events.Check, error) {
	check := events.Check{Name: agent.CheckWrongPasswordRefused}
	wrong, err := secret.Generate()
	if err != nil {
		return check, err
	}
	for _, attempt := range []struct {
		what     string
		user     string
		password secret.String
	}{
		{"AUTH " + user + " with a wrong password", user, wrong},
		{"a connection without credentials", "", ""},
	} {
		c, err := s.client(attempt.user, attempt.password)
		if err != nil {
			return check, err
		}
		err = c.Get(ctx, CanaryKey).Err()
		_ = c.Close()
		switch {
		case redis.IsAuthError(err) || redis.IsPermissionError(err):
			// Refused, as it must be.
		case err == nil || errors.Is(err, redis.Nil):
			check.Detail = attempt.what + " could run GET " + CanaryKey
			return check, nil
		case isRedisReply(err):
			check.Detail = attempt.what + ": unexpected reply: " + err.Error()
			return check, nil
		default:
			return check, storeError("verify "+attempt.what, err, wrong.Reveal())
		}
	}
	check.Passed = true
	check.Detail = "wrong password refused (WRONGPASS); unauthenticated connection refused"
	return check, nil
}

// checkDenied queues every probe in one MULTI on one connection as the
// tenant, requires a NOPERM reply to each, and discards the transaction.
func checkDenied(ctx context.Context, tenant *redis.Client, name string, probes []probe) (events.Check, error) {
	check := events.Check{Name: name}
	conn := tenant.Conn()
	defer conn.Close()
	if err := conn.Do(ctx, "MULTI").Err(); err != nil {
		if isRedisReply(err) {
			check.Detail = "MULTI: " + err.Error()
			return check, nil
		}
		return check, storeError("verify "+name+": MULTI", err)
	}
	var failures []string
	for _, p := range probes {
		err := conn.Do(ctx, p.args...).Err()
		switch {
		case redis.IsPermissionError(err):
		case err == nil:
			failures = append(failures, p.name+" allowed")
		case isRedisReply(err):
			failures = append(failures, p.name+": "+err.Error())
		default:
			return check, storeError("verify "+name+": "+p.name, err)
		}
	}
	// Whatever was queued is dropped; a failed DISCARD closes the
	// connection, which drops it too.
	if err := conn.Do(ctx, "DISCARD").Err(); err != nil && !isRedisReply(err) {
		return check, storeError("verify "+name+": DISCARD", err)
	}
	if len(failures) > 0 {
		check.Detail = "not denied: " + strings.Join(failures, "; ")
		return check, nil
	}
	check.Passed = true
	check.Detail = fmt.Sprintf("%d commands refused with NOPERM", len(probes))
	return check, nil
}

// randomToken is a value no other writer can have put in the key.
func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
