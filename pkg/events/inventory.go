package events

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Inventory: what each store holds that looks like a tenant's, as its agent
// sees it. An operator, `tenantctl doctor` and the orphan sweep compare it
// with the registry (package inventory). It travels on core NATS
// request/reply, not JetStream: it is a question answered now, never a
// command to keep.
//
// A request is published on InventorySubject(store) with a reply inbox; one
// replica of the store's agent (queue group InventoryQueue) answers with one
// or more InventoryChunk messages on that inbox, numbered from 0, the last
// one with Last set. Each chunk holds at most InventoryChunkItems items, so
// a store with thousands of tenants never exceeds NATS's payload limit.

// InventoryQueue is the queue group the agents' inventory responders join.
const InventoryQueue = "inventory"

// InventoryChunkItems is the most items one InventoryChunk carries.
const InventoryChunkItems = 500

// MaxInventoryChunkBytes bounds one encoded chunk (NATS's default payload
// limit is 1 MiB; 500 items take about 100 KB).
const MaxInventoryChunkBytes = 1 << 20

const subjectInventoryPrefix = "store.inventory."

// SubjectAllInventory matches every store's inventory subject.
const SubjectAllInventory = subjectInventoryPrefix + "*"

// MaxInventoryChunks is the most chunks one answer may have (the bus lets
// an agent send that many replies to one request): 5,000,000 items.
const MaxInventoryChunks = 10000

// InventoryAnswerWindow is how long after a request its answer may still
// be sent (the listing itself is bounded well within it).
const InventoryAnswerWindow = 5 * time.Minute

// InventorySubject is store.inventory.<store>, where a store's agent
// answers inventory requests.
func InventorySubject(s Store) string { return subjectInventoryPrefix + string(s) }

// ResourceKind names what an inventory item is.
type ResourceKind string

// Resource kinds, per store:
//   - minio: bucket, iam_user, policy, marker (the system record
//     tenantprov-system/tenants/<id>.json);
//   - postgres: database, role, marker (the row of
//     tenantprov.postgres_tenants);
//   - qdrant: collection, marker (the collection's marker point),
//     token_record (a JWT's revocation point);
//   - redis: acl_user, keys (the tenant's key space, counted), marker (the
//     field of the managed-users hash).
const (
	KindBucket         ResourceKind = "bucket"
	KindIAMUser        ResourceKind = "iam_user"
	KindPolicy         ResourceKind = "policy"
	KindServiceAccount ResourceKind = "service_account"
	KindDatabase       ResourceKind = "database"
	KindRole           ResourceKind = "role"
	KindCollection     ResourceKind = "collection"
	KindTokenRecord    ResourceKind = "token_record"
	KindACLUser        ResourceKind = "acl_user"
	KindKeys           ResourceKind = "keys"
	KindMarker         ResourceKind = "marker"
)

// InventoryItem is one resource of a store that carries tenantprov's marker
// or a tenant-shaped name (DESIGN.md §2). It never holds a secret.
type InventoryItem struct {
	Store Store        `json:"store"`
	Kind  ResourceKind `json:"kind"`
	// Name is the resource's name in the store (for keys, the prefix).
	Name string `json:"name"`
	// TenantID is the tenant the name (or, for ours, the marker) belongs
	// to. It is a valid tenant ID unless Ours is false and the name only
	// looks like a tenant's.
	TenantID string `json:"tenant_id"`
	// Ours: tenantprov's marker of origin — kept where no tenant can write
	// it — says tenantprov created this resource for TenantID. A resource
	// with a tenant name and Ours false is foreign (or, for keys, which
	// carry no marker, simply data).
	Ours bool `json:"ours"`
	// Generation is the generation the marker records (0 when not ours or
	// unknown).
	Generation uint64 `json:"generation,omitempty"`
	// Count is how many keys (kind keys) the tenant's key space holds.
	Count int64 `json:"count,omitempty"`
}

// InventoryRequest asks an agent for its store's inventory.
type InventoryRequest struct {
	// TenantID, if set, limits the answer to that tenant's items.
	TenantID string `json:"tenant_id,omitempty"`
}

// InventoryChunk is one message of an inventory answer.
type InventoryChunk struct {
	Store Store `json:"store"`
	// Seq numbers the chunks of one answer from 0.
	Seq   int             `json:"seq"`
	Last  bool            `json:"last"`
	Items []InventoryItem `json:"items,omitempty"`
	// Total is the number of items of the whole answer (on the last chunk).
	Total int `json:"total,omitempty"`
	// Error says why the agent could not list its store (on a last chunk
	// with no items); it has been sanitised.
	Error string `json:"error,omitempty"`
}

// DecodeInventoryChunk decodes a chunk and checks its store and items.
func DecodeInventoryChunk(data []byte) (*InventoryChunk, error) {
	if len(data) > MaxInventoryChunkBytes {
		return nil, fmt.Errorf("%w: inventory chunk of %d bytes", ErrPayloadTooLarge, len(data))
	}
	var c InventoryChunk
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("%w: inventory chunk: %s", ErrInvalidPayload, Truncate(err.Error(), 200))
	}
	if !c.Store.Valid() {
		return nil, fmt.Errorf("%w: inventory chunk: store %q", ErrUnknownStore, Truncate(string(c.Store), 64))
	}
	if c.Seq < 0 || len(c.Items) > InventoryChunkItems {
		return nil, fmt.Errorf("%w: inventory chunk: seq %d with %d items", ErrInvalidPayload, c.Seq, len(c.Items))
	}
	return &c, nil
}

// TenantFromName returns the tenant a tenant-shaped resource name belongs
// to: name without prefix (and suffix), if that is a valid tenant ID. ok is
// false for any other name (a system resource, a non-tenant name).
func TenantFromName(name, prefix, suffix string) (TenantID, bool) {
	if !strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, suffix) || len(name) < len(prefix)+len(suffix) {
		return "", false
	}
	id, err := ParseTenantID(name[len(prefix) : len(name)-len(suffix)])
	return id, err == nil
}
