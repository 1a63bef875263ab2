package qdrantstore

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/qdrant/go-client/qdrant"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// systemView is what the system collection says about one tenant, read
// once and judged the same way by Verify's inward check (checkNoOtherToken)
// and by Observe (which may repair it).
type systemView struct {
	// markerFound is false when no marker of origin exists.
	markerFound bool
	// markerProblem says what is wrong with an existing marker ("" when
	// intact for the tenant, its collection and, when asked, the
	// generation).
	markerProblem string
	// versions are the credential versions the marker records ([1] when
	// it records none or is missing).
	versions []int
	// records are the tenant's token records the marker vouches for: for
	// this tenant, collection and generation, each of a recorded version
	// (at most one per version), point ID equal to token_id, expiring
	// within QDRANT_TOKEN_TTL. The credential's own record is among them
	// when own is set.
	records []tokenRecord
	// own is the credential's own record when it is one of records and
	// matches the credential (token_id, exp) and is not suspended.
	own *tokenRecord
	// ownPoint is true when a point with the credential's token_id as its
	// ID exists (own or not).
	ownPoint bool
	// ownProblem says why own is nil when a credential was given.
	ownProblem string
	// strays are the other points that name the tenant, its collection or
	// the credential's token_id: ways into the collection the control
	// plane did not issue to the tenant.
	strays []strayPoint
}

// strayPoint is a point of the system collection that names the tenant
// but is neither its marker nor one of its recorded token records.
type strayPoint struct {
	id        *qdrant.PointId
	token     bool // a token record (kind "token"); otherwise another point carrying the name or token_id
	ambiguous bool // one of several records claiming the same recorded version: not removed by a repair
	detail    string
}

// stray describes a point that names the tenant but is not what the
// marker vouches for.
func (s *Store) stray(p *qdrant.RetrievedPoint, tenant events.TenantID, versions []int) strayPoint {
	id := pointIDString(p.GetId())
	r, isToken := parseTokenRecord(p)
	sp := strayPoint{id: p.GetId(), token: isToken}
	if isToken {
		sp.detail = fmt.Sprintf("another live token record %s (tenant %q, collection %q, generation %d, version %d) names %s; the marker records versions %v",
			id, r.tenant, r.collection, r.generation, r.version, tenant.QdrantCollection(), versions)
	} else {
		sp.detail = fmt.Sprintf("point %s (kind %q) names %s or carries the credential's token_id", id, p.GetPayload()[keyKind].GetStringValue(), tenant.QdrantCollection())
	}
	return sp
}

// suspended reports whether every recorded token of the tenant is
// suspended (and there is at least one).
func (v systemView) suspended() bool {
	for _, r := range v.records {
		if !r.suspended {
			return false
		}
	}
	return len(v.records) > 0
}

// pointIDString is a point ID as text (UUID or number).
func pointIDString(id *qdrant.PointId) string {
	if u := id.GetUuid(); u != "" {
		return u
	}
	return fmt.Sprint(id.GetNum())
}

// readSystem reads, with the admin key, every point of the system
// collection naming the tenant, its collection or tok's token_id, and
// sorts them into a systemView. generation 0 accepts any generation;
// tok.tokenID "" means no credential is being judged. fallback are the
// credential versions to judge token records by when the marker is
// missing or names something else ([1] when nil).
func (s *Store) readSystem(admin context.Context, tenant events.TenantID, generation uint64, tok scopedToken, fallback []int) (systemView, error) {
	var v systemView
	name := tenant.QdrantCollection()
	f := &qdrant.Filter{Should: namingTenant(tenant)}
	if tok.tokenID != "" {
		f.Should = append(f.Should, qdrant.NewMatchKeyword(keyTokenID, tok.tokenID), qdrant.NewMatchKeyword(keySuspendedTokenID, tok.tokenID))
	}
	pts, err := s.scrollSystem(admin, f)
	if err != nil {
		return v, err
	}
	v.versions = []int{1}
	if len(fallback) > 0 {
		v.versions = fallback
	}
	mid := markerID(tenant).GetUuid()
	var rest []*qdrant.RetrievedPoint
	for _, p := range pts {
		pl := p.GetPayload()
		if p.GetId().GetUuid() == mid && pl[keyKind].GetStringValue() == kindCollection {
			v.markerFound = true
			switch {
			case pl[keyTenant].GetStringValue() != tenant.String() || pl[keyCollection].GetStringValue() != name:
				v.markerProblem = "the marker of origin names another tenant or collection"
				continue
			}
			v.versions = markerVersions(pl)
			switch {
			case generation != 0 && uint64(max(pl[keyGeneration].GetIntegerValue(), 0)) != generation:
				v.markerProblem = fmt.Sprintf("the marker of origin records generation %d, want %d", pl[keyGeneration].GetIntegerValue(), generation)
			case len(v.versions) > 2:
				v.markerProblem = fmt.Sprintf("the marker records %d credential versions, at most 2 may exist", len(v.versions))
			}
			continue
		}
		rest = append(rest, p)
	}
	maxExp := s.now().Add(s.cfg.TokenTTL + expSlack).Unix()
	seen := map[int]bool{}
	var candidates []*qdrant.RetrievedPoint
	// The credential's own point first, so that a stray of the same version
	// never displaces it.
	for _, p := range rest {
		pl := p.GetPayload()
		id := pointIDString(p.GetId())
		r, isToken := parseTokenRecord(p)
		recorded := isToken && id == r.tokenID && r.tenant == tenant.String() && r.collection == name &&
			(generation == 0 || r.generation == generation) && r.expiresAt > 0 && r.expiresAt <= maxExp &&
			slices.Contains(v.versions, r.version)
		if tok.tokenID == "" || id != tok.tokenID {
			if recorded {
				candidates = append(candidates, p)
			} else {
				v.strays = append(v.strays, s.stray(p, tenant, v.versions))
			}
			continue
		}
		v.ownPoint = true
		if recorded && r.expiresAt == tok.exp {
			seen[r.version] = true
			v.records = append(v.records, r)
			if r.suspended {
				v.ownProblem = "the credential is suspended (its revocation point carries no token_id)"
			} else {
				v.own = &tokenRecord{}
				*v.own = r
			}
			continue
		}
		v.ownProblem = fmt.Sprintf("the credential's token record %s does not match it (kind %q, tenant %q, collection %q, generation %d, version %d, expires_at %d)",
			id, pl[keyKind].GetStringValue(), r.tenant, r.collection, r.generation, r.version, r.expiresAt)
		v.strays = append(v.strays, strayPoint{id: p.GetId(), token: isToken, detail: v.ownProblem})
	}
	// One record per recorded version. Two records claiming the same
	// version, neither of them the credential's, cannot be told apart: both
	// are reported, and neither is removed by a repair (ambiguous).
	byVersion := map[int][]*qdrant.RetrievedPoint{}
	for _, p := range candidates {
		r, _ := parseTokenRecord(p)
		byVersion[r.version] = append(byVersion[r.version], p)
	}
	for _, p := range candidates {
		r, _ := parseTokenRecord(p)
		switch {
		case seen[r.version]:
			v.strays = append(v.strays, s.stray(p, tenant, v.versions))
		case len(byVersion[r.version]) > 1:
			sp := s.stray(p, tenant, v.versions)
			sp.ambiguous = true
			sp.detail = fmt.Sprintf("%d token records claim credential version %d of %s (%s among them); which one the tenant holds is unknown", len(byVersion[r.version]), r.version, name, pointIDString(p.GetId()))
			v.strays = append(v.strays, sp)
		default:
			v.records = append(v.records, r)
		}
	}
	if tok.tokenID != "" && v.own == nil && v.ownProblem == "" {
		v.ownProblem = "the credential's revocation point is missing: it is not bound to the tenant's token record"
	}
	if tok.tokenID == "" && v.ownProblem == "" {
		v.ownProblem = "the credential names no token_id"
	}
	return v, nil
}

// expiresIn says how long until exp (Unix seconds), as text.
func expiresText(exp int64) string {
	return time.Unix(exp, 0).UTC().Format(time.RFC3339)
}
