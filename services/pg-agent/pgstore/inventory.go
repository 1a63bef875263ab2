package pgstore

import (
	"context"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

var _ agent.Inventorier = (*Store)(nil)

// Inventory lists every role and database named tenant_<id>, every
// credential version role tenant_<id>__vN, and every row of the system
// record (kind marker). A role or database is ours exactly
// when the system record names it by OID (the same rule Provision and
// Deprovision apply, state.roleOurs and state.dbOurs); its generation is
// the record's. A version role is ours when the credentials record names
// it by OID.
func (s *Store) Inventory(ctx context.Context, _ agent.InventoryRequest) (agent.InventoryResponse, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return agent.InventoryResponse{}, wrap("inventory: connect", err)
	}
	defer conn.Release()

	states := map[events.TenantID]*state{}
	get := func(id events.TenantID) *state {
		st := states[id]
		if st == nil {
			st = &state{tenant: id}
			states[id] = st
		}
		return st
	}
	var resp agent.InventoryResponse
	var foreignNames []events.InventoryItem

	var hasRecord bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", recordTable).Scan(&hasRecord); err != nil {
		return resp, wrap("inventory: look for "+recordTable, err)
	}
	if hasRecord {
		rows, err := conn.Query(ctx, "SELECT tenant, generation, role_oid, database_oid FROM "+recordTable)
		if err != nil {
			return resp, wrap("inventory: read "+recordTable, err)
		}
		for rows.Next() {
			var (
				tenant   string
				gen      int64
				roleOID  *uint32
				dbOID    *uint32
				parsedID events.TenantID
			)
			if err := rows.Scan(&tenant, &gen, &roleOID, &dbOID); err != nil {
				rows.Close()
				return resp, wrap("inventory: read "+recordTable, err)
			}
			parsedID, err = events.ParseTenantID(tenant)
			item := events.InventoryItem{Kind: events.KindMarker, Name: recordTable + ":" + tenant, TenantID: tenant, Ours: true, Generation: uint64(max(gen, 0))}
			resp.Items = append(resp.Items, item)
			if err != nil {
				continue // a record naming no valid tenant vouches for nothing
			}
			st := get(parsedID)
			st.recExists, st.recGen, st.recRoleOID, st.recDBOID = true, gen, roleOID, dbOID
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return resp, wrap("inventory: read "+recordTable, err)
		}
	}

	// Credential version roles (tenant_<id>__vN, lifecycle.go) are ours
	// when the credentials record names them by OID.
	credOIDs := map[uint32]string{}
	var hasCreds bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", credentialsTable).Scan(&hasCreds); err != nil {
		return resp, wrap("inventory: look for "+credentialsTable, err)
	}
	if hasCreds {
		rows, err := conn.Query(ctx, "SELECT tenant, role_oid FROM "+credentialsTable+" WHERE role_oid IS NOT NULL")
		if err != nil {
			return resp, wrap("inventory: read "+credentialsTable, err)
		}
		var tenant string
		var oid uint32
		_, err = pgx.ForEachRow(rows, []any{&tenant, &oid}, func() error { credOIDs[oid] = tenant; return nil })
		if err != nil {
			return resp, wrap("inventory: read "+credentialsTable, err)
		}
	}
	var versionRoles []events.InventoryItem

	rows, err := conn.Query(ctx, `SELECT rolname, oid FROM pg_roles WHERE rolname LIKE 'tenant\_%'`)
	if err != nil {
		return resp, wrap("inventory: list roles", err)
	}
	for rows.Next() {
		var name string
		var oid uint32
		if err := rows.Scan(&name, &oid); err != nil {
			rows.Close()
			return resp, wrap("inventory: list roles", err)
		}
		if base, _, isVersion := strings.Cut(name, versionSep); isVersion {
			it := events.InventoryItem{Kind: events.KindRole, Name: name, TenantID: strings.TrimPrefix(base, "tenant_")}
			if t, ok := credOIDs[oid]; ok && t == it.TenantID {
				it.Ours = true
			}
			versionRoles = append(versionRoles, it)
			continue
		}
		id, ok := events.TenantFromName(name, "tenant_", "")
		if !ok {
			foreignNames = append(foreignNames, events.InventoryItem{Kind: events.KindRole, Name: name, TenantID: name[len("tenant_"):]})
			continue
		}
		o := oid
		get(id).roleOID = &o
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return resp, wrap("inventory: list roles", err)
	}

	rows, err = conn.Query(ctx, `SELECT datname, oid, datdba FROM pg_database WHERE datname LIKE 'tenant\_%'`)
	if err != nil {
		return resp, wrap("inventory: list databases", err)
	}
	for rows.Next() {
		var name string
		var oid, owner uint32
		if err := rows.Scan(&name, &oid, &owner); err != nil {
			rows.Close()
			return resp, wrap("inventory: list databases", err)
		}
		id, ok := events.TenantFromName(name, "tenant_", "")
		if !ok {
			foreignNames = append(foreignNames, events.InventoryItem{Kind: events.KindDatabase, Name: name, TenantID: name[len("tenant_"):]})
			continue
		}
		o, ow := oid, owner
		st := get(id)
		st.dbOID, st.dbOwner = &o, &ow
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return resp, wrap("inventory: list databases", err)
	}

	for id, st := range states {
		if st.roleOID != nil {
			it := events.InventoryItem{Kind: events.KindRole, Name: id.PostgresRole(), TenantID: string(id), Ours: st.roleOurs()}
			if it.Ours {
				it.Generation = st.generation()
			}
			resp.Items = append(resp.Items, it)
		}
		if st.dbOID != nil {
			it := events.InventoryItem{Kind: events.KindDatabase, Name: id.PostgresDatabase(), TenantID: string(id), Ours: st.dbOurs()}
			if it.Ours {
				it.Generation = st.generation()
			}
			resp.Items = append(resp.Items, it)
		}
	}
	for _, it := range versionRoles {
		if id, err := events.ParseTenantID(it.TenantID); it.Ours && err == nil && states[id] != nil {
			it.Generation = states[id].generation()
		}
		resp.Items = append(resp.Items, it)
	}
	resp.Items = append(resp.Items, foreignNames...)
	return resp, nil
}
