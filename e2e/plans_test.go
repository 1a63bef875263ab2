package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/redis/go-redis/v9"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// Plans and the dry run end to end (DESIGN.md §10): the real agents and
// stores, the orchestrator with a PLANS_FILE.

const e2ePlans = `plans:
  default: {}
  small:
    postgres: {connection_limit: 2, statement_timeout: 5s}
    minio: {bucket_quota_bytes: 1048576}
  large:
    postgres: {connection_limit: 4}
`

// storeSnapshot is every store's state as the admin sees it: PostgreSQL's
// roles (with their limits and settings) and databases, Redis's ACL and
// keys, MinIO's buckets, Qdrant's collections.
func (s *system) storeSnapshot() string {
	t := s.t
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	var b strings.Builder
	conn, err := pgx.Connect(ctx, s.pg.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT 'role '||rolname||' '||rolconnlimit||' '||coalesce(array_to_string(rolconfig, ','), '') FROM pg_roles
		UNION ALL SELECT 'db '||datname||' '||coalesce(array_to_string(datacl::text[], ','), '') FROM pg_database ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var l string
		if err := rows.Scan(&l); err != nil {
			t.Fatal(err)
		}
		b.WriteString(l + "\n")
	}
	rows.Close()
	rc := redis.NewClient(&redis.Options{Addr: s.redis.Addr, Username: s.redis.AdminUser, Password: s.redis.AdminPassword})
	defer rc.Close()
	acl, err := rc.Do(ctx, "ACL", "LIST").StringSlice()
	if err != nil {
		t.Fatal(err)
	}
	// ACL LIST shows password hashes: compare them too (a dry run must not
	// set any), they are not secrets of the test.
	slices.Sort(acl)
	b.WriteString(strings.Join(acl, "\n") + "\n")
	keys, _ := rc.Keys(ctx, "*").Result()
	slices.Sort(keys)
	fmt.Fprintf(&b, "redis keys %v\n", keys)
	mc, err := minio.New(s.minio.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(s.minio.RootUser, s.minio.RootPassword, "")})
	if err != nil {
		t.Fatal(err)
	}
	buckets, err := mc.ListBuckets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, bk := range buckets {
		fmt.Fprintf(&b, "bucket %s\n", bk.Name)
	}
	cols, err := s.qdrant.Client(t, s.qdrant.APIKey).ListCollections(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(cols)
	fmt.Fprintf(&b, "collections %v\n", cols)
	return b.String()
}

// registrySnapshot is every key of the tenants bucket with its bytes.
func (s *system) registrySnapshot() string {
	keys, err := s.kv.ListKeys(s.ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	var b strings.Builder
	var all []string
	for k := range keys.Keys() {
		all = append(all, k)
	}
	slices.Sort(all)
	for _, k := range all {
		e, err := s.kv.Get(s.ctx, k)
		if err != nil {
			s.t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s rev %d %s\n", k, e.Revision(), e.Value())
	}
	return b.String()
}

func (s *system) waitPlanned(tenant, requestID string, within time.Duration) *events.TenantOutcomeEvent {
	s.t.Helper()
	deadline := time.Now().Add(within)
	for {
		for _, d := range s.streamData(events.StreamTenants) {
			var ev events.TenantOutcomeEvent
			if json.Unmarshal(d, &ev) == nil && ev.Outcome == events.TenantOutcomePlanned && ev.TenantID == tenant && ev.RequestID == requestID {
				return &ev
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("no tenant.planned for %s (%s) within %s", tenant, requestID, within)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (s *system) roleLimit(role string) (int, string) {
	s.t.Helper()
	conn, err := pgx.Connect(s.ctx, s.pg.AdminURL())
	if err != nil {
		s.t.Fatal(err)
	}
	defer conn.Close(s.ctx)
	var n int
	var cfg string
	if err := conn.QueryRow(s.ctx, "SELECT rolconnlimit, coalesce(array_to_string(rolconfig, ','), '') FROM pg_roles WHERE rolname=$1", role).Scan(&n, &cfg); err != nil {
		s.t.Fatal(err)
	}
	return n, cfg
}

// openConns opens n connections as the tenant and reports how many the
// server accepted; they are closed at the end.
func (s *system) openConns(url string, n int) (int, error) {
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	var conns []*pgx.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close(context.Background())
		}
	}()
	for i := 0; i < n; i++ {
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			return len(conns), err
		}
		conns = append(conns, c)
	}
	return len(conns), nil
}

func TestPlansAndDryRun(t *testing.T) {
	s := startSystem(t, 60*time.Second)
	path := filepath.Join(t.TempDir(), "plans.yaml")
	if err := os.WriteFile(path, []byte(e2ePlans), 0o644); err != nil {
		t.Fatal(err)
	}
	s.sagaCfg.PlansFile = path
	s.startOrchestrator()

	// A foreign database holds the name a tenant would get.
	squat := events.MustTenantID("plan-squat")
	admin, err := pgx.Connect(s.ctx, s.pg.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	// (Not open to PUBLIC: another tenant's isolation check would
	// rightly fail on a database every role may connect to.)
	for _, q := range []string{`CREATE DATABASE "` + squat.PostgresRole() + `"`, `REVOKE ALL ON DATABASE "` + squat.PostgresRole() + `" FROM PUBLIC`} {
		if _, err := admin.Exec(s.ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	_ = admin.Close(s.ctx)

	// A tenant on plan small: enforced and recorded.
	a := events.MustTenantID("plan-a")
	s.request(events.SubjectTenantRequested, `{"tenant_id":"plan-a","plan":"small"}`)
	rec := s.waitState(string(a), events.TenantActive, 3*time.Minute)
	if rec.Plan != "small" {
		t.Fatalf("record plan %q", rec.Plan)
	}
	if l := rec.Stores[events.StorePostgres].Limits; l == nil || l.Postgres == nil || l.Postgres.ConnectionLimit != 2 {
		t.Fatalf("postgres limits recorded %+v", l)
	}
	if l := rec.Stores[events.StoreMinIO].Limits; l == nil || l.MinIO == nil || l.MinIO.BucketQuotaBytes != 1<<20 {
		t.Fatalf("minio limits recorded %+v", l)
	}
	if n, cfg := s.roleLimit(a.PostgresRole()); n != 2 || !strings.Contains(cfg, "statement_timeout=") {
		t.Fatalf("role %s: connection limit %d, settings %q", a.PostgresRole(), n, cfg)
	}
	s.waitAudits(events.AuditTenantPlanApplied, string(a), 1, time.Minute)
	_, file := s.secretsFile(string(a))
	url := file["postgres"]["url"].(string)
	if got, err := s.openConns(url, 3); got != 2 || err == nil {
		t.Fatalf("plan small: %d connections accepted (%v), want 2 then refused", got, err)
	}
	// MinIO's hard quota refuses a put beyond 1 MiB.
	mn := file["minio"]
	mc, err := minio.New(mn["endpoint"].(string), &minio.Options{Creds: credentials.NewStaticV4(mn["access_key"].(string), mn["secret_key"].(string), "")})
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("x"), 2<<20)
	if _, err := mc.PutObject(s.ctx, mn["bucket"].(string), "big", bytes.NewReader(big), int64(len(big)), minio.PutObjectOptions{}); err == nil {
		t.Error("a 2 MiB put into a bucket with a 1 MiB quota was accepted")
	}

	// Dry runs change nothing: not the stores, not the registry.
	storesBefore, regBefore := s.storeSnapshot(), s.registrySnapshot()
	s.request(events.SubjectTenantRequested, `{"tenant_id":"plan-new","plan":"small","dry_run":true,"request_id":"d1"}`)
	s.request(events.SubjectTenantRequested, `{"tenant_id":"plan-squat","dry_run":true,"request_id":"d2"}`)
	s.request(events.SubjectTenantRequested, `{"tenant_id":"plan-a","plan":"large","dry_run":true,"request_id":"d3"}`)
	fresh := s.waitPlanned("plan-new", "d1", 2*time.Minute)
	sq := s.waitPlanned("plan-squat", "d2", 2*time.Minute)
	existing := s.waitPlanned("plan-a", "d3", 2*time.Minute)
	for name, ev := range map[string]*events.TenantOutcomeEvent{"new": fresh, "squat": sq, "existing": existing} {
		if len(ev.Failed) != 0 || len(ev.DryRun) != 4 {
			t.Fatalf("%s dry run: failed %v, %d answers", name, ev.Failed, len(ev.DryRun))
		}
	}
	for _, store := range events.Stores() {
		if len(fresh.DryRun[store].Operations) == 0 {
			t.Errorf("%s reports no operation for a new tenant", store)
		}
		for _, op := range fresh.DryRun[store].Operations {
			if strings.Contains(op.Text, url) {
				t.Errorf("%s operation carries a credential: %s", store, op.Text)
			}
		}
	}
	if c := sq.DryRun[events.StorePostgres].Conflicts; !slices.ContainsFunc(c, func(c events.Conflict) bool { return c.Kind == events.ConflictNameTaken }) {
		t.Errorf("the squatted database is not reported as a conflict: %+v", sq.DryRun[events.StorePostgres])
	}
	if ops := existing.DryRun[events.StorePostgres].Operations; !slices.ContainsFunc(ops, func(o events.Operation) bool { return strings.Contains(o.Text, "CONNECTION LIMIT 4") }) {
		t.Errorf("the existing tenant's dry run does not show the new limit: %+v", ops)
	}
	s.waitAudits(events.AuditTenantPlanned, "plan-new", 1, time.Minute)
	if after := s.storeSnapshot(); after != storesBefore {
		t.Errorf("a dry run changed the stores:\n%s", lineDiff(storesBefore, after))
	}
	if after := s.registrySnapshot(); after != regBefore {
		t.Errorf("a dry run changed the registry:\n%s", lineDiff(regBefore, after))
	}

	// The update: plan large, enforced and recorded.
	s.request(events.SubjectTenantUpdateRequested, `{"tenant_id":"plan-a","plan":"large","request_id":"u1"}`)
	rec = s.waitFor(string(a), 3*time.Minute, "on plan large", func(r *events.TenantRecord) bool {
		return r.State == events.TenantActive && r.Plan == "large" && r.Announced == events.TenantActive && len(r.Outbox) == 0
	})
	if l := rec.Stores[events.StorePostgres].Limits; l == nil || l.Postgres == nil || l.Postgres.ConnectionLimit != 4 {
		t.Fatalf("postgres limits after the update %+v", l)
	}
	if n, cfg := s.roleLimit(a.PostgresRole()); n != 4 || strings.Contains(cfg, "statement_timeout") {
		t.Fatalf("after the update: connection limit %d, settings %q (large sets no statement_timeout)", n, cfg)
	}
	if got, err := s.openConns(url, 3); got != 3 || err != nil {
		t.Fatalf("plan large: %d connections accepted (%v), want 3", got, err)
	}
	s.waitAudits(events.AuditTenantPlanApplied, string(a), 2, time.Minute)

	// Bad input: rejected, audited, nothing changed.
	regBefore = s.registrySnapshot()
	s.request(events.SubjectTenantUpdateRequested, `{"tenant_id":"plan-a","plan":"gold"}`)
	s.request(events.SubjectTenantUpdateRequested, `{"tenant_id":"plan-a","plan":""}`)
	s.request(events.SubjectTenantRequested, `{"tenant_id":"plan-b","plan":"gold"}`)
	s.waitAudits(events.AuditTenantRequestRejected, string(a), 2, time.Minute)
	s.waitAudits(events.AuditTenantRequestRejected, "plan-b", 1, time.Minute)
	if after := s.registrySnapshot(); after != regBefore {
		t.Errorf("a rejected request changed the registry:\n%s", lineDiff(regBefore, after))
	}
	s.request(events.SubjectTenantSuspendRequested, `{"tenant_id":"plan-a"}`)
	s.waitState(string(a), events.TenantSuspended, 2*time.Minute)
	s.request(events.SubjectTenantUpdateRequested, `{"tenant_id":"plan-a","plan":"small"}`)
	s.waitAudits(events.AuditTenantRequestRejected, string(a), 3, time.Minute)
	if rec := s.record(string(a)); rec.State != events.TenantSuspended || rec.Plan != "large" {
		t.Fatalf("update of a suspended tenant: state %s plan %q", rec.State, rec.Plan)
	}
}

// TestPlansOnTheAuthenticatedBus: the dry run and the update with every
// service on its own identity (DESIGN.md §11): the orchestrator may keep a
// dry run's answers in the dry-runs bucket, the requester may send the
// update request.
func TestPlansOnTheAuthenticatedBus(t *testing.T) {
	s := startAuthenticatedSystem(t, 60*time.Second)
	path := filepath.Join(t.TempDir(), "plans.yaml")
	if err := os.WriteFile(path, []byte(e2ePlans), 0o644); err != nil {
		t.Fatal(err)
	}
	s.sagaCfg.PlansFile = path
	s.startOrchestrator()
	s.request(events.SubjectTenantRequested, `{"tenant_id":"auth-plan","plan":"small","dry_run":true,"request_id":"d1"}`)
	if ev := s.waitPlanned("auth-plan", "d1", 2*time.Minute); len(ev.DryRun) != 4 || len(ev.Failed) != 0 {
		t.Fatalf("tenant.planned %+v", ev)
	}
	if s.record("auth-plan") != nil {
		t.Fatal("a dry run created a record")
	}
	s.request(events.SubjectTenantRequested, `{"tenant_id":"auth-plan","plan":"small"}`)
	s.waitState("auth-plan", events.TenantActive, 3*time.Minute)
	s.request(events.SubjectTenantUpdateRequested, `{"tenant_id":"auth-plan","plan":"large"}`)
	rec := s.waitFor("auth-plan", 3*time.Minute, "on plan large", func(r *events.TenantRecord) bool {
		return r.State == events.TenantActive && r.Plan == "large" && r.Announced == events.TenantActive
	})
	if l := rec.Stores[events.StorePostgres].Limits; l == nil || l.Postgres == nil || l.Postgres.ConnectionLimit != 4 {
		t.Fatalf("postgres limits %+v", l)
	}
}
