package qdrantstore

import (
	"context"
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/qdrant/go-client/qdrant"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// This file holds tenantprov's own state inside Qdrant: the system
// collection (markers of origin and revocation points), the canary
// collection, and the probe that tells whether the server enforces JWT
// RBAC.

// Collection metadata keys set on every tenant collection tenantprov
// creates (Qdrant ≥ 1.16 keeps collection metadata). The marker point in the
// system collection is the authoritative record; the metadata also proves
// origin when an agent died between creating the collection and writing
// its marker.
const (
	metaManagedBy  = "managed_by"
	metaTenant     = "tenant"
	metaGeneration = "generation"
	managedBy      = "tenantprov"
)

// standinTitle is the HealthCheck title of the testkit's Qdrant stand-in;
// seeing it, the agent warns in every provision record that the server is
// not Qdrant. (Production code never imports the stand-in.)
const standinTitle = "qdrant-standin"

// prepareTTL is how long a successful probe-and-ensure is trusted before
// Provision repeats it.
const prepareTTL = time.Minute

// canaryPointID is the one point of the canary collection.
const canaryPointID = 1

// withKey returns ctx carrying key as Qdrant's api-key metadata for the
// calls made with it. The client itself holds no key, so one connection
// serves the admin and every tenant token.
func withKey(ctx context.Context, key secret.String) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "api-key", key.Reveal())
}

// readiness is the cached outcome of prepare.
type readiness struct {
	mode     string
	warnings []string
	until    time.Time
}

// prepare probes the server and makes sure the system and canary
// collections exist, at most once per prepareTTL. It returns the isolation
// mode Provision must use and warnings for the record.
func (s *Store) prepare(ctx context.Context) (mode string, warnings []string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ready != nil && time.Now().Before(s.ready.until) {
		return s.ready.mode, s.ready.warnings, nil
	}
	warnings, err = s.identify(ctx)
	if err != nil {
		return "", nil, err
	}
	if err := s.ensureSystem(ctx); err != nil {
		return "", nil, err
	}
	enforced, detail, err := s.probeRBAC(ctx)
	if err != nil {
		return "", nil, err
	}
	switch {
	case enforced:
		mode = IsolationJWTRBAC
	case s.cfg.Isolation == IsolationApplication:
		mode = IsolationApplication
		warnings = append(warnings, "Qdrant does not enforce JWT RBAC ("+detail+"): isolation is application-level only (QDRANT_ISOLATION=application); the tenant gets no Qdrant credential of its own")
	default:
		return "", nil, fmt.Errorf("%w: %s; refusing to provision (set QDRANT_ISOLATION=application to accept application-level isolation only)", ErrRBACNotEnforced, detail)
	}
	s.ready = &readiness{mode: mode, warnings: warnings, until: time.Now().Add(prepareTTL)}
	return mode, warnings, nil
}

// forget drops the cached readiness, so the next Provision probes again
// (after something the cache promised turned out missing).
func (s *Store) forget() {
	s.mu.Lock()
	s.ready = nil
	s.mu.Unlock()
}

// identify asks the server what it is. HealthCheck needs no credential;
// the stand-in names itself there.
func (s *Store) identify(ctx context.Context) (warnings []string, err error) {
	h, err := s.client.HealthCheck(ctx)
	if err != nil {
		return nil, fmt.Errorf("qdrant health check: %w", err)
	}
	if h.GetTitle() == standinTitle {
		warnings = append(warnings, fmt.Sprintf("Qdrant server is the STAND-IN %s %s (testkit/qdrantstandin), not Qdrant", h.GetTitle(), h.GetVersion()))
	}
	return warnings, nil
}

// ensureSystem creates, idempotently, the system collection (with keyword
// indexes on the fields every JWT check filters by) and the canary
// collection with its point.
func (s *Store) ensureSystem(ctx context.Context) error {
	admin := withKey(ctx, s.cfg.APIKey)
	if err := s.ensureCollection(admin, events.QdrantSystemCollection, 1, qdrant.Distance_Dot, map[string]any{metaManagedBy: managedBy, "purpose": "markers of origin and JWT revocation points"}); err != nil {
		return err
	}
	info, err := s.client.GetCollectionInfo(admin, events.QdrantSystemCollection)
	if err != nil {
		return s.adminErr(fmt.Errorf("read collection %s: %w", events.QdrantSystemCollection, err))
	}
	// suspended_token_id too: readSystem (every Verify and Observe) and the
	// revocations filter by it in a should clause, and one unindexed
	// should condition makes Qdrant scan the whole collection — a cost
	// that grows with the number of tenants.
	for _, field := range []string{keyTokenID, keyTenant, keyKind, keyCollection, keySuspendedTokenID} {
		if _, ok := info.GetPayloadSchema()[field]; ok {
			continue
		}
		_, err := s.client.CreateFieldIndex(admin, &qdrant.CreateFieldIndexCollection{
			CollectionName: events.QdrantSystemCollection,
			FieldName:      field,
			FieldType:      qdrant.FieldType_FieldTypeKeyword.Enum(),
			Wait:           qdrant.PtrOf(true),
		})
		// An index only speeds up the value_exists check every tenant
		// request runs; a server without payload indexes (the stand-in)
		// still answers correctly.
		if err != nil && code(err) != codes.Unimplemented {
			return s.adminErr(fmt.Errorf("index %s.%s: %w", events.QdrantSystemCollection, field, err))
		}
	}
	if err := s.ensureCollection(admin, events.CanaryCollection, 1, qdrant.Distance_Dot, map[string]any{metaManagedBy: managedBy, "purpose": "isolation canary: no tenant may read it"}); err != nil {
		return err
	}
	_, err = s.client.Upsert(admin, &qdrant.UpsertPoints{
		CollectionName: events.CanaryCollection,
		Wait:           qdrant.PtrOf(true),
		Points: []*qdrant.PointStruct{{
			Id:      qdrant.NewIDNum(canaryPointID),
			Vectors: qdrant.NewVectors(1),
			Payload: qdrant.NewValueMap(map[string]any{"canary": true, "note": "tenantprov isolation canary; a tenant that can read this is not isolated"}),
		}},
	})
	if err != nil {
		return s.adminErr(fmt.Errorf("upsert canary point: %w", err))
	}
	return nil
}

// ensureCollection creates a collection unless it exists.
func (s *Store) ensureCollection(admin context.Context, name string, size uint64, distance qdrant.Distance, meta map[string]any) error {
	ok, err := s.client.CollectionExists(admin, name)
	if err != nil {
		return s.adminErr(fmt.Errorf("check collection %s: %w", name, err))
	}
	if ok {
		return nil
	}
	err = s.client.CreateCollection(admin, &qdrant.CreateCollection{
		CollectionName: name,
		VectorsConfig:  qdrant.NewVectorsConfig(&qdrant.VectorParams{Size: size, Distance: distance}),
		Metadata:       qdrant.NewValueMap(meta),
	})
	if err != nil && code(err) != codes.AlreadyExists {
		return s.adminErr(fmt.Errorf("create collection %s: %w", name, err))
	}
	return nil
}

// adminErr turns a refusal of the admin key into ErrAdminKeyRefused, so
// that an operator sees the cause rather than a gRPC code.
func (s *Store) adminErr(err error) error {
	if refused(err) {
		return fmt.Errorf("%w: %w", ErrAdminKeyRefused, err)
	}
	return err
}

// probeRBAC tells whether the server confines a JWT to what it grants. A
// token signed with the API key and granting read on the canary only must
// read the canary and be denied the system collection; the same claims
// signed with a random key, or unsigned (alg none), must be refused. The
// detail says what failed when enforced is false.
func (s *Store) probeRBAC(ctx context.Context) (enforced bool, detail string, err error) {
	claims := map[string]any{
		"sub":    "tenantprov:rbac-probe",
		"exp":    time.Now().Add(5 * time.Minute).Unix(),
		"access": []map[string]string{{"collection": events.CanaryCollection, "access": "r"}},
	}
	good, err := sign(claims, s.cfg.APIKey)
	if err != nil {
		return false, "", err
	}
	wrongKey, err := randomKey()
	if err != nil {
		return false, "", err
	}
	forged, err := sign(claims, wrongKey)
	if err != nil {
		return false, "", err
	}
	none, err := unsigned(claims)
	if err != nil {
		return false, "", err
	}
	readCanary := func(tok secret.String) error {
		_, err := s.client.Scroll(withKey(ctx, tok), &qdrant.ScrollPoints{CollectionName: events.CanaryCollection, Limit: qdrant.PtrOf(uint32(1))})
		return err
	}

	if err := readCanary(forged); err == nil {
		return false, "a JWT signed with a wrong key was accepted", nil
	} else if !refused(err) {
		return false, "", fmt.Errorf("probe JWT RBAC (wrong-key token): %w", err)
	}
	if err := readCanary(none); err == nil {
		return false, "an unsigned (alg none) JWT was accepted", nil
	} else if !refused(err) {
		return false, "", fmt.Errorf("probe JWT RBAC (unsigned token): %w", err)
	}
	if err := readCanary(good); err != nil {
		if refused(err) {
			return false, "a JWT signed with the API key was refused (" + code(err).String() + "): JWT RBAC is off (QDRANT__SERVICE__JWT_RBAC)", nil
		}
		return false, "", fmt.Errorf("probe JWT RBAC (signed token): %w", err)
	}
	_, err = s.client.Scroll(withKey(ctx, good), &qdrant.ScrollPoints{CollectionName: events.QdrantSystemCollection, Limit: qdrant.PtrOf(uint32(1))})
	switch {
	case err == nil:
		return false, "a JWT granting one collection could read another", nil
	case code(err) == codes.PermissionDenied:
		return true, "", nil
	case refused(err):
		return false, "a valid JWT was refused a collection it was not granted with " + code(err).String() + " instead of PermissionDenied", nil
	default:
		return false, "", fmt.Errorf("probe JWT RBAC (scope): %w", err)
	}
}

// marker is the system collection's record that tenantprov created a
// tenant's collection.
type marker struct {
	generation uint64
	versions   []int // the credential versions the tenant holds
}

// markerVersions reads the credential versions a marker payload records:
// [1] when it records none (a marker written before rotation existed).
func markerVersions(pl map[string]*qdrant.Value) []int {
	var vs []int
	for _, v := range pl[keyVersions].GetListValue().GetValues() {
		vs = append(vs, int(v.GetIntegerValue()))
	}
	if len(vs) == 0 {
		return []int{1}
	}
	return vs
}

// markerID is the marker point's ID: a UUID derived from the tenant, so
// that writing the marker again overwrites it.
func markerID(tenant events.TenantID) *qdrant.PointId {
	sum := sha256.Sum256([]byte("tenantprov/qdrant/collection-marker/" + tenant.String()))
	var b [16]byte
	copy(b[:], sum[:16])
	b[6] = b[6]&0x0f | 0x50 // version 5 layout (name-based)
	b[8] = b[8]&0x3f | 0x80
	return qdrant.NewIDUUID(formatUUID(b))
}

// getMarker returns the tenant's marker, or nil when there is none (or no
// system collection at all).
func (s *Store) getMarker(admin context.Context, tenant events.TenantID) (*marker, error) {
	pts, err := s.client.Get(admin, &qdrant.GetPoints{
		CollectionName: events.QdrantSystemCollection,
		Ids:            []*qdrant.PointId{markerID(tenant)},
		WithPayload:    qdrant.NewWithPayload(true),
	})
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, s.adminErr(fmt.Errorf("read marker of %s: %w", tenant.QdrantCollection(), err))
	}
	for _, p := range pts {
		pl := p.GetPayload()
		if pl[keyKind].GetStringValue() == kindCollection && pl[keyTenant].GetStringValue() == tenant.String() {
			return &marker{generation: uint64(max(pl[keyGeneration].GetIntegerValue(), 0)), versions: markerVersions(pl)}, nil
		}
	}
	return nil, nil
}

// putMarker records that tenantprov created the tenant's collection for
// generation, with one credential (version 1), as Provision leaves it.
func (s *Store) putMarker(admin context.Context, tenant events.TenantID, generation uint64) error {
	return s.putMarkerVersions(admin, tenant, generation, []int{1})
}

// putMarkerVersions records that tenantprov created the tenant's
// collection for generation and that the tenant holds the credentials of
// versions (the only token records Verify accepts).
func (s *Store) putMarkerVersions(admin context.Context, tenant events.TenantID, generation uint64, versions []int) error {
	vs := make([]any, len(versions))
	for i, v := range versions {
		vs[i] = int64(v)
	}
	_, err := s.client.Upsert(admin, &qdrant.UpsertPoints{
		CollectionName: events.QdrantSystemCollection,
		Wait:           qdrant.PtrOf(true),
		Points: []*qdrant.PointStruct{{
			Id:      markerID(tenant),
			Vectors: qdrant.NewVectors(1),
			Payload: qdrant.NewValueMap(map[string]any{
				keyKind:       kindCollection,
				keyTenant:     tenant.String(),
				keyGeneration: int64(generation),
				keyCollection: tenant.QdrantCollection(),
				keyVersions:   vs,
				keyCreatedAt:  time.Now().UTC().Format(time.RFC3339),
			}),
		}},
	})
	if err != nil {
		return s.adminErr(fmt.Errorf("write marker of %s: %w", tenant.QdrantCollection(), err))
	}
	return nil
}

// deleteMarker removes the tenant's marker; absent is fine.
func (s *Store) deleteMarker(admin context.Context, tenant events.TenantID) error {
	_, err := s.client.Delete(admin, &qdrant.DeletePoints{
		CollectionName: events.QdrantSystemCollection,
		Wait:           qdrant.PtrOf(true),
		Points:         qdrant.NewPointsSelector(markerID(tenant)),
	})
	if err != nil && !isNotFound(err) {
		return s.adminErr(fmt.Errorf("delete marker of %s: %w", tenant.QdrantCollection(), err))
	}
	return nil
}

// tokenRecord is the system collection's record of one JWT the agent
// issued: its revocation point. The JWT is valid only while a point with its
// token_id exists there (value_exists), so the record is also the list of
// every live tenant token the agent knows of.
type tokenRecord struct {
	id         string // point ID = token_id of the JWT it keeps valid
	tokenID    string
	tenant     string
	collection string
	generation uint64
	expiresAt  int64           // the JWT's exp, Unix seconds
	version    int             // credential version (1 when the record has none)
	suspended  bool            // token_id moved to suspended_token_id: the JWT is refused
	point      *qdrant.PointId // the point's ID as read (nil: the UUID tokenID)
}

// parseTokenRecord reads a point of the system collection as a token
// record; ok is false for points of another kind.
func parseTokenRecord(p *qdrant.RetrievedPoint) (r tokenRecord, ok bool) {
	pl := p.GetPayload()
	r = tokenRecord{
		id:         p.GetId().GetUuid(),
		tokenID:    pl[keyTokenID].GetStringValue(),
		tenant:     pl[keyTenant].GetStringValue(),
		collection: pl[keyCollection].GetStringValue(),
		generation: uint64(max(pl[keyGeneration].GetIntegerValue(), 0)),
		expiresAt:  pl[keyExpiresAt].GetIntegerValue(),
		version:    int(pl[keyVersion].GetIntegerValue()),
	}
	if r.version == 0 {
		r.version = 1
	}
	if r.tokenID == "" {
		if id := pl[keySuspendedTokenID].GetStringValue(); id != "" {
			r.tokenID, r.suspended = id, true
		}
	}
	return r, pl[keyKind].GetStringValue() == kindToken
}

// putToken writes the revocation point that keeps the JWT with tokenID
// valid, recording what the JWT grants: the tenant's collection until exp,
// as credential version 1 (Provision's).
func (s *Store) putToken(admin context.Context, tenant events.TenantID, generation uint64, tokenID string, exp time.Time) error {
	return s.writeTokenRecord(admin, tokenRecord{
		id: tokenID, tokenID: tokenID, tenant: tenant.String(), collection: tenant.QdrantCollection(),
		generation: generation, expiresAt: exp.Unix(), version: 1,
	})
}

// writeTokenRecord writes r as its point (ID r.tokenID), replacing the
// whole payload. A suspended record carries its token_id under
// suspended_token_id only, so no point matches the JWT's value_exists.
func (s *Store) writeTokenRecord(admin context.Context, r tokenRecord) error {
	pl := map[string]any{
		keyKind:       kindToken,
		keyTenant:     r.tenant,
		keyGeneration: int64(r.generation),
		keyCollection: r.collection,
		keyExpiresAt:  r.expiresAt,
		keyVersion:    int64(r.version),
		keyCreatedAt:  time.Now().UTC().Format(time.RFC3339),
	}
	if r.suspended {
		pl[keySuspendedTokenID] = r.tokenID
		pl[keySuspendedAt] = time.Now().UTC().Format(time.RFC3339)
	} else {
		pl[keyTokenID] = r.tokenID
	}
	_, err := s.client.Upsert(admin, &qdrant.UpsertPoints{
		CollectionName: events.QdrantSystemCollection,
		Wait:           qdrant.PtrOf(true),
		Points: []*qdrant.PointStruct{{
			Id:      qdrant.NewIDUUID(r.tokenID),
			Vectors: qdrant.NewVectors(1),
			Payload: qdrant.NewValueMap(pl),
		}},
	})
	if err != nil {
		return s.adminErr(fmt.Errorf("write revocation point of %s: %w", r.collection, err))
	}
	return nil
}

// namingTenant matches every point of the system collection that names the
// tenant or its collection.
func namingTenant(tenant events.TenantID) []*qdrant.Condition {
	return []*qdrant.Condition{
		qdrant.NewMatchKeyword(keyTenant, tenant.String()),
		qdrant.NewMatchKeyword(keyCollection, tenant.QdrantCollection()),
	}
}

// scrollSystem returns every point of the system collection matching f,
// with payload; none when the collection does not exist.
func (s *Store) scrollSystem(admin context.Context, f *qdrant.Filter) ([]*qdrant.RetrievedPoint, error) {
	var all []*qdrant.RetrievedPoint
	var offset *qdrant.PointId
	for {
		pts, next, err := s.client.ScrollAndOffset(admin, &qdrant.ScrollPoints{
			CollectionName: events.QdrantSystemCollection,
			Filter:         f,
			Offset:         offset,
			Limit:          qdrant.PtrOf(uint32(256)),
			WithPayload:    qdrant.NewWithPayload(true),
		})
		if isNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, s.adminErr(fmt.Errorf("scroll %s: %w", events.QdrantSystemCollection, err))
		}
		all = append(all, pts...)
		if next == nil || len(pts) == 0 {
			return all, nil
		}
		offset = next
	}
}

// revokeTokens revokes the tenant's tokens — every token record naming the
// tenant or its collection, except keep (may be ""), and, when
// maxGeneration > 0, only those of generations up to it. A token stays
// valid while any point carries its token_id, so every such point is
// deleted, whatever its kind or tenant, and the deletion is read back: a
// token that could still be valid afterwards is an error (transient), never
// a silent success.
func (s *Store) revokeTokens(admin context.Context, tenant events.TenantID, keep string, maxGeneration uint64) error {
	f := &qdrant.Filter{
		Must:   []*qdrant.Condition{qdrant.NewMatchKeyword(keyKind, kindToken)},
		Should: namingTenant(tenant),
	}
	if keep != "" {
		f.MustNot = []*qdrant.Condition{qdrant.NewHasID(qdrant.NewIDUUID(keep)), qdrant.NewMatchKeyword(keyTokenID, keep)}
	}
	if maxGeneration > 0 {
		f.Must = append(f.Must, qdrant.NewRange(keyGeneration, &qdrant.Range{Lte: qdrant.PtrOf(float64(maxGeneration))}))
	}
	recs, err := s.scrollSystem(admin, f)
	if err != nil || len(recs) == 0 {
		return err
	}
	var tokenIDs []string
	var pointIDs []*qdrant.PointId
	for _, p := range recs {
		pointIDs = append(pointIDs, p.GetId())
		if r, _ := parseTokenRecord(p); r.tokenID != "" && r.tokenID != keep {
			tokenIDs = append(tokenIDs, r.tokenID)
		}
	}
	revoked := &qdrant.Filter{Should: []*qdrant.Condition{qdrant.NewHasID(pointIDs...)}}
	if len(tokenIDs) > 0 {
		revoked.Should = append(revoked.Should, qdrant.NewMatchKeywords(keyTokenID, tokenIDs...))
	}
	_, err = s.client.Delete(admin, &qdrant.DeletePoints{
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

// ownership is what the agent knows about a tenant's collection.
type ownership int

const (
	absent  ownership = iota // no collection with the tenant's name
	ours                     // exists and tenantprov created it
	foreign                  // exists and tenantprov did not create it
)

// collectionState is the inspected state of a tenant's resources.
type collectionState struct {
	owner  ownership
	marker *marker                // nil: no marker point
	info   *qdrant.CollectionInfo // nil unless the collection exists
}

// generation is the newest generation the state records (0 if none).
func (c collectionState) generation() uint64 {
	var g uint64
	if c.marker != nil {
		g = c.marker.generation
	}
	if c.info != nil {
		md := c.info.GetConfig().GetMetadata()
		if md[metaManagedBy].GetStringValue() == managedBy {
			g = max(g, uint64(max(md[metaGeneration].GetIntegerValue(), 0)))
		}
	}
	return g
}

// inspect reads the tenant's collection and marker and decides ownership.
// A collection is ours when its metadata says tenantprov created it for
// this tenant, or when our marker point names the tenant and the
// collection carries no metadata at all (a server without collection
// metadata, Qdrant < 1.16). Both can only be written with global manage
// access — the API key — never with a tenant's token. A collection whose
// metadata says anything else is foreign even if a marker exists: the
// marker is then stale (our collection was replaced by someone else's),
// and the foreign one is never adopted or deleted.
func (s *Store) inspect(admin context.Context, tenant events.TenantID) (collectionState, error) {
	var st collectionState
	m, err := s.getMarker(admin, tenant)
	if err != nil {
		return st, err
	}
	st.marker = m
	info, err := s.client.GetCollectionInfo(admin, tenant.QdrantCollection())
	switch {
	case isNotFound(err):
		st.owner = absent
		return st, nil
	case err != nil:
		return st, s.adminErr(fmt.Errorf("read collection %s: %w", tenant.QdrantCollection(), err))
	}
	st.info = info
	md := info.GetConfig().GetMetadata()
	switch {
	case md[metaManagedBy].GetStringValue() == managedBy && md[metaTenant].GetStringValue() == tenant.String():
		st.owner = ours
	case m != nil && len(md) == 0:
		st.owner = ours
	default:
		st.owner = foreign
	}
	return st, nil
}
