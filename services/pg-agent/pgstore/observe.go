package pgstore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantprov/tenantprov/pkg/agent"
)

// Observe compares the tenant's role(s), database and schemas with the
// system record, by the same catalog inspection as Verify's inward checks
// and other_databases_denied (the drift kinds are the Drift* constants),
// and, when req.Credential is given and the tenant is not suspended, logs
// in with it (credential_refused when the server refuses). It never writes
// into the tenant's database and never touches a resource the record does
// not name.
//
// With req.Repair it applies the repairs of the repairable drift (grants,
// memberships, attributes, LOGIN as the record says, the record's own
// database OID) in one transaction per database, then inspects again:
// Repaired lists the drift that is gone afterwards. Drift always lists what
// was found before any repair. A missing database is DataLost and never
// recreated; a missing role, a foreign-owned schema and a refused
// credential are reported only.
func (s *Store) Observe(ctx context.Context, req agent.ObserveRequest) (agent.ObserveResponse, error) {
	tenant, err := checkTenant(req.Tenant)
	if err != nil {
		return agent.ObserveResponse{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if err := s.prepare(ctx); err != nil {
		return agent.ObserveResponse{}, err
	}
	var resp agent.ObserveResponse
	err = s.withTenantLock(ctx, tenant, func(conn *pgxpool.Conn) error {
		st, err := readState(ctx, conn, tenant)
		if err != nil {
			return err
		}
		found, err := s.observe(ctx, conn, st, req)
		if err != nil {
			return err
		}
		resp.Drift = drifts(found)
		if !req.Repair || !repairable(found) {
			return nil
		}
		if err := s.repair(ctx, conn, found); err != nil {
			return err
		}
		st, err = readState(ctx, conn, tenant)
		if err != nil {
			return err
		}
		after, err := s.observe(ctx, conn, st, req)
		if err != nil {
			return err
		}
		left := map[string]bool{}
		for _, f := range after {
			left[f.kind+"\x00"+f.resource] = true
		}
		for _, f := range found {
			if f.repair != nil && !left[f.kind+"\x00"+f.resource] {
				resp.Repaired = append(resp.Repaired, drift(f))
			}
		}
		return nil
	})
	if err != nil {
		return agent.ObserveResponse{}, err
	}
	return resp, nil
}

// observe is inspect plus the credential's login.
func (s *Store) observe(ctx context.Context, conn *pgxpool.Conn, st *state, req agent.ObserveRequest) ([]finding, error) {
	found, err := s.inspect(ctx, conn, st, req.Generation)
	if err != nil {
		return nil, err
	}
	if req.Credential == nil || st.suspended || st.dbOID == nil {
		return found, nil
	}
	user, password := req.Credential.String("user"), credPassword(req.Credential)
	if !tenantLogin(st.tenant, user) || password.IsZero() {
		return nil, invalid(fmt.Errorf("%w: the credential is not tenant %s's", ErrInvalidRequest, st.tenant))
	}
	if c, ok := st.loginRole(user); !ok || (req.CredentialVersion > 0 && c.version != req.CredentialVersion) {
		found = append(found, finding{kind: DriftCredentialRefused, resource: user,
			detail: fmt.Sprintf("credential v%d (%s) is not a live credential in the system record (live: %s)", req.CredentialVersion, user, versionsText(st.versions()))})
		return found, nil
	}
	tc, err := s.connectTenant(ctx, user, password, st.tenant.PostgresDatabase())
	switch {
	case err == nil:
		closeConn(ctx, tc)
	case sqlState(err) == "":
		return nil, wrap("observe: log in as "+user, err)
	default:
		found = append(found, finding{kind: DriftCredentialRefused, resource: user, detail: "login refused: " + pgDetail(err)})
	}
	return found, nil
}

// repair runs the repairs of found: the admin database's in one
// transaction, each tenant database's in another.
func (s *Store) repair(ctx context.Context, conn *pgxpool.Conn, found []finding) error {
	byDB := map[string][]string{}
	var dbs []string
	for _, f := range found {
		for _, r := range f.repair {
			if _, ok := byDB[r.db]; !ok {
				dbs = append(dbs, r.db)
			}
			byDB[r.db] = append(byDB[r.db], r.sql)
		}
	}
	for _, db := range dbs {
		run := func(tx pgx.Tx) error {
			for _, stmt := range byDB[db] {
				if _, err := tx.Exec(ctx, stmt); err != nil {
					return fmt.Errorf("%s: %w", stmt, err)
				}
			}
			return nil
		}
		if db == "" {
			if err := pgx.BeginFunc(ctx, conn, run); err != nil {
				return wrap("repair drift", err)
			}
			continue
		}
		c, err := s.adminConnect(ctx, db)
		if err != nil {
			return err
		}
		err = pgx.BeginFunc(ctx, c, run)
		closeConn(ctx, c)
		if err != nil {
			return wrap("repair drift in "+db, err)
		}
	}
	return nil
}

func repairable(found []finding) bool {
	for _, f := range found {
		if f.repair != nil {
			return true
		}
	}
	return false
}

func drift(f finding) agent.Drift {
	return agent.Drift{Kind: f.kind, Resource: f.resource, Detail: f.detail, DataLost: f.dataLost}
}

func drifts(found []finding) []agent.Drift {
	var out []agent.Drift
	for _, f := range found {
		out = append(out, drift(f))
	}
	return out
}
