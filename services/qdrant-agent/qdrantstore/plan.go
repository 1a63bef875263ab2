package qdrantstore

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/qdrant/go-client/qdrant"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// Plans on Qdrant (DESIGN.md §10): the collection's vector size and
// distance, fixed when the collection is created (Provision reads them
// from the plan), and the collection's strict-mode limits (Qdrant ≥
// 1.13), set with UpdateCollection and read back from the collection's
// configuration. Qdrant merges a strict-mode update field by field and has
// no way to unset a field, so a limit the plan leaves out is set to the
// largest value (no limit), and strict mode is enabled only while the
// plan sets a limit. Qdrant refuses what strict mode forbids with
// "Forbidden" (gRPC PermissionDenied). A tenant's rw token cannot change
// the collection's configuration (that needs the API key's manage access).

var (
	_ agent.PlanApplier = (*Store)(nil)
	_ agent.DryRunner   = (*Store)(nil)
)

// ErrImmutable: the plan changes what a collection fixes at creation.
var ErrImmutable = errors.New("fixed when the collection was created")

func qdrantSection(p *events.Plan) *events.QdrantPlan {
	if p == nil || p.Qdrant == nil {
		return &events.QdrantPlan{}
	}
	return p.Qdrant
}

// vectorParamsFor is the tenant collection's vector: the plan's size and
// distance where it sets them, the agent's configuration otherwise.
func (s *Store) vectorParamsFor(p *events.Plan) *qdrant.VectorParams {
	vp := &qdrant.VectorParams{Size: s.cfg.VectorSize, Distance: s.distance}
	q := qdrantSection(p)
	if q.VectorSize > 0 {
		vp.Size = uint64(q.VectorSize)
	}
	if d, ok := qdrant.Distance_value[q.Distance]; ok && q.Distance != "" {
		vp.Distance = qdrant.Distance(d)
	}
	return vp
}

// strictConfig is the strict-mode update that gives exactly q's limits.
func strictConfig(q *events.QdrantPlan) *qdrant.StrictModeConfig {
	orMax := func(v uint64) *uint64 {
		if v == 0 {
			v = math.MaxUint64
		}
		return &v
	}
	limit := uint32(math.MaxUint32)
	if q.MaxQueryLimit > 0 && q.MaxQueryLimit < math.MaxUint32 {
		limit = uint32(q.MaxQueryLimit)
	}
	on := q.MaxPointsCount > 0 || q.MaxCollectionPayloadSizeBytes > 0 || q.UpsertMaxBatchsize > 0 || q.MaxQueryLimit > 0
	return &qdrant.StrictModeConfig{
		Enabled:                       &on,
		MaxPointsCount:                orMax(q.MaxPointsCount),
		MaxCollectionPayloadSizeBytes: orMax(q.MaxCollectionPayloadSizeBytes),
		UpsertMaxBatchsize:            orMax(q.UpsertMaxBatchsize),
		MaxQueryLimit:                 &limit,
	}
}

// readPlan is the plan section a collection's configuration enforces.
func readPlan(info *qdrant.CollectionInfo) *events.QdrantPlan {
	vp := info.GetConfig().GetParams().GetVectorsConfig().GetParams()
	out := &events.QdrantPlan{VectorSize: int(vp.GetSize()), Distance: vp.GetDistance().String()}
	sm := info.GetConfig().GetStrictModeConfig()
	if !sm.GetEnabled() {
		return out
	}
	noMax := func(v uint64) uint64 {
		if v == math.MaxUint64 {
			return 0
		}
		return v
	}
	out.MaxPointsCount = noMax(sm.GetMaxPointsCount())
	out.MaxCollectionPayloadSizeBytes = noMax(sm.GetMaxCollectionPayloadSizeBytes())
	out.UpsertMaxBatchsize = noMax(sm.GetUpsertMaxBatchsize())
	if l := sm.GetMaxQueryLimit(); l != math.MaxUint32 {
		out.MaxQueryLimit = uint64(l)
	}
	return out
}

// immutable reports a plan's vector size or distance that differs from
// the existing collection's.
func (s *Store) immutable(name string, info *qdrant.CollectionInfo, p *events.Plan) []events.Conflict {
	q := qdrantSection(p)
	if q.VectorSize == 0 && q.Distance == "" {
		return nil
	}
	have, want := info.GetConfig().GetParams().GetVectorsConfig().GetParams(), s.vectorParamsFor(p)
	if have.GetSize() == want.GetSize() && have.GetDistance() == want.GetDistance() {
		return nil
	}
	return []events.Conflict{{Kind: events.ConflictImmutable, Resource: "qdrant collection " + name,
		Detail: fmt.Sprintf("the collection has %d dimensions, %s; the plan asks for %d, %s: %v", have.GetSize(), have.GetDistance(), want.GetSize(), want.GetDistance(), ErrImmutable)}}
}

// ApplyPlan sets the collection's strict-mode limits to exactly the
// plan's and reads them back. A plan whose vector size or distance differs
// from the collection's is refused (reason unsupported): a collection is
// never recreated.
func (s *Store) ApplyPlan(ctx context.Context, req agent.PlanRequest) (agent.PlanResponse, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if _, _, err := s.prepare(ctx); err != nil {
		s.forget()
		return agent.PlanResponse{}, classify(err)
	}
	admin := withKey(ctx, s.cfg.APIKey)
	tenant, name := req.Tenant, req.Tenant.QdrantCollection()
	st, err := s.owned(admin, tenant, req.Generation)
	if err != nil {
		return agent.PlanResponse{}, err
	}
	if cs := s.immutable(name, st.info, req.Plan); len(cs) > 0 {
		return agent.PlanResponse{}, agent.Permanent(events.ReasonUnsupported, fmt.Errorf("plan for %s: %s", name, cs[0].Detail))
	}
	want := qdrantSection(req.Plan)
	if err := s.client.UpdateCollection(admin, &qdrant.UpdateCollection{CollectionName: name, StrictModeConfig: strictConfig(want)}); err != nil {
		return agent.PlanResponse{}, classify(s.adminErr(fmt.Errorf("set strict mode of %s: %w", name, err)))
	}
	info, err := s.client.GetCollectionInfo(admin, name)
	if err != nil {
		return agent.PlanResponse{}, classify(s.adminErr(fmt.Errorf("read collection %s: %w", name, err)))
	}
	got := readPlan(info)
	if got.MaxPointsCount != want.MaxPointsCount || got.MaxCollectionPayloadSizeBytes != want.MaxCollectionPayloadSizeBytes ||
		got.UpsertMaxBatchsize != want.UpsertMaxBatchsize || got.MaxQueryLimit != want.MaxQueryLimit {
		return agent.PlanResponse{}, fmt.Errorf("collection %s: strict mode read back %+v, want %+v", name, *got, *want)
	}
	planName := ""
	if req.Plan != nil {
		planName = req.Plan.Name
	}
	usage := map[string]int64{events.UsagePoints: int64(min(info.GetPointsCount(), math.MaxInt64))}
	return agent.PlanResponse{Limits: &events.Plan{Name: planName, Qdrant: got}, Usage: usage}, nil
}

// DryRun reports the admin calls a provision with req.Plan would make (the
// JWT shown as <redacted>), the names and every conflict: a foreign
// collection with the tenant's name, a plan whose vector size or distance
// differs from the existing collection's. It only reads.
func (s *Store) DryRun(ctx context.Context, req agent.PlanRequest) (events.DryRun, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	admin := withKey(ctx, s.cfg.APIKey)
	tenant, name := req.Tenant, req.Tenant.QdrantCollection()
	if _, err := events.ParseTenantID(string(tenant)); err != nil {
		return events.DryRun{}, agent.Permanent(events.ReasonInvalid, err)
	}
	out := events.DryRun{Names: map[string]string{ResourceCollection: name}}
	call := func(text, skip string) {
		out.Operations = append(out.Operations, events.Operation{Kind: "admin_call", Text: text, Skip: skip})
	}
	system, err := s.client.CollectionExists(admin, events.QdrantSystemCollection)
	if err != nil {
		return events.DryRun{}, classify(s.adminErr(fmt.Errorf("look for %s: %w", events.QdrantSystemCollection, err)))
	}
	var st collectionState
	if system {
		if st, err = s.inspect(admin, tenant); err != nil {
			return events.DryRun{}, classify(err)
		}
	} else {
		call("CreateCollection "+events.QdrantSystemCollection+" and "+events.CanaryCollection+" (the agent's system collections, once per server)", "")
		info, err := s.client.GetCollectionInfo(admin, name)
		switch {
		case isNotFound(err):
			st.owner = absent
		case err != nil:
			return events.DryRun{}, classify(s.adminErr(fmt.Errorf("read collection %s: %w", name, err)))
		default:
			st.info, st.owner = info, foreign
			if md := info.GetConfig().GetMetadata(); md[metaManagedBy].GetStringValue() == managedBy && md[metaTenant].GetStringValue() == tenant.String() {
				st.owner = ours
			}
		}
	}
	vp := s.vectorParamsFor(req.Plan)
	create := fmt.Sprintf("CreateCollection %s (%d dimensions, %s; metadata managed-by=%s tenant=%s generation=%d)", name, vp.GetSize(), vp.GetDistance(), managedBy, tenant, req.Generation)
	switch st.owner {
	case foreign:
		out.Conflicts = append(out.Conflicts, events.Conflict{Kind: events.ConflictNameTaken, Resource: "qdrant collection " + name, Detail: "exists and was not created by tenantprov"})
		call(create, "a collection of this name exists")
	case ours:
		out.Conflicts = append(out.Conflicts, s.immutable(name, st.info, req.Plan)...)
		call(create, "the collection exists")
	default:
		call(create, "")
	}
	call(fmt.Sprintf("Upsert marker point of %s (generation %d) into %s", tenant, req.Generation, events.QdrantSystemCollection), "")
	call("Upsert revocation point of a new token into "+events.QdrantSystemCollection+"; delete the tenant's older revocation points (JWT RBAC only)", "")
	call("Sign JWT <redacted>: rw on "+name+", value_exists on its revocation point", "")
	if req.Plan != nil {
		sm := strictConfig(qdrantSection(req.Plan))
		call(fmt.Sprintf("UpdateCollection %s strict_mode_config {enabled: %t, max_points_count: %d, max_collection_payload_size_bytes: %d, upsert_max_batchsize: %d, max_query_limit: %d}",
			name, sm.GetEnabled(), sm.GetMaxPointsCount(), sm.GetMaxCollectionPayloadSizeBytes(), sm.GetUpsertMaxBatchsize(), sm.GetMaxQueryLimit()), "")
	}
	return out, nil
}
