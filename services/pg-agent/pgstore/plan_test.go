package pgstore

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// snapshot is everything a dry run must not change: roles with their
// attributes and settings, databases with their ACLs, the system record.
func (ts *testServer) snapshot(t *testing.T, ctx context.Context) []string {
	t.Helper()
	var out []string
	for _, q := range []string{
		`SELECT r.rolname || ' ' || r.rolcanlogin || ' ' || r.rolconnlimit || ' ' || coalesce(r.rolpassword, '') || ' ' || coalesce(s.setconfig::text, '')
		 FROM pg_authid r LEFT JOIN pg_db_role_setting s ON s.setrole = r.oid ORDER BY 1`,
		`SELECT datname || ' ' || datdba || ' ' || coalesce(datacl::text, '') || ' ' || datallowconn FROM pg_database ORDER BY 1`,
		`SELECT coalesce(string_agg(t::text, ';' ORDER BY t::text), '') FROM ` + recordTable + ` t`,
		`SELECT coalesce(string_agg(c::text, ';' ORDER BY c::text), '') FROM ` + credentialsTable + ` c`,
	} {
		rows, err := ts.admin.Query(ctx, q)
		if err != nil {
			t.Fatalf("snapshot: %v", err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("snapshot: %v", err)
		}
		out = append(out, got...)
	}
	return out
}

func TestPlanDryRunChangesNothing(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := testCtx(t)
	ts.provision(t, ctx, "acme", 1)                        // prepares the system record
	if err := ts.createForeign(ctx, "squat"); err != nil { // a foreign role and database
		t.Fatal(err)
	}
	plan := &events.Plan{Name: "small", Postgres: &events.PostgresPlan{ConnectionLimit: 2, StatementTimeout: events.Duration(time.Second), TempFileLimitKB: 1024}}
	before := ts.snapshot(t, ctx)
	for _, tenant := range []events.TenantID{"acme", "fresh", "squat"} {
		dr, err := ts.store.DryRun(ctx, agent.PlanRequest{Tenant: tenant, Generation: 2, Plan: plan})
		if err != nil {
			t.Fatalf("DryRun(%s): %v", tenant, err)
		}
		text := fmt.Sprint(dr.Operations)
		if !strings.Contains(text, `ALTER ROLE "tenant_`+string(tenant)+`" SET statement_timeout = 1000`) || !strings.Contains(text, "'<redacted>'") {
			t.Errorf("DryRun(%s) operations = %s", tenant, text)
		}
		if dr.Names["database"] != tenant.PostgresDatabase() {
			t.Errorf("DryRun(%s) names = %v", tenant, dr.Names)
		}
		switch tenant {
		case "squat":
			if len(dr.Conflicts) != 2 || dr.Conflicts[0].Kind != events.ConflictNameTaken {
				t.Errorf("DryRun(squat) conflicts = %+v, want the role and the database taken", dr.Conflicts)
			}
		default:
			if len(dr.Conflicts) != 0 {
				t.Errorf("DryRun(%s) conflicts = %+v, want none", tenant, dr.Conflicts)
			}
		}
	}
	if after := ts.snapshot(t, ctx); !reflect.DeepEqual(before, after) {
		t.Fatalf("the dry run changed the server:\nbefore %q\nafter  %q", before, after)
	}
}

func TestPlanApplyEnforcedAndChanged(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := testCtx(t)
	resp, pw := ts.provision(t, ctx, "acme", 1)
	role, db := resp.Resources["role"], resp.Resources["database"]

	small := &events.Plan{Name: "small", Postgres: &events.PostgresPlan{ConnectionLimit: 1, StatementTimeout: events.Duration(300 * time.Millisecond),
		IdleInTransactionSessionTimeout: events.Duration(time.Minute), TempFileLimitKB: 2048}}
	got, err := ts.store.ApplyPlan(ctx, agent.PlanRequest{Tenant: "acme", Generation: 1, Plan: small})
	if err != nil {
		t.Fatalf("ApplyPlan(small): %v", err)
	}
	if *got.Limits.Postgres != *small.Postgres {
		t.Fatalf("read back %+v, want %+v", *got.Limits.Postgres, *small.Postgres)
	}
	if got.Usage[events.UsageDatabaseBytes] < 1 {
		t.Fatalf("usage %v, want the database size", got.Usage)
	}
	if _, err := ts.store.ApplyPlan(ctx, agent.PlanRequest{Tenant: "acme", Generation: 1, Plan: small}); err != nil {
		t.Fatalf("ApplyPlan(small) again: %v", err)
	}

	// The isolation checks still pass under the plan (before the tenant
	// holds its one connection).
	vresp, err := ts.store.Verify(ctx, agent.VerifyRequest{Tenant: "acme", Generation: 1, Credential: resp.Credential})
	if err != nil {
		t.Fatalf("Verify under the plan: %v", err)
	}
	requirePassed(t, vresp)

	conn := ts.mustConnect(t, ctx, role, pw, db)
	var pgErr *pgconn.PgError
	if _, err := conn.Exec(ctx, "SELECT pg_sleep(3)"); !errors.As(err, &pgErr) || pgErr.Code != "57014" {
		t.Fatalf("a 3 s statement under a 300 ms statement_timeout: %v, want SQLSTATE 57014 (query_canceled)", err)
	}
	if _, err := ts.connect(ctx, role, pw, db); !errors.As(err, &pgErr) || pgErr.Code != "53300" {
		t.Fatalf("a second connection under connection limit 1: %v, want SQLSTATE 53300 (too many connections)", scrubConnectError(err))
	}
	var tempLimit string
	if err := conn.QueryRow(ctx, "SHOW temp_file_limit").Scan(&tempLimit); err != nil || tempLimit != "2MB" {
		t.Fatalf("temp_file_limit in the tenant's session = %q, %v; want 2MB", tempLimit, err)
	}
	if _, err := conn.Exec(ctx, "SET temp_file_limit = -1"); !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Fatalf("the tenant lifting temp_file_limit: %v, want SQLSTATE 42501 (permission denied)", err)
	}
	conn.Close(ctx)

	large := &events.Plan{Name: "large", Postgres: &events.PostgresPlan{ConnectionLimit: 3}}
	got, err = ts.store.ApplyPlan(ctx, agent.PlanRequest{Tenant: "acme", Generation: 1, Plan: large})
	if err != nil {
		t.Fatalf("ApplyPlan(large): %v", err)
	}
	if *got.Limits.Postgres != *large.Postgres {
		t.Fatalf("read back %+v, want %+v (the small plan's settings reset)", *got.Limits.Postgres, *large.Postgres)
	}
	c1 := ts.mustConnect(t, ctx, role, pw, db)
	ts.mustConnect(t, ctx, role, pw, db)
	if _, err := c1.Exec(ctx, "SELECT pg_sleep(0.5)"); err != nil {
		t.Fatalf("a 0.5 s statement without statement_timeout: %v", err)
	}

	// A connection limit above PG_CONNECTION_LIMIT (Observe's ceiling) is
	// refused, and reported by the dry run.
	huge := &events.Plan{Name: "huge", Postgres: &events.PostgresPlan{ConnectionLimit: 21}}
	_, err = ts.store.ApplyPlan(ctx, agent.PlanRequest{Tenant: "acme", Generation: 1, Plan: huge})
	if permanent, reason := agent.Classify(err); !permanent || reason != events.ReasonUnsupported {
		t.Fatalf("ApplyPlan(connection limit 21 > 20) = %v, want permanent unsupported", err)
	}
	if dr, err := ts.store.DryRun(ctx, agent.PlanRequest{Tenant: "acme", Generation: 1, Plan: huge}); err != nil || len(dr.Conflicts) != 1 || dr.Conflicts[0].Kind != events.ConflictUnenforceable {
		t.Fatalf("DryRun(connection limit 21) = %+v, %v; want one unenforceable conflict", dr.Conflicts, err)
	}
	obs, err := ts.store.Observe(ctx, agent.ObserveRequest{Tenant: "acme", Generation: 1, CredentialVersion: 1, Credential: resp.Credential})
	if err != nil || len(obs.Drift) != 0 {
		t.Fatalf("Observe under the large plan: %+v, %v; want no drift", obs.Drift, err)
	}

	// A plan for a tenant that is not provisioned is refused, permanently.
	_, err = ts.store.ApplyPlan(ctx, agent.PlanRequest{Tenant: "nobody", Generation: 1, Plan: large})
	if permanent, _ := agent.Classify(err); err == nil || !permanent {
		t.Fatalf("ApplyPlan(nobody) = %v, want a permanent error", err)
	}
}
