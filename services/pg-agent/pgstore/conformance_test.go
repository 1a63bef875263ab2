package pgstore

import (
	"context"
	"fmt"
	"testing"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// TestConformance runs the agent.Store conformance suite against a real
// PostgreSQL. The subtests share one server: each uses its own random
// tenants and deprovisions them.
func TestConformance(t *testing.T) {
	ts := newTestServer(t, nil)
	h := ts.harness()
	storetest.Run(t, func(*testing.T) *storetest.Harness { return h })
}

// TestLifecycleConformance runs the lifecycle suite (rotate, retire,
// suspend, resume, observe) against a real PostgreSQL, with drift made by
// the admin behind the Store's back in both directions.
func TestLifecycleConformance(t *testing.T) {
	ts := newTestServer(t, nil)
	h := ts.harness()
	h.Breakages = ts.breakages()
	storetest.RunLifecycle(t, func(*testing.T) *storetest.Harness { return h })
}

// breakages are the drifts of the lifecycle suite's Observe subtest.
func (ts *testServer) breakages() []storetest.Breakage {
	inAdmin := func(stmts ...string) func(context.Context, events.TenantID, agent.Credential) error {
		return func(ctx context.Context, tenant events.TenantID, _ agent.Credential) error {
			for _, s := range stmts {
				s = fmt.Sprintf(s, ident(tenant.PostgresRole()), ident(tenant.PostgresDatabase()), ident("spy_"+string(tenant)))
				if _, err := ts.admin.Exec(ctx, s); err != nil {
					return fmt.Errorf("%s: %w", s, err)
				}
			}
			return nil
		}
	}
	inTenantDB := func(stmts ...string) func(context.Context, events.TenantID, agent.Credential) error {
		return func(ctx context.Context, tenant events.TenantID, _ agent.Credential) error {
			conn, err := ts.connect(ctx, ts.pg.AdminUser, secret.String(ts.pg.AdminPassword), tenant.PostgresDatabase())
			if err != nil {
				return err
			}
			defer conn.Close(ctx)
			for _, s := range stmts {
				if _, err := conn.Exec(ctx, s); err != nil {
					return fmt.Errorf("%s: %w", s, err)
				}
			}
			return nil
		}
	}
	return []storetest.Breakage{
		// inward
		{Name: "PUBLIC granted CONNECT on the tenant's database", Repairable: true,
			Break: inAdmin("GRANT CONNECT, TEMPORARY ON DATABASE %[2]s TO PUBLIC")},
		{Name: "another role made a member of the tenant role", Repairable: true,
			Break: inAdmin("CREATE ROLE %[3]s LOGIN", "GRANT %[1]s TO %[3]s")},
		{Name: "USAGE and CREATE on the public schema granted to PUBLIC", Repairable: true,
			Break: inTenantDB("GRANT USAGE, CREATE ON SCHEMA public TO PUBLIC")},
		{Name: "the tenant's database given to another owner and made a template", Repairable: true,
			Break: inAdmin("CREATE ROLE %[3]s", "ALTER DATABASE %[2]s OWNER TO %[3]s", "ALTER DATABASE %[2]s IS_TEMPLATE true")},
		// outward
		{Name: "the tenant role granted CONNECT on the canary", Repairable: true,
			Break: inAdmin("GRANT CONNECT ON DATABASE " + ident(events.CanaryDatabase) + " TO %[1]s")},
		{Name: "the tenant role made a member of pg_read_all_data", Repairable: true,
			Break: inAdmin("GRANT pg_read_all_data TO %[1]s")},
		{Name: "the tenant role given CREATEDB and no connection limit", Repairable: true,
			Break: inAdmin("ALTER ROLE %[1]s CREATEDB CONNECTION LIMIT -1")},
		{Name: "the tenant role's LOGIN taken away", Repairable: true,
			Break: inAdmin("ALTER ROLE %[1]s NOLOGIN")},
		// lost data: reported, never recreated empty
		{Name: "the tenant's database dropped", Repairable: false,
			Break: inAdmin("DROP DATABASE %[2]s WITH (FORCE)")},
	}
}
