package redisstore

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

var _ agent.Inventorier = (*Store)(nil)

// Inventory lists every ACL user named tenant_<id>, every field of the
// managed-users record (kind marker), and per tenant the keys under
// tenant:<id>: (kind keys, counted by SCAN, never listed). An ACL user is
// ours exactly when the record has its field; a tenant's keys are ours while
// the record of its user exists (Deprovision removes the record only after
// the keys), and otherwise are data tenantprov never owned.
func (s *Store) Inventory(ctx context.Context, _ agent.InventoryRequest) (agent.InventoryResponse, error) {
	var resp agent.InventoryResponse
	recs, err := s.admin.HGetAll(ctx, ManagedUsersKey).Result()
	if err != nil {
		return resp, storeError("inventory: read "+ManagedUsersKey, err)
	}
	gens := map[string]uint64{} // tenant -> generation, for users with a record
	for user, raw := range recs {
		var rec managedUser
		_ = json.Unmarshal([]byte(raw), &rec) // unreadable: still our marker
		tenant := strings.TrimPrefix(user, "tenant_")
		if id, ok := events.TenantFromName(user, "tenant_", ""); ok {
			tenant = id.String()
			gens[tenant] = rec.Generation
		}
		resp.Items = append(resp.Items, events.InventoryItem{Kind: events.KindMarker, Name: ManagedUsersKey + ":" + user, TenantID: tenant, Ours: true, Generation: rec.Generation})
	}

	users, err := s.admin.Do(ctx, "ACL", "USERS").StringSlice()
	if err != nil {
		return resp, storeError("inventory: acl users", err)
	}
	for _, user := range users {
		if !strings.HasPrefix(user, "tenant_") {
			continue
		}
		it := events.InventoryItem{Kind: events.KindACLUser, Name: user, TenantID: strings.TrimPrefix(user, "tenant_")}
		if _, managed := recs[user]; managed {
			it.Ours, it.Generation = true, gens[it.TenantID]
		}
		resp.Items = append(resp.Items, it)
	}

	counts := map[string]int64{}
	var cursor uint64
	for {
		keys, next, err := s.admin.Scan(ctx, cursor, "tenant:*", scanCount).Result()
		if err != nil {
			return resp, storeError("inventory: scan tenant:*", err)
		}
		for _, k := range keys {
			rest := strings.TrimPrefix(k, "tenant:")
			if i := strings.IndexByte(rest, ':'); i > 0 {
				counts[rest[:i]]++
			}
		}
		if next == 0 {
			break
		}
		cursor = next
	}
	for tenant, n := range counts {
		it := events.InventoryItem{Kind: events.KindKeys, Name: "tenant:" + tenant + ":", TenantID: tenant, Count: n}
		if g, managed := gens[tenant]; managed {
			it.Ours, it.Generation = true, g
		}
		resp.Items = append(resp.Items, it)
	}
	return resp, nil
}
