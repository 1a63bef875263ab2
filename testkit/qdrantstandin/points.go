package qdrantstandin

import (
	"context"
	"slices"
	"time"

	"github.com/qdrant/go-client/qdrant"
)

// pointsService implements qdrant.Points over the shared state. Access was
// checked by the interceptor before any method runs.
type pointsService struct {
	qdrant.UnimplementedPointsServer
	st *state
}

// defaultLimit is Qdrant's default page size for scroll and query.
const defaultLimit = 10

// collection returns the named collection; the caller holds st.mu.
func (st *state) collection(name string) (*collection, error) {
	c, ok := st.collections[name]
	if !ok {
		return nil, errCollectionNotFound(name)
	}
	return c, nil
}

// nextOp returns a new operation id; the caller holds st.mu for writing.
func (st *state) nextOp() uint64 {
	st.opCounter++
	return st.opCounter
}

func updateResult(op uint64, wait bool, start time.Time) *qdrant.PointsOperationResponse {
	status := qdrant.UpdateStatus_Acknowledged
	if wait {
		status = qdrant.UpdateStatus_Completed
	}
	return &qdrant.PointsOperationResponse{
		Result: &qdrant.UpdateResult{OperationId: &op, Status: status},
		Time:   elapsed(start),
	}
}

func rejectShardKey(sel *qdrant.ShardKeySelector) error {
	if sel != nil {
		return errBadInput("Shard key specified, but collection uses auto sharding")
	}
	return nil
}

// Upsert inserts or replaces points atomically: every point is validated
// before any is written. update_mode and update_filter behave as in Qdrant
// (the filter only guards points that already exist).
func (s *pointsService) Upsert(_ context.Context, req *qdrant.UpsertPoints) (*qdrant.PointsOperationResponse, error) {
	start := time.Now()
	if err := rejectShardKey(req.GetShardKeySelector()); err != nil {
		return nil, err
	}
	guard, err := compileFilter(req.GetUpdateFilter())
	if err != nil {
		return nil, err
	}
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	c, err := s.st.collection(req.GetCollectionName())
	if err != nil {
		return nil, err
	}
	staged := make([]*point, 0, len(req.GetPoints()))
	for _, p := range req.GetPoints() {
		id, err := parsePointID(p.GetId())
		if err != nil {
			return nil, err
		}
		raw, err := denseVector(p.GetVectors())
		if err != nil {
			return nil, err
		}
		vec, err := c.prepare(raw)
		if err != nil {
			return nil, err
		}
		staged = append(staged, &point{id: id, vector: vec, payload: clonePayload(p.GetPayload())})
	}
	if err := c.checkUpsert(staged, req.GetUpdateMode()); err != nil {
		return nil, err
	}
	op := s.st.nextOp()
	for _, p := range staged {
		old, exists := c.points[p.id]
		switch {
		case req.GetUpdateMode() == qdrant.UpdateMode_InsertOnly && exists,
			req.GetUpdateMode() == qdrant.UpdateMode_UpdateOnly && !exists,
			req.UpdateFilter != nil && exists && !guard(old):
			continue
		}
		p.version = op
		if exists {
			c.unindexed(old)
		}
		c.points[p.id] = p
		c.indexed(p)
	}
	return updateResult(op, req.GetWait(), start), nil
}

// Delete removes points chosen by ids or by a filter.
func (s *pointsService) Delete(_ context.Context, req *qdrant.DeletePoints) (*qdrant.PointsOperationResponse, error) {
	start := time.Now()
	if err := rejectShardKey(req.GetShardKeySelector()); err != nil {
		return nil, err
	}
	var (
		ids    []pointKey
		filter predicate
		err    error
	)
	switch sel := req.GetPoints().GetPointsSelectorOneOf().(type) {
	case *qdrant.PointsSelector_Points:
		for _, id := range sel.Points.GetIds() {
			k, err := parsePointID(id)
			if err != nil {
				return nil, err
			}
			ids = append(ids, k)
		}
	case *qdrant.PointsSelector_Filter:
		if filter, err = compileFilter(sel.Filter); err != nil {
			return nil, err
		}
	default:
		return nil, errBadInput("Points selector is required")
	}
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	c, err := s.st.collection(req.GetCollectionName())
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if p, ok := c.points[id]; ok {
			c.unindexed(p)
			delete(c.points, id)
		}
	}
	if filter != nil {
		for _, p := range c.candidates(req.GetPoints().GetFilter()) {
			if filter(p) {
				c.unindexed(p)
				delete(c.points, p.id)
			}
		}
	}
	return updateResult(s.st.nextOp(), req.GetWait(), start), nil
}

func retrieved(p *point, withPayload *qdrant.WithPayloadSelector, withVectors *qdrant.WithVectorsSelector) *qdrant.RetrievedPoint {
	r := &qdrant.RetrievedPoint{Id: p.id.proto(), Payload: selectPayload(p.payload, withPayload, true)}
	if wantVectors(withVectors) {
		r.Vectors = vectorsOutput(p.vector)
	}
	return r
}

// Get returns the points with the given ids that exist, in request order.
func (s *pointsService) Get(_ context.Context, req *qdrant.GetPoints) (*qdrant.GetResponse, error) {
	start := time.Now()
	if err := rejectShardKey(req.GetShardKeySelector()); err != nil {
		return nil, err
	}
	keys := make([]pointKey, 0, len(req.GetIds()))
	for _, id := range req.GetIds() {
		k, err := parsePointID(id)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	s.st.mu.RLock()
	defer s.st.mu.RUnlock()
	c, err := s.st.collection(req.GetCollectionName())
	if err != nil {
		return nil, err
	}
	resp := &qdrant.GetResponse{}
	for _, k := range keys {
		if p, ok := c.points[k]; ok {
			resp.Result = append(resp.Result, retrieved(p, req.GetWithPayload(), req.GetWithVectors()))
		}
	}
	resp.Time = elapsed(start)
	return resp, nil
}

// Scroll pages through the points in id order, starting at offset.
func (s *pointsService) Scroll(_ context.Context, req *qdrant.ScrollPoints) (*qdrant.ScrollResponse, error) {
	start := time.Now()
	if err := rejectShardKey(req.GetShardKeySelector()); err != nil {
		return nil, err
	}
	if req.OrderBy != nil {
		return nil, errUnsupported("scroll order_by")
	}
	filter, err := compileFilter(req.GetFilter())
	if err != nil {
		return nil, err
	}
	var from *pointKey
	if req.Offset != nil {
		k, err := parsePointID(req.GetOffset())
		if err != nil {
			return nil, err
		}
		from = &k
	}
	limit := defaultLimit
	if req.Limit != nil {
		limit = int(req.GetLimit())
	}
	s.st.mu.RLock()
	defer s.st.mu.RUnlock()
	c, err := s.st.collection(req.GetCollectionName())
	if err != nil {
		return nil, err
	}
	if err := c.checkLimit(limit); err != nil {
		return nil, err
	}
	resp := &qdrant.ScrollResponse{}
	for _, p := range c.candidates(req.GetFilter()) {
		if (from != nil && p.id.compare(*from) < 0) || !filter(p) {
			continue
		}
		if len(resp.Result) == limit {
			resp.NextPageOffset = p.id.proto()
			break
		}
		resp.Result = append(resp.Result, retrieved(p, req.GetWithPayload(), req.GetWithVectors()))
	}
	resp.Time = elapsed(start)
	return resp, nil
}

// Count counts the points that pass the filter (always exactly).
func (s *pointsService) Count(_ context.Context, req *qdrant.CountPoints) (*qdrant.CountResponse, error) {
	start := time.Now()
	if err := rejectShardKey(req.GetShardKeySelector()); err != nil {
		return nil, err
	}
	filter, err := compileFilter(req.GetFilter())
	if err != nil {
		return nil, err
	}
	s.st.mu.RLock()
	defer s.st.mu.RUnlock()
	c, err := s.st.collection(req.GetCollectionName())
	if err != nil {
		return nil, err
	}
	var n uint64
	for _, p := range c.candidates(req.GetFilter()) {
		if filter(p) {
			n++
		}
	}
	return &qdrant.CountResponse{Result: &qdrant.CountResult{Count: n}, Time: elapsed(start)}, nil
}

// search is one nearest-neighbour request, shared by Query and Search.
type search struct {
	collection  string
	vector      []float32 // nil: no query, points in id order with score 0
	vectorName  string
	filter      *qdrant.Filter
	limit       int
	offset      int
	threshold   *float32
	withPayload *qdrant.WithPayloadSelector
	withVectors *qdrant.WithVectorsSelector
}

func (s *pointsService) run(q search) ([]*qdrant.ScoredPoint, error) {
	if q.vectorName != "" {
		return nil, errBadInput("Not existing vector name error: %s", q.vectorName)
	}
	filter, err := compileFilter(q.filter)
	if err != nil {
		return nil, err
	}
	s.st.mu.RLock()
	defer s.st.mu.RUnlock()
	c, err := s.st.collection(q.collection)
	if err != nil {
		return nil, err
	}
	if err := c.checkLimit(q.limit); err != nil {
		return nil, err
	}
	type hit struct {
		p     *point
		score float32
	}
	var hits []hit
	var query []float32
	if q.vector != nil {
		if query, err = c.prepare(q.vector); err != nil {
			return nil, err
		}
	}
	for _, p := range c.candidates(q.filter) {
		if !filter(p) {
			continue
		}
		h := hit{p: p}
		if query != nil {
			h.score = c.score(query, p.vector)
			if !c.passes(h.score, q.threshold) {
				continue
			}
		}
		hits = append(hits, h)
	}
	if query != nil {
		slices.SortStableFunc(hits, func(a, b hit) int {
			switch {
			case c.better(a.score, b.score):
				return -1
			case c.better(b.score, a.score):
				return 1
			}
			return 0
		})
	}
	hits = hits[min(q.offset, len(hits)):]
	hits = hits[:min(q.limit, len(hits))]
	out := make([]*qdrant.ScoredPoint, 0, len(hits))
	for _, h := range hits {
		sp := &qdrant.ScoredPoint{
			Id:      h.p.id.proto(),
			Payload: selectPayload(h.p.payload, q.withPayload, false),
			Score:   h.score,
			Version: h.p.version,
		}
		if wantVectors(q.withVectors) {
			sp.Vectors = vectorsOutput(h.p.vector)
		}
		out = append(out, sp)
	}
	return out, nil
}

// Query serves the universal query API for a nearest dense vector, or no
// query at all (points in id order); prefetch, fusion, recommend and the
// other query kinds are not implemented.
func (s *pointsService) Query(_ context.Context, req *qdrant.QueryPoints) (*qdrant.QueryResponse, error) {
	start := time.Now()
	if err := rejectShardKey(req.GetShardKeySelector()); err != nil {
		return nil, err
	}
	if len(req.GetPrefetch()) > 0 {
		return nil, errUnsupported("query prefetch")
	}
	if req.LookupFrom != nil {
		return nil, errUnsupported("query lookup_from")
	}
	q := search{
		collection:  req.GetCollectionName(),
		vectorName:  req.GetUsing(),
		filter:      req.GetFilter(),
		limit:       defaultLimit,
		threshold:   req.ScoreThreshold,
		withPayload: req.GetWithPayload(),
		withVectors: req.GetWithVectors(),
	}
	if req.Limit != nil {
		q.limit = int(req.GetLimit())
	}
	if req.Offset != nil {
		q.offset = int(req.GetOffset())
	}
	switch v := req.GetQuery().GetVariant().(type) {
	case nil:
	case *qdrant.Query_Nearest:
		switch in := v.Nearest.GetVariant().(type) {
		case *qdrant.VectorInput_Dense:
			q.vector = in.Dense.GetData()
			if q.vector == nil {
				q.vector = []float32{}
			}
		default:
			return nil, errUnsupported("nearest query input %T (dense vectors only)", in)
		}
	default:
		return nil, errUnsupported("query kind %T (nearest only)", v)
	}
	res, err := s.run(q)
	if err != nil {
		return nil, err
	}
	return &qdrant.QueryResponse{Result: res, Time: elapsed(start)}, nil
}

// Search serves the legacy search API for a dense vector.
func (s *pointsService) Search(_ context.Context, req *qdrant.SearchPoints) (*qdrant.SearchResponse, error) {
	start := time.Now()
	if err := rejectShardKey(req.GetShardKeySelector()); err != nil {
		return nil, err
	}
	if req.SparseIndices != nil {
		return nil, errUnsupported("sparse vectors")
	}
	if req.GetLimit() < 1 {
		return nil, errBadInput("Validation error in body: [limit: value 0 invalid, must be 1 or larger]")
	}
	vec := req.GetVector()
	if vec == nil {
		vec = []float32{}
	}
	res, err := s.run(search{
		collection:  req.GetCollectionName(),
		vector:      vec,
		vectorName:  req.GetVectorName(),
		filter:      req.GetFilter(),
		limit:       int(req.GetLimit()),
		offset:      int(req.GetOffset()),
		threshold:   req.ScoreThreshold,
		withPayload: req.GetWithPayload(),
		withVectors: req.GetWithVectors(),
	})
	if err != nil {
		return nil, err
	}
	return &qdrant.SearchResponse{Result: res, Time: elapsed(start)}, nil
}
