package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/qdrant/go-client/qdrant"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/metadata"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// result holds a run's figures and every violation found.
type result struct {
	Seed                                   uint64
	Tenants, Deprovisions                  int
	Kills, Restarts, DevUpRuns             int
	KillsPer                               map[string]int
	Active, Deprovisioned, Failed          int
	Unsettled                              int
	Leaked, Missing, Stuck, Mismatch       int
	Unanswered, Foreign                    int
	ProvisionedAudits, DuplicateAudits     int
	MissingAudits                          int
	SecretsChecked, SecretsFailed          int
	LoadSeconds, ConvergeSeconds, P50, P99 float64
	// Baseline is the fault-free run with the same load (CHAOS_BASELINE),
	// and P99Ratio the p99 under faults over its p99.
	Baseline      *result
	P99Ratio      float64
	FailedReasons []string
	Notes         []string
	Violations    []string
}

func (r *result) violate(format string, args ...any) {
	r.Violations = append(r.Violations, fmt.Sprintf(format, args...))
}

func (r *result) print(w io.Writer) {
	per := make([]string, 0, len(r.KillsPer))
	for k, v := range r.KillsPer {
		per = append(per, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(per)
	fmt.Fprintf(w, "\nchaos figures (seed %d)\n", r.Seed)
	fmt.Fprintf(w, "  kills:        %d (%s); %d restarts (%d by dev-up.sh); log .dev/logs/chaos.log\n", r.Kills, strings.Join(per, ", "), r.Restarts, r.DevUpRuns)
	fmt.Fprintf(w, "  tenants:      %d requested, %d deprovisions; now %d active, %d deprovisioned, %d failed, %d unsettled\n", r.Tenants, r.Deprovisions, r.Active, r.Deprovisioned, r.Failed, r.Unsettled)
	fmt.Fprintf(w, "  stores:       %d leaked, %d missing, %d stuck, %d generation mismatch, %d unanswered, %d foreign\n", r.Leaked, r.Missing, r.Stuck, r.Mismatch, r.Unanswered, r.Foreign)
	fmt.Fprintf(w, "  audit:        %d TENANT_PROVISIONED, %d duplicate, %d missing\n", r.ProvisionedAudits, r.DuplicateAudits, r.MissingAudits)
	fmt.Fprintf(w, "  secrets:      %d active tenants' files opened and credentials used, %d failed\n", r.SecretsChecked, r.SecretsFailed)
	fmt.Fprintf(w, "  time:         load %.1fs, converge %.1fs after the last kill; requested->active p50 %.2fs p99 %.2fs\n", r.LoadSeconds, r.ConvergeSeconds, r.P50, r.P99)
	if b := r.Baseline; b != nil {
		fmt.Fprintf(w, "  fault-free:   %d active, %d deprovisioned, %d failed, %d unsettled; load %.1fs; requested->active p50 %.2fs p99 %.2fs\n", b.Active, b.Deprovisioned, b.Failed, b.Unsettled, b.LoadSeconds, b.P50, b.P99)
		fmt.Fprintf(w, "  p99 ratio:    %.2f (under faults / fault-free)\n", r.P99Ratio)
	}
	for _, s := range r.FailedReasons {
		fmt.Fprintf(w, "  failed:       %s\n", s)
	}
	for _, s := range r.Notes {
		fmt.Fprintf(w, "  note:         %s\n", s)
	}
	if len(r.Violations) == 0 {
		fmt.Fprintln(w, "PASS: no violation")
		return
	}
	fmt.Fprintf(w, "FAIL: %d violation(s)\n", len(r.Violations))
	for _, v := range r.Violations {
		fmt.Fprintf(w, "  - %s\n", v)
	}
}

// checkAudit counts TENANT_PROVISIONED per (tenant, generation) of the run:
// exactly one for each generation that became active (every tenant now
// active or deprovisioned: each was requested once and deprovisioned only
// once active), none for a failed one. The sink is asynchronous, so missing
// events are waited for (up to a minute) before they count.
func (h *harness) checkAudit(ctx context.Context, res *result) error {
	want := map[string]uint64{} // tenant -> generation that became active
	never := map[string]uint64{}
	h.mu.Lock()
	for _, id := range h.ids {
		r := h.records[id]
		switch {
		case r == nil:
		case r.State == events.TenantActive || r.State == events.TenantDeprovisioned:
			want[id] = r.Generation
		case r.State == events.TenantFailed:
			never[id] = r.Generation
		}
	}
	h.mu.Unlock()
	deadline := time.Now().Add(time.Minute)
	for {
		counts, err := h.provisionedAudits(ctx)
		if err != nil {
			return err
		}
		res.ProvisionedAudits, res.DuplicateAudits, res.MissingAudits = 0, 0, 0
		var dup, miss []string
		for k, n := range counts {
			res.ProvisionedAudits += n
			if n > 1 {
				res.DuplicateAudits += n - 1
				dup = append(dup, fmt.Sprintf("%s/g%d x%d", k.tenant, k.gen, n))
			}
			if g, failed := never[k.tenant]; failed && g == k.gen {
				dup = append(dup, fmt.Sprintf("%s/g%d (failed, yet TENANT_PROVISIONED)", k.tenant, k.gen))
				res.DuplicateAudits++
			}
		}
		for id, g := range want {
			if counts[auditKey{id, g}] == 0 {
				res.MissingAudits++
				miss = append(miss, fmt.Sprintf("%s/g%d", id, g))
			}
		}
		if res.MissingAudits > 0 && time.Now().Before(deadline) {
			time.Sleep(2 * time.Second)
			continue
		}
		sort.Strings(dup)
		sort.Strings(miss)
		if len(dup) > 0 {
			res.violate("%d unexpected TENANT_PROVISIONED: %v", len(dup), first(dup, 5))
		}
		if len(miss) > 0 {
			res.violate("%d generation(s) became active without TENANT_PROVISIONED in the audit log: %v", len(miss), first(miss, 5))
		}
		return nil
	}
}

type auditKey struct {
	tenant string
	gen    uint64
}

func (h *harness) provisionedAudits(ctx context.Context) (map[auditKey]int, error) {
	qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	rows, err := h.audit.Query(qctx, `SELECT tenant_id, generation, count(*) FROM tenantprov_audit.audit_events
WHERE type = $1 AND starts_with(tenant_id, $2) GROUP BY 1, 2`, string(events.AuditTenantProvisioned), h.cfg.Prefix)
	if err != nil {
		return nil, fmt.Errorf("read the audit log (AUDIT_PG_URL): %w", err)
	}
	out := map[auditKey]int{}
	for rows.Next() {
		var k auditKey
		var gen int64
		var n int
		if err := rows.Scan(&k.tenant, &gen, &n); err != nil {
			rows.Close()
			return nil, err
		}
		k.gen = uint64(gen)
		out[k] = n
	}
	rows.Close()
	return out, rows.Err()
}

// checkSecrets opens every active tenant's sealed file with tenantctl and
// uses each store's credential.
func (h *harness) checkSecrets(ctx context.Context, res *result) {
	var ids []string
	h.mu.Lock()
	for _, id := range h.ids {
		if r := h.records[id]; r != nil && r.State == events.TenantActive {
			ids = append(ids, id)
		}
	}
	h.mu.Unlock()
	var mu sync.Mutex
	var failures []string
	work := make(chan string)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				err := h.useSecrets(ctx, id)
				mu.Lock()
				res.SecretsChecked++
				if err != nil {
					res.SecretsFailed++
					failures = append(failures, id+": "+err.Error())
				}
				mu.Unlock()
			}
		}()
	}
	for _, id := range ids {
		work <- id
	}
	close(work)
	wg.Wait()
	if len(failures) > 0 {
		sort.Strings(failures)
		res.violate("%d active tenant(s) whose secrets do not open or do not connect: %v", len(failures), first(failures, 5))
	}
}

func (h *harness) useSecrets(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.tenantctl, "secrets", "get", id, "--format", "json")
	cmd.Env = h.cfg.environ()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("tenantctl secrets get: %v: %s", err, events.Truncate(strings.TrimSpace(errb.String()), 200))
	}
	var file map[string]any
	if err := json.Unmarshal(out.Bytes(), &file); err != nil {
		return fmt.Errorf("secrets file is not JSON: %v", err)
	}
	sec := func(store string) map[string]any { m, _ := file[store].(map[string]any); return m }
	str := func(m map[string]any, k string) string { s, _ := m[k].(string); return s }

	pg := sec("postgres")
	conn, err := pgx.Connect(ctx, str(pg, "url"))
	if err != nil {
		return fmt.Errorf("postgres credential refused")
	}
	var one int
	err = conn.QueryRow(ctx, "SELECT 1").Scan(&one)
	_ = conn.Close(ctx)
	if err != nil {
		return fmt.Errorf("postgres query as the tenant failed")
	}

	rd := sec("redis")
	rc := redis.NewClient(&redis.Options{Addr: str(rd, "addr"), Username: str(rd, "username"), Password: str(rd, "password"), DisableIdentity: true})
	err = rc.Set(ctx, str(rd, "key_prefix")+"chaos", "1", time.Minute).Err()
	_ = rc.Close()
	if err != nil {
		return fmt.Errorf("redis write as the tenant failed")
	}

	mn := sec("minio")
	mc, err := minio.New(str(mn, "endpoint"), &minio.Options{Creds: credentials.NewStaticV4(str(mn, "access_key"), str(mn, "secret_key"), "")})
	if err != nil {
		return fmt.Errorf("minio client: %v", err)
	}
	if _, err := mc.PutObject(ctx, str(mn, "bucket"), "chaos.txt", strings.NewReader("ok"), 2, minio.PutObjectOptions{}); err != nil {
		return fmt.Errorf("minio write as the tenant failed")
	}

	qd := sec("qdrant")
	port := 6334
	switch v := qd["grpc_port"].(type) {
	case float64:
		port = int(v)
	}
	qc, err := qdrant.NewClient(&qdrant.Config{Host: str(qd, "host"), Port: port})
	if err != nil {
		return fmt.Errorf("qdrant client: %v", err)
	}
	defer qc.Close()
	qctx := metadata.AppendToOutgoingContext(ctx, "api-key", str(qd, "api_key"))
	if _, err := qc.GetCollectionInfo(qctx, str(qd, "collection")); err != nil {
		return fmt.Errorf("qdrant read of its collection as the tenant failed")
	}
	return nil
}
