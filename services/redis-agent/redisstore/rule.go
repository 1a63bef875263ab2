package redisstore

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// CommandRules are the command permissions of every tenant ACL user, applied
// after `reset` and the tenant's key and channel patterns, and followed by
// the scripting rules of the configured stance (ScriptingRules). They need
// Redis 7.0 or later (subcommand rules such as -client|tracking).
//
// DESIGN.md §5 asks for `+@all -@admin -@dangerous`. On Redis 7.0 that still
// lets a tenant learn about, or reach, data outside its prefix, because a few
// commands outside those categories are not checked against key or channel
// patterns at all. Each was tried against redis-server 7.0 and is denied
// explicitly:
//
//   - -select -move -copy: key patterns apply to every logical database, so a
//     tenant could keep keys in DB 1–15 (SELECT, MOVE, COPY … DB n) where
//     deprovision's SCAN of DB 0 never finds them. Tenants live in DB 0.
//   - -scan -randomkey -dbsize: SCAN MATCH * and RANDOMKEY return other
//     tenants' key names (SCAN is not filtered by key patterns), DBSIZE the
//     server-wide key count. KEYS is in @dangerous.
//   - -pubsub: PUBSUB CHANNELS/NUMSUB/SHARDCHANNELS list every tenant's
//     active channels.
//   - -client|tracking: CLIENT TRACKING ON BCAST PREFIX tenant:<other>: pushes
//     the names of the other tenant's modified keys (invalidation messages
//     are not filtered by key patterns). Client-side caching is therefore
//     unavailable to tenants.
//   - -memory +memory|usage: MEMORY STATS/DOCTOR/MALLOC-STATS describe the
//     whole server and MEMORY PURGE acts on it; MEMORY USAGE is key-checked.
//   - -cluster|getkeysinslot -cluster|countkeysinslot: in cluster mode they
//     list or count any key in a slot.
//
// The rest repeats, on purpose, members of @admin/@dangerous that would break
// isolation if a server version moved them out of those categories (and
// that Verify probes): -keys -flushall -flushdb -swapdb -config -acl -info
// -debug -monitor -slowlog -migrate -restore -sort -sort_ro -client|list
// -client|kill -shutdown -module.
//
// Still allowed, knowingly: AUTH/HELLO (another user's password is needed),
// CLIENT SETNAME/INFO/ID (own connection), WAIT, COMMAND, TIME, ECHO,
// OBJECT, MEMORY USAGE, PUBLISH/SUBSCRIBE/SSUBSCRIBE/PSUBSCRIBE within the
// tenant's channels (PSUBSCRIBE patterns must equal an allowed pattern
// literally, so `PSUBSCRIBE *` is refused). Module commands (e.g.
// RediSearch) are not covered: a server that loads modules needs its own
// review.
//
// What ACL rules cannot limit at all, whatever the stance: a user's memory
// (one tenant can fill maxmemory for everyone), its number of connections,
// its bandwidth and its CPU (O(n) commands such as SUNION or LRANGE on huge
// keys of its own). The runbook (docs/architecture/
// STORAGE_LAYER.md §2.4) says what operators do about it: maxmemory with an
// eviction policy, maxclients, client-output-buffer-limit, and a separate
// Redis instance for any tenant that is big or not trusted to behave.
const CommandRules = "+@all -@admin -@dangerous" +
	" -keys -flushall -flushdb -swapdb -config -acl -info -debug -monitor -slowlog" +
	" -migrate -restore -sort -sort_ro -client|list -client|kill -shutdown -module" +
	" -select -move -copy" +
	" -scan -randomkey -dbsize" +
	" -pubsub" +
	" -client|tracking" +
	" -memory +memory|usage" +
	" -cluster|getkeysinslot -cluster|countkeysinslot"

// Scripting is the stance on tenants' Lua scripts (REDIS_TENANT_SCRIPTING).
//
// The decision, and why deny is the default: Redis runs a script on its only
// command thread, so `EVAL "while true do end" 0` stops the server for every
// tenant. Redis cannot bound a script's CPU per user; after
// busy-reply-threshold (lua-time-limit, default 5 s) it only starts answering
// everyone else BUSY until somebody runs SCRIPT KILL — and a script that has
// written anything cannot be killed at all (UNKILLABLE: only SHUTDOWN NOSAVE,
// losing data, ends it). So:
//
//   - ScriptingDeny (default): -@scripting. No EVAL, EVALSHA, EVAL_RO,
//     EVALSHA_RO, SCRIPT, FUNCTION or FCALL. A tenant cannot stall the
//     server with a script, and the shared script cache (SCRIPT EXISTS and
//     EVALSHA reveal whether another tenant loaded a given script) is out of
//     its reach.
//   - ScriptingReadOnly: EVAL_RO, EVALSHA_RO and SCRIPT LOAD only. A
//     read-only script can always be killed, and the agent's watchdog
//     (Store.WatchScripts) runs SCRIPT KILL once the server has answered
//     BUSY for REDIS_SCRIPT_KILL_AFTER. A stall lasts at most
//     busy-reply-threshold + REDIS_SCRIPT_KILL_AFTER (+ one watchdog
//     interval); set busy-reply-threshold to 1000 (ms) or less on a server
//     shared by tenants.
//   - ScriptingAllow: also EVAL and EVALSHA. A script that writes and then
//     loops cannot be killed by SCRIPT KILL: only for tenants trusted not to
//     do that, ideally on their own instance.
//
// In every stance SCRIPT DEBUG (blocks the server in SYNC mode), SCRIPT
// EXISTS (tells whether any tenant loaded a given script), SCRIPT FLUSH and
// SCRIPT KILL (act on every tenant's scripts), and FUNCTION/FCALL (function
// libraries are server-global: one tenant could list — read the code of —,
// replace, delete, dump or flush another's) stay denied. Inside an allowed
// script every redis.call is checked against the tenant's ACL as usual.
// When scripts are allowed EVALSHA still answers NOSCRIPT or not for a
// script another tenant loaded; that reveals only whether somebody ran a
// script whose exact text the asker already knows.
type Scripting string

// The scripting stances.
const (
	ScriptingDeny     Scripting = "deny"
	ScriptingReadOnly Scripting = "readonly"
	ScriptingAllow    Scripting = "allow"
)

// scriptingDenied are the scripting commands no tenant gets in any stance.
const scriptingDenied = "-@scripting -eval -evalsha -eval_ro -evalsha_ro -script -function -fcall -fcall_ro"

// ScriptingRules returns the command rules of stance, applied after
// CommandRules ("" means ScriptingDeny).
func ScriptingRules(stance Scripting) string {
	switch stance {
	case ScriptingReadOnly:
		return scriptingDenied + " +eval_ro +evalsha_ro +script|load"
	case ScriptingAllow:
		return scriptingDenied + " +eval +evalsha +eval_ro +evalsha_ro +script|load"
	default:
		return scriptingDenied
	}
}

// valid reports whether stance is one of the known ones ("" is deny).
func (stance Scripting) valid() bool {
	switch stance {
	case "", ScriptingDeny, ScriptingReadOnly, ScriptingAllow:
		return true
	}
	return false
}

// scriptsAllowed reports whether stance lets tenants run any script.
func (stance Scripting) scriptsAllowed() bool {
	return stance == ScriptingReadOnly || stance == ScriptingAllow
}

// aclRules returns the ACL SETUSER arguments that make user tenant's Redis
// user exactly what tenantprov grants, from `reset`, with password as its
// SHA-256 hash and the command rules of stance. The result holds the hash:
// never put it in an error or a log.
func aclRules(tenant events.TenantID, password secret.String, stance Scripting) []string {
	return userRules(tenant, []string{passwordHash(password)}, true, stance)
}

// userRules returns the ACL SETUSER arguments that make tenant's user
// exactly what tenantprov grants, from `reset`, with the given password
// hashes (the recorded credential versions), on or off, and the command
// rules of stance. The result holds the hashes: never put it in an error or
// a log.
func userRules(tenant events.TenantID, hashes []string, on bool, stance Scripting) []string {
	rules := []string{"reset", "off"}
	if on {
		rules[1] = "on"
	}
	for _, h := range hashes {
		rules = append(rules, "#"+h)
	}
	rules = append(rules, keyPattern(tenant), "resetchannels", channelPattern(tenant))
	return append(rules, commandRules(stance)...)
}

// commandRules are CommandRules followed by ScriptingRules(stance), one
// rule per element.
func commandRules(stance Scripting) []string {
	return strings.Fields(CommandRules + " " + ScriptingRules(stance))
}

// keyPattern is the tenant's only ACL key pattern, as Redis renders it.
func keyPattern(tenant events.TenantID) string {
	return "~" + escapeGlob(tenant.RedisKeyPrefix()) + "*"
}

// channelPattern is the tenant's only ACL channel pattern, as Redis renders
// it.
func channelPattern(tenant events.TenantID) string {
	return "&" + escapeGlob(tenant.RedisChannelPrefix()) + "*"
}

// passwordHash is the hex SHA-256 Redis stores for a `#<hash>` password.
func passwordHash(password secret.String) string {
	sum := sha256.Sum256([]byte(password.Reveal()))
	return hex.EncodeToString(sum[:])
}

// escapeGlob escapes the characters Redis glob patterns treat specially
// (ACL key/channel patterns, SCAN MATCH), so that s matches only itself.
// Valid tenant IDs contain none of them; this is defence in depth.
func escapeGlob(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
