// Command bench measures, in one run on the stack of `make up`, the stores
// alone (the agents' Store implementations called directly, with the
// agents' credentials, on the same servers) and the whole system (requests
// on the bus, outcomes back), and prints the ratios issue 13 asks for:
// overhead (one tenant requested → active against the slowest store's own
// provision and verify), throughput (bursts against the stores' own
// concurrent throughput), flatness (the last burst of live tenants against
// the first), the orchestrator's RSS and periodic work with many registry
// records, and where a saga's time goes (the registry records' timings).
//
// `make bench-e2e` runs it; sizes come from BENCH_* variables (config.go).
// A regression shows up as a ratio here, never as a timed test.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "bench-e2e:", err)
		os.Exit(1)
	}
}

var began = time.Now()

func progress(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(began).Seconds(), fmt.Sprintf(format, a...))
}

func run(ctx context.Context) error {
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	progress("bench-e2e on %s (prefix %s): serial %d, bursts %v, flat %d×%d, records %d", cfg.Env["NATS_URL"], cfg.Prefix,
		cfg.Serial, cfg.Bursts, cfg.FlatBursts, cfg.FlatSize, cfg.Records)

	set, err := openStores(cfg.Env)
	if err != nil {
		return fmt.Errorf("open the stores with the agents' credentials: %w", err)
	}
	defer set.close()
	if err := warmStores(ctx, set, cfg.Prefix); err != nil {
		return err
	}
	sys, err := openSystem(ctx, cfg)
	if err != nil {
		return err
	}
	defer sys.close()
	if os.Getenv("BENCH_CLEANUP") != "" {
		n, err := sys.cleanup(ctx, "")
		progress("cleanup: deprovisioned %d tenants earlier runs left active", n)
		return err
	}
	// Whatever happens, leave no tenant of this run behind.
	defer func() {
		if n, err := sys.cleanup(context.WithoutCancel(ctx), cfg.Prefix+"-"); n > 0 || err != nil {
			progress("cleanup: deprovisioned %d tenants of this run left active (%v)", n, err)
		}
	}()
	alone := newStoreAlone()
	rep := &report{cfg: cfg, alone: alone, serialProcs: cpuByProcess{}}

	// Phase 1: one tenant at a time, the stores alone and the system
	// interleaved (store tenant, system tenant, ...) so that both see the
	// same load from the rest of the machine.
	var (
		samples         []serialSample
		fanOuts         []fanOutSample
		serial, dserial []result
		serialCPU       []time.Duration
		provRecs        []*events.TenantRecord
		deprovRecs      []*events.TenantRecord
	)
	for i := range max(cfg.Serial, cfg.StoreSerial) {
		if i < cfg.StoreSerial {
			smp, err := serialOne(ctx, set, events.TenantID(fmt.Sprintf("%s-ss%d", cfg.Prefix, i)))
			if err != nil {
				return fmt.Errorf("stores alone: %w", err)
			}
			samples = append(samples, smp)
			fo, err := fanOutOne(ctx, set, events.TenantID(fmt.Sprintf("%s-sf%d", cfg.Prefix, i)))
			if err != nil {
				return fmt.Errorf("stores alone, at once: %w", err)
			}
			fanOuts = append(fanOuts, fo)
		}
		if i < cfg.Serial {
			id := fmt.Sprintf("%s-s%d", cfg.Prefix, i)
			var r []result
			cpu, err := cpuOf(func() error {
				return rep.serialProcs.measure(func() (err error) { r, err = sys.run(ctx, []string{id}, false); return err })
			})
			if err != nil {
				return fmt.Errorf("serial: %w", err)
			}
			provRecs = append(provRecs, sys.records(ctx, []string{id})...)
			d, err := sys.run(ctx, []string{id}, true)
			if err != nil {
				return fmt.Errorf("serial deprovision: %w", err)
			}
			deprovRecs = append(deprovRecs, sys.records(ctx, []string{id})...)
			serial, dserial = append(serial, r...), append(dserial, d...)
			serialCPU = append(serialCPU, cpu)
			progress("one tenant at a time: %d/%d, requested→active %s, deprovisioned %s", i+1, cfg.Serial, ms(r[0].took), ms(d[0].took))
		}
	}
	alone.summarise(samples)
	alone.summariseFanOut(fanOuts)
	rep.serial, rep.serialDeprov, rep.serialCPU = p50(tookOf(serial)), p50(tookOf(dserial)), p50(serialCPU)
	rep.breakdownBefore, rep.deprovBreakdown = breakdown(provRecs), breakdown(deprovRecs)
	progress("one tenant at a time: requested→active p50 %s (stores alone: slowest %s %s, the four at once %s), deprovision p50 %s",
		ms(rep.serial), alone.slowest, ms(alone.slowestWork), ms(alone.fanOutWork), ms(rep.serialDeprov))

	// Phase 2: the stores' own concurrent throughput (BENCH_CPUPROFILE=file
	// profiles the store code here, the same code the agents run).
	if f := os.Getenv("BENCH_CPUPROFILE"); f != "" {
		out, err := os.Create(f)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(out); err != nil {
			return err
		}
		defer out.Close()
	}
	err = measureConcurrent(ctx, set, cfg, alone, progress)
	pprof.StopCPUProfile()
	if err != nil {
		return err
	}

	// Phase 3: bursts, each deprovisioned in one burst after, each next to
	// a sample of the stores' own rates.
	for bi, n := range cfg.Bursts {
		sp, sd, err := storesRate(ctx, set, cfg, fmt.Sprintf("sb%d-", bi), progress)
		if err != nil {
			return fmt.Errorf("stores alone next to the burst of %d: %w", n, err)
		}
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("%s-b%d-%d", cfg.Prefix, bi, i)
		}
		rs, err := sys.run(ctx, ids, false)
		if err != nil {
			return fmt.Errorf("burst of %d: %w", n, err)
		}
		b := burstOf(rs)
		b.storesRate = sp
		b.breakdown = breakdown(sys.records(ctx, ids))
		progress("burst of %d: %.0f tenants/min, p50 %s", n, b.rate, ms(b.p50))
		ds, err := sys.run(ctx, succeeded(rs), true)
		if err != nil {
			return fmt.Errorf("deprovision burst of %d: %w", n, err)
		}
		b.deprov = burstOf(ds)
		b.deprov.storesRate = sd
		progress("burst of %d deprovisioned: %.0f tenants/min, p50 %s", n, b.deprov.rate, ms(b.deprov.p50))
		rep.bursts = append(rep.bursts, b)
	}

	// Phase 4: bursts kept live (flatness), then the registry at scale.
	before, _ := readProc(cfg.Root, "orchestrator")
	rep.rssStart = before.rssKB
	var live [][]string
	// The stores' own rate next to the first and the last kept burst (how
	// much of the growth is the stores' own): before the first, after the
	// last. The kept bursts themselves run back to back, so that the last
	// one meets what the ones before it left (observations deferred behind
	// them, which drain between bursts) rather than the idle system that a
	// stores-alone sample waits for.
	storesNextTo := func(bi int) error {
		sp, _, err := storesRate(ctx, set, cfg, fmt.Sprintf("sf%d-", bi), progress)
		if err != nil {
			return fmt.Errorf("stores alone next to kept burst %d: %w", bi+1, err)
		}
		rep.flatStores = append(rep.flatStores, sp)
		return nil
	}
	for bi := range cfg.FlatBursts {
		if bi == 0 {
			if err := storesNextTo(bi); err != nil {
				return err
			}
		}
		ids := make([]string, cfg.FlatSize)
		for i := range ids {
			ids[i] = fmt.Sprintf("%s-f%d-%d", cfg.Prefix, bi, i)
		}
		edge := bi == 0 || bi == cfg.FlatBursts-1
		var callsBefore callTimes
		if edge {
			callsBefore = callTimesAt(1, minioCalls)
		}
		rs, err := sys.run(ctx, ids, false)
		if err != nil {
			return fmt.Errorf("flat burst %d: %w", bi+1, err)
		}
		b := burstOf(rs)
		if edge {
			b.breakdown = breakdown(sys.records(ctx, ids))
			if callsBefore != nil {
				b.minioCalls = callTimesAt(1, minioCalls).minus(callsBefore)
			}
		}
		rep.flat = append(rep.flat, b)
		live = append(live, succeeded(rs))
		p, _ := readProc(cfg.Root, "orchestrator")
		rep.rssLive = p.rssKB
		progress("kept burst %d/%d (%d live): %.0f tenants/min, p50 %s, orchestrator RSS %d MB", bi+1, cfg.FlatBursts, (bi+1)*cfg.FlatSize, b.rate, ms(b.p50), p.rssKB/1024)
		if bi == cfg.FlatBursts-1 && bi > 0 {
			if err := storesNextTo(bi); err != nil {
				return err
			}
		}
	}
	rep.idleLive = idleCPU(ctx, cfg)
	progress("idle with %d live tenants: orchestrator %.1f ms CPU/s, reconcile candidates %v", cfg.FlatBursts*cfg.FlatSize, rep.idleLive.cpuPerSec, rep.idleLive.candidates)
	if cfg.Records > 0 {
		keys, err := seedRecords(ctx, cfg, cfg.Records, progress)
		if err != nil {
			return fmt.Errorf("seed records: %w", err)
		}
		time.Sleep(3 * time.Second) // the orchestrator's registry watch catches up
		rep.idleRecords = idleCPU(ctx, cfg)
		p, _ := readProc(cfg.Root, "orchestrator")
		rep.rssRecords = p.rssKB
		progress("with %d more registry records: orchestrator RSS %d MB, %.1f ms CPU/s idle, reconcile candidates %v", cfg.Records, p.rssKB/1024, rep.idleRecords.cpuPerSec, rep.idleRecords.candidates)
		if !cfg.KeepRecords {
			defer func() {
				progress("purging the %d seeded records", len(keys))
				_ = purgeRecords(context.WithoutCancel(ctx), cfg, keys)
			}()
		}
	}
	// Deprovision the live tenants in the same bursts (flatness and
	// throughput of deprovisioning, with the records present).
	for bi, ids := range live {
		ds, err := sys.run(ctx, ids, true)
		if err != nil {
			return fmt.Errorf("flat deprovision burst %d: %w", bi+1, err)
		}
		b := burstOf(ds)
		rep.flatDeprov = append(rep.flatDeprov, b)
		progress("deprovisioned burst %d/%d: %.0f tenants/min, p50 %s", bi+1, len(live), b.rate, ms(b.p50))
	}
	p, _ := readProc(cfg.Root, "orchestrator")
	rep.rssEnd = p.rssKB
	rep.print(os.Stdout)
	return nil
}

// burst is one batch of requests sent at once.
type burst struct {
	n         int
	failed    int     // requests that did not succeed (counted out of rate)
	rate      float64 // tenants per minute, first request → last outcome
	p50       time.Duration
	breakdown map[string]time.Duration
	deprov    *burst
	// storesRate is the stores' own rate (tenants per minute, the same
	// direction) measured just before the burst; 0: none.
	storesRate float64
	// minioCalls is what the MinIO agent's calls to MinIO took during the
	// burst (the first and the last kept burst only).
	minioCalls callTimes
}

// minioCalls is the MinIO agent's histogram of its calls to MinIO.
const minioCalls = "tenantprov_minio_call_duration_seconds"

func burstOf(rs []result) *burst {
	if len(rs) == 0 {
		return &burst{}
	}
	first, last := rs[0].sent, rs[0].done
	for _, r := range rs {
		first = minTime(first, r.sent)
		if r.done.After(last) {
			last = r.done
		}
	}
	failed := 0
	for _, r := range rs {
		if r.failed {
			failed++
		}
	}
	// Only successes count towards the rate.
	return &burst{n: len(rs), failed: failed, rate: perMinute(len(rs)-failed, last.Sub(first)), p50: p50(tookOf(rs))}
}

// succeeded are the tenants of rs whose request succeeded.
func succeeded(rs []result) []string {
	var ids []string
	for _, r := range rs {
		if !r.failed {
			ids = append(ids, r.id)
		}
	}
	return ids
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

type idle struct {
	cpuPerSec  float64 // ms of orchestrator CPU per second
	candidates any     // the reconciler's candidate set (metric), when exported
}

// idleCPU measures the orchestrator's CPU over BENCH_IDLE with nothing
// requested: its periodic work.
func idleCPU(ctx context.Context, cfg config) idle {
	a, _ := readProc(cfg.Root, "orchestrator")
	select {
	case <-ctx.Done():
	case <-time.After(cfg.Idle):
	}
	b, _ := readProc(cfg.Root, "orchestrator")
	out := idle{cpuPerSec: float64((b.cpu - a.cpu).Milliseconds()) / cfg.Idle.Seconds(), candidates: "n/a"}
	if v, ok := metric("tenantprov_orchestrator_reconcile_candidates"); ok {
		out.candidates = v
	}
	return out
}

func tookOf(rs []result) []time.Duration {
	out := make([]time.Duration, len(rs))
	for i, r := range rs {
		out[i] = r.took
	}
	return out
}

func p50(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

func perMinute(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Minutes()
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }

// breakdown is the p50 of every timing step over recs: the saga's steps
// as they are and each store's as "<store>.<step>".
func breakdown(recs []*events.TenantRecord) map[string]time.Duration {
	vals := map[string][]time.Duration{}
	for _, r := range recs {
		if r.Timings == nil {
			continue
		}
		for k, v := range r.Timings.MS {
			vals[k] = append(vals[k], time.Duration(v*float64(time.Millisecond)))
		}
		for s, st := range r.Stores {
			for k, v := range st.TimingsMS {
				vals[string(s)+"."+k] = append(vals[string(s)+"."+k], time.Duration(v*float64(time.Millisecond)))
			}
		}
	}
	out := map[string]time.Duration{}
	for k, v := range vals {
		out[k] = p50(v)
	}
	return out
}

func fmtBreakdown(b map[string]time.Duration) string {
	if len(b) == 0 {
		return "  (no timings in the records)\n"
	}
	keys := make([]string, 0, len(b))
	for k := range b {
		keys = append(keys, k)
	}
	group := func(k string) string {
		if p, _, ok := strings.Cut(k, "."); ok {
			return p
		}
		return "" // the saga's own steps first
	}
	sort.Slice(keys, func(i, j int) bool {
		if gi, gj := group(keys[i]), group(keys[j]); gi != gj {
			return gi < gj
		}
		return keys[i] < keys[j]
	})
	var sb strings.Builder
	var line []string
	flush := func() {
		if len(line) > 0 {
			sb.WriteString("  " + strings.Join(line, "  ") + "\n")
			line = nil
		}
	}
	prefix := ""
	for _, k := range keys {
		p, _, _ := strings.Cut(k, ".")
		if !strings.Contains(k, ".") {
			p = "saga"
		}
		if p != prefix {
			flush()
			prefix = p
			line = append(line, fmt.Sprintf("%-9s", p+":"))
		}
		v := float64(b[k].Microseconds()) / 1000
		name := strings.TrimPrefix(k, p+".")
		if k == events.StepRegistryWrites {
			line = append(line, fmt.Sprintf("%s=%.0f", name, v))
		} else {
			line = append(line, fmt.Sprintf("%s=%.1f", name, v))
		}
	}
	flush()
	return sb.String()
}
