package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/inventory"
)

// harness is one chaos run against the local stack.
type harness struct {
	cfg        config
	nc         *nats.Conn
	js         jetstream.JetStream
	audit      *pgxpool.Pool
	tenantctl  string
	restartLog *os.File // .dev/logs/chaos.log

	ids []string // the run's tenants, in request order

	mu      sync.Mutex
	records map[string]*events.TenantRecord
	asked   map[string]time.Time // provision requested
	active  map[string]time.Time // first seen active
	deprov  map[string]bool      // deprovision requested
}

func newHarness(ctx context.Context, cfg config) (*harness, error) {
	h := &harness{cfg: cfg, records: map[string]*events.TenantRecord{}, asked: map[string]time.Time{},
		active: map[string]time.Time{}, deprov: map[string]bool{}}
	opts := []nats.Option{nats.Name("chaos"), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond)}
	if creds := cfg.Env["NATS_CREDS"]; creds != "" {
		opts = append(opts, nats.UserCredentials(creds))
	}
	var err error
	if h.nc, err = nats.Connect(cfg.Env["NATS_URL"], opts...); err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", cfg.Env["NATS_URL"], err)
	}
	if h.js, err = jetstream.New(h.nc); err != nil {
		h.close()
		return nil, err
	}
	if h.audit, err = pgxpool.New(ctx, cfg.Env["AUDIT_PG_URL"]); err != nil {
		h.close()
		return nil, errors.New("AUDIT_PG_URL from .dev/env is not a valid PostgreSQL URL")
	}
	h.tenantctl = filepath.Join(cfg.Root, "bin", "tenantctl")
	if _, err := os.Stat(h.tenantctl); err != nil {
		if h.tenantctl, err = exec.LookPath("tenantctl"); err != nil {
			h.close()
			return nil, errors.New("tenantctl not found in bin/ or PATH (make build)")
		}
	}
	if h.restartLog, err = os.OpenFile(filepath.Join(cfg.Root, ".dev", "logs", "chaos.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600); err != nil {
		h.close()
		return nil, err
	}
	for i := range cfg.Tenants {
		h.ids = append(h.ids, fmt.Sprintf("%s%03d", cfg.Prefix, i))
	}
	if _, err := events.ParseTenantID(h.ids[0]); len(h.ids) > 0 && err != nil {
		h.close()
		return nil, fmt.Errorf("tenant prefix %q: %w", cfg.Prefix, err)
	}
	return h, nil
}

func (h *harness) close() {
	if h.nc != nil {
		h.nc.Close()
	}
	if h.audit != nil {
		h.audit.Close()
	}
	if h.restartLog != nil {
		_ = h.restartLog.Close()
	}
}

// wantsDeprovision: the first cfg.Deprovision tenants are deprovisioned
// once active.
func (h *harness) wantsDeprovision(i int) bool { return i < h.cfg.Deprovision }

// watch keeps h.records current and requests each deprovision as soon as
// its tenant is active, until ctx is done. It re-reads the registry every
// 500 ms rather than keeping one watch open: a read survives a NATS node
// or connection loss by simply being done again.
func (h *harness) watch(ctx context.Context) {
	index := map[string]int{}
	for i, id := range h.ids {
		index[id] = i
	}
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		records, _, err := inventory.LoadRecords(rctx, h.js)
		cancel()
		if err == nil {
			h.apply(ctx, records, index)
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (h *harness) apply(ctx context.Context, records []*events.TenantRecord, index map[string]int) {
	for _, rec := range records {
		i, ours := index[rec.TenantID]
		if !ours {
			continue
		}
		h.mu.Lock()
		h.records[rec.TenantID] = rec
		if rec.State == events.TenantActive {
			if _, seen := h.active[rec.TenantID]; !seen {
				h.active[rec.TenantID] = time.Now()
			}
		}
		ask := rec.State == events.TenantActive && h.wantsDeprovision(i) && !h.deprov[rec.TenantID]
		if ask {
			h.deprov[rec.TenantID] = true
		}
		h.mu.Unlock()
		if ask {
			go h.publish(ctx, events.SubjectTenantDeprovisionRequested, rec.TenantID, "deprovision")
		}
	}
}

// publish sends a request, retrying until JetStream acknowledges it (a
// NATS restart may be in progress).
func (h *harness) publish(ctx context.Context, subject, id, what string) {
	body, _ := json.Marshal(map[string]string{"tenant_id": id, "request_id": "chaos-" + id + "-" + what, "requested_by": "chaos"})
	for ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := h.js.Publish(pctx, subject, body, jetstream.WithMsgID("chaos-"+id+"-"+what))
		cancel()
		if err == nil {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// settled reports how many of the run's tenants have not reached their
// final state yet (active, or deprovisioned for those deprovisioned; failed
// counts as final), with that state announced.
func (h *harness) unsettled() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for i, id := range h.ids {
		r := h.records[id]
		if r == nil || r.Announced != r.State {
			out = append(out, id)
			continue
		}
		switch {
		case r.State == events.TenantFailed:
		case h.wantsDeprovision(i) && r.State == events.TenantDeprovisioned:
		case !h.wantsDeprovision(i) && r.State == events.TenantActive:
		default:
			out = append(out, id)
		}
	}
	return out
}

func (h *harness) waitSettled(ctx context.Context, within time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		if len(h.unsettled()) == 0 {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// run is the whole chaos run: load under faults, convergence, checks.
func (h *harness) run(ctx context.Context) (*result, error) {
	res := &result{Tenants: len(h.ids), Deprovisions: h.cfg.Deprovision, Seed: h.cfg.Seed}
	pids := filepath.Join(h.cfg.Root, ".dev", "pids")
	var targets []target
	for _, name := range h.cfg.Targets {
		if name == metaLeaderName {
			m, err := newMetaLeaderTarget(pids, []string{"nats-server", "nats-server-1", "nats-server-2"}, natsMonitors(os.Getenv))
			if err != nil {
				return nil, err
			}
			if _, err := m.leader(); err != nil {
				return nil, fmt.Errorf("%s needs a NATS cluster (make up NATS_CLUSTER=3) with monitoring: %w", metaLeaderName, err)
			}
			targets = append(targets, m)
			continue
		}
		p := &process{name: name, dir: pids}
		if !p.Alive() {
			return nil, fmt.Errorf("%s is not running (no live pid in .dev/pids/%s.pid): run `make up` first", name, name)
		}
		p.Capture()
		targets = append(targets, p)
	}

	if h.cfg.Baseline {
		base, err := h.baseline(ctx)
		if err != nil {
			return nil, err
		}
		res.Baseline = base
	}

	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go h.watch(watchCtx)

	start := time.Now()
	loadCtx, stopLoad := context.WithTimeout(ctx, h.cfg.Duration)
	defer stopLoad()
	f := &faults{cfg: h.cfg, targets: targets, rs: &restarter{cfg: h.cfg, log: h.restartLog},
		rng: mrand.New(mrand.NewPCG(h.cfg.Seed, 12)), kills: map[string]int{}, log: h.restartLog}
	faultsDone := make(chan struct{})
	go func() { defer close(faultsDone); f.run(loadCtx) }()

	fmt.Printf("chaos: %d tenants (prefix %s), %d deprovisioned, a SIGKILL every %s among %v, for at most %s\n",
		len(h.ids), h.cfg.Prefix, h.cfg.Deprovision, h.cfg.KillEvery, h.cfg.Targets, h.cfg.Duration)
	h.load(loadCtx)
	h.waitSettled(loadCtx, h.cfg.Duration)
	stopLoad()
	<-faultsDone
	res.LoadSeconds = time.Since(start).Seconds()
	res.Kills, res.KillsPer = f.total()
	// Convergence: everything running again, every tenant settled.
	convStart := time.Now()
	if err := f.restoreAll(ctx, h.cfg.Converge); err != nil {
		res.violate("services not restored: %v", err)
	}
	res.Restarts = int(f.restarted.Load())
	res.DevUpRuns = int(f.rs.runs.Load())
	for i, err := range f.errs {
		if i < 5 {
			res.Notes = append(res.Notes, "fault loop: "+err.Error())
		}
	}
	converged := h.waitSettled(ctx, h.cfg.Converge)
	res.ConvergeSeconds = time.Since(convStart).Seconds()
	if !converged {
		res.violate("not converged within %s: %d tenant(s) unsettled (first: %v)", h.cfg.Converge, len(h.unsettled()), first(h.unsettled(), 5))
	}
	stopWatch()

	h.countStates(res)
	if b := res.Baseline; b != nil {
		if b.Failed > 0 || b.Unsettled > 0 {
			res.violate("fault-free run: %d failed, %d unsettled (%v)", b.Failed, b.Unsettled, b.FailedReasons)
		}
		if b.P99 > 0 {
			res.P99Ratio = res.P99 / b.P99
			if res.P99Ratio > h.cfg.MaxP99Ratio {
				res.violate("p99 under faults %.1fs is %.2fx the fault-free p99 %.1fs (want at most %.1fx)", res.P99, res.P99Ratio, b.P99, h.cfg.MaxP99Ratio)
			}
		}
	}
	if err := h.compare(ctx, res); err != nil {
		return nil, err
	}
	if err := h.checkAudit(ctx, res); err != nil {
		return nil, err
	}
	h.checkSecrets(ctx, res)
	return res, nil
}

// load requests every tenant of the run, 50 ms apart.
func (h *harness) load(ctx context.Context) {
	for _, id := range h.ids {
		h.mu.Lock()
		h.asked[id] = time.Now()
		h.mu.Unlock()
		h.publish(ctx, events.SubjectTenantRequested, id, "provision")
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// baseline runs the same load (as many tenants, as many deprovisions,
// under names of their own) with no fault, for the p99 the run under
// faults is compared with. Its tenants stay in the registry and the stores
// and are part of the comparison afterwards.
func (h *harness) baseline(ctx context.Context) (*result, error) {
	b := &harness{cfg: h.cfg, nc: h.nc, js: h.js, records: map[string]*events.TenantRecord{}, asked: map[string]time.Time{},
		active: map[string]time.Time{}, deprov: map[string]bool{}}
	for i := range h.cfg.Tenants {
		b.ids = append(b.ids, fmt.Sprintf("%sbase%03d", h.cfg.Prefix, i))
	}
	res := &result{Tenants: len(b.ids), Deprovisions: h.cfg.Deprovision}
	fmt.Printf("chaos: fault-free run first: %d tenants (prefix %sbase), %d deprovisioned\n", len(b.ids), h.cfg.Prefix, h.cfg.Deprovision)
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go b.watch(watchCtx)
	start := time.Now()
	loadCtx, stopLoad := context.WithTimeout(ctx, h.cfg.Duration)
	defer stopLoad()
	b.load(loadCtx)
	b.waitSettled(loadCtx, h.cfg.Duration)
	res.LoadSeconds = time.Since(start).Seconds()
	stopWatch()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	b.countStates(res)
	res.Violations = nil // reported by the run, with the ratio
	fmt.Printf("chaos: fault-free run: %d active, %d deprovisioned, %d failed, %d unsettled in %.1fs; requested->active p50 %.2fs p99 %.2fs\n",
		res.Active, res.Deprovisioned, res.Failed, res.Unsettled, res.LoadSeconds, res.P50, res.P99)
	return res, nil
}

func (h *harness) countStates(res *result) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var lat []time.Duration
	for _, id := range h.ids {
		r := h.records[id]
		if r == nil {
			res.Unsettled++
			continue
		}
		switch r.State {
		case events.TenantActive:
			res.Active++
		case events.TenantDeprovisioned:
			res.Deprovisioned++
		case events.TenantFailed:
			res.Failed++
			if len(res.FailedReasons) < 10 {
				res.FailedReasons = append(res.FailedReasons, fmt.Sprintf("%s: %s %s", id, r.Reason, events.Truncate(r.LastError, 160)))
			}
		default:
			res.Unsettled++
		}
		if a, ok := h.active[id]; ok {
			lat = append(lat, a.Sub(h.asked[id]))
		}
	}
	if res.Failed > 0 {
		res.violate("%d tenant(s) failed (a crash must be survived, not rolled back)", res.Failed)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) > 0 {
		res.P50 = lat[len(lat)/2].Seconds()
		res.P99 = lat[min(len(lat)-1, len(lat)*99/100)].Seconds()
	}
}

// compare runs doctor's comparison over the whole system.
func (h *harness) compare(ctx context.Context, res *result) error {
	// An agent restarted by the last restore may not serve yet: give every
	// store a minute to answer before one counts as unanswered.
	var rep inventory.Report
	for deadline := time.Now().Add(time.Minute); ; {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		r, err := (&inventory.Client{NC: h.nc, Timeout: time.Minute}).Check(cctx, h.js, "", inventory.Options{})
		cancel()
		if err != nil {
			return fmt.Errorf("compare stores with the registry: %w", err)
		}
		rep = r
		if rep.Counts[inventory.Unanswered] == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Second)
	}
	// The run answers for its own tenants and for the stores (unanswered,
	// no tenant); findings about tenants that existed before the run are
	// reported as a note (tenantctl doctor shows them).
	counts := map[inventory.Category]int{}
	examples := map[inventory.Category][]string{}
	outside := map[inventory.Category]int{}
	for _, f := range rep.Findings {
		if f.TenantID != "" && !strings.HasPrefix(f.TenantID, h.cfg.Prefix) {
			outside[f.Category]++
			continue
		}
		counts[f.Category]++
		if len(examples[f.Category]) < 5 {
			examples[f.Category] = append(examples[f.Category], fmt.Sprintf("%s %s %s %s (%s)", f.TenantID, f.Store, f.Kind, f.Name, f.Detail))
		}
	}
	res.Leaked = counts[inventory.Leaked]
	res.Missing = counts[inventory.Missing]
	res.Stuck = counts[inventory.Stuck]
	res.Mismatch = counts[inventory.GenerationMismatch]
	res.Unanswered = counts[inventory.Unanswered]
	res.Foreign = counts[inventory.Foreign]
	for _, c := range inventory.Categories() {
		if n := counts[c]; n > 0 && c.Problem() {
			res.violate("%d %s: %v", n, c, examples[c])
		}
	}
	// The run's tenant names are fresh: nobody but tenantprov made anything
	// under them, so a "foreign" resource there is one tenantprov made and
	// lost its marker of — a leak no sweep can claim.
	if n := counts[inventory.Foreign]; n > 0 {
		res.violate("%d resource(s) under this run's tenant names without tenantprov's marker (made by tenantprov, marker lost): %v", n, examples[inventory.Foreign])
	}
	if len(outside) > 0 {
		var parts []string
		for _, c := range inventory.Categories() {
			if outside[c] > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", outside[c], c))
			}
		}
		res.Notes = append(res.Notes, "about tenants outside this run (see tenantctl doctor): "+strings.Join(parts, ", "))
	}
	return nil
}

func first(s []string, n int) []string { return s[:min(n, len(s))] }
