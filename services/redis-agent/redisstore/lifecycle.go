package redisstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/redis/go-redis/v9"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// The lifecycle after provisioning (DESIGN.md §10). A Redis ACL user can
// hold several passwords, so a rotation's "second credential" is a second
// password (as its SHA-256 hash) on the same user: both authenticate as the
// same user with the same rules during the grace. Which hashes are the
// tenant's is recorded, by credential version, in tenantprov's record
// (ManagedUsersKey), which no tenant can reach; Verify and Observe accept
// exactly those.

var (
	_ agent.Rotator   = (*Store)(nil)
	_ agent.Suspender = (*Store)(nil)
	_ agent.Observer  = (*Store)(nil)
)

// ErrUserMissing reports that the tenant's ACL user is gone although
// tenantprov's record of it exists; Observe with Repair recreates it.
var ErrUserMissing = errors.New("the tenant's ACL user is missing")

// RetireSessionsWarning is the warning Retire returns: it does not end
// sessions opened with a retired password.
const RetireSessionsWarning = "sessions already authenticated with a retired password stay open until they close: Redis does not re-check a connection's password, and CLIENT KILL USER cannot tell them from the sessions of the kept password (suspend, or re-provision, to end them all)"

// owned returns tenantprov's record of the tenant's user for a lifecycle
// command of generation gen: an unmanaged user (or none) and a record of a
// newer generation are permanent failures, and the user must exist.
func (s *Store) owned(ctx context.Context, id events.TenantID, gen uint64, op string) (managedUser, aclUser, error) {
	user := id.RedisUser()
	rec, managed, err := s.record(ctx, user)
	if err != nil {
		return rec, aclUser{}, err
	}
	if !managed {
		return rec, aclUser{}, agent.Permanent(events.ReasonInvalid,
			fmt.Errorf("redis: %s %s: no record of ACL user %s in %s: not provisioned by tenantprov", op, id, user, ManagedUsersKey))
	}
	if gen != 0 && rec.Generation > gen {
		return rec, aclUser{}, agent.Permanent(events.ReasonInvalid,
			fmt.Errorf("redis: %s %s generation %d: record holds generation %d: %w", op, user, gen, rec.Generation, ErrStaleGeneration))
	}
	got, exists, err := s.getUser(ctx, user)
	if err != nil {
		return rec, got, err
	}
	if !exists {
		return rec, got, agent.Permanent(events.ReasonStoreError,
			fmt.Errorf("redis: %s %s: %w (%s): observe with repair recreates it", op, id, ErrUserMissing, user))
	}
	if len(rec.Credentials) == 0 {
		// A record from before rotation existed: the user's one password
		// is the provisioned credential, version 1. With any other number
		// nobody knows which is the tenant's.
		if len(got.passwords) != 1 {
			return rec, got, agent.Permanent(events.ReasonStoreError,
				fmt.Errorf("redis: %s %s: the record names no credential version and ACL user %s has %d passwords: observe with the current credential and repair first", op, id, user, len(got.passwords)))
		}
		rec.Credentials = []credentialHash{{Version: 1, SHA256: got.passwords[0]}}
	}
	return rec, got, nil
}

// hashOf returns the recorded hash of credential version v, "" if none.
func (r managedUser) hashOf(v int) string {
	for _, c := range r.Credentials {
		if c.Version == v {
			return c.SHA256
		}
	}
	return ""
}

// hashes returns the recorded hashes, by version.
func (r managedUser) hashes() []string {
	return r.hashesWhere(func(credentialHash) bool { return true })
}

// activeHashes returns the recorded hashes of the versions not being
// retired, by version: the passwords the user should have.
func (r managedUser) activeHashes() []string {
	return r.hashesWhere(func(c credentialHash) bool { return !c.Retiring })
}

func (r managedUser) hashesWhere(keep func(credentialHash) bool) []string {
	cs := slices.Clone(r.Credentials)
	sort.Slice(cs, func(i, j int) bool { return cs[i].Version < cs[j].Version })
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		if keep(c) && !slices.Contains(out, c.SHA256) {
			out = append(out, c.SHA256)
		}
	}
	return out
}

// persist saves the ACL (ACL SAVE) and turns the cases Provision warns
// about into a warning.
func (s *Store) persist(ctx context.Context, user string) (string, error) {
	switch err := s.saveACL(ctx); {
	case errors.Is(err, ErrNoACLFile):
		return fmt.Sprintf("redis has no aclfile: the change to ACL user %s will not survive a server restart", user), nil
	case redis.IsPermissionError(err):
		return fmt.Sprintf("ACL SAVE is not permitted to the admin user: the change to ACL user %s is not persisted and a restart undoes it", user), nil
	default:
		return "", err
	}
}

// Rotate adds req.Password, as its SHA-256 hash, to the tenant's ACL user
// next to the password(s) it has, after recording the hash as credential
// version req.Version (record first: an agent that dies in between leaves
// a recorded hash the user lacks, which the redelivered Rotate or Observe
// adds, never an unrecorded one Verify would reject). A hash the same
// version had before (a redelivered Rotate with a fresh secret) is
// removed. Open sessions are untouched. The new password is confirmed to
// authenticate before Rotate returns.
func (s *Store) Rotate(ctx context.Context, req agent.RotateRequest) (agent.RotateResponse, error) {
	id, err := tenantOf(req.Tenant)
	if err != nil {
		return agent.RotateResponse{}, err
	}
	if req.Password.IsZero() || req.Version <= 0 || req.Version == req.CurrentVersion {
		return agent.RotateResponse{}, agent.Permanent(events.ReasonInvalid,
			fmt.Errorf("redis: rotate %s: empty password or version %d (current %d)", id, req.Version, req.CurrentVersion))
	}
	user := id.RedisUser()
	rec, got, err := s.owned(ctx, id, req.Generation, "rotate")
	if err != nil {
		return agent.RotateResponse{}, err
	}
	hash := passwordHash(req.Password)
	prev := rec.hashOf(req.Version)
	rec.Credentials = slices.DeleteFunc(rec.Credentials, func(c credentialHash) bool { return c.Version == req.Version })
	rec.Credentials = append(rec.Credentials, credentialHash{Version: req.Version, SHA256: hash})
	rec.UpdatedAt = s.now().UTC()
	if err := s.writeRecord(ctx, user, rec); err != nil {
		return agent.RotateResponse{}, err
	}

	args := []any{"ACL", "SETUSER", user, "#" + hash}
	if prev != "" && prev != hash && slices.Contains(got.passwords, prev) && !slices.Contains(rec.hashes(), prev) {
		args = append(args, "!"+prev)
	}
	if err := s.admin.Do(ctx, args...).Err(); err != nil {
		return agent.RotateResponse{}, storeError("acl setuser "+user+" (add a password)", err, hash, prev, req.Password.Reveal())
	}
	var warnings []string
	w, err := s.persist(ctx, user)
	if err != nil {
		return agent.RotateResponse{}, err
	}
	if w != "" {
		warnings = append(warnings, w)
	}
	if !rec.Suspended {
		c, err := s.client(user, req.Password)
		if err != nil {
			return agent.RotateResponse{}, err
		}
		err = c.Ping(ctx).Err()
		_ = c.Close()
		if err != nil {
			return agent.RotateResponse{}, storeError(fmt.Sprintf("rotate %s: the new credential (version %d) does not authenticate", id, req.Version), err, req.Password.Reveal())
		}
	}
	return agent.RotateResponse{
		Credential: agent.Credential{
			CredAddr:      s.cfg.TenantAddr(),
			CredUsername:  user,
			CredPassword:  req.Password,
			CredKeyPrefix: id.RedisKeyPrefix(),
		},
		Warnings: warnings,
	}, nil
}

// Retire leaves the tenant's ACL user with only the password of credential
// version req.Keep, in one ACL SETUSER (`resetpass #<keep>`: no instant
// without the kept password), confirms with ACL GETUSER that no other is
// left, and only then drops the retired versions from the record (so the
// user's passwords are always among the recorded ones). New logins with a
// retired password get WRONGPASS; sessions already open with one are not
// ended (RetireSessionsWarning says why).
func (s *Store) Retire(ctx context.Context, req agent.RetireRequest) (agent.RetireResponse, error) {
	id, err := tenantOf(req.Tenant)
	if err != nil {
		return agent.RetireResponse{}, err
	}
	user := id.RedisUser()
	rec, _, err := s.owned(ctx, id, req.Generation, "retire")
	if err != nil {
		return agent.RetireResponse{}, err
	}
	keep := rec.hashOf(req.Keep)
	if keep == "" {
		return agent.RetireResponse{}, agent.Permanent(events.ReasonInvalid,
			fmt.Errorf("redis: retire %s: credential version %d is not recorded", id, req.Keep))
	}
	// Mark first: an agent killed after the ACL change must not leave a
	// record from which Observe's repair would put a retired password back.
	marked := false
	for i, c := range rec.Credentials {
		if c.Version != req.Keep && !c.Retiring {
			rec.Credentials[i].Retiring, marked = true, true
		}
	}
	if marked {
		rec.UpdatedAt = s.now().UTC()
		if err := s.writeRecord(ctx, user, rec); err != nil {
			return agent.RetireResponse{}, err
		}
	}
	if err := s.admin.Do(ctx, "ACL", "SETUSER", user, "resetpass", "#"+keep).Err(); err != nil {
		return agent.RetireResponse{}, storeError("acl setuser "+user+" (retire passwords)", err, keep)
	}
	resp := agent.RetireResponse{Warnings: []string{RetireSessionsWarning}}
	w, err := s.persist(ctx, user)
	if err != nil {
		return resp, err
	}
	if w != "" {
		resp.Warnings = append(resp.Warnings, w)
	}
	got, exists, err := s.getUser(ctx, user)
	if err != nil {
		return resp, err
	}
	if !exists || !slices.Equal(got.passwords, []string{keep}) || slices.Contains(got.flags, "nopass") {
		return resp, fmt.Errorf("redis: retire %s: ACL user %s does not hold exactly credential version %d after ACL SETUSER (%d passwords)", id, user, req.Keep, len(got.passwords))
	}
	var kept []credentialHash
	for _, c := range rec.Credentials {
		if c.Version == req.Keep {
			kept = append(kept, c)
		} else {
			resp.Retired = append(resp.Retired, c.Version)
		}
	}
	if len(resp.Retired) > 0 {
		rec.Credentials, rec.UpdatedAt = kept, s.now().UTC()
		if err := s.writeRecord(ctx, user, rec); err != nil {
			return resp, err
		}
	}
	sort.Ints(resp.Retired)
	return resp, nil
}

// Suspend records the tenant as suspended, turns its ACL user off (every
// password is then refused) and kills its connections (CLIENT KILL USER).
// Its keys, passwords and rules stay as they are.
func (s *Store) Suspend(ctx context.Context, req agent.SuspendRequest) error {
	return s.setEnabled(ctx, req, false)
}

// Resume records the tenant as active again and turns its ACL user on: the
// same passwords authenticate again.
func (s *Store) Resume(ctx context.Context, req agent.SuspendRequest) error {
	return s.setEnabled(ctx, req, true)
}

func (s *Store) setEnabled(ctx context.Context, req agent.SuspendRequest, on bool) error {
	op := map[bool]string{true: "resume", false: "suspend"}[on]
	id, err := tenantOf(req.Tenant)
	if err != nil {
		return err
	}
	user := id.RedisUser()
	rec, _, err := s.owned(ctx, id, req.Generation, op)
	if err != nil {
		return err
	}
	// Record first: Observe repairs the user towards the record, so a
	// crash in between is finished in the direction asked for.
	if rec.Suspended == on {
		rec.Suspended, rec.UpdatedAt = !on, s.now().UTC()
		if err := s.writeRecord(ctx, user, rec); err != nil {
			return err
		}
	}
	flag := map[bool]string{true: "on", false: "off"}[on]
	if err := s.admin.Do(ctx, "ACL", "SETUSER", user, flag).Err(); err != nil {
		return storeError("acl setuser "+user+" "+flag, err)
	}
	if !on {
		if err := s.admin.ClientKillByFilter(ctx, "USER", user).Err(); err != nil && !redis.HasErrorPrefix(err, "No such user") {
			return storeError("client kill user "+user, err)
		}
	}
	// A warning has no way out of Suspend; without an aclfile a restart
	// loses the user anyway, which Observe reports.
	_, err = s.persist(ctx, user)
	return err
}
