package qdrantstandin

import (
	"fmt"

	"github.com/qdrant/go-client/qdrant"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Strict mode (Qdrant ≥ 1.13, collection strict_mode_config): limits a
// collection enforces on its users when Enabled is true. The stand-in
// keeps the configuration as given at create and merges updates into it
// field by field (a field present in an update replaces the old value, an
// absent one keeps it, as Qdrant does), reads it back in
// CollectionConfig.StrictModeConfig, and enforces:
//
//   - upsert_max_batchsize: an upsert of more points in one request;
//   - max_points_count: an upsert that would leave the collection with
//     more points (Qdrant checks its current, possibly approximate, count;
//     the stand-in counts exactly);
//   - max_collection_payload_size_bytes: an upsert that would take the
//     collection's payload storage beyond it (the stand-in measures the
//     payloads' encoded size; Qdrant its payload storage on disk);
//   - max_collection_vector_size_bytes: likewise for the vectors (4 bytes
//     a dimension);
//   - max_query_limit: a query, search or scroll asking for more results.
//
// A refused request fails with PermissionDenied, "Forbidden: …" — Qdrant
// reports strict-mode violations as a forbidden operation (HTTP 403) —
// and changes nothing. Every other strict-mode field is kept and read
// back but not enforced.

// errStrict is a strict-mode refusal.
func errStrict(format string, args ...any) error {
	return status.Error(codes.PermissionDenied, "Forbidden: "+fmt.Sprintf(format, args...)+" (strict mode)")
}

// mergeStrict returns old with the fields present in diff replaced.
func mergeStrict(old, diff *qdrant.StrictModeConfig) *qdrant.StrictModeConfig {
	if diff == nil {
		return old
	}
	out := &qdrant.StrictModeConfig{}
	if old != nil {
		out = proto.Clone(old).(*qdrant.StrictModeConfig)
	}
	proto.Merge(out, diff)
	return out
}

// strictOn reports whether c enforces strict mode.
func (c *collection) strictOn() bool { return c.strict != nil && c.strict.GetEnabled() }

// checkUpsert refuses an upsert of staged that strict mode forbids; the
// caller holds st.mu.
func (c *collection) checkUpsert(staged []*point, mode qdrant.UpdateMode) error {
	if !c.strictOn() {
		return nil
	}
	sm := c.strict
	if sm.UpsertMaxBatchsize != nil && uint64(len(staged)) > sm.GetUpsertMaxBatchsize() {
		return errStrict("Upsert limit exceeded: %d points in one request, the limit is %d", len(staged), sm.GetUpsertMaxBatchsize())
	}
	after := make(map[pointKey]*point, len(c.points)+len(staged))
	for k, p := range c.points {
		after[k] = p
	}
	for _, p := range staged {
		_, exists := after[p.id]
		if (mode == qdrant.UpdateMode_InsertOnly && exists) || (mode == qdrant.UpdateMode_UpdateOnly && !exists) {
			continue
		}
		after[p.id] = p
	}
	if sm.MaxPointsCount != nil && uint64(len(after)) > sm.GetMaxPointsCount() {
		return errStrict("Max points count exceeded: the collection would hold %d points, the limit is %d", len(after), sm.GetMaxPointsCount())
	}
	if sm.MaxCollectionPayloadSizeBytes != nil {
		var size uint64
		for _, p := range after {
			size += uint64(proto.Size(&qdrant.PointStruct{Payload: p.payload}))
		}
		if size > sm.GetMaxCollectionPayloadSizeBytes() {
			return errStrict("Max payload storage size exceeded: %d bytes, the limit is %d", size, sm.GetMaxCollectionPayloadSizeBytes())
		}
	}
	if sm.MaxCollectionVectorSizeBytes != nil {
		if size := uint64(len(after)) * uint64(c.size) * 4; size > sm.GetMaxCollectionVectorSizeBytes() {
			return errStrict("Max vector storage size exceeded: %d bytes, the limit is %d", size, sm.GetMaxCollectionVectorSizeBytes())
		}
	}
	return nil
}

// checkLimit refuses a read asking for more than max_query_limit results.
func (c *collection) checkLimit(limit int) error {
	if !c.strictOn() || c.strict.MaxQueryLimit == nil || limit <= int(c.strict.GetMaxQueryLimit()) {
		return nil
	}
	return errStrict("Limit exceeded: %d > %d", limit, c.strict.GetMaxQueryLimit())
}
