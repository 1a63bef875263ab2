package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/redis/go-redis/v9"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/busauth"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/inventory"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// buildTenantctl builds cmd/tenantctl into a temporary directory.
func buildTenantctl(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tenantctl")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/tenantctl")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/tenantctl: %v\n%s", err, out)
	}
	return bin
}

// doctorResult is the part of `tenantctl doctor --output json` the test
// reads.
type doctorResult struct {
	OK       bool                       `json:"ok"`
	Tenants  int                        `json:"tenants"`
	Counts   map[inventory.Category]int `json:"counts"`
	Findings []inventory.Finding        `json:"findings"`
}

// doctor runs tenantctl doctor with args against the system and returns
// its exit code and decoded report.
func (s *system) doctor(bin string, args ...string) (int, doctorResult, string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"doctor", "--output", "json", "--nats-url", s.nats.URL, "--store-timeout", "20s"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		s.t.Fatalf("tenantctl doctor: %v", err)
	}
	var r doctorResult
	if jerr := json.Unmarshal(out.Bytes(), &r); jerr != nil {
		s.t.Fatalf("tenantctl doctor %v (exit %d): output is not JSON: %v\n%s\n%s", args, code, jerr, out.String(), errb.String())
	}
	return code, r, out.String() + errb.String()
}

func has(r doctorResult, c inventory.Category, tenant string, st events.Store, k events.ResourceKind) bool {
	for _, f := range r.Findings {
		if f.Category == c && f.TenantID == tenant && f.Store == st && (k == "" || f.Kind == k) {
			return true
		}
	}
	return false
}

// TestDoctor runs `tenantctl doctor` against the whole system (real
// stores, the four agents serving their inventories, the orchestrator):
// clean after two provisions; a leaked resource (created by tenantprov's
// store code for a tenant the registry does not know), a foreign
// look-alike, a resource deleted from an active tenant and an agent that
// stopped answering are each reported, with exit 1; doctor <id> looks at
// one tenant only.
func TestDoctor(t *testing.T) {
	bin := buildTenantctl(t)
	s := startSystem(t, 60*time.Second)
	s.startOrchestrator()
	for _, id := range []string{"doc-one", "doc-two"} {
		s.request(events.SubjectTenantRequested, `{"tenant_id":"`+id+`"}`)
	}
	s.waitState("doc-one", events.TenantActive, 2*time.Minute)
	s.waitState("doc-two", events.TenantActive, 2*time.Minute)

	code, r, out := s.doctor(bin)
	if code != 0 || !r.OK || r.Tenants != 2 || len(r.Findings) != 0 {
		t.Fatalf("doctor on a healthy system: exit %d, ok %v, %d tenants, findings %+v\n%s", code, r.OK, r.Tenants, r.Findings, out)
	}

	// A leak: Redis resources of tenantprov's for a tenant with no record.
	ghost := events.MustTenantID("doc-ghost")
	pw, err := secret.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.newStore(events.StoreRedis).Provision(s.ctx, agent.ProvisionRequest{Tenant: ghost, Generation: 7, SagaID: "leak", Password: pw}); err != nil {
		t.Fatal(err)
	}
	// A foreign look-alike bucket.
	root, err := minio.New(s.minio.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(s.minio.RootUser, s.minio.RootPassword, "")})
	if err != nil {
		t.Fatal(err)
	}
	if err := root.MakeBucket(s.ctx, "tenant-doc-lookalike", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	// A resource of an active tenant deleted behind tenantprov's back.
	rdb := redis.NewClient(&redis.Options{Addr: s.redis.Addr, Username: s.redis.AdminUser, Password: s.redis.AdminPassword})
	defer rdb.Close()
	if err := rdb.Do(s.ctx, "ACL", "DELUSER", events.MustTenantID("doc-two").RedisUser()).Err(); err != nil {
		t.Fatal(err)
	}

	code, r, out = s.doctor(bin)
	if code != 1 || r.OK {
		t.Errorf("doctor with a leak and a missing user: exit %d, ok %v; want exit 1\n%s", code, r.OK, out)
	}
	for _, want := range []struct {
		c  inventory.Category
		id string
		st events.Store
		k  events.ResourceKind
	}{
		{inventory.Leaked, "doc-ghost", events.StoreRedis, events.KindACLUser},
		{inventory.Leaked, "doc-ghost", events.StoreRedis, events.KindMarker},
		{inventory.Foreign, "doc-lookalike", events.StoreMinIO, events.KindBucket},
		{inventory.Missing, "doc-two", events.StoreRedis, events.KindACLUser},
	} {
		if !has(r, want.c, want.id, want.st, want.k) {
			t.Errorf("doctor does not report %s %s %s %s\n%s", want.c, want.id, want.st, want.k, out)
		}
	}
	if strings.Contains(out, pw.Reveal()) {
		t.Error("doctor's output holds a tenant's password")
	}

	code, r, out = s.doctor(bin, "doc-one")
	if code != 0 || !r.OK || r.Tenants != 1 {
		t.Errorf("doctor doc-one (healthy): exit %d, ok %v, tenants %d\n%s", code, r.OK, r.Tenants, out)
	}

	if err := s.agent(events.StorePostgres).Stop(); err != nil {
		t.Fatal(err)
	}
	code, r, out = s.doctor(bin, "doc-one")
	if code != 1 || !has(r, inventory.Unanswered, "", events.StorePostgres, "") {
		t.Errorf("doctor with the postgres agent stopped: exit %d; want 1 and postgres unanswered\n%s", code, out)
	}
}

// TestDoctorOnTheAuthenticatedBus: with every service on its own identity
// (DESIGN.md §11), the operator's tenantctl doctor gets every store's
// inventory and finds the provisioned tenant complete.
func TestDoctorOnTheAuthenticatedBus(t *testing.T) {
	bin := buildTenantctl(t)
	s := startAuthenticatedSystem(t, 60*time.Second)
	s.startOrchestrator()
	s.request(events.SubjectTenantRequested, `{"tenant_id":"doc-auth"}`)
	s.waitState("doc-auth", events.TenantActive, 2*time.Minute)
	code, r, out := s.doctor(bin, "--creds", busauth.CredsPath(s.busDir, busauth.RoleOperator))
	if code != 0 || !r.OK || r.Tenants != 1 || len(r.Findings) != 0 {
		t.Fatalf("doctor on the authenticated bus: exit %d, ok %v, tenants %d, findings %+v\n%s", code, r.OK, r.Tenants, r.Findings, out)
	}
	var items struct {
		Items map[events.Store]int `json:"items"`
	}
	if err := json.Unmarshal([]byte(out[:strings.LastIndex(out, "}")+1]), &items); err != nil {
		t.Fatalf("doctor output: %v", err)
	}
	for _, st := range events.Stores() {
		if items.Items[st] == 0 {
			t.Errorf("no inventory item from %s: %s", st, out)
		}
	}
}
