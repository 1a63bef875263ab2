package qdrantstore

import (
	"context"
	"fmt"
	"strings"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

var _ agent.Inventorier = (*Store)(nil)

// Inventory lists every collection named tenant_<id>, and every point of
// the system collection: collection markers (kind marker) and JWT
// revocation points (kind token_record — while one exists, the token it
// names is valid). A collection is ours by the rule inspect applies: its
// metadata (settable only with the API key) says tenantprov created it for
// the tenant, or it has no metadata and our marker names the tenant. Points
// of the system collection are ours by where they are: only the API key
// writes there.
func (s *Store) Inventory(ctx context.Context, _ agent.InventoryRequest) (agent.InventoryResponse, error) {
	var resp agent.InventoryResponse
	admin := withKey(ctx, s.cfg.APIKey)
	pts, err := s.scrollSystem(admin, nil)
	if err != nil {
		return resp, fmt.Errorf("inventory: %w", err)
	}
	markers := map[string]uint64{}
	for _, p := range pts {
		pl := p.GetPayload()
		tenant := pl[keyTenant].GetStringValue()
		gen := uint64(max(pl[keyGeneration].GetIntegerValue(), 0))
		switch pl[keyKind].GetStringValue() {
		case kindCollection:
			markers[tenant] = gen
			resp.Items = append(resp.Items, events.InventoryItem{Kind: events.KindMarker, Name: events.QdrantSystemCollection + ":" + p.GetId().GetUuid(), TenantID: tenant, Ours: true, Generation: gen})
		case kindToken:
			r, _ := parseTokenRecord(p)
			if tenant == "" {
				tenant = strings.TrimPrefix(r.collection, "tenant_")
			}
			resp.Items = append(resp.Items, events.InventoryItem{Kind: events.KindTokenRecord, Name: events.QdrantSystemCollection + ":" + r.id, TenantID: tenant, Ours: true, Generation: gen})
		}
	}

	names, err := s.client.ListCollections(admin)
	if err != nil {
		return resp, s.adminErr(fmt.Errorf("inventory: list collections: %w", err))
	}
	for _, name := range names {
		if !strings.HasPrefix(name, "tenant_") {
			continue
		}
		it := events.InventoryItem{Kind: events.KindCollection, Name: name, TenantID: strings.TrimPrefix(name, "tenant_")}
		info, err := s.client.GetCollectionInfo(admin, name)
		switch {
		case isNotFound(err):
			continue // deleted meanwhile
		case err != nil:
			return resp, s.adminErr(fmt.Errorf("inventory: read collection %s: %w", name, err))
		}
		md := info.GetConfig().GetMetadata()
		markerGen, marked := markers[it.TenantID]
		switch {
		case md[metaManagedBy].GetStringValue() == managedBy && md[metaTenant].GetStringValue() == it.TenantID:
			it.Ours = true
			it.Generation = max(markerGen, uint64(max(md[metaGeneration].GetIntegerValue(), 0)))
		case marked && len(md) == 0:
			it.Ours, it.Generation = true, markerGen
		}
		resp.Items = append(resp.Items, it)
	}
	return resp, nil
}
