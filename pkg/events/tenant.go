package events

import (
	"regexp"
	"strings"
)

// Tenant-ID limits from DESIGN.md §2.
const (
	TenantIDMinLen = 3
	TenantIDMaxLen = 32
	// ReservedPrefix starts the names of tenantprov's own resources (the
	// isolation canaries, system collections); no tenant may use it.
	ReservedPrefix = "tenantprov"
)

var tenantIDPattern = regexp.MustCompile(`^[a-z][a-z0-9-]{1,30}[a-z0-9]$`)

// TenantID is a validated tenant identifier. The only ways to obtain a
// non-empty TenantID are ParseTenantID and MustTenantID, so a TenantID value
// is always safe to embed in a bucket, database, role, collection, ACL user,
// key prefix or subject.
type TenantID string

// ParseTenantID validates s against DESIGN.md §2: 3–32 characters, lowercase
// ASCII letters, digits and hyphens, starting with a letter, not ending with a
// hyphen, no "--", and not starting with the reserved prefix "tenantprov".
// The error is a *TenantIDError matching ErrInvalidTenantID.
func ParseTenantID(s string) (TenantID, error) {
	reject := func(reason string) (TenantID, error) {
		return "", &TenantIDError{ID: Truncate(s, 64), Reason: reason}
	}
	switch {
	case s == "":
		return reject("empty")
	case len(s) < TenantIDMinLen:
		return reject("shorter than 3 characters")
	case len(s) > TenantIDMaxLen:
		return reject("longer than 32 characters")
	case !tenantIDPattern.MatchString(s):
		return reject("must match ^[a-z][a-z0-9-]{1,30}[a-z0-9]$ (lowercase ASCII letter first, then lowercase letters, digits or hyphens, no trailing hyphen)")
	case strings.Contains(s, "--"):
		return reject(`must not contain "--"`)
	case strings.HasPrefix(s, ReservedPrefix):
		return reject(`names starting with "tenantprov" are reserved for the system`)
	}
	return TenantID(s), nil
}

// MustTenantID is ParseTenantID for constants and tests; it panics on an
// invalid ID.
func MustTenantID(s string) TenantID {
	id, err := ParseTenantID(s)
	if err != nil {
		panic(err)
	}
	return id
}

// String returns the ID.
func (id TenantID) String() string { return string(id) }

// Resource names, derived from the tenant ID and never taken from a request
// (DESIGN.md §2).

// MinIOBucket is the tenant's bucket: tenant-<id>.
func (id TenantID) MinIOBucket() string { return "tenant-" + string(id) }

// MinIOUser is the tenant's IAM user (its access key): tenant-<id>.
func (id TenantID) MinIOUser() string { return "tenant-" + string(id) }

// MinIOTenantPolicy is the one canned policy every tenant's IAM user
// holds: it grants the bucket named like the requesting user
// (arn:aws:s3:::${aws:username}), so tenant-<id> reaches tenant-<id> and
// nothing else. One policy for every tenant, not one each: MinIO reloads
// every canned policy under its IAM lock whenever they are listed, so
// per-tenant policies made every isolation check, and every IAM call
// waiting behind it, grow with the number of tenants (docs/PERFORMANCE.md).
// The name is in the reserved namespace.
const MinIOTenantPolicy = ReservedPrefix + "-tenant-rw"

// MinIOPolicy is the canned policy attached to the tenant's user: the
// shared MinIOTenantPolicy (DESIGN.md §2 named a policy per tenant,
// MinIOLegacyPolicy; see MinIOTenantPolicy for why it changed).
func (id TenantID) MinIOPolicy() string { return MinIOTenantPolicy }

// MinIOLegacyPolicy is the per-tenant canned policy tenant-<id>-rw that
// agents before the shared policy created; the MinIO agent migrates a
// tenant off it (attaches the shared policy, removes this one) and removes
// it on deprovision, when the tenant's system record claims it.
func (id TenantID) MinIOLegacyPolicy() string { return "tenant-" + string(id) + "-rw" }

// PostgresDatabase is the tenant's database: tenant_<id>. Hyphens are kept,
// so the name must always be quoted as an identifier.
func (id TenantID) PostgresDatabase() string { return "tenant_" + string(id) }

// PostgresRole is the tenant's login role: tenant_<id> (always quoted).
func (id TenantID) PostgresRole() string { return "tenant_" + string(id) }

// QdrantCollection is the tenant's collection: tenant_<id>.
func (id TenantID) QdrantCollection() string { return "tenant_" + string(id) }

// RedisUser is the tenant's ACL user: tenant_<id>.
func (id TenantID) RedisUser() string { return "tenant_" + string(id) }

// RedisKeyPrefix is the prefix of every key the tenant may touch: tenant:<id>:.
func (id TenantID) RedisKeyPrefix() string { return "tenant:" + string(id) + ":" }

// RedisChannelPrefix is the prefix of every Pub/Sub channel the tenant may
// use: tenant:<id>:.
func (id TenantID) RedisChannelPrefix() string { return "tenant:" + string(id) + ":" }

// SecretsObject is the name of the tenant's sealed secrets in the
// tenant-secrets object store: <id>.sops.yaml.
func (id TenantID) SecretsObject() string { return string(id) + ".sops.yaml" }

// Names of tenantprov's own resources: the isolation canaries each agent
// keeps so that verification can prove a tenant credential is denied access
// to something that exists (DESIGN.md §5).
const (
	CanaryBucket           = "tenantprov-canary"
	CanaryDatabase         = "tenantprov_canary"
	CanaryCollection       = "tenantprov_canary"
	CanaryRedisKeyPrefix   = "tenantprov:canary:"
	QdrantSystemCollection = "tenantprov_system"
)
