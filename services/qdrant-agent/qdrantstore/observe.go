package qdrantstore

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/qdrant/go-client/qdrant"
	"google.golang.org/grpc/codes"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// Drift kinds Observe reports (agent.Drift.Kind). Repaired with
// ObserveRequest.Repair: DriftMarkerMissing, DriftMarkerAltered,
// DriftTokenAdded, DriftTokenIDCopied, DriftRevocationPointMissing and
// DriftRevocationPointAltered (the last two only when the request carries
// the credential). Lost data is only reported: DriftCollectionMissing,
// DriftCollectionReplaced. The rest are reported for an operator.
const (
	// DriftCollectionMissing: the tenant's collection is gone (DataLost).
	DriftCollectionMissing = "resource_missing"
	// DriftCollectionReplaced: a collection tenantprov did not create now
	// holds the tenant's name; the tenant's token reaches it (DataLost).
	DriftCollectionReplaced = "collection_replaced"
	// DriftMarkerMissing / DriftMarkerAltered: the marker of origin in the
	// system collection is gone or names something else.
	DriftMarkerMissing = "marker_missing"
	DriftMarkerAltered = "marker_altered"
	// DriftTokenAdded: a token record names the tenant or its collection
	// that is not one of its recorded credential versions (inward: another
	// token reaches the collection). Repair deletes it.
	DriftTokenAdded = "token_added"
	// DriftTokenDuplicated: two token records claim the same recorded
	// credential version, neither the credential's; which is genuine is
	// unknown, so neither is removed. Reported (observe with that
	// version's credential to resolve it, or rotate).
	DriftTokenDuplicated = "token_duplicated"
	// DriftTokenIDCopied: another point carries the tenant's name or its
	// credential's token_id, which keeps that token valid beyond its
	// revocation (outward: the credential outlives what the control plane
	// controls). Repair deletes the point.
	DriftTokenIDCopied = "token_id_copied"
	// DriftRevocationPointMissing / DriftRevocationPointAltered: the
	// credential's revocation point is gone or changed, so the current
	// credential is refused. Repaired from the credential (its claims are
	// checked first: signed with the server's key and scoped as issued).
	DriftRevocationPointMissing = "revocation_point_missing"
	DriftRevocationPointAltered = "revocation_point_altered"
	// DriftCredentialInvalid: the credential given is not scoped as the
	// agent issues it (CheckTokenScoped fails). Reported.
	DriftCredentialInvalid = "credential_invalid"
	// DriftCredentialExpiring / DriftCredentialExpired: the credential's
	// exp is within QDRANT_TOKEN_EXPIRY_WARNING, or past. Rotation fixes
	// it; Observe only reports it (for tenantctl doctor).
	DriftCredentialExpiring = "credential_expiring"
	DriftCredentialExpired  = "credential_expired"
	// DriftCredentialRefused: the credential does not read and write its
	// collection (after any repair).
	DriftCredentialRefused = "credential_refused"
	// DriftOutwardAccess: the credential reaches something outside its
	// collection (the canary, the system collection, another tenant's
	// collection, collection management).
	DriftOutwardAccess = "outward_access"
	// DriftAliasAdded: an alias leads to the collection. Reported.
	DriftAliasAdded = "alias_added"
)

// Observe compares the tenant's slice with what was provisioned (DESIGN.md
// §5 and §10): the collection is tenantprov's, the marker of origin
// intact, the token records exactly the tenant's recorded credential
// versions (inward), no other point carrying the tenant's name or token_id
// (outward: nothing keeps a token valid past its revocation), no alias,
// and — with req.Credential — the credential scoped as issued, not near its
// exp, recorded, reading and writing its collection and denied everything
// else (Verify's own checks). With req.Repair it puts back the marker and
// the credential's revocation point and deletes stray points of the
// system collection (never anything outside it); a missing or replaced
// collection is reported with DataLost and never recreated or touched. A
// suspended tenant's refused credential is not drift.
func (s *Store) Observe(ctx context.Context, req agent.ObserveRequest) (agent.ObserveResponse, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var resp agent.ObserveResponse
	admin := withKey(ctx, s.cfg.APIKey)
	tenant, name := req.Tenant, req.Tenant.QdrantCollection()
	mode, _, err := s.prepare(ctx)
	if err != nil {
		s.forget()
		return resp, classify(err)
	}
	st, err := s.inspect(admin, tenant)
	if err != nil {
		return resp, classify(err)
	}
	if g := st.generation(); req.Generation > 0 && g > req.Generation {
		return resp, agent.Permanent(events.ReasonExpired, fmt.Errorf("observe %s generation %d: %w (generation %d exists)", name, req.Generation, ErrSuperseded, g))
	}
	switch st.owner {
	case absent:
		resp.Drift = append(resp.Drift, agent.Drift{Kind: DriftCollectionMissing, Resource: name, DataLost: true,
			Detail: "the collection is gone; its points cannot be recovered by tenantprov (restore from a snapshot, or deprovision)"})
		return resp, nil
	case foreign:
		resp.Drift = append(resp.Drift, agent.Drift{Kind: DriftCollectionReplaced, Resource: name, DataLost: true,
			Detail: "a collection tenantprov did not create holds the tenant's name (the tenant's own collection is gone); left as it is"})
		return resp, nil
	}
	generation := max(req.Generation, st.generation())

	var tok secret.String
	var scoped scopedToken
	credOK := false
	if t, ok := tokenOf(req.Credential); ok && mode == IsolationJWTRBAC {
		tok = t
		c, info := s.checkTokenScoped(t, name)
		scoped = info
		credOK = c.Passed
		if !c.Passed {
			resp.Drift = append(resp.Drift, agent.Drift{Kind: DriftCredentialInvalid, Resource: name, Detail: c.Detail})
		}
	}
	fallback, err := s.inferVersions(admin, tenant, generation, req.CredentialVersion)
	if err != nil {
		return resp, classify(err)
	}
	v, err := s.readSystem(admin, tenant, generation, scoped, fallback)
	if err != nil {
		return resp, classify(err)
	}

	type fix struct {
		drift agent.Drift
		apply func() error
	}
	var fixes []fix
	report := func(d agent.Drift) { resp.Drift = append(resp.Drift, d) }

	versions := v.versions
	if v.markerProblem != "" && !slices.Contains(versions, max(req.CredentialVersion, 1)) {
		versions = fallback
	}
	switch {
	case !v.markerFound:
		fixes = append(fixes, fix{agent.Drift{Kind: DriftMarkerMissing, Resource: name, Detail: "no marker of origin in " + events.QdrantSystemCollection},
			func() error { return s.putMarkerVersions(admin, tenant, generation, versions) }})
	case v.markerProblem != "":
		fixes = append(fixes, fix{agent.Drift{Kind: DriftMarkerAltered, Resource: name, Detail: v.markerProblem},
			func() error { return s.putMarkerVersions(admin, tenant, generation, versions[:min(len(versions), 2)]) }})
	}

	ownID := scoped.tokenID
	for _, sp := range v.strays {
		if credOK && ownID != "" && sp.id.GetUuid() == ownID {
			continue // the credential's own point, altered: handled below
		}
		kind := DriftTokenIDCopied
		if sp.token {
			kind = DriftTokenAdded
		}
		if sp.ambiguous {
			report(agent.Drift{Kind: DriftTokenDuplicated, Resource: name, Detail: sp.detail})
			continue
		}
		id := sp.id
		fixes = append(fixes, fix{agent.Drift{Kind: kind, Resource: name, Detail: sp.detail}, func() error { return s.deletePoint(admin, id) }})
	}

	suspended := v.suspended()
	if credOK && scoped.tokenID != "" && v.own == nil && !suspended {
		rec := tokenRecord{id: ownID, tokenID: ownID, tenant: tenant.String(), collection: name, generation: generation,
			expiresAt: scoped.exp, version: max(req.CredentialVersion, 1)}
		taken := slices.ContainsFunc(v.records, func(r tokenRecord) bool { return r.version == rec.version && r.tokenID != ownID })
		kind := DriftRevocationPointMissing
		if v.ownPoint {
			kind = DriftRevocationPointAltered
		}
		d := agent.Drift{Kind: kind, Resource: name, Detail: v.ownProblem}
		switch {
		case scoped.exp <= s.now().Unix():
			report(d) // expired anyway: nothing to restore
		case taken || !slices.Contains(versions, rec.version):
			d.Detail += fmt.Sprintf("; version %d is not a recorded version of the tenant (or another token holds it): not restored", rec.version)
			report(d)
		default:
			fixes = append(fixes, fix{d, func() error { return s.writeTokenRecord(admin, rec) }})
		}
	}
	if tok.IsZero() && mode == IsolationJWTRBAC && len(v.records) == 0 {
		report(agent.Drift{Kind: DriftRevocationPointMissing, Resource: name,
			Detail: "no token record of the tenant exists: its credential is refused (observe with the credential to restore it, or rotate)"})
	}

	aliases, err := s.client.ListCollectionAliases(admin, name)
	switch {
	case err != nil && unreachable(err):
		return resp, fmt.Errorf("observe %s (list aliases): %w", name, err)
	case err != nil && code(err) != codes.NotFound:
		return resp, classify(s.adminErr(fmt.Errorf("list aliases of %s: %w", name, err)))
	case len(aliases) > 0:
		report(agent.Drift{Kind: DriftAliasAdded, Resource: name, Detail: "aliases lead to the collection: " + strings.Join(aliases, ", ")})
	}

	for _, f := range fixes {
		report(f.drift)
		if !req.Repair {
			continue
		}
		if err := f.apply(); err != nil {
			return resp, classify(err)
		}
		resp.Repaired = append(resp.Repaired, f.drift)
	}

	exp := scoped.exp
	if exp == 0 && tok.IsZero() {
		for _, r := range v.records {
			if r.version == req.CredentialVersion {
				exp = r.expiresAt
			}
		}
	}
	if exp > 0 {
		switch now := s.now(); {
		case exp <= now.Unix():
			report(agent.Drift{Kind: DriftCredentialExpired, Resource: name, Detail: "the credential expired at " + expiresText(exp) + "; rotate it"})
		case exp <= now.Add(s.cfg.expiryWarning()).Unix():
			report(agent.Drift{Kind: DriftCredentialExpiring, Resource: name, Detail: fmt.Sprintf("the credential expires at %s, within %s; rotate it", expiresText(exp), s.cfg.expiryWarning())})
		}
	}

	// The credential itself, against the store as it now is: Verify's
	// outward checks.
	if tok.IsZero() || suspended {
		return resp, nil
	}
	own, err := s.checkOwnAccess(ctx, tok, name)
	if err != nil {
		return resp, err
	}
	if !own.Passed {
		report(agent.Drift{Kind: DriftCredentialRefused, Resource: name, Detail: own.Detail})
		return resp, nil
	}
	for _, check := range []func(context.Context, secret.String, string) (events.Check, error){s.checkCanaryDenied, s.checkAdminDenied} {
		c, err := check(ctx, tok, name)
		if err != nil {
			return resp, err
		}
		if !c.Passed {
			report(agent.Drift{Kind: DriftOutwardAccess, Resource: name, Detail: c.Name + ": " + c.Detail})
		}
	}
	return resp, nil
}

// inferVersions is what the tenant's credential versions are taken to be
// when the marker cannot say (missing, or naming something else): the
// credential's version, and a neighbouring version of a token record of
// the tenant's generation (a rotation's grace).
func (s *Store) inferVersions(admin context.Context, tenant events.TenantID, generation uint64, current int) ([]int, error) {
	current = max(current, 1)
	recs, err := s.tokenRecords(admin, tenant)
	if err != nil {
		return nil, err
	}
	vs := []int{current}
	for _, r := range recs {
		if r.generation == generation && r.collection == tenant.QdrantCollection() && r.tenant == tenant.String() &&
			(r.version == current-1 || r.version == current+1) && !slices.Contains(vs, r.version) && len(vs) < 2 {
			vs = append(vs, r.version)
		}
	}
	slices.Sort(vs)
	return vs, nil
}

// deletePoint deletes one point of the system collection; absent is fine.
func (s *Store) deletePoint(admin context.Context, id *qdrant.PointId) error {
	_, err := s.client.Delete(admin, &qdrant.DeletePoints{
		CollectionName: events.QdrantSystemCollection,
		Wait:           qdrant.PtrOf(true),
		Points:         qdrant.NewPointsSelector(id),
	})
	if err != nil && !isNotFound(err) {
		return s.adminErr(fmt.Errorf("delete point %s of %s: %w", pointIDString(id), events.QdrantSystemCollection, err))
	}
	return nil
}
