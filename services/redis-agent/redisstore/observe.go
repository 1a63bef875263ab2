package redisstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// Drift kinds Observe reports (agent.Drift.Kind).
const (
	// DriftKeyspaceLost: tenantprov's record hash (every tenant's record)
	// and the canary are all gone, so the server lost its key space (FLUSHALL, or a restart without
	// RDB/AOF): the tenant's keys went with it. Never repaired.
	DriftKeyspaceLost = "keyspace_lost"
	// DriftTenantMissing: neither record nor ACL user exists, but the key
	// space was not lost. Reported only (whether keys were lost cannot be
	// known).
	DriftTenantMissing = "tenant_missing"
	// DriftMarkerMissing: the ACL user exists without tenantprov's record.
	// Repaired only when the request's credential proves the user is ours
	// (its hash is one of the user's passwords).
	DriftMarkerMissing = "marker_missing"
	// DriftMarkerIncomplete: a record from before rotation existed names no
	// credential version; repaired from the request's credential.
	DriftMarkerIncomplete = "marker_incomplete"
	// DriftGeneration: the record belongs to another generation. Reported.
	DriftGeneration = "generation_mismatch"
	// DriftUserMissing: the record exists, the ACL user does not. Repaired
	// by recreating the user with the recorded password hashes.
	DriftUserMissing = "user_missing"
	// DriftRuleChanged: patterns, command rules, flags or selectors differ
	// from what Provision sets. Repaired.
	DriftRuleChanged = "rule_changed"
	// DriftPasswordAdded: the user has a password no recorded credential
	// version has (someone else can log in as the tenant). Repaired.
	DriftPasswordAdded = "password_added"
	// DriftRetireUnfinished: the password of a version Retire marked
	// retiring is still on the user. Repaired (removed), as the
	// redelivered Retire would.
	DriftRetireUnfinished = "retire_unfinished"
	// DriftPasswordMissing: a recorded credential version's password is
	// gone from the user. Repaired.
	DriftPasswordMissing = "password_missing"
	// DriftEnabledChanged: the user is on while suspended, or off while
	// active. Repaired.
	DriftEnabledChanged = "enabled_changed"
	// DriftForeignReach: another ACL user's patterns or commands reach the
	// tenant's prefix (Verify's inward_isolation). Foreign users are never
	// changed: reported only.
	DriftForeignReach = "foreign_reach"
	// DriftCredentialRefused: the current credential does not authenticate.
	DriftCredentialRefused = "credential_refused"
	// DriftCredentialUnrecorded: the current credential is not the
	// recorded hash of its version. Reported.
	DriftCredentialUnrecorded = "credential_unrecorded"
	// DriftCanaryMissing: the isolation canary key is gone. Repaired.
	DriftCanaryMissing = "canary_missing"
)

// Observe compares the tenant's ACL user with tenantprov's record of it
// and with Provision's rules, checks inward isolation with Verify's code,
// and authenticates with req.Credential. With req.Repair it rewrites the
// tenant's own user from the record (rules, passwords, on/off; a deleted
// user is recreated: the user holds no data), restores a lost marker when
// the credential proves ownership, and the canary. It never changes
// another ACL user, and never recreates keys: Redis has no record of which
// keys a tenant had, so a lost key is detectable only when the whole key
// space was lost (DriftKeyspaceLost). Drift details never hold a password
// or a password hash.
func (s *Store) Observe(ctx context.Context, req agent.ObserveRequest) (agent.ObserveResponse, error) {
	var resp agent.ObserveResponse
	id, err := tenantOf(req.Tenant)
	if err != nil {
		return resp, err
	}
	user := id.RedisUser()
	var credential secret.String
	if req.Credential != nil && req.Credential.String(CredUsername) == user {
		credential = req.Credential.Secret(CredPassword)
	}
	credHash := ""
	if !credential.IsZero() {
		credHash = passwordHash(credential)
	}
	report := func(d agent.Drift) { resp.Drift = append(resp.Drift, d) }
	repaired := func(d agent.Drift) { resp.Repaired = append(resp.Repaired, d) }

	rec, managed, err := s.record(ctx, user)
	if err != nil {
		return resp, err
	}
	got, exists, err := s.getUser(ctx, user)
	if err != nil {
		return resp, err
	}
	canary, err := s.admin.Exists(ctx, CanaryKey).Result()
	if err != nil {
		return resp, storeError("exists "+CanaryKey, err)
	}
	records, err := s.admin.Exists(ctx, ManagedUsersKey).Result()
	if err != nil {
		return resp, storeError("exists "+ManagedUsersKey, err)
	}
	// Our record, the whole record hash (every tenant's) and the canary all
	// gone: the key space itself was lost, not one key deleted by hand.
	if !managed && canary == 0 && records == 0 {
		report(agent.Drift{Kind: DriftKeyspaceLost, Resource: id.RedisKeyPrefix() + "*", DataLost: true,
			Detail: fmt.Sprintf("tenantprov's record of %s and the canary %s are both gone: the server lost its key space (FLUSHALL/FLUSHDB, or a restart without persistence), the tenant's keys with it; not recreated", user, CanaryKey)})
		return resp, nil
	}
	if canary == 0 {
		d := agent.Drift{Kind: DriftCanaryMissing, Resource: CanaryKey, Detail: "the isolation canary key is gone"}
		report(d)
		if req.Repair {
			if err := s.admin.SetNX(ctx, CanaryKey, "tenantprov isolation canary: no tenant may read this key", 0).Err(); err != nil {
				return resp, storeError("create canary "+CanaryKey, err)
			}
			repaired(d)
		}
	}

	if !managed {
		if !exists {
			report(agent.Drift{Kind: DriftTenantMissing, Resource: user,
				Detail: "neither the ACL user nor tenantprov's record exists; whether the tenant's keys survive cannot be known (Redis keeps no record of them)"})
			return resp, nil
		}
		d := agent.Drift{Kind: DriftMarkerMissing, Resource: ManagedUsersKey + " " + user,
			Detail: "ACL user " + user + " exists without tenantprov's record"}
		if credHash == "" || !slices.Contains(got.passwords, credHash) {
			// Nothing proves the user is ours: it stays as it is.
			d.Detail += "; the current credential does not prove it is tenantprov's, so it is left alone"
			report(d)
			return resp, nil
		}
		// The password was generated by tenantprov: the user is ours.
		report(d)
		rec = managedUser{Tenant: string(id), Generation: req.Generation, CreatedAt: s.now().UTC(),
			Credentials: []credentialHash{{Version: max(req.CredentialVersion, 1), SHA256: credHash}},
			Suspended:   !slices.Contains(got.flags, "on")}
		// Without Repair the comparison goes on against this record, held
		// in memory only.
		if req.Repair {
			rec.UpdatedAt = rec.CreatedAt
			if err := s.writeRecord(ctx, user, rec); err != nil {
				return resp, err
			}
			repaired(d)
		}
	}

	if req.Generation != 0 && rec.Generation != req.Generation {
		report(agent.Drift{Kind: DriftGeneration, Resource: ManagedUsersKey + " " + user,
			Detail: fmt.Sprintf("the record is of generation %d, the request of %d: not changed", rec.Generation, req.Generation)})
		return resp, nil
	}
	if len(rec.Credentials) == 0 {
		d := agent.Drift{Kind: DriftMarkerIncomplete, Resource: ManagedUsersKey + " " + user,
			Detail: "the record names no credential version"}
		report(d)
		if credHash == "" || !exists || !slices.Contains(got.passwords, credHash) {
			return resp, nil
		}
		rec.Credentials = []credentialHash{{Version: max(req.CredentialVersion, 1), SHA256: credHash}}
		if !req.Repair {
			return resp, nil
		}
		rec.UpdatedAt = s.now().UTC()
		if err := s.writeRecord(ctx, user, rec); err != nil {
			return resp, err
		}
		repaired(d)
	}
	if credHash != "" && req.CredentialVersion > 0 && rec.hashOf(req.CredentialVersion) != credHash {
		report(agent.Drift{Kind: DriftCredentialUnrecorded, Resource: user,
			Detail: fmt.Sprintf("the current credential is not the recorded credential version %d", req.CredentialVersion)})
	}

	// The tenant's own user, against the record and Provision's rules.
	var userDrift []agent.Drift
	if !exists {
		userDrift = append(userDrift, agent.Drift{Kind: DriftUserMissing, Resource: user,
			Detail: "ACL user " + user + " was deleted (its keys are not touched by that; whether any were lost cannot be known)"})
	} else {
		diffs, err := s.ruleDiffs(ctx, id, got, s.cfg.TenantScripting)
		if err != nil {
			return resp, err
		}
		if len(diffs) > 0 {
			userDrift = append(userDrift, agent.Drift{Kind: DriftRuleChanged, Resource: user, Detail: strings.Join(diffs, "; ")})
		}
		want, all := rec.activeHashes(), rec.hashes()
		var added, retiring, missing int
		for _, h := range got.passwords {
			switch {
			case !slices.Contains(all, h):
				added++
			case !slices.Contains(want, h):
				retiring++
			}
		}
		var missingVersions []int
		for _, c := range rec.Credentials {
			if !c.Retiring && !slices.Contains(got.passwords, c.SHA256) {
				missing++
				missingVersions = append(missingVersions, c.Version)
			}
		}
		if added > 0 {
			userDrift = append(userDrift, agent.Drift{Kind: DriftPasswordAdded, Resource: user,
				Detail: fmt.Sprintf("%d password(s) belong to no recorded credential version", added)})
		}
		if retiring > 0 {
			userDrift = append(userDrift, agent.Drift{Kind: DriftRetireUnfinished, Resource: user,
				Detail: fmt.Sprintf("%d password(s) of credential versions being retired are still there (an interrupted Retire)", retiring)})
		}
		if missing > 0 {
			userDrift = append(userDrift, agent.Drift{Kind: DriftPasswordMissing, Resource: user,
				Detail: fmt.Sprintf("the password of credential version(s) %v is gone", missingVersions)})
		}
		if on := slices.Contains(got.flags, "on"); on == rec.Suspended {
			userDrift = append(userDrift, agent.Drift{Kind: DriftEnabledChanged, Resource: user,
				Detail: fmt.Sprintf("the user is %s, the tenant is %s", map[bool]string{true: "on", false: "off"}[on], map[bool]string{true: "suspended", false: "active"}[rec.Suspended])})
		}
	}
	resp.Drift = append(resp.Drift, userDrift...)

	// The current credential, before any repair.
	refused := false
	if credHash != "" && !rec.Suspended {
		refused, err = s.refused(ctx, user, credential)
		if err != nil {
			return resp, err
		}
		if refused {
			report(agent.Drift{Kind: DriftCredentialRefused, Resource: user, Detail: "the current credential does not authenticate"})
		}
	}

	// Inward: other users reaching the prefix. Foreign: report only.
	inward, err := s.checkInward(ctx, id)
	if err != nil {
		return resp, err
	}
	if !inward.Passed {
		report(agent.Drift{Kind: DriftForeignReach, Resource: id.RedisKeyPrefix() + "*",
			Detail: inward.Detail + " (other users are never changed by tenantprov: an operator must)"})
	}

	if !req.Repair || len(userDrift) == 0 {
		return resp, nil
	}
	args := []any{"ACL", "SETUSER", user}
	for _, r := range append(userRules(id, rec.activeHashes(), !rec.Suspended, s.cfg.TenantScripting), rec.PlanRules...) {
		args = append(args, r)
	}
	if err := s.admin.Do(ctx, args...).Err(); err != nil {
		return resp, storeError("acl setuser "+user+" (repair)", err, rec.hashes()...)
	}
	if rec.Suspended {
		// Whoever turned the user on may have logged in meanwhile.
		if err := s.admin.ClientKillByFilter(ctx, "USER", user).Err(); err != nil && !redis.HasErrorPrefix(err, "No such user") {
			return resp, storeError("client kill user "+user, err)
		}
	}
	if _, err := s.persist(ctx, user); err != nil {
		return resp, err
	}
	resp.Repaired = append(resp.Repaired, userDrift...)
	if refused {
		still, err := s.refused(ctx, user, credential)
		if err != nil {
			return resp, err
		}
		if !still {
			repaired(agent.Drift{Kind: DriftCredentialRefused, Resource: user, Detail: "the current credential authenticates again"})
		}
	}
	return resp, nil
}

// refused reports whether user's login with password is refused.
func (s *Store) refused(ctx context.Context, user string, password secret.String) (bool, error) {
	c, err := s.client(user, password)
	if err != nil {
		return false, err
	}
	defer c.Close()
	err = c.Ping(ctx).Err()
	switch {
	case err == nil:
		return false, nil
	case redis.IsAuthError(err) || redis.IsPermissionError(err):
		return true, nil
	case isRedisReply(err):
		return true, nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false, err
	default:
		return false, storeError("authenticate as "+user, err, password.Reveal())
	}
}
