package redisstore

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
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
		p("PUBSUB", "CHANNELS"), p("CLIENT", "TRACKING", "ON", "BCAST"), p("MEMORY", "STATS"),
	}
}

// Scripts the scripting probes name. loopScript would stop the server: it is
// only ever queued inside MULTI, and discarded.
const (
	loopScript  = "while true do end"
	canaryRead  = "return redis.call('GET', KEYS[1])"
	probeScript = "return 1"
	// probeLibrary is a function library the FUNCTION probes name.
	probeLibrary = "#!lua name=tenantprov_probe\nredis.register_function('tenantprov_probe', function() return 1 end)"
)

// scriptingProbes are the scripting commands the tenant must be refused
// under stance (see Scripting): SCRIPT DEBUG/EXISTS/FLUSH/KILL and every
// FUNCTION command always, EVAL and friends as the stance says, and — where
// scripts are allowed — a script declaring the canary key.
func scriptingProbes(stance Scripting) []probe {
	sha := sha1Hex(probeScript)
	probes := []probe{
		{"SCRIPT DEBUG SYNC", []any{"SCRIPT", "DEBUG", "SYNC"}},
		{"SCRIPT DEBUG YES", []any{"SCRIPT", "DEBUG", "YES"}},
		{"SCRIPT EXISTS", []any{"SCRIPT", "EXISTS", sha}},
		{"SCRIPT FLUSH", []any{"SCRIPT", "FLUSH"}},
		{"SCRIPT KILL", []any{"SCRIPT", "KILL"}},
		{"FUNCTION LIST", []any{"FUNCTION", "LIST", "WITHCODE"}},
		{"FUNCTION LOAD", []any{"FUNCTION", "LOAD", "REPLACE", probeLibrary}},
		{"FUNCTION DELETE", []any{"FUNCTION", "DELETE", "tenantprov_probe"}},
		{"FUNCTION FLUSH", []any{"FUNCTION", "FLUSH"}},
		{"FUNCTION DUMP", []any{"FUNCTION", "DUMP"}},
		{"FUNCTION RESTORE", []any{"FUNCTION", "RESTORE", "x", "REPLACE"}},
		{"FUNCTION STATS", []any{"FUNCTION", "STATS"}},
		{"FUNCTION KILL", []any{"FUNCTION", "KILL"}},
		{"FCALL", []any{"FCALL", "tenantprov_probe", "0"}},
		{"FCALL_RO", []any{"FCALL_RO", "tenantprov_probe", "0"}},
	}
	switch stance {
	case ScriptingReadOnly, ScriptingAllow:
		probes = append(probes,
			probe{"EVAL_RO of a script declaring " + CanaryKey, []any{"EVAL_RO", canaryRead, "1", CanaryKey}})
	default:
		probes = append(probes,
			probe{"EVAL_RO", []any{"EVAL_RO", probeScript, "0"}},
			probe{"EVALSHA_RO", []any{"EVALSHA_RO", sha, "0"}},
			probe{"SCRIPT LOAD", []any{"SCRIPT", "LOAD", probeScript}})
	}
	if stance != ScriptingAllow {
		probes = append(probes,
			probe{"EVAL of a Lua loop", []any{"EVAL", loopScript, "0"}},
			probe{"EVALSHA", []any{"EVALSHA", sha, "0"}})
	} else {
		probes = append(probes,
			probe{"EVAL of a script declaring " + CanaryKey, []any{"EVAL", canaryRead, "1", CanaryKey}})
	}
	return probes
}

// Names of the checks this Verify reports beyond agent.RequiredChecks; every
// one must pass.
const (
	// CheckScriptingConfined passes when the tenant may run exactly the
	// scripting commands its stance allows.
	CheckScriptingConfined = "scripting_confined"
	// CheckInwardIsolation passes when no other ACL user can reach the
	// tenant's keys or channels.
	CheckInwardIsolation = "inward_isolation"
	// CheckRuleAsProvisioned passes when the tenant's ACL user has exactly
	// the rules Provision gave it.
	CheckRuleAsProvisioned = "rule_as_provisioned"
)

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
//     commands of CommandRules are refused with NOPERM;
//   - scripting_confined: the scripting commands the stance (Scripting)
//     denies are refused with NOPERM — SCRIPT DEBUG/EXISTS/FLUSH/KILL and
//     FUNCTION/FCALL always — and the ones it allows run;
//
// and, as the admin, inward (DESIGN.md §5: nobody but the tenant and the
// control plane reaches the slice):
//
//   - inward_isolation: no ACL user but the tenant's, the agent's admin and
//     REDIS_TRUSTED_USERS has a key pattern (~, %R~, %W~, allkeys) or
//     channel pattern (&, allchannels), in its root or any selector, that
//     could match a name under tenant:<id>: (globReaches, conservative),
//     the default user is off or has no patterns at all, and none of those
//     users may run a command that reaches every key without a pattern
//     (serverWideCommands: MONITOR, KEYS, FLUSHALL, ACL SETUSER, …; asked
//     with ACL DRYRUN);
//   - rule_as_provisioned: the tenant's user is exactly what Provision set:
//     on, the credential's password hash and no hash but those of the
//     credential versions in tenantprov's record (two during a rotation's
//     grace, see Rotate; no nopass), the one
//     key and one channel pattern, no selector, and the same command rules
//     as a scratch user given CommandRules and the stance's rules.
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
		func(ctx context.Context) (events.Check, error) { return s.checkScripting(ctx, tenant) },
		func(ctx context.Context) (events.Check, error) { return s.checkInward(ctx, id) },
		func(ctx context.Context) (events.Check, error) { return s.checkRule(ctx, id, password) },
	} {
		c, err := check(ctx)
		if err != nil {
			return agent.VerifyResponse{}, err
		}
		resp.Checks = append(resp.Checks, c)
	}
	return resp, nil
}

// checkScripting refuses, inside a discarded MULTI, every scripting command
// the stance denies, then runs the harmless scripts it allows.
func (s *Store) checkScripting(ctx context.Context, tenant *redis.Client) (events.Check, error) {
	stance := s.cfg.TenantScripting
	if stance == "" {
		stance = ScriptingDeny
	}
	check, err := checkDenied(ctx, tenant, CheckScriptingConfined, scriptingProbes(stance))
	if err != nil || !check.Passed {
		return check, err
	}
	var allowed [][]any
	switch stance {
	case ScriptingAllow:
		allowed = [][]any{{"EVAL", probeScript, "0"}, {"EVAL_RO", probeScript, "0"}}
	case ScriptingReadOnly:
		allowed = [][]any{{"EVAL_RO", probeScript, "0"}}
	}
	for _, args := range allowed {
		n, err := tenant.Do(ctx, args...).Int()
		if err != nil && !isRedisReply(err) {
			return check, storeError(fmt.Sprintf("verify %s: %v", CheckScriptingConfined, args[0]), err)
		}
		if err != nil || n != 1 {
			check.Passed = false
			check.Detail = fmt.Sprintf("stance %s: %v %q returned %d, %v", stance, args[0], probeScript, n, err)
			return check, nil
		}
	}
	check.Detail = fmt.Sprintf("stance %s: %s", stance, check.Detail)
	if len(allowed) > 0 {
		check.Detail += fmt.Sprintf("; %d allowed scripts ran", len(allowed))
	}
	return check, nil
}

// serverWideCommands reach every key or channel without a key or channel
// pattern: they read all of them (MONITOR streams every command with its
// values; KEYS, SCAN, RANDOMKEY, CLIENT TRACKING BCAST, PUBSUB reveal
// names), destroy them (FLUSHALL, FLUSHDB, SWAPDB, REPLICAOF) or grant
// anything (ACL SETUSER, CONFIG SET, MODULE LOAD, DEBUG).
var serverWideCommands = []probe{
	{"MONITOR", []any{"MONITOR"}}, {"KEYS", []any{"KEYS", "*"}}, {"SCAN", []any{"SCAN", "0"}},
	{"RANDOMKEY", []any{"RANDOMKEY"}}, {"CLIENT TRACKING", []any{"CLIENT", "TRACKING", "ON", "BCAST"}},
	{"PUBSUB CHANNELS", []any{"PUBSUB", "CHANNELS"}}, {"FLUSHALL", []any{"FLUSHALL"}}, {"FLUSHDB", []any{"FLUSHDB"}},
	{"SWAPDB", []any{"SWAPDB", "0", "1"}}, {"REPLICAOF", []any{"REPLICAOF", "127.0.0.1", "1"}},
	{"ACL SETUSER", []any{"ACL", "SETUSER", "x"}}, {"CONFIG SET", []any{"CONFIG", "SET", "dir", "/"}},
	{"MODULE LOAD", []any{"MODULE", "LOAD", "x"}}, {"DEBUG", []any{"DEBUG", "SLEEP", "0"}},
}

// commandShape is the part of an ACL LIST line's rules that decides
// whether the user may run a command without keys or channels: its command
// rules, root and selectors, with the selectors' parentheses kept and every
// pattern, password and flag left out.
func commandShape(rules []string) string {
	var b strings.Builder
	for _, tok := range rules {
		core := strings.TrimPrefix(tok, "(")
		if len(core) < len(tok) {
			b.WriteString("( ")
		}
		closes := strings.HasSuffix(core, ")")
		core = strings.TrimSuffix(core, ")")
		if strings.HasPrefix(core, "+") || strings.HasPrefix(core, "-") || core == "allcommands" || core == "nocommands" {
			b.WriteString(core + " ")
		}
		if closes {
			// Also after a pattern that merely ends in ")": that only
			// splits a group, never merges two.
			b.WriteString(") ")
		}
	}
	return b.String()
}

// serverWideReach asks Redis (ACL DRYRUN, which checks and never runs)
// whether the first user of each group may run a serverWideCommands entry;
// it returns each group that may, with what its users may run. A command
// the server does not have (rename-command … "") reaches nothing; when a
// group's first user was deleted meanwhile, the group's next user is asked
// instead (and the group returned is the rest of it).
func (s *Store) serverWideReach(ctx context.Context, groups [][]string) ([]shapeGroup, error) {
	if len(groups) == 0 {
		return nil, nil
	}
	pipe := s.admin.Pipeline()
	cmds := make([][]*redis.Cmd, len(groups))
	for i, g := range groups {
		u := g[0]
		for _, c := range serverWideCommands {
			cmds[i] = append(cmds[i], pipe.Do(ctx, append([]any{"ACL", "DRYRUN", u}, c.args...)...))
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !isRedisReply(err) {
		return nil, storeError("verify "+CheckInwardIsolation+": acl dryrun", err)
	}
	var reaching []shapeGroup
	var retry [][]string
	for i, g := range groups {
		u := g[0]
		var allowed []string
		vanished := false
		for j, cmd := range cmds[i] {
			name := serverWideCommands[j].name
			reply, err := cmd.Text()
			switch {
			case err == nil && reply == "OK":
				allowed = append(allowed, name)
			case err == nil:
				// "This user has no permissions to run the '…' command"
			case redis.HasErrorPrefix(err, "Command") && strings.Contains(err.Error(), "not found"):
			case redis.HasErrorPrefix(err, "User") && strings.Contains(err.Error(), "not found"):
				vanished = true
			case redis.IsPermissionError(err) || !isRedisReply(err):
				return nil, storeError("verify "+CheckInwardIsolation+": acl dryrun "+u+" "+name, err)
			default:
				allowed = append(allowed, name+" (cannot tell: "+err.Error()+")")
			}
		}
		if vanished {
			if len(g) > 1 {
				retry = append(retry, g[1:])
			}
			continue
		}
		if len(allowed) > 0 {
			reaching = append(reaching, shapeGroup{users: g, allowed: allowed})
		}
	}
	more, err := s.serverWideReach(ctx, retry)
	return append(reaching, more...), err
}

// nameList joins up to five names, and says how many more there are.
func nameList(names []string) string {
	if len(names) <= 5 {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:5], ", "), len(names)-5)
}

// aclUser is what ACL GETUSER tells about a user.
type aclUser struct {
	flags     []string
	passwords []string
	commands  string
	keys      string
	channels  string
	selectors int
}

// getUser runs ACL GETUSER; ok is false when the user does not exist.
func (s *Store) getUser(ctx context.Context, user string) (u aclUser, ok bool, err error) {
	v, err := s.admin.Do(ctx, "ACL", "GETUSER", user).Result()
	if errors.Is(err, redis.Nil) {
		return u, false, nil
	}
	if err != nil {
		return u, false, storeError("acl getuser "+user, err)
	}
	fields := map[string]any{}
	switch m := v.(type) {
	case map[any]any: // RESP3
		for k, val := range m {
			fields[fmt.Sprint(k)] = val
		}
	case []any: // RESP2: name, value, name, value, …
		for i := 0; i+1 < len(m); i += 2 {
			fields[fmt.Sprint(m[i])] = m[i+1]
		}
	default:
		return u, false, fmt.Errorf("redis: acl getuser %s: unexpected reply %T", user, v)
	}
	strs := func(x any) []string {
		list, _ := x.([]any)
		out := make([]string, 0, len(list))
		for _, e := range list {
			out = append(out, fmt.Sprint(e))
		}
		return out
	}
	str := func(x any) string {
		if x == nil {
			return ""
		}
		return fmt.Sprint(x)
	}
	u.flags = strs(fields["flags"])
	u.passwords = strs(fields["passwords"])
	u.commands = str(fields["commands"])
	u.keys = str(fields["keys"])
	u.channels = str(fields["channels"])
	if sel, ok := fields["selectors"].([]any); ok {
		u.selectors = len(sel)
	}
	return u, true, nil
}

// checkRule compares the tenant's user with what Provision sets (ruleDiffs),
// and requires it to be on with exactly the credential's password.
func (s *Store) checkRule(ctx context.Context, id events.TenantID, password secret.String) (events.Check, error) {
	check := events.Check{Name: CheckRuleAsProvisioned}
	user := id.RedisUser()
	got, ok, err := s.getUser(ctx, user)
	if err != nil {
		return check, err
	}
	if !ok {
		check.Detail = "ACL user " + user + " does not exist"
		return check, nil
	}

	diffs, err := s.ruleDiffs(ctx, id, got, s.cfg.TenantScripting)
	if err != nil {
		return check, err
	}
	if !slices.Contains(got.flags, "on") {
		diffs = append(diffs, "the user is off")
	}
	// Without a record (a server restarted without RDB/AOF keeps its
	// aclfile users but loses keys) only the credential's password is
	// allowed, as before rotation existed; Observe reports the lost record.
	rec, _, err := s.record(ctx, user)
	if err != nil {
		return check, err
	}
	if d := passwordDiff(got.passwords, rec.Credentials, passwordHash(password)); d != "" {
		diffs = append(diffs, d)
	}
	if len(diffs) > 0 {
		check.Detail = "ACL user " + user + " differs from what was provisioned: " + strings.Join(diffs, "; ")
		return check, nil
	}
	check.Passed = true
	check.Detail = "ACL user " + user + fmt.Sprintf(": on, %d password hash(es), each a recorded credential version, the credential's among them, ", len(got.passwords)) + keyPattern(id) + ", " + channelPattern(id) + ", no selector, the provisioned command rules"
	return check, nil
}

// passwordDiff describes how the user's password hashes differ from what
// the record allows, "" if they do not: every one of them must be a
// recorded credential version's (two during a rotation's grace), and the
// credential being verified must be among them. A record without
// credential versions (written before rotation existed) allows exactly
// the credential's. Hashes stay out of the result.
func passwordDiff(have []string, recorded []credentialHash, credential string) string {
	allowed := map[string]bool{}
	for _, c := range recorded {
		allowed[c.SHA256] = true
	}
	if len(recorded) == 0 {
		allowed[credential] = true
	}
	var foreign int
	for _, h := range have {
		if !allowed[h] {
			foreign++
		}
	}
	switch {
	case foreign > 0:
		return fmt.Sprintf("%d of its %d password hashes belong to no recorded credential version", foreign, len(have))
	case !allowed[credential]:
		return "the credential is not a recorded credential version"
	case !slices.Contains(have, credential):
		return fmt.Sprintf("%d password hashes, none of them the credential's", len(have))
	}
	return ""
}

// ruleDiffs compares everything of got but its on/off flag and passwords
// with what Provision sets for id under stance, and describes each
// difference. The expected command rules are Redis's own rendering of
// CommandRules and the stance's rules, read off a scratch user (off, no
// password, no key or channel pattern, so it can reach nothing) that is
// deleted again.
func (s *Store) ruleDiffs(ctx context.Context, id events.TenantID, got aclUser, stance Scripting) ([]string, error) {
	ref := events.ReservedPrefix + "-rule-" + randomToken()
	args := []any{"ACL", "SETUSER", ref, "reset"}
	for _, r := range commandRules(stance) {
		args = append(args, r)
	}
	if rec, _, err := s.record(ctx, id.RedisUser()); err == nil { // the plan's rules (plan.go)
		for _, r := range rec.PlanRules {
			args = append(args, r)
		}
	}
	if err := s.admin.Do(ctx, args...).Err(); err != nil {
		return nil, storeError("acl setuser "+ref, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = s.admin.Do(dctx, "ACL", "DELUSER", ref).Err()
	}()
	want, ok, err := s.getUser(ctx, ref)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("redis: scratch user %s vanished", ref)
	}

	var diffs []string
	onOff := func(f string) bool { return f == "on" || f == "off" }
	if g, w := slices.DeleteFunc(slices.Clone(got.flags), onOff), slices.DeleteFunc(slices.Clone(want.flags), onOff); !sameSet(g, w) {
		diffs = append(diffs, fmt.Sprintf("flags %v, want %v", got.flags, append([]string{"on"}, w...)))
	}
	if got.keys != keyPattern(id) {
		diffs = append(diffs, fmt.Sprintf("key patterns %q, want %q", got.keys, keyPattern(id)))
	}
	if got.channels != channelPattern(id) {
		diffs = append(diffs, fmt.Sprintf("channel patterns %q, want %q", got.channels, channelPattern(id)))
	}
	// Redis renders subcommand rules in hash-table order, which differs
	// between users with the same permissions (-cluster|getkeysinslot
	// -cluster|countkeysinslot or the reverse). Categories come first and in
	// a fixed order, and a command appears once, so the rendering's tokens,
	// compared as a multiset, still tell any two permission sets apart.
	if !sameSet(strings.Fields(got.commands), strings.Fields(want.commands)) {
		diffs = append(diffs, fmt.Sprintf("commands %q, want %q", got.commands, want.commands))
	}
	if got.selectors > 0 {
		diffs = append(diffs, fmt.Sprintf("%d selectors, want none", got.selectors))
	}
	return diffs, nil
}

// sameSet reports whether a and b hold the same strings as many times each,
// ignoring order.
func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

// sha1Hex is the SHA-1 Redis names a script by (not a security use).
func sha1Hex(script string) string {
	sum := sha1.Sum([]byte(script))
	return hex.EncodeToString(sum[:])
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
		// authOnly: only a refused authentication will do. A wrong password
		// that gets as far as NOPERM was accepted (nopass, or a second
		// password).
		authOnly bool
	}{
		{"AUTH " + user + " with a wrong password", user, wrong, true},
		{"a connection without credentials", "", "", false},
	} {
		c, err := s.client(attempt.user, attempt.password)
		if err != nil {
			return check, err
		}
		err = c.Get(ctx, CanaryKey).Err()
		_ = c.Close()
		switch {
		case redis.IsAuthError(err) || (!attempt.authOnly && redis.IsPermissionError(err)):
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
