// Package redisstore is redis-agent's agent.Store (DESIGN.md §5, Redis ≥ 7):
// one ACL user per tenant, confined to the key and channel prefix
// tenant:<id>:, with the password sent only as its SHA-256 hash, persisted
// with ACL SAVE, and removed together with the tenant's keys.
//
// Redis ACL users carry no comment or tag, so tenantprov's marker of origin
// is a system record: the hash ManagedUsersKey, one field per ACL user it
// created. A user without a record is foreign and is never changed, adopted
// or deleted.
package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// Reserved keys of tenantprov's own (DESIGN.md §2: names beginning
// "tenantprov" are the system's). No tenant's key pattern matches them.
const (
	// ManagedUsersKey is the hash recording the ACL users tenantprov created:
	// field = user name, value = JSON {tenant, generation, saga_id,
	// created_at, updated_at, credentials, suspended}: credentials are the
	// SHA-256 hashes (never the passwords) of the tenant's credential
	// versions, the only passwords its user may have.
	ManagedUsersKey = events.ReservedPrefix + ":managed:users"
	// CanaryKey is the isolation canary every tenant must be denied.
	CanaryKey = events.CanaryRedisKeyPrefix + "probe"
)

// Keys of ProvisionResponse.Resources.
const (
	ResourceUser          = "user"
	ResourceKeyPrefix     = "key_prefix"
	ResourceChannelPrefix = "channel_prefix"
)

// Keys of the Redis section of the tenant's secrets file (DESIGN.md §6).
const (
	CredAddr      = "addr"
	CredUsername  = "username"
	CredPassword  = "password"
	CredKeyPrefix = "key_prefix"
)

// scanCount is the COUNT hint of deprovision's SCAN, and so the largest
// UNLINK batch.
const scanCount = 1000

// Store provisions tenants' Redis key spaces. It is safe for concurrent use.
type Store struct {
	cfg   Config
	admin *redis.Client
	now   func() time.Time

	// aclRounds shares the inward check's ACL reads (inward.go); aclParsed
	// is the latest read's lines, parsed, touched only inside a round.
	aclRounds agent.Rounds[struct{}, *aclSnapshot]
	aclParsed map[string]*aclEntry
	// saveRounds shares ACL SAVEs (saveACL).
	saveRounds agent.Rounds[struct{}, struct{}]
}

var _ agent.Store = (*Store)(nil)

// New returns a Store for cfg. It does not contact Redis (see Ping); Close
// releases its connections.
func New(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("redisstore: %w", err)
	}
	s := &Store{cfg: cfg, now: time.Now}
	s.aclRounds.Rest = true // ACL LIST renders every user on Redis's only command thread
	opts, err := s.options(cfg.AdminUser, cfg.AdminPassword)
	if err != nil {
		return nil, err
	}
	s.admin = redis.NewClient(opts)
	return s, nil
}

// Close closes the admin connections.
func (s *Store) Close() error { return s.admin.Close() }

// options are the client options for user on the agent's address. Every
// I/O call honours its context's deadline.
func (s *Store) options(user string, password secret.String) (*redis.Options, error) {
	tlsCfg, err := s.cfg.tlsConfig()
	if err != nil {
		return nil, fmt.Errorf("redisstore: %w", err)
	}
	return &redis.Options{
		Addr:                  s.cfg.Addr,
		Username:              user,
		Password:              password.Reveal(),
		TLSConfig:             tlsCfg,
		ContextTimeoutEnabled: true,
		// No CLIENT SETINFO and no CLIENT MAINT_NOTIFICATIONS on connect:
		// tenant users may not run them, and the agent needs neither.
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}, nil
}

// Kind is events.StoreRedis.
func (s *Store) Kind() events.Store { return events.StoreRedis }

// Ping runs PING as the admin user.
func (s *Store) Ping(ctx context.Context) error {
	return storeError("ping", s.admin.Ping(ctx).Err())
}

// managedUser is tenantprov's record of an ACL user it created.
type managedUser struct {
	Tenant     string    `json:"tenant"`
	Generation uint64    `json:"generation"`
	SagaID     string    `json:"saga_id,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	// Credentials are the tenant's credential versions, each as the
	// SHA-256 hash Redis holds for it: one after Provision, two during a
	// rotation's grace. Empty in records written before rotation existed.
	Credentials []credentialHash `json:"credentials,omitempty"`
	// Suspended is true between Suspend and Resume: the user is off.
	Suspended bool `json:"suspended,omitempty"`
	// PlanRules are the command rules the tenant's plan adds after the
	// command rules of every tenant (plan.go); ApplyPlan sets them.
	PlanRules []string `json:"plan_rules,omitempty"`
}

// credentialHash is one credential version's password hash.
type credentialHash struct {
	Version int    `json:"version"`
	SHA256  string `json:"sha256"`
	// Retiring is set by Retire before it removes the password, so that a
	// Retire interrupted there is never undone by Observe's repair.
	Retiring bool `json:"retiring,omitempty"`
}

// record returns tenantprov's record of user, if any.
func (s *Store) record(ctx context.Context, user string) (managedUser, bool, error) {
	raw, err := s.admin.HGet(ctx, ManagedUsersKey, user).Result()
	if errors.Is(err, redis.Nil) {
		return managedUser{}, false, nil
	}
	if err != nil {
		return managedUser{}, false, storeError("read managed record of "+user, err)
	}
	var rec managedUser
	if err := json.Unmarshal([]byte(raw), &rec); err != nil {
		// A record we cannot read is still our marker: the field can only
		// have been written by the admin user.
		return managedUser{Tenant: strings.TrimPrefix(user, "tenant_")}, true, nil
	}
	return rec, true, nil
}

// writeRecord writes tenantprov's record of user.
func (s *Store) writeRecord(ctx context.Context, user string, rec managedUser) error {
	raw, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("redis: encode managed record: %w", err)
	}
	if err := s.admin.HSet(ctx, ManagedUsersKey, user, raw).Err(); err != nil {
		return storeError("write managed record of "+user, err)
	}
	return nil
}

// userExists reports whether an ACL user called user exists.
func (s *Store) userExists(ctx context.Context, user string) (bool, error) {
	err := s.admin.Do(ctx, "ACL", "GETUSER", user).Err()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, storeError("acl getuser "+user, err)
	}
	return true, nil
}

// saveACL persists the server's ACL users with ACL SAVE. It returns
// ErrNoACLFile when the server has no aclfile, and a permanent error
// matching NOPERM when the admin user may not save.
//
// ACL SAVE rewrites (and fsyncs) the whole aclfile, every tenant's user,
// so its cost grows with the number of tenants. Concurrent callers share
// one save (agent.Rounds) that began after each of them asked, which persists
// every change each of them made before asking, as a save of its own would.
func (s *Store) saveACL(ctx context.Context) error {
	_, err := s.saveRounds.Get(ctx, struct{}{}, s.saveACLNow)
	return err
}

// saveACLNow runs one ACL SAVE (see saveACL).
func (s *Store) saveACLNow(ctx context.Context, _ []struct{}) (struct{}, error) {
	err := s.admin.Do(ctx, "ACL", "SAVE").Err()
	if err != nil && isRedisReply(err) && strings.Contains(err.Error(), "not configured to use an ACL file") {
		return struct{}{}, ErrNoACLFile
	}
	return struct{}{}, storeError("acl save", err)
}

// tenantOf checks that the request's tenant is a valid ID; a TenantID can be
// converted from any string, and names built from it reach ACL rules.
func tenantOf(t events.TenantID) (events.TenantID, error) {
	id, err := events.ParseTenantID(string(t))
	if err != nil {
		return "", agent.Permanent(events.ReasonInvalid, err)
	}
	return id, nil
}

// Provision creates or resets the tenant's ACL user from `reset`: keys and
// channels confined to tenant:<id>:, CommandRules, req.Password as its
// SHA-256 hash. Re-provisioning rotates the password and disconnects the
// sessions of the previous one. The user is persisted with ACL SAVE; when the
// server has no aclfile (or the admin may not save) the response carries a
// warning instead. An ACL user with the tenant's name that tenantprov did not
// create fails with agent.ErrConflict and is left as it is.
func (s *Store) Provision(ctx context.Context, req agent.ProvisionRequest) (agent.ProvisionResponse, error) {
	id, err := tenantOf(req.Tenant)
	if err != nil {
		return agent.ProvisionResponse{}, err
	}
	if req.Password.IsZero() {
		return agent.ProvisionResponse{}, agent.Permanent(events.ReasonInvalid, errors.New("redis: provision: empty password"))
	}
	user := id.RedisUser()

	if err := s.admin.SetNX(ctx, CanaryKey, "tenantprov isolation canary: no tenant may read this key", 0).Err(); err != nil {
		return agent.ProvisionResponse{}, storeError("create canary "+CanaryKey, err)
	}

	rec, managed, err := s.record(ctx, user)
	if err != nil {
		return agent.ProvisionResponse{}, err
	}
	existed, err := s.userExists(ctx, user)
	if err != nil {
		return agent.ProvisionResponse{}, err
	}
	if existed && !managed {
		what := "redis ACL user " + user
		if lost, err := s.looksProvisioned(ctx, id); err == nil && lost {
			what += " (it has tenantprov's rules but no record in " + ManagedUsersKey + ": evicted, or deleted by hand?)"
		}
		return agent.ProvisionResponse{}, agent.Conflict(what)
	}
	if managed && req.Generation != 0 && rec.Generation > req.Generation {
		return agent.ProvisionResponse{}, agent.Permanent(events.ReasonInvalid,
			fmt.Errorf("redis: provision %s generation %d: record holds generation %d: %w", user, req.Generation, rec.Generation, ErrStaleGeneration))
	}

	// The record goes first: an agent that dies after it leaves a user (or
	// nothing) marked as ours, which a redelivered command or a deprovision
	// then finishes. The reverse order could leave an unmarked user that
	// every later attempt would take for a foreign one.
	now := s.now().UTC()
	if !managed {
		rec.CreatedAt = now
	}
	hash := passwordHash(req.Password)
	rec.Tenant, rec.Generation, rec.SagaID, rec.UpdatedAt = string(id), req.Generation, req.SagaID, now
	// Provisioning (again) starts the tenant over at credential version 1,
	// active.
	rec.Credentials, rec.Suspended = []credentialHash{{Version: 1, SHA256: hash}}, false
	rec.PlanRules = nil // the reset below drops them; a plan is applied after
	if err := s.writeRecord(ctx, user, rec); err != nil {
		return agent.ProvisionResponse{}, err
	}

	args := []any{"ACL", "SETUSER", user}
	for _, r := range aclRules(id, req.Password, s.cfg.TenantScripting) {
		args = append(args, r)
	}
	if err := s.admin.Do(ctx, args...).Err(); err != nil {
		return agent.ProvisionResponse{}, storeError("acl setuser "+user, err, hash, req.Password.Reveal())
	}
	if existed {
		// A new password does not end sessions authenticated with the old one.
		if err := s.admin.ClientKillByFilter(ctx, "USER", user).Err(); err != nil && !redis.HasErrorPrefix(err, "No such user") {
			return agent.ProvisionResponse{}, storeError("client kill user "+user, err)
		}
	}

	var warnings []string
	if w := s.evictionWarning(ctx); w != "" {
		warnings = append(warnings, w)
	}
	switch err := s.saveACL(ctx); {
	case errors.Is(err, ErrNoACLFile):
		warnings = append(warnings, fmt.Sprintf("redis has no aclfile: ACL user %s will not survive a server restart", user))
	case redis.IsPermissionError(err):
		warnings = append(warnings, fmt.Sprintf("ACL SAVE is not permitted to the admin user: ACL user %s is not persisted and will not survive a server restart", user))
	case err != nil:
		return agent.ProvisionResponse{}, err
	}

	return agent.ProvisionResponse{
		Resources: map[string]string{
			ResourceUser:          user,
			ResourceKeyPrefix:     id.RedisKeyPrefix(),
			ResourceChannelPrefix: id.RedisChannelPrefix(),
		},
		Credential: agent.Credential{
			CredAddr:      s.cfg.TenantAddr(),
			CredUsername:  user,
			CredPassword:  req.Password,
			CredKeyPrefix: id.RedisKeyPrefix(),
		},
		Warnings: warnings,
	}, nil
}

// Deprovision removes the tenant's ACL user (which disconnects its sessions),
// persists that with ACL SAVE, unlinks every key under tenant:<id>: (SCAN,
// not KEYS), and finally drops tenantprov's record, so that a deprovision
// interrupted at any point is finished by the next one. It reports success
// only once the user is gone and no key under the prefix is left (otherwise
// an error matching ErrNotRemoved, which the runtime retries). Without a
// record nothing is touched: a foreign user with the tenant's name is
// reported in Skipped, and keys under the prefix are left alone too (see the
// comment in the body). A record of a newer generation than the command's
// means the user now belongs to that generation: it is left in place with a
// warning (the record is the agent's own, written only by the admin, so a
// tenant cannot forge a newer generation).
func (s *Store) Deprovision(ctx context.Context, req agent.DeprovisionRequest) (agent.DeprovisionResponse, error) {
	id, err := tenantOf(req.Tenant)
	if err != nil {
		return agent.DeprovisionResponse{}, err
	}
	user := id.RedisUser()
	var resp agent.DeprovisionResponse

	rec, managed, err := s.record(ctx, user)
	if err != nil {
		return resp, err
	}
	if !managed {
		// Provision writes the record before anything else and Deprovision
		// removes it last, so without one tenantprov has nothing here. Keys
		// under tenant:<id>: that exist now were written by whoever holds
		// the foreign user (or by hand), not by a tenant of ours: deleting
		// them would destroy data we never owned, so they stay.
		exists, err := s.userExists(ctx, user)
		if err != nil {
			return resp, err
		}
		if !exists {
			return resp, nil
		}
		// A tenant cannot write the record, but one that fills memory
		// under an allkeys-* maxmemory-policy can get it evicted. A user
		// with exactly tenantprov's rules is then almost certainly ours:
		// neither deleted (it may not be ours) nor reported gone (it may
		// be, and can still authenticate) — the failure is retried and
		// surfaced until an operator decides.
		lost, err := s.looksProvisioned(ctx, id)
		if err != nil {
			return resp, err
		}
		if lost {
			return resp, fmt.Errorf("redis: deprovision %s: ACL user %s has exactly tenantprov's rules but no record in %s (evicted, or deleted by hand): left in place until an operator restores the record (HSET %s %s '{\"tenant\":%q,\"generation\":<n>}'; deprovision then removes the user and its keys) or deletes the user: %w",
				id, user, ManagedUsersKey, ManagedUsersKey, user, id, ErrRecordLost)
		}
		resp.Skipped = append(resp.Skipped, "redis ACL user "+user+" (not created by tenantprov)")
		return resp, nil
	}
	if req.Generation != 0 && rec.Generation > req.Generation {
		resp.Warnings = append(resp.Warnings, fmt.Sprintf(
			"redis ACL user %s belongs to generation %d, newer than this command's %d: left in place", user, rec.Generation, req.Generation))
		return resp, nil
	}

	if err := s.admin.Do(ctx, "ACL", "DELUSER", user).Err(); err != nil {
		return resp, storeError("acl deluser "+user, err)
	}
	// Saved even when the user was already gone: a deprovision that died
	// between DELUSER and SAVE left it in the aclfile.
	switch err := s.saveACL(ctx); {
	case errors.Is(err, ErrNoACLFile):
		// Nothing on disk to bring the user back.
	case redis.IsPermissionError(err):
		resp.Warnings = append(resp.Warnings, fmt.Sprintf(
			"ACL SAVE is not permitted to the admin user: if ACL user %s was ever saved to the aclfile, a restart or ACL LOAD brings it back", user))
	case err != nil:
		return resp, err
	}

	if _, err := s.unlinkPrefix(ctx, id.RedisKeyPrefix()); err != nil {
		return resp, err
	}
	// Success means the tenant can no longer authenticate and nothing of it
	// remains; anything else is a transient failure, retried (with the
	// record kept, so that the retry finishes the job).
	if err := s.checkRemoved(ctx, id); err != nil {
		return resp, err
	}
	if err := s.admin.HDel(ctx, ManagedUsersKey, user).Err(); err != nil {
		return resp, storeError("delete managed record of "+user, err)
	}
	return resp, nil
}

// looksProvisioned reports whether the tenant's ACL user has exactly the
// rules Provision sets (under any stance), passwords and on/off aside.
func (s *Store) looksProvisioned(ctx context.Context, id events.TenantID) (bool, error) {
	got, ok, err := s.getUser(ctx, id.RedisUser())
	if err != nil || !ok {
		return false, err
	}
	for _, stance := range []Scripting{ScriptingDeny, ScriptingReadOnly, ScriptingAllow} {
		diffs, err := s.ruleDiffs(ctx, id, got, stance)
		if err != nil {
			return false, err
		}
		if len(diffs) == 0 {
			return true, nil
		}
	}
	return false, nil
}

// evictionWarning returns a warning when the server may evict keys without
// a TTL (maxmemory-policy allkeys-*): a tenant that fills memory could then
// get tenantprov's records evicted. "" when the policy is safe or the admin
// may not read it.
func (s *Store) evictionWarning(ctx context.Context) string {
	v, err := s.admin.ConfigGet(ctx, "maxmemory-policy").Result()
	if err != nil {
		return ""
	}
	if p := v["maxmemory-policy"]; strings.HasPrefix(p, "allkeys-") {
		return fmt.Sprintf("redis maxmemory-policy is %s: a tenant filling memory can get tenantprov's records (%s) evicted, and its user then cannot be deprovisioned without an operator; use noeviction or a volatile-* policy", p, ManagedUsersKey)
	}
	return ""
}

// checkRemoved returns an error matching ErrNotRemoved when the tenant's
// ACL user still exists or a key under its prefix is left.
func (s *Store) checkRemoved(ctx context.Context, id events.TenantID) error {
	user := id.RedisUser()
	exists, err := s.userExists(ctx, user)
	if err != nil {
		return err
	}
	if exists {
		return fmt.Errorf("redis: deprovision %s: ACL user %s still exists: %w", id, user, ErrNotRemoved)
	}
	n, err := s.countPrefix(ctx, id.RedisKeyPrefix())
	if err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("redis: deprovision %s: %d keys left under %s: %w", id, n, id.RedisKeyPrefix(), ErrNotRemoved)
	}
	return nil
}

// countPrefix counts the keys beginning with prefix (by SCAN).
func (s *Store) countPrefix(ctx context.Context, prefix string) (int, error) {
	pattern := escapeGlob(prefix) + "*"
	n := 0
	iter := s.admin.Scan(ctx, 0, pattern, scanCount).Iterator()
	for iter.Next(ctx) {
		n++
	}
	if err := iter.Err(); err != nil {
		return n, storeError("scan "+pattern, err)
	}
	return n, nil
}

// unlinkPrefix unlinks every key beginning with prefix, page by page, and
// returns how many it removed. SCAN walks the whole key space (MATCH filters
// on the server after the walk), so it costs O(all keys) but never blocks
// the server the way KEYS would.
func (s *Store) unlinkPrefix(ctx context.Context, prefix string) (int64, error) {
	pattern := escapeGlob(prefix) + "*"
	var cursor uint64
	var total int64
	for {
		keys, next, err := s.admin.Scan(ctx, cursor, pattern, scanCount).Result()
		if err != nil {
			return total, storeError("scan "+pattern, err)
		}
		if len(keys) > 0 {
			n, err := s.admin.Unlink(ctx, keys...).Result()
			if err != nil {
				return total, storeError("unlink keys under "+prefix, err)
			}
			total += n
		}
		if next == 0 {
			return total, nil
		}
		cursor = next
	}
}
