package qdrantstore

import (
	"context"
	"fmt"
	"math"
	"strings"

	"github.com/qdrant/go-client/qdrant"
	"google.golang.org/grpc/codes"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// notApplicable is the detail of the denial checks in application mode.
const notApplicable = "not applicable: isolation_mode=application (the server does not enforce JWT RBAC; the tenant holds no Qdrant credential, so there is none to deny)"

// probe is one call made with some credential and what became of it.
type probe struct {
	what string
	err  error
}

// Verify checks isolation in both directions (DESIGN.md §5). Outward, with
// the tenant's own JWT: it can upsert and query a point in its collection;
// it cannot read the canary collection, the system collection or another
// tenant's collection, nor write the canary, nor see them listed; it cannot
// create, update or delete collections; and altered copies of it
// (signature changed, claims escalated, signature stripped) are refused.
// Inward (CheckTokenScoped, CheckNoOtherToken): the JWT is signed with the
// server's key, expires within QDRANT_TOKEN_TTL, names only the tenant's
// collection and is bound by value_exists to the tenant's current token
// record, and no other token record, point or alias in the agent's
// knowledge leads to the collection. Probe points are removed. An error
// means the checks could not run (server unreachable, malformed
// credential).
//
// In application mode (a credential without api_key, from a Store
// configured for it) no tenant credential exists: own access is checked
// with the admin key, and the three denial checks — which the runtime's
// gate requires — are reported as passed with a detail saying they do not
// apply. The record's isolation_mode says "application" either way.
func (s *Store) Verify(ctx context.Context, req agent.VerifyRequest) (agent.VerifyResponse, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var resp agent.VerifyResponse
	name := req.Tenant.QdrantCollection()
	if got := req.Credential.String(CredCollection); got != name {
		return resp, agent.Permanent(events.ReasonInvalid, fmt.Errorf("credential names collection %q, want %q", got, name))
	}
	tok, ok := tokenOf(req.Credential)
	if !ok {
		if s.cfg.Isolation != IsolationApplication {
			return resp, agent.Permanent(events.ReasonInvalid, fmt.Errorf("credential for %s has no api_key (and the agent is not configured for application-level isolation)", name))
		}
		c, err := s.checkOwnAccess(ctx, s.cfg.APIKey, name)
		if err != nil {
			return resp, err
		}
		c.Detail = "isolation_mode=application, checked with the admin key: " + c.Detail
		resp.Checks = append(resp.Checks, c)
		for _, n := range []string{agent.CheckCanaryDenied, agent.CheckAdminDenied, agent.CheckWrongPasswordRefused} {
			resp.Checks = append(resp.Checks, events.Check{Name: n, Passed: true, Detail: notApplicable})
		}
		return resp, nil
	}

	for _, check := range []func(context.Context, secret.String, string) (events.Check, error){
		s.checkOwnAccess, s.checkCanaryDenied, s.checkAdminDenied, s.checkWrongCredentialRefused,
	} {
		c, err := check(ctx, tok, name)
		if err != nil {
			return resp, err
		}
		resp.Checks = append(resp.Checks, c)
	}

	// Inward: nothing but this credential (and the control plane) reaches
	// the collection.
	scoped, tokInfo := s.checkTokenScoped(tok, name)
	resp.Checks = append(resp.Checks, scoped)
	other, err := s.checkNoOtherToken(ctx, req.Tenant, req.Generation, tokInfo)
	if err != nil {
		return resp, err
	}
	resp.Checks = append(resp.Checks, other)
	return resp, nil
}

// checkOwnAccess upserts a probe point into the collection with key, finds
// it again by a nearest-vector query, and deletes it.
func (s *Store) checkOwnAccess(ctx context.Context, key secret.String, name string) (events.Check, error) {
	c := events.Check{Name: agent.CheckOwnAccess}
	as := withKey(ctx, key)
	info, err := s.client.GetCollectionInfo(as, name)
	if err != nil {
		return c, s.failOrErr(&c, "read own collection", err)
	}
	size := info.GetConfig().GetParams().GetVectorsConfig().GetParams().GetSize()
	if size == 0 {
		return c, fmt.Errorf("collection %s has no single dense vector", name)
	}
	id, err := newTokenID()
	if err != nil {
		return c, err
	}
	pid := qdrant.NewIDUUID(id)
	vec := probeVector(size)
	_, err = s.client.Upsert(as, &qdrant.UpsertPoints{
		CollectionName: name,
		Wait:           qdrant.PtrOf(true),
		Points: []*qdrant.PointStruct{{
			Id:      pid,
			Vectors: qdrant.NewVectorsDense(vec),
			Payload: qdrant.NewValueMap(map[string]any{"tenantprov_probe": true}),
		}},
	})
	if err != nil {
		return c, s.failOrErr(&c, "upsert into own collection", err)
	}
	defer s.removeProbe(ctx, key, name, pid)
	hits, err := s.client.Query(as, &qdrant.QueryPoints{
		CollectionName: name,
		Query:          qdrant.NewQueryDense(vec),
		Filter:         &qdrant.Filter{Must: []*qdrant.Condition{qdrant.NewHasID(pid)}},
		Limit:          qdrant.PtrOf(uint64(1)),
	})
	if err != nil {
		return c, s.failOrErr(&c, "query own collection", err)
	}
	if len(hits) != 1 || hits[0].GetId().GetUuid() != id {
		c.Detail = "query did not return the point just upserted"
		return c, nil
	}
	c.Passed = true
	c.Detail = fmt.Sprintf("upsert and query in %s", name)
	return c, nil
}

// removeProbe deletes the probe point with key, falling back to the admin
// key; a leftover probe point is harmless, so failures are ignored.
func (s *Store) removeProbe(ctx context.Context, key secret.String, name string, id *qdrant.PointId) {
	del := &qdrant.DeletePoints{CollectionName: name, Wait: qdrant.PtrOf(true), Points: qdrant.NewPointsSelector(id)}
	if _, err := s.client.Delete(withKey(ctx, key), del); err != nil {
		_, _ = s.client.Delete(withKey(ctx, s.cfg.APIKey), del)
	}
}

// checkCanaryDenied tries every way the token could reach data outside its
// collection; each must end in PermissionDenied.
func (s *Store) checkCanaryDenied(ctx context.Context, tok secret.String, name string) (events.Check, error) {
	c := events.Check{Name: agent.CheckCanaryDenied}
	as := withKey(ctx, tok)
	one := qdrant.PtrOf(uint32(1))
	neighbour := "tenant_" + strings.TrimPrefix(name, "tenant_") + "-neighbour"
	_, errQueryCanary := s.client.Query(as, &qdrant.QueryPoints{CollectionName: events.CanaryCollection, Limit: qdrant.PtrOf(uint64(1))})
	_, errScrollCanary := s.client.Scroll(as, &qdrant.ScrollPoints{CollectionName: events.CanaryCollection, Limit: one})
	_, errWriteCanary := s.client.Upsert(as, &qdrant.UpsertPoints{
		CollectionName: events.CanaryCollection,
		Wait:           qdrant.PtrOf(true),
		Points:         []*qdrant.PointStruct{{Id: qdrant.NewIDNum(canaryPointID + 1), Vectors: qdrant.NewVectors(1)}},
	})
	if errWriteCanary == nil { // remove what should never have been written
		_, _ = s.client.Delete(withKey(ctx, s.cfg.APIKey), &qdrant.DeletePoints{CollectionName: events.CanaryCollection, Points: qdrant.NewPointsSelector(qdrant.NewIDNum(canaryPointID + 1))})
	}
	_, errScrollSystem := s.client.Scroll(as, &qdrant.ScrollPoints{CollectionName: events.QdrantSystemCollection, Limit: one})
	_, errQueryOther := s.client.Query(as, &qdrant.QueryPoints{CollectionName: neighbour, Limit: qdrant.PtrOf(uint64(1))})
	probes := []probe{
		{"query " + events.CanaryCollection, errQueryCanary},
		{"scroll " + events.CanaryCollection, errScrollCanary},
		{"upsert into " + events.CanaryCollection, errWriteCanary},
		{"scroll " + events.QdrantSystemCollection, errScrollSystem},
		{"query another tenant's collection " + neighbour, errQueryOther},
	}
	names, err := s.client.ListCollections(as)
	if err != nil {
		return c, s.failOrErr(&c, "list collections", err)
	}
	for _, n := range names {
		if n != name {
			probes = append(probes, probe{"listing collection " + n, nil})
		}
	}
	return s.judgeDenied(c, probes)
}

// checkAdminDenied tries collection management with the token: creating a
// collection, changing its own collection, deleting a collection.
func (s *Store) checkAdminDenied(ctx context.Context, tok secret.String, name string) (events.Check, error) {
	c := events.Check{Name: agent.CheckAdminDenied}
	as := withKey(ctx, tok)
	probeName := events.ReservedPrefix + "_probe_" + strings.TrimPrefix(name, "tenant_")
	errCreate := s.client.CreateCollection(as, &qdrant.CreateCollection{
		CollectionName: probeName,
		VectorsConfig:  qdrant.NewVectorsConfig(&qdrant.VectorParams{Size: 1, Distance: qdrant.Distance_Dot}),
	})
	if errCreate == nil { // never should have existed
		defer func() {
			_, _ = s.client.GetCollectionsClient().Delete(withKey(ctx, s.cfg.APIKey), &qdrant.DeleteCollection{CollectionName: probeName})
		}()
	}
	errUpdate := s.client.UpdateCollection(as, &qdrant.UpdateCollection{
		CollectionName: name,
		Metadata:       qdrant.NewValueMap(map[string]any{"tenantprov_probe": true}),
	})
	_, errDelete := s.client.GetCollectionsClient().Delete(as, &qdrant.DeleteCollection{CollectionName: probeName})
	return s.judgeDenied(c, []probe{
		{"create collection " + probeName, errCreate},
		{"update own collection " + name, errUpdate},
		{"delete collection " + probeName, errDelete},
	})
}

// checkWrongCredentialRefused presents altered copies of the token — a
// changed signature character, claims escalated to global manage under the
// original signature, the signature stripped (alg none) — for a read of
// the tenant's own collection, which the real token may do. Each must be
// refused.
func (s *Store) checkWrongCredentialRefused(ctx context.Context, tok secret.String, name string) (events.Check, error) {
	c := events.Check{Name: agent.CheckWrongPasswordRefused}
	tampered, err := tamperSignature(tok)
	if err != nil {
		return c, agent.Permanent(events.ReasonInvalid, err)
	}
	escalated, err := escalateClaims(tok)
	if err != nil {
		return c, agent.Permanent(events.ReasonInvalid, err)
	}
	stripped := stripSignature(tok)
	read := func(t secret.String) error {
		_, err := s.client.Scroll(withKey(ctx, t), &qdrant.ScrollPoints{CollectionName: name, Limit: qdrant.PtrOf(uint32(1))})
		return err
	}
	probes := []probe{
		{"token with a changed signature", read(tampered)},
		{"token with escalated claims", read(escalated)},
		{"token with its signature stripped (alg none)", read(stripped)},
	}
	for _, p := range probes {
		if p.err == nil {
			c.Detail = p.what + " was accepted"
			return c, nil
		}
		if unreachable(p.err) {
			return c, fmt.Errorf("verify %s (%s): %w", name, p.what, p.err)
		}
		if !refused(p.err) {
			c.Detail = fmt.Sprintf("%s: unexpected %s instead of a refusal", p.what, code(p.err))
			return c, nil
		}
	}
	c.Passed = true
	c.Detail = "altered tokens refused"
	return c, nil
}

// stripSignature returns tok's claims as an unsigned token: header
// {"alg":"none","typ":"JWT"}, no signature.
func stripSignature(tok secret.String) secret.String {
	parts := strings.Split(tok.Reveal(), ".")
	return secret.String("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + parts[1] + ".")
}

// judgeDenied passes c only if every probe ended in PermissionDenied.
// Unreachable servers make it an error: the check could not run.
func (s *Store) judgeDenied(c events.Check, probes []probe) (events.Check, error) {
	var bad []string
	for _, p := range probes {
		switch {
		case p.err == nil:
			bad = append(bad, p.what+" was allowed")
		case unreachable(p.err):
			return c, fmt.Errorf("%s check (%s): %w", c.Name, p.what, p.err)
		case code(p.err) != codes.PermissionDenied:
			bad = append(bad, fmt.Sprintf("%s: %s instead of PermissionDenied", p.what, code(p.err)))
		}
	}
	if len(bad) > 0 {
		c.Detail = strings.Join(bad, "; ")
		return c, nil
	}
	c.Passed = true
	whats := make([]string, len(probes))
	for i, p := range probes {
		whats[i] = p.what
	}
	c.Detail = "denied: " + strings.Join(whats, ", ")
	return c, nil
}

// failOrErr records a failed own-access step in c, or returns the error
// when the server could not be reached.
func (s *Store) failOrErr(c *events.Check, step string, err error) error {
	if unreachable(err) {
		return fmt.Errorf("%s check (%s): %w", c.Name, step, err)
	}
	c.Detail = fmt.Sprintf("%s: %s", step, code(err))
	return nil
}

// probeVector is a fixed unit vector of the given size.
func probeVector(size uint64) []float32 {
	v := make([]float32, size)
	x := float32(1 / math.Sqrt(float64(size)))
	for i := range v {
		v[i] = x
	}
	return v
}
