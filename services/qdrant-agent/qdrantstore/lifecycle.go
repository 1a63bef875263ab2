package qdrantstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/qdrant/go-client/qdrant"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// The lifecycle after provisioning (DESIGN.md §10). A tenant's credential
// is a JWT valid while its revocation point — the token record in the
// system collection whose token_id its value_exists claim requires —
// exists. So:
//
//   - a second credential is a second JWT with its own token_id and
//     revocation point, recorded like the first with its credential
//     version; the marker lists the versions the tenant holds, and Verify
//     accepts exactly those records;
//   - retiring a version deletes its revocation point(s), after which its
//     JWT is refused (Unauthenticated) on the next request;
//   - suspending moves each record's token_id to suspended_token_id, so
//     that no point matches the JWTs' value_exists (refused on the next
//     request: Qdrant checks value_exists on every request, there is no
//     session to end), and resuming moves it back: the same JWTs work again.
var (
	_ agent.Rotator   = (*Store)(nil)
	_ agent.Suspender = (*Store)(nil)
	_ agent.Observer  = (*Store)(nil)
)

// ErrSuspended reports a rotation asked of a suspended tenant. Reason
// "invalid".
var ErrSuspended = errors.New("the tenant's credentials are suspended")

// probeTTL bounds the lifetime of the tokens the agent signs to confirm
// that a retired or suspended token_id is refused.
const probeTTL = 2 * time.Minute

// owned inspects the tenant and returns its state when the collection is
// tenantprov's for req's generation; otherwise a permanent error (a
// missing or foreign collection cannot get credentials; a newer generation
// supersedes the request).
func (s *Store) owned(admin context.Context, tenant events.TenantID, generation uint64) (collectionState, error) {
	st, err := s.inspect(admin, tenant)
	if err != nil {
		return st, classify(err)
	}
	name := tenant.QdrantCollection()
	if g := st.generation(); generation > 0 && g > generation {
		return st, agent.Permanent(events.ReasonExpired, fmt.Errorf("%s generation %d: %w (generation %d exists); nothing changed", name, generation, ErrSuperseded, g))
	}
	switch st.owner {
	case foreign:
		return st, agent.Conflict("qdrant collection " + name)
	case absent:
		return st, agent.Permanent(events.ReasonStoreError, fmt.Errorf("collection %s does not exist; nothing changed", name))
	}
	return st, nil
}

// Rotate issues a second JWT for the tenant's collection, as credential
// req.Version, with its own token_id and revocation point, next to the
// credential of req.CurrentVersion, which keeps working. The marker is
// updated first to record both versions (so Verify accepts both records),
// then the new record is written, then any other record of req.Version (a
// redelivered Rotate: the newest JWT wins) and any record of a version
// other than the two (a rotation that never completed) is revoked.
// req.Password is not used. The new JWT expires QDRANT_TOKEN_TTL from now;
// a warning says when the current one expires before the grace ends.
func (s *Store) Rotate(ctx context.Context, req agent.RotateRequest) (agent.RotateResponse, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var resp agent.RotateResponse
	if req.Version == req.CurrentVersion || req.Version < 1 || req.CurrentVersion < 1 {
		return resp, agent.Permanent(events.ReasonInvalid, fmt.Errorf("rotate from version %d to %d: want two different positive versions", req.CurrentVersion, req.Version))
	}
	mode, warnings, err := s.prepare(ctx)
	if err != nil {
		s.forget()
		return resp, classify(err)
	}
	resp.Warnings = slices.Clone(warnings)
	admin := withKey(ctx, s.cfg.APIKey)
	tenant, name := req.Tenant, req.Tenant.QdrantCollection()
	st, err := s.owned(admin, tenant, req.Generation)
	if err != nil {
		return resp, err
	}
	host, port := s.cfg.publicEndpoint()
	resp.Credential = agent.Credential{CredHost: host, CredGRPCPort: port, CredCollection: name}
	if mode == IsolationApplication {
		resp.Warnings = append(resp.Warnings, "isolation_mode=application: the tenant holds no Qdrant credential, nothing to rotate")
		return resp, nil
	}
	generation := max(req.Generation, st.generation())

	all, err := s.tokenRecords(admin, tenant)
	if err != nil {
		return resp, classify(err)
	}
	var current []tokenRecord
	for _, r := range all {
		if r.suspended {
			return resp, agent.Permanent(events.ReasonInvalid, fmt.Errorf("rotate %s: %w; resume it first", name, ErrSuspended))
		}
		if r.version == req.CurrentVersion {
			current = append(current, r)
		}
	}
	versions := []int{req.CurrentVersion, req.Version}
	slices.Sort(versions)
	if err := s.putMarkerVersions(admin, tenant, generation, versions); err != nil {
		return resp, classify(err)
	}

	tokenID, err := newTokenID()
	if err != nil {
		return resp, err
	}
	now := s.now().Truncate(time.Second)
	exp := now.Add(s.cfg.TokenTTL)
	rec := tokenRecord{id: tokenID, tokenID: tokenID, tenant: tenant.String(), collection: name, generation: generation, expiresAt: exp.Unix(), version: req.Version}
	if err := s.writeTokenRecord(admin, rec); err != nil {
		return resp, classify(err)
	}
	var stale []tokenRecord
	for _, r := range all {
		if r.tokenID != tokenID && r.version != req.CurrentVersion {
			stale = append(stale, r)
		}
	}
	if err := s.revokeRecords(admin, tenant, stale); err != nil {
		return resp, classify(err)
	}
	tok, err := sign(tokenClaims(tenant, tokenID, now, exp), s.cfg.APIKey)
	if err != nil {
		return resp, err
	}
	resp.Credential[CredAPIKey] = tok
	if len(current) == 0 {
		resp.Warnings = append(resp.Warnings, fmt.Sprintf("no token of version %d is recorded for %s: only the new version %d works", req.CurrentVersion, name, req.Version))
	}
	for _, r := range current {
		if req.Grace > 0 && r.expiresAt < now.Add(req.Grace).Unix() {
			resp.Warnings = append(resp.Warnings, fmt.Sprintf("the version %d token of %s expires at %s, before the grace of %s ends: it stops working then", r.version, name, expiresText(r.expiresAt), req.Grace))
		}
	}
	return resp, nil
}

// Retire revokes every token of the tenant except those of version
// req.Keep — deleting their revocation points, and any other point
// carrying their token_id, and reading the deletion back — records Keep as
// the tenant's only version on the marker, and confirms each retired
// token_id is refused by the server (a token the agent signs for it with
// the retired token_id must fail). It refuses to retire anything when no
// token of version Keep is recorded, so a tenant is never left without a
// credential.
func (s *Store) Retire(ctx context.Context, req agent.RetireRequest) (agent.RetireResponse, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var resp agent.RetireResponse
	mode, _, err := s.prepare(ctx)
	if err != nil {
		s.forget()
		return resp, classify(err)
	}
	admin := withKey(ctx, s.cfg.APIKey)
	tenant, name := req.Tenant, req.Tenant.QdrantCollection()
	st, err := s.owned(admin, tenant, req.Generation)
	if err != nil {
		return resp, err
	}
	if mode == IsolationApplication {
		return resp, nil
	}
	all, err := s.tokenRecords(admin, tenant)
	if err != nil {
		return resp, classify(err)
	}
	var keep, retire []tokenRecord
	for _, r := range all {
		if r.version == req.Keep {
			keep = append(keep, r)
		} else {
			retire = append(retire, r)
		}
	}
	if len(keep) == 0 {
		return resp, agent.Permanent(events.ReasonStoreError, fmt.Errorf("retire all but version %d of %s: no token of version %d is recorded; nothing retired", req.Keep, name, req.Keep))
	}
	if err := s.revokeRecords(admin, tenant, retire); err != nil {
		return resp, classify(err)
	}
	if st.marker == nil || !slices.Equal(st.marker.versions, []int{req.Keep}) {
		if err := s.putMarkerVersions(admin, tenant, max(req.Generation, st.generation()), []int{req.Keep}); err != nil {
			return resp, classify(err)
		}
	}
	for _, r := range retire {
		if err := s.confirmRefused(ctx, tenant, r.tokenID); err != nil {
			return resp, err
		}
		if !slices.Contains(resp.Retired, r.version) {
			resp.Retired = append(resp.Retired, r.version)
		}
	}
	slices.Sort(resp.Retired)
	return resp, nil
}

// Suspend makes every token of the tenant refused while keeping what
// Resume needs to bring the same tokens back: each revocation point's
// token_id moves to suspended_token_id, so the JWTs' value_exists matches
// nothing (Qdrant checks it on every request; gRPC has no session to end).
// Any other point carrying one of those token_ids — which would keep the
// token valid — is deleted. Each token_id is then confirmed refused.
func (s *Store) Suspend(ctx context.Context, req agent.SuspendRequest) error {
	return s.setSuspended(ctx, req, true)
}

// Resume puts back the token_id of every suspended revocation point of the
// tenant, so the same JWTs work again.
func (s *Store) Resume(ctx context.Context, req agent.SuspendRequest) error {
	return s.setSuspended(ctx, req, false)
}

func (s *Store) setSuspended(ctx context.Context, req agent.SuspendRequest, suspend bool) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	mode, _, err := s.prepare(ctx)
	if err != nil {
		s.forget()
		return classify(err)
	}
	admin := withKey(ctx, s.cfg.APIKey)
	tenant := req.Tenant
	if _, err := s.owned(admin, tenant, req.Generation); err != nil {
		return err
	}
	if mode == IsolationApplication {
		return nil
	}
	all, err := s.tokenRecords(admin, tenant)
	if err != nil {
		return classify(err)
	}
	var ids []string
	for _, r := range all {
		ids = append(ids, r.tokenID)
		if r.suspended == suspend {
			continue
		}
		r.suspended = suspend
		if err := s.writeTokenRecord(admin, r); err != nil {
			return classify(err)
		}
	}
	if !suspend || len(ids) == 0 {
		return nil
	}
	// Nothing else may carry a suspended token_id: such a point would keep
	// the token valid.
	copies := &qdrant.Filter{Must: []*qdrant.Condition{qdrant.NewMatchKeywords(keyTokenID, ids...)}}
	if _, err := s.client.Delete(admin, &qdrant.DeletePoints{
		CollectionName: events.QdrantSystemCollection,
		Wait:           qdrant.PtrOf(true),
		Points:         qdrant.NewPointsSelectorFilter(copies),
	}); err != nil && !isNotFound(err) {
		return classify(s.adminErr(fmt.Errorf("delete copies of suspended token_ids of %s: %w", tenant.QdrantCollection(), err)))
	}
	for _, id := range ids {
		if err := s.confirmRefused(ctx, tenant, id); err != nil {
			return err
		}
	}
	return nil
}

// tokenRecords returns every token record (kind "token") naming the tenant
// or its collection, suspended or not, whatever its shape.
func (s *Store) tokenRecords(admin context.Context, tenant events.TenantID) ([]tokenRecord, error) {
	pts, err := s.scrollSystem(admin, &qdrant.Filter{
		Must:   []*qdrant.Condition{qdrant.NewMatchKeyword(keyKind, kindToken)},
		Should: namingTenant(tenant),
	})
	if err != nil {
		return nil, err
	}
	var recs []tokenRecord
	for _, p := range pts {
		if r, ok := parseTokenRecord(p); ok {
			if r.tokenID == "" { // no token_id at all: nothing it keeps valid; remove by point ID
				r.tokenID = pointIDString(p.GetId())
			}
			r.id, r.point = pointIDString(p.GetId()), p.GetId()
			recs = append(recs, r)
		}
	}
	return recs, nil
}

// revokeRecords deletes the points of recs and every point carrying one of
// their token_ids (active or suspended), and reads the deletion back.
func (s *Store) revokeRecords(admin context.Context, tenant events.TenantID, recs []tokenRecord) error {
	if len(recs) == 0 {
		return nil
	}
	var pointIDs []*qdrant.PointId
	var tokenIDs []string
	for _, r := range recs {
		if r.point == nil {
			r.point = qdrant.NewIDUUID(r.tokenID)
		}
		pointIDs = append(pointIDs, r.point)
		tokenIDs = append(tokenIDs, r.tokenID)
	}
	revoked := &qdrant.Filter{Should: []*qdrant.Condition{
		qdrant.NewHasID(pointIDs...),
		qdrant.NewMatchKeywords(keyTokenID, tokenIDs...),
		qdrant.NewMatchKeywords(keySuspendedTokenID, tokenIDs...),
	}}
	_, err := s.client.Delete(admin, &qdrant.DeletePoints{
		CollectionName: events.QdrantSystemCollection,
		Wait:           qdrant.PtrOf(true),
		Points:         qdrant.NewPointsSelectorFilter(revoked),
	})
	if err != nil && !isNotFound(err) {
		return s.adminErr(fmt.Errorf("delete revocation points of %s: %w", tenant.QdrantCollection(), err))
	}
	left, err := s.scrollSystem(admin, revoked)
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return fmt.Errorf("revoke tokens of %s: %d point(s) keeping a revoked token valid are still in %s after the delete", tenant.QdrantCollection(), len(left), events.QdrantSystemCollection)
	}
	return nil
}

// confirmRefused signs a short-lived token exactly like the tenant's with
// tokenID in its value_exists claim and checks the server refuses it for a
// read of the tenant's collection: proof that every token bound to tokenID
// is refused. Acceptance is a transient error (the runtime retries).
func (s *Store) confirmRefused(ctx context.Context, tenant events.TenantID, tokenID string) error {
	now := s.now().Truncate(time.Second)
	tok, err := sign(tokenClaims(tenant, tokenID, now, now.Add(probeTTL)), s.cfg.APIKey)
	if err != nil {
		return err
	}
	_, err = s.client.Scroll(withKey(ctx, tok), &qdrant.ScrollPoints{CollectionName: tenant.QdrantCollection(), Limit: qdrant.PtrOf(uint32(1))})
	switch {
	case err == nil:
		return fmt.Errorf("token %s of %s is still accepted after its revocation point was removed", tokenID, tenant.QdrantCollection())
	case refused(err):
		return nil
	case unreachable(err):
		return fmt.Errorf("confirm token %s of %s is refused: %w", tokenID, tenant.QdrantCollection(), err)
	}
	return fmt.Errorf("confirm token %s of %s is refused: unexpected %s", tokenID, tenant.QdrantCollection(), code(err))
}
