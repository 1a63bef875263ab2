package miniostore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/minio/madmin-go/v3"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// Credential versions in MinIO (DESIGN.md §10).
//
// Version 1 is the IAM user tenant-<id> with the secret Provision set.
// Every later version is a service account the agent (with the admin
// credential — tenants are denied admin:*) creates under that user: its
// access key is derived from the tenant, generation and version
// (rotationKey, 20 characters, MinIO's limit for service accounts) and
// recorded in the system record before it is created; it inherits the
// user's policy (ImpliedPolicy), so it reaches exactly what the user
// reaches. The secrets file keeps its meaning: access_key and secret_key
// of the newest version.
//
// Retire removes every service account under the user but the kept one,
// and retires version 1 by resetting the user's secret to a random value
// nobody keeps (the user must stay: it is the parent, and its policy is
// what the service accounts inherit). It also revokes the user's temporary
// (STS) keys, which a client could have minted with the retired secret.
// Suspend disables the user: MinIO then refuses the user's own key and
// every service account under it (AccessDenied); Resume enables it.

var (
	_ agent.Rotator   = (*Store)(nil)
	_ agent.Suspender = (*Store)(nil)
	_ agent.Observer  = (*Store)(nil)
)

// serviceAccountSecretMax is MinIO's upper bound on a service account's
// secret key.
const serviceAccountSecretMax = 40

// rotatedKey is one rotated credential in the system record.
type rotatedKey struct {
	Version   int    `json:"version"`
	AccessKey string `json:"access_key"`
}

// errNotProvisioned reports a lifecycle call for a tenant this agent has
// no system record of.
var errNotProvisioned = errors.New("no tenantprov record: the tenant is not provisioned in MinIO")

// rotationKey is the access key of credential version v (≥ 2) of the
// tenant's generation: "tp" and 18 hex digits of a hash, which can never
// be a tenant user's name (those start with "tenant-").
func rotationKey(t events.TenantID, generation uint64, v int) string {
	h := sha256.Sum256([]byte("tenantprov/minio/rotation\x00" + string(t) + "\x00" +
		strconv.FormatUint(generation, 10) + "\x00" + strconv.Itoa(v)))
	return "tp" + hex.EncodeToString(h[:9])
}

// rotationSecret is the service-account secret made from the generated
// password: its first 40 characters (MinIO's limit; 240 random bits of a
// base64url secret).
func rotationSecret(pw secret.String) secret.String {
	s := pw.Reveal()
	if len(s) > serviceAccountSecretMax {
		s = s[:serviceAccountSecretMax]
	}
	return secret.String(s)
}

// key returns the recorded access key of version v.
func (r *record) key(v int) (string, bool) {
	for _, k := range r.Keys {
		if k.Version == v {
			return k.AccessKey, true
		}
	}
	return "", false
}

// recordedKeys is the set of the record's rotated access keys.
func (r *record) recordedKeys() map[string]bool {
	m := map[string]bool{}
	if r == nil {
		return m
	}
	for _, k := range r.Keys {
		m[k.AccessKey] = true
	}
	return m
}

// lifecycleRecord reads the record a lifecycle call needs: it must exist
// and be of req's generation (0 is not checked).
func (s *Store) lifecycleRecord(ctx context.Context, t events.TenantID, generation uint64) (*record, error) {
	if _, err := events.ParseTenantID(string(t)); err != nil {
		return nil, agent.Permanent(events.ReasonInvalid, err)
	}
	if err := s.ensureSystem(ctx); err != nil {
		return nil, err
	}
	rec, err := s.readRecord(ctx, t)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, agent.Permanent(events.ReasonInvalid, fmt.Errorf("tenant %s: %w", t, errNotProvisioned))
	}
	if generation > 0 && rec.Generation != generation {
		return nil, agent.Permanent(events.ReasonInvalid, fmt.Errorf("tenant %s is at generation %d, the command is for %d: %w",
			t, rec.Generation, generation, ErrStaleGeneration))
	}
	return rec, nil
}

// Rotate creates (or, for the same version, resets) credential
// req.Version: a service account under the tenant's user whose secret is
// the first 40 characters of req.Password. Its access key is recorded in
// the system record before it is created, so Verify accepts it and
// Deprovision removes it after any crash. An access key of that name held
// by anything but a service account of the tenant's user is a conflict.
// The current credential is not touched.
func (s *Store) Rotate(ctx context.Context, req agent.RotateRequest) (agent.RotateResponse, error) {
	t := req.Tenant
	if req.Version < 2 || req.Version <= req.CurrentVersion {
		return agent.RotateResponse{}, agent.Permanent(events.ReasonInvalid,
			fmt.Errorf("rotate %s: version %d after %d: versions start at 1 and grow", t, req.Version, req.CurrentVersion))
	}
	pw := rotationSecret(req.Password)
	if len(pw.Reveal()) < minSecretLen {
		return agent.RotateResponse{}, agent.Permanent(events.ReasonInvalid,
			fmt.Errorf("credential for %s is %d characters; MinIO needs at least %d", t, len(pw.Reveal()), minSecretLen))
	}
	rec, err := s.lifecycleRecord(ctx, t, req.Generation)
	if err != nil {
		return agent.RotateResponse{}, err
	}
	ak, ok := rec.key(req.Version)
	if !ok {
		ak = rotationKey(t, rec.Generation, req.Version)
		next := *rec
		next.Keys = append(slices.Clone(rec.Keys), rotatedKey{Version: req.Version, AccessKey: ak})
		if err := s.writeRecord(ctx, &next); err != nil {
			return agent.RotateResponse{}, err
		}
		rec = &next
	}
	if err := s.putServiceAccount(ctx, t, ak, pw); err != nil {
		return agent.RotateResponse{}, err
	}
	endpoint, secure := s.cfg.publicEndpoint()
	return agent.RotateResponse{Credential: agent.Credential{
		CredEndpoint:  endpoint,
		CredSecure:    secure,
		CredBucket:    t.MinIOBucket(),
		CredAccessKey: ak,
		CredSecretKey: pw,
	}}, nil
}

// putServiceAccount creates service account ak under the tenant's user
// with secret pw, or resets the secret (and enables it) if it is already
// one of that user's.
func (s *Store) putServiceAccount(ctx context.Context, t events.TenantID, ak string, pw secret.String) error {
	parent, err := s.keyParent(ctx, ak)
	if err != nil {
		return err
	}
	switch parent {
	case "":
		err = s.call(ctx, "key.add", func(ctx context.Context) error {
			return sealedAdminCall(ctx, s.admin, s.cfg.RootPassword.Reveal(), http.MethodPut, "add-service-account", nil,
				madmin.AddServiceAccountReq{TargetUser: t.MinIOUser(), AccessKey: ak, SecretKey: pw.Reveal()})
		})
		if err == nil {
			return nil
		}
		if adminCode(err) != codeIAMServiceAccountNotAllowed {
			return fmt.Errorf("create service account %s of user %s: %w", ak, t.MinIOUser(), err)
		}
		// Taken since we looked: ours only if it is under our user.
		if parent, err = s.keyParent(ctx, ak); err != nil {
			return err
		}
		if parent != t.MinIOUser() {
			return agent.Conflict("access key " + ak + " (taken by another owner)")
		}
		fallthrough
	case t.MinIOUser():
		err = s.call(ctx, "key.update", func(ctx context.Context) error {
			return sealedAdminCall(ctx, s.admin, s.cfg.RootPassword.Reveal(), http.MethodPost, "update-service-account",
				url.Values{"accessKey": []string{ak}},
				madmin.UpdateServiceAccountReq{NewSecretKey: pw.Reveal(), NewStatus: "on"})
		})
		if err != nil {
			return fmt.Errorf("reset service account %s of user %s: %w", ak, t.MinIOUser(), err)
		}
		return nil
	default:
		return agent.Conflict("access key " + ak + " (held by " + parent + ", not by " + t.MinIOUser() + ")")
	}
}

// keyParent returns the parent user of service account ak, "" if no such
// access key exists, and a non-service-account marker "(user)" or
// "(<type>)" for any other kind of key.
func (s *Store) keyParent(ctx context.Context, ak string) (string, error) {
	var parent string
	err := s.call(ctx, "key.info", func(ctx context.Context) error {
		info, err := s.admin.InfoAccessKey(ctx, ak)
		switch {
		case adminCode(err) == codeAdminNoSuchAccessKey:
			return nil
		case err != nil:
			return err
		case info.UserType != "Service Account":
			parent = "(" + info.UserType + ")"
		default:
			parent = info.ParentUser
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("look up access key %s: %w", ak, err)
	}
	return parent, nil
}

// Retire revokes every credential of the tenant but version req.Keep:
// every service account under the user except Keep's (recorded or not),
// the user's own secret unless Keep is 1 (reset to a random secret
// nobody keeps), and the user's temporary keys. It then confirms that no
// other service account is left and records the change. Keeping a
// version that does not exist is refused (it would lock the tenant out).
func (s *Store) Retire(ctx context.Context, req agent.RetireRequest) (agent.RetireResponse, error) {
	t := req.Tenant
	rec, err := s.lifecycleRecord(ctx, t, req.Generation)
	if err != nil {
		return agent.RetireResponse{}, err
	}
	keepKey, ok := rec.key(req.Keep)
	switch {
	case req.Keep == 1 && rec.UserRetired, req.Keep != 1 && !ok:
		return agent.RetireResponse{}, agent.Permanent(events.ReasonInvalid,
			fmt.Errorf("retire %s: credential version %d to keep does not exist", t, req.Keep))
	}
	var resp agent.RetireResponse
	versionOf := map[string]int{}
	for _, k := range rec.Keys {
		versionOf[k.AccessKey] = k.Version
	}

	keys, err := s.serviceAccounts(ctx, t)
	if err != nil {
		return agent.RetireResponse{}, err
	}
	for _, a := range keys {
		if a.AccessKey == keepKey {
			continue
		}
		if err := s.removeServiceAccount(ctx, t, a.AccessKey); err != nil {
			return agent.RetireResponse{}, err
		}
		if v, ok := versionOf[a.AccessKey]; ok {
			resp.Retired = append(resp.Retired, v)
		} else {
			resp.Warnings = append(resp.Warnings, "removed service account "+a.AccessKey+" that tenantprov did not record")
		}
	}
	if req.Keep != 1 && !rec.UserRetired {
		nobody, err := secret.Generate()
		if err != nil {
			return agent.RetireResponse{}, err
		}
		status := madmin.AccountEnabled
		if rec.Suspended {
			status = madmin.AccountDisabled
		}
		err = s.call(ctx, "user.retire_secret", func(ctx context.Context) error {
			return addUserStatusSealed(ctx, s.admin, s.cfg.RootPassword.Reveal(), t.MinIOUser(), nobody.Reveal(), status)
		})
		if err != nil {
			return agent.RetireResponse{}, fmt.Errorf("retire the secret of user %s: %w", t.MinIOUser(), err)
		}
		resp.Retired = append(resp.Retired, 1)
	}
	if err := s.revokeTemporaryKeys(ctx, t); err != nil {
		return agent.RetireResponse{}, err
	}

	// Confirm, then record.
	left, err := s.serviceAccounts(ctx, t)
	if err != nil {
		return agent.RetireResponse{}, err
	}
	for _, a := range left {
		if a.AccessKey != keepKey {
			return agent.RetireResponse{}, fmt.Errorf("retire %s: service account %s %w", t, a.AccessKey, errLeftInPlace)
		}
	}
	next := *rec
	next.UserRetired = req.Keep != 1
	next.Keys = nil
	if ok {
		next.Keys = []rotatedKey{{Version: req.Keep, AccessKey: keepKey}}
	}
	if next.UserRetired != rec.UserRetired || !slices.Equal(next.Keys, rec.Keys) {
		if err := s.writeRecord(ctx, &next); err != nil {
			return agent.RetireResponse{}, err
		}
	}
	slices.Sort(resp.Retired)
	return resp, nil
}

// serviceAccounts lists the service accounts under the tenant's user (none
// if the user does not exist). It uses list-service-accounts: the bulk
// access-key listing (ListAccessKeysBulk with a user) silently leaves out
// a disabled user, so it would see no keys of a suspended tenant.
func (s *Store) serviceAccounts(ctx context.Context, t events.TenantID) ([]madmin.ServiceAccountInfo, error) {
	var out []madmin.ServiceAccountInfo
	err := s.call(ctx, "user.list_service_accounts", func(ctx context.Context) error {
		r, err := s.admin.ListServiceAccounts(ctx, t.MinIOUser())
		out = r.Accounts
		return err
	})
	if err != nil && adminCode(err) != codeAdminNoSuchUser {
		return nil, fmt.Errorf("list service accounts of user %s: %w", t.MinIOUser(), err)
	}
	return out, nil
}

// removeServiceAccount deletes service account ak of the tenant's user
// (absent is success).
func (s *Store) removeServiceAccount(ctx context.Context, t events.TenantID, ak string) error {
	err := s.call(ctx, "user.remove_service_account", func(ctx context.Context) error {
		return s.admin.DeleteServiceAccount(ctx, ak)
	})
	if err != nil && adminCode(err) != codeInvalidIAMCredentials && adminCode(err) != codeAdminNoSuchAccessKey {
		return fmt.Errorf("remove service account %s of user %s: %w", ak, t.MinIOUser(), err)
	}
	return nil
}

// Suspend records the suspension, then disables the tenant's user: MinIO
// refuses the user's own key and every service account under it
// (AccessDenied) while the parent is disabled. S3 has no sessions; a
// request already being served completes. Bucket, objects, policy and
// keys are untouched.
func (s *Store) Suspend(ctx context.Context, req agent.SuspendRequest) error {
	return s.setSuspended(ctx, req, true)
}

// Resume enables the tenant's user again (its own key, if not retired,
// and its service accounts work as before Suspend), then records it.
func (s *Store) Resume(ctx context.Context, req agent.SuspendRequest) error {
	return s.setSuspended(ctx, req, false)
}

func (s *Store) setSuspended(ctx context.Context, req agent.SuspendRequest, suspended bool) error {
	t := req.Tenant
	rec, err := s.lifecycleRecord(ctx, t, req.Generation)
	if err != nil {
		return err
	}
	// The record first: if the agent dies before the status changes,
	// Observe (with Repair) sets the status the record says, and the
	// redelivered command does too.
	if rec.Suspended != suspended {
		next := *rec
		next.Suspended = suspended
		if err := s.writeRecord(ctx, &next); err != nil {
			return err
		}
	}
	return s.setUserStatus(ctx, t, suspended)
}

// setUserStatus disables (or enables) the tenant's user.
func (s *Store) setUserStatus(ctx context.Context, t events.TenantID, disabled bool) error {
	status := madmin.AccountEnabled
	if disabled {
		status = madmin.AccountDisabled
	}
	err := s.call(ctx, "user.set_status", func(ctx context.Context) error {
		return s.admin.SetUserStatus(ctx, t.MinIOUser(), status)
	})
	if err != nil {
		return fmt.Errorf("set user %s %s: %w", t.MinIOUser(), status, err)
	}
	return nil
}
