package redisstore

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// CommandRules are the command permissions of every tenant ACL user, applied
// after `reset` and the tenant's key and channel patterns. They need Redis 7.0
// or later (subcommand rules such as -script|flush).
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
//   - -function -fcall -fcall_ro: function libraries are server-global: one
//     tenant could list (read the code of), replace, delete or flush another
//     tenant's functions. EVAL/EVALSHA stay allowed: inside a script every
//     redis.call is checked against the user's ACL.
//   - -script|flush -script|kill: the script cache is shared, and SCRIPT KILL
//     stops whichever script is running, another tenant's included.
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
// EVAL/EVALSHA/SCRIPT LOAD (ACL-checked inside), CLIENT SETNAME/INFO/ID
// (own connection), WAIT, COMMAND, TIME, ECHO, OBJECT, MEMORY USAGE,
// PUBLISH/SUBSCRIBE/SSUBSCRIBE/PSUBSCRIBE within the tenant's channels
// (PSUBSCRIBE patterns must equal an allowed pattern literally, so
// `PSUBSCRIBE *` is refused). Module commands (e.g. RediSearch) are not
// covered: a server that loads modules needs its own review.
const CommandRules = "+@all -@admin -@dangerous" +
	" -keys -flushall -flushdb -swapdb -config -acl -info -debug -monitor -slowlog" +
	" -migrate -restore -sort -sort_ro -client|list -client|kill -shutdown -module" +
	" -select -move -copy" +
	" -scan -randomkey -dbsize" +
	" -pubsub" +
	" -client|tracking" +
	" -function -fcall -fcall_ro" +
	" -script|flush -script|kill" +
	" -memory +memory|usage" +
	" -cluster|getkeysinslot -cluster|countkeysinslot"

// aclRules returns the ACL SETUSER arguments that make user tenant's Redis
// user exactly what tenantprov grants, from `reset`, with password as its
// SHA-256 hash. The result holds the hash: never put it in an error or a log.
func aclRules(tenant events.TenantID, password secret.String) []string {
	rules := []string{
		"reset",
		"on",
		"#" + passwordHash(password),
		"~" + escapeGlob(tenant.RedisKeyPrefix()) + "*",
		"resetchannels",
		"&" + escapeGlob(tenant.RedisChannelPrefix()) + "*",
	}
	return append(rules, strings.Fields(CommandRules)...)
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
