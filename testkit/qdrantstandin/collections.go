package qdrantstandin

import (
	"context"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/qdrant/go-client/qdrant"
	"google.golang.org/protobuf/proto"
)

// collectionsService implements qdrant.Collections over the shared state.
// Access was checked by the interceptor before any method runs.
type collectionsService struct {
	qdrant.UnimplementedCollectionsServer
	st *state
}

// maxVectorSize is Qdrant's limit on a dense vector's dimension.
const maxVectorSize = 65536

// validateCollectionName applies Qdrant's collection name rules.
func validateCollectionName(name string) error {
	if name == "" || len(name) > 255 {
		return errBadInput("Validation error in body: [collection_name: value must be between 1 and 255 characters]")
	}
	if strings.ContainsAny(name, "<>:\"/\\|?*\x00\x1f") {
		return errBadInput("Validation error in body: [collection_name: collection name cannot contain \"<>:\\\"/\\\\|?*\\0\\u{1F}\" chars]")
	}
	return nil
}

// Create makes a collection with one unnamed dense vector.
func (s *collectionsService) Create(_ context.Context, req *qdrant.CreateCollection) (*qdrant.CollectionOperationResponse, error) {
	start := time.Now()
	name := req.GetCollectionName()
	if err := validateCollectionName(name); err != nil {
		return nil, err
	}
	var params *qdrant.VectorParams
	switch cfg := req.GetVectorsConfig().GetConfig().(type) {
	case *qdrant.VectorsConfig_Params:
		params = cfg.Params
	case *qdrant.VectorsConfig_ParamsMap:
		return nil, errUnsupported("named vectors (one unnamed dense vector per collection only)")
	default:
		return nil, errUnsupported("collections without a dense vector")
	}
	if len(req.GetSparseVectorsConfig().GetMap()) > 0 {
		return nil, errUnsupported("sparse vectors")
	}
	if params.MultivectorConfig != nil {
		return nil, errUnsupported("multi-vectors")
	}
	if params.GetSize() < 1 || params.GetSize() > maxVectorSize {
		return nil, errBadInput("Validation error in body: [vectors_config.size: value %d invalid, must be from 1 to %d]", params.GetSize(), maxVectorSize)
	}
	switch params.GetDistance() {
	case qdrant.Distance_Cosine, qdrant.Distance_Dot, qdrant.Distance_Euclid, qdrant.Distance_Manhattan:
	default:
		return nil, errBadInput("Malformed distance parameter: %v", params.GetDistance())
	}
	c := &collection{
		name:     name,
		size:     int(params.GetSize()),
		distance: params.GetDistance(),
		datatype: params.Datatype,
		onDisk:   params.OnDisk,
		metadata: clonePayload(req.GetMetadata()),
		points:   map[pointKey]*point{},
		strict:   mergeStrict(nil, req.GetStrictModeConfig()),
	}
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	if _, ok := s.st.collections[name]; ok {
		return nil, errCollectionExists(name)
	}
	s.st.collections[name] = c
	s.st.logf("created collection %q (%d dims, %s)", name, c.size, c.distance)
	return &qdrant.CollectionOperationResponse{Result: true, Time: elapsed(start)}, nil
}

// Update merges collection metadata; the optimiser, HNSW, quantisation
// and other tuning settings mean nothing to an in-memory brute-force store
// and are accepted unchanged, as long as the collection exists.
func (s *collectionsService) Update(_ context.Context, req *qdrant.UpdateCollection) (*qdrant.CollectionOperationResponse, error) {
	start := time.Now()
	if req.GetVectorsConfig() != nil || req.GetSparseVectorsConfig() != nil {
		return nil, errUnsupported("changing vector configuration")
	}
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	c, ok := s.st.collections[req.GetCollectionName()]
	if !ok {
		return nil, errCollectionNotFound(req.GetCollectionName())
	}
	if len(req.GetMetadata()) > 0 {
		md := maps.Clone(c.metadata)
		if md == nil {
			md = map[string]*qdrant.Value{}
		}
		for k, v := range req.GetMetadata() {
			md[k] = proto.Clone(v).(*qdrant.Value)
		}
		c.metadata = md // replaced, never mutated: readers may hold the old map
	}
	c.strict = mergeStrict(c.strict, req.GetStrictModeConfig()) // replaced, never mutated
	return &qdrant.CollectionOperationResponse{Result: true, Time: elapsed(start)}, nil
}

// Delete drops a collection; the result is false when it did not exist.
func (s *collectionsService) Delete(_ context.Context, req *qdrant.DeleteCollection) (*qdrant.CollectionOperationResponse, error) {
	start := time.Now()
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	_, ok := s.st.collections[req.GetCollectionName()]
	delete(s.st.collections, req.GetCollectionName())
	if ok {
		s.st.logf("deleted collection %q", req.GetCollectionName())
	}
	return &qdrant.CollectionOperationResponse{Result: ok, Time: elapsed(start)}, nil
}

// CollectionExists reports whether the collection exists.
func (s *collectionsService) CollectionExists(_ context.Context, req *qdrant.CollectionExistsRequest) (*qdrant.CollectionExistsResponse, error) {
	start := time.Now()
	s.st.mu.RLock()
	_, ok := s.st.collections[req.GetCollectionName()]
	s.st.mu.RUnlock()
	return &qdrant.CollectionExistsResponse{Result: &qdrant.CollectionExists{Exists: ok}, Time: elapsed(start)}, nil
}

// List names the collections the caller may read, sorted.
func (s *collectionsService) List(ctx context.Context, _ *qdrant.ListCollectionsRequest) (*qdrant.ListCollectionsResponse, error) {
	start := time.Now()
	acc := accessFrom(ctx)
	s.st.mu.RLock()
	var names []string
	if acc.global {
		names = slices.Sorted(maps.Keys(s.st.collections))
	} else {
		// A token scoped to some collections sees only those: look them
		// up rather than scan every collection.
		for n := range acc.collections {
			if _, ok := s.st.collections[n]; ok {
				names = append(names, n)
			}
		}
		slices.Sort(names)
	}
	s.st.mu.RUnlock()
	resp := &qdrant.ListCollectionsResponse{}
	for _, n := range names {
		if acc.canRead(n) {
			resp.Collections = append(resp.Collections, &qdrant.CollectionDescription{Name: n})
		}
	}
	resp.Time = elapsed(start)
	return resp, nil
}

// Get describes a collection; its vector size and distance read back from
// Config.Params.VectorsConfig as on Qdrant.
func (s *collectionsService) Get(_ context.Context, req *qdrant.GetCollectionInfoRequest) (*qdrant.GetCollectionInfoResponse, error) {
	start := time.Now()
	s.st.mu.RLock()
	defer s.st.mu.RUnlock()
	c, ok := s.st.collections[req.GetCollectionName()]
	if !ok {
		return nil, errCollectionNotFound(req.GetCollectionName())
	}
	n := uint64(len(c.points))
	one := uint32(1)
	info := &qdrant.CollectionInfo{
		Status:              qdrant.CollectionStatus_Green,
		OptimizerStatus:     &qdrant.OptimizerStatus{Ok: true},
		SegmentsCount:       1,
		PointsCount:         &n,
		IndexedVectorsCount: qdrant.PtrOf(uint64(0)),
		PayloadSchema:       map[string]*qdrant.PayloadSchemaInfo{},
		Config: &qdrant.CollectionConfig{
			Params: &qdrant.CollectionParams{
				ShardNumber:            1,
				OnDiskPayload:          true,
				VectorsConfig:          qdrant.NewVectorsConfig(c.vectorParams()),
				ReplicationFactor:      &one,
				WriteConsistencyFactor: &one,
			},
			// Qdrant's defaults, reported for completeness; nothing here
			// indexes or optimises.
			HnswConfig: &qdrant.HnswConfigDiff{
				M:                  qdrant.PtrOf(uint64(16)),
				EfConstruct:        qdrant.PtrOf(uint64(100)),
				FullScanThreshold:  qdrant.PtrOf(uint64(10000)),
				MaxIndexingThreads: qdrant.PtrOf(uint64(0)),
				OnDisk:             qdrant.PtrOf(false),
			},
			OptimizerConfig: &qdrant.OptimizersConfigDiff{
				DeletedThreshold:      qdrant.PtrOf(0.2),
				VacuumMinVectorNumber: qdrant.PtrOf(uint64(1000)),
				DefaultSegmentNumber:  qdrant.PtrOf(uint64(0)),
				IndexingThreshold:     qdrant.PtrOf(uint64(10000)),
				FlushIntervalSec:      qdrant.PtrOf(uint64(5)),
			},
			WalConfig: &qdrant.WalConfigDiff{
				WalCapacityMb:    qdrant.PtrOf(uint64(32)),
				WalSegmentsAhead: qdrant.PtrOf(uint64(0)),
			},
			Metadata:         clonePayload(c.metadata),
			StrictModeConfig: mergeStrict(nil, c.strict),
		},
	}
	return &qdrant.GetCollectionInfoResponse{Result: info, Time: elapsed(start)}, nil
}

// ListCollectionAliases lists the aliases of a collection. The stand-in
// implements no alias operations, so none can exist and the list is always
// empty; like Qdrant it does not fail for a collection that does not exist.
func (s *collectionsService) ListCollectionAliases(_ context.Context, _ *qdrant.ListCollectionAliasesRequest) (*qdrant.ListAliasesResponse, error) {
	return &qdrant.ListAliasesResponse{Time: 0}, nil
}
