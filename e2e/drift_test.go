package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/inventory"
	"github.com/tenantprov/tenantprov/services/orchestrator/saga"
	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// doctorObserve is `tenantctl doctor <id> --observe --output json`'s report
// as far as this test reads it.
type doctorObserve struct {
	doctorResult
	Observation *struct {
		RequestedAt time.Time                  `json:"requested_at"`
		Observed    map[events.Store]time.Time `json:"observed"`
		Missing     []events.Store             `json:"missing"`
	} `json:"observation"`
}

// TestDriftObserved: `tenantctl doctor <id> --observe` has the orchestrator
// observe the tenant now and reports every store's fresh observation; then,
// through the periodic path (OBSERVE_INTERVAL), drift made by hand in real
// stores — a stray GRANT on the tenant's PostgreSQL database to another
// role (inward), an extra key pattern on its Redis ACL user (outward) — is
// detected (DRIFT_DETECTED), repaired by the real agents under
// DRIFT_REPAIR=auto (DRIFT_REPAIRED) and gone from the stores, and the
// record shows no open drift. It needs the agent runtime's dispatch of
// observe commands, and is skipped while the agents answer observe with
// "unknown action".
func TestDriftObserved(t *testing.T) {
	bin := buildTenantctl(t)
	s := startSystem(t, 60*time.Second)
	s.startObservingOrchestrator(saga.ObserveConfig{ObserveInterval: 4 * time.Second, DriftRepair: "auto", ObserveTimeout: time.Minute,
		OrphanGrace: time.Hour, InventoryTimeout: 30 * time.Second})
	// The agent runtime answers an observe of a tenant it never
	// provisioned with an observation, not a failure.
	probe := events.MustTenantID("drift-probe")
	pa := s.agent(events.StorePostgres)
	after := pa.Cursor(s.ctx, t)
	pa.Send(s.ctx, t, pa.NewCommand(probe, 1, events.ActionObserve))
	if res := pa.Await(s.ctx, t, after, storetest.For(probe, 1)); res.Outcome.Action() != events.ActionObserve {
		t.Fatalf("observe of an unknown tenant answered %s (%s), want an observation", res.Outcome, res.Error)
	}

	id := events.MustTenantID("drift-a")
	s.request(events.SubjectTenantRequested, `{"tenant_id":"drift-a"}`)
	s.waitState(string(id), events.TenantActive, 2*time.Minute)

	var r doctorObserve
	code, out := s.doctorInto(bin, &r, string(id), "--observe", "--observe-timeout", "90s")
	if r.Observation == nil || len(r.Observation.Missing) != 0 || len(r.Observation.Observed) != 4 {
		t.Fatalf("doctor --observe: exit %d; not every store observed:\n%s", code, out)
	}
	for st, at := range r.Observation.Observed {
		if at.Before(r.Observation.RequestedAt) {
			t.Errorf("%s observed at %s, before the request at %s", st, at, r.Observation.RequestedAt)
		}
	}
	if (code == 0) != r.OK {
		t.Errorf("doctor exit %d with ok=%v", code, r.OK)
	}
	if code != 0 || !r.OK {
		t.Fatalf("doctor --observe on a fresh tenant: exit %d\n%s", code, out)
	}

	// Drift by hand.
	ctx, cancel := context.WithTimeout(s.ctx, time.Minute)
	defer cancel()
	pg, err := pgx.Connect(ctx, s.pg.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(context.Background())
	db := pgx.Identifier{id.PostgresRole()}.Sanitize()
	for _, q := range []string{`CREATE ROLE intruder LOGIN`, `GRANT CONNECT ON DATABASE ` + db + ` TO intruder`} {
		if _, err := pg.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	rdb := redis.NewClient(&redis.Options{Addr: s.redis.Addr, Username: s.redis.AdminUser, Password: s.redis.AdminPassword})
	defer rdb.Close()
	if err := rdb.Do(ctx, "ACL", "SETUSER", id.RedisUser(), "~other:*").Err(); err != nil {
		t.Fatal(err)
	}

	for _, st := range []events.Store{events.StorePostgres, events.StoreRedis} {
		waitStoreAudit(t, s, events.AuditDriftDetected, string(id), st, 2*time.Minute)
		waitStoreAudit(t, s, events.AuditDriftRepaired, string(id), st, 2*time.Minute)
	}
	s.waitFor(string(id), 2*time.Minute, "an observation with no open drift in postgres and redis", func(r *events.TenantRecord) bool {
		for _, st := range []events.Store{events.StorePostgres, events.StoreRedis} {
			o := r.Stores[st].Observation
			if o == nil || len(inventory.OpenDrift(o)) > 0 || len(o.Drift) > 0 || o.Error != "" {
				return false
			}
		}
		return true
	})
	var granted bool
	if err := pg.QueryRow(ctx, `SELECT has_database_privilege('intruder', $1, 'CONNECT')`, id.PostgresRole()).Scan(&granted); err != nil || granted {
		t.Errorf("intruder's CONNECT on %s after the repair: %v (%v)", db, granted, err)
	}
	rules, err := rdb.Do(ctx, "ACL", "GETUSER", id.RedisUser()).Text()
	if err == nil && strings.Contains(rules, "other:") {
		t.Errorf("the extra ACL pattern survived the repair: %s", rules)
	}
	for _, ev := range s.audits(events.AuditDriftDetected, string(id)) {
		if strings.Contains(string(ev.Details), "password") && strings.Contains(string(ev.Details), "#") {
			t.Errorf("DRIFT_DETECTED details look like they hold a secret: %s", ev.Details)
		}
	}
}

func waitStoreAudit(t *testing.T, s *system, typ events.AuditType, tenant string, st events.Store, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		for _, ev := range s.audits(typ, tenant) {
			if ev.Store == st {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s for %s in %s within %s; record:\n%s", typ, tenant, st, within, fmt.Sprint(s.record(tenant).Stores[st].Observation))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// doctorInto runs tenantctl doctor --output json with args and decodes its
// report into v; it returns the exit code and the output.
func (s *system) doctorInto(bin string, v any, args ...string) (int, string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"doctor", "--output", "json", "--nats-url", s.nats.URL, "--store-timeout", "20s", "--timeout", "3m"}, args...)...)
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
	if jerr := json.Unmarshal(out.Bytes(), v); jerr != nil {
		s.t.Fatalf("tenantctl doctor %v (exit %d): output is not JSON: %v\n%s\n%s", args, code, jerr, out.String(), errb.String())
	}
	return code, out.String() + errb.String()
}
