package main

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// report is everything one run measured.
type report struct {
	cfg   config
	alone *storeAlone

	serial, serialDeprov time.Duration
	// serialCPU is the machine's CPU time during one tenant's
	// requested→active (p50; see machineBusy).
	serialCPU time.Duration
	// serialProcs is the CPU time each process spent during those
	// requested→active windows.
	serialProcs                      cpuByProcess
	breakdownBefore, deprovBreakdown map[string]time.Duration
	bursts                           []*burst
	flat, flatDeprov                 []*burst
	// flatStores are the stores' own provision rates measured next to the
	// first and the last kept burst.
	flatStores []float64

	rssStart, rssLive, rssRecords, rssEnd int64
	idleLive, idleRecords                 idle
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func (r *report) print(w io.Writer) {
	a := r.alone
	fmt.Fprintf(w, "\n== bench-e2e %s (prefix %s)\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), r.cfg.Prefix)
	fmt.Fprintf(w, "\nstores alone (same servers, same run):\n")
	for _, s := range events.Stores() {
		fmt.Fprintf(w, "  %-9s provision %7s + verify %7s = %7s   deprovision %7s   (p50 of %d)\n", s,
			ms(a.serialProv[s]), ms(a.serialVer[s]), ms(a.serial[s]), ms(a.serialDepro[s]), r.cfg.StoreSerial)
	}
	fmt.Fprintf(w, "  concurrent (%d tenants, %d at once, four stores each): %.0f tenants/min provisioned, %.0f tenants/min deprovisioned\n",
		r.cfg.StoreTenants, r.cfg.StoreConcurrency, a.provisionRate, a.deprovisionRate)

	fmt.Fprintf(w, "\n%-58s %12s %14s %8s %s\n", "what", "measured", "stores alone", "ratio", "target")
	row := func(what, measured, stores string, rt float64, target string) {
		fmt.Fprintf(w, "%-58s %12s %14s %8.2f %s\n", what, measured, stores, rt, target)
	}
	row(fmt.Sprintf("one tenant requested→active (p50 of %d)", r.cfg.Serial), ms(r.serial), ms(a.slowestWork),
		ratio(float64(r.serial), float64(a.slowestWork)), "≤ 1.25 (slowest store alone: "+string(a.slowest)+")")
	row("  against the four stores called at once", ms(r.serial), ms(a.fanOutWork),
		ratio(float64(r.serial), float64(a.fanOutWork)), "≤ 1.25 (the stores' own fan-out, no orchestration)")
	row("  the four stores at once, against the slowest alone", ms(a.fanOutWork), ms(a.slowestWork),
		ratio(float64(a.fanOutWork), float64(a.slowestWork)), "(no orchestration at all: where running the four at once starts)")
	row(fmt.Sprintf("one tenant deprovisioned (p50 of %d)", r.cfg.Serial), ms(r.serialDeprov), ms(a.slowestDep),
		ratio(float64(r.serialDeprov), float64(a.slowestDep)), "≤ 1.25")
	row("  against the four stores called at once", ms(r.serialDeprov), ms(a.fanOutDep),
		ratio(float64(r.serialDeprov), float64(a.fanOutDep)), "≤ 1.25")
	r.printCPUFloor(w)
	for _, b := range r.bursts {
		row(fmt.Sprintf("burst of %d provisioned (tenants/min)", b.n), fmt.Sprintf("%.0f", b.rate), fmt.Sprintf("%.0f", b.storesRate),
			ratio(b.rate, b.storesRate), "≥ 0.8 (stores alone measured just before)")
		if b.deprov != nil {
			row(fmt.Sprintf("burst of %d deprovisioned (tenants/min)", b.n), fmt.Sprintf("%.0f", b.deprov.rate), fmt.Sprintf("%.0f", b.deprov.storesRate),
				ratio(b.deprov.rate, b.deprov.storesRate), "≥ 0.8")
		}
	}
	if n := len(r.flat); n > 0 {
		first, last := r.flat[0], r.flat[n-1]
		row(fmt.Sprintf("%d bursts of %d kept: last p50 / first p50", n, r.cfg.FlatSize), ms(last.p50), ms(first.p50),
			ratio(float64(last.p50), float64(first.p50)), "≤ 1.25 (stores-alone column: first burst)")
		row(fmt.Sprintf("%d bursts of %d kept: last rate / first rate", n, r.cfg.FlatSize), fmt.Sprintf("%.0f", last.rate), fmt.Sprintf("%.0f", first.rate),
			ratio(last.rate, first.rate), "≥ 0.8")
		total := 0.0
		for _, b := range r.flat {
			total += b.rate
		}
		storesKept := a.provisionRate
		if len(r.flatStores) == 2 {
			storesKept = (r.flatStores[0] + r.flatStores[1]) / 2
		}
		row(fmt.Sprintf("%d kept tenants, mean burst rate (tenants/min)", n*r.cfg.FlatSize), fmt.Sprintf("%.0f", total/float64(n)), fmt.Sprintf("%.0f", storesKept),
			ratio(total/float64(n), storesKept), "≥ 0.8 (stores alone: mean of the samples next to the first and last)")
		if len(r.flatStores) == 2 && r.flatStores[0] > 0 {
			row(fmt.Sprintf("stores alone next to kept burst %d / next to burst 1 (rate)", n), fmt.Sprintf("%.0f", r.flatStores[1]), fmt.Sprintf("%.0f", r.flatStores[0]),
				ratio(r.flatStores[1], r.flatStores[0]), "(the stores' own flatness, for reference)")
			row(fmt.Sprintf("kept burst %d / stores alone next to it (rate)", n), fmt.Sprintf("%.0f", last.rate), fmt.Sprintf("%.0f", r.flatStores[1]),
				ratio(last.rate, r.flatStores[1]), "≥ 0.8")
		}
	}
	if n := len(r.flatDeprov); n > 0 {
		first, last := r.flatDeprov[0], r.flatDeprov[n-1]
		row(fmt.Sprintf("%d deprovisions in bursts of %d: last p50 / first p50", n*r.cfg.FlatSize, r.cfg.FlatSize), ms(last.p50), ms(first.p50),
			ratio(float64(last.p50), float64(first.p50)), "≤ 1.25")
		total := 0.0
		for _, b := range r.flatDeprov {
			total += b.rate
		}
		row(fmt.Sprintf("%d deprovisions, mean burst rate (tenants/min)", n*r.cfg.FlatSize), fmt.Sprintf("%.0f", total/float64(n)), fmt.Sprintf("%.0f", a.deprovisionRate),
			ratio(total/float64(n), a.deprovisionRate), "≥ 0.8")
	}
	for _, b := range append(append(append([]*burst{}, r.bursts...), r.flat...), r.flatDeprov...) {
		if b.failed > 0 {
			fmt.Fprintf(w, "!! a burst of %d had %d failures (saga deadline: SAGA_TIMEOUT); they are not counted in its rate\n", b.n, b.failed)
		}
	}
	fmt.Fprintf(w, "\nflatness, per kept burst (p50, tenants/min):")
	for i, b := range r.flat {
		fmt.Fprintf(w, " %d:%s/%.0f", i+1, ms(b.p50), b.rate)
	}
	fmt.Fprintf(w, "\ndeprovision, per burst (p50, tenants/min):")
	for i, b := range r.flatDeprov {
		fmt.Fprintf(w, " %d:%s/%.0f", i+1, ms(b.p50), b.rate)
	}
	fmt.Fprintf(w, "\n\norchestrator RSS: %d MB at start of the kept bursts, %d MB with %d live, %d MB with %d more registry records (target ≤ 64 MB), %d MB at the end\n",
		r.rssStart/1024, r.rssLive/1024, len(r.flat)*r.cfg.FlatSize, r.rssRecords/1024, r.cfg.Records, r.rssEnd/1024)
	fmt.Fprintf(w, "orchestrator periodic work, idle %s: %.1f ms CPU/s with %d live tenants, %.1f ms CPU/s with %d more records; reconcile candidates %v → %v (in-flight sagas, not tenants)\n",
		r.cfg.Idle, r.idleLive.cpuPerSec, len(r.flat)*r.cfg.FlatSize, r.idleRecords.cpuPerSec, r.cfg.Records, r.idleLive.candidates, r.idleRecords.candidates)

	fmt.Fprintf(w, "\nper-step breakdown, one tenant at a time (p50 ms; registry records' timings):\n%s", fmtBreakdown(r.breakdownBefore))
	for _, b := range r.bursts {
		fmt.Fprintf(w, "per-step breakdown, burst of %d (p50 ms):\n%s", b.n, fmtBreakdown(b.breakdown))
	}
	fmt.Fprintf(w, "per-step breakdown, deprovision one at a time (p50 ms):\n%s", fmtBreakdown(r.deprovBreakdown))
	if n := len(r.flat); n > 1 {
		if first, last := r.flat[0], r.flat[n-1]; first.minioCalls != nil && last.minioCalls != nil {
			fmt.Fprintf(w, "MinIO calls that grew most from the first kept burst to the last (per tenant: calls × mean ms = ms):\n%s",
				fmtCallGrowth(first.minioCalls, last.minioCalls, first.n, last.n, 8))
		}
		fmt.Fprintf(w, "per-step breakdown, first kept burst (p50 ms):\n%s", fmtBreakdown(r.flat[0].breakdown))
		fmt.Fprintf(w, "per-step breakdown, last kept burst, %d live (p50 ms):\n%s", n*r.cfg.FlatSize, fmtBreakdown(r.flat[n-1].breakdown))
	}
}

// printCPUFloor prints what one tenant's provision+verify costs the
// machine in CPU (every process, summed over the cores), alone and in the
// system. Where the stores' work keeps the cores busy, running the four
// stores at once cannot finish sooner than their CPU time over the cores,
// whatever orchestrates them: the floor below which the system's
// one-tenant wall time cannot go on this machine.
func (r *report) printCPUFloor(w io.Writer) {
	a := r.alone
	cores := runtime.NumCPU()
	slow := a.serialCPU[a.slowest]
	if slow == 0 || a.fanOutCPU == 0 || r.serialCPU == 0 {
		return
	}
	busy := func(cpu, wall time.Duration) float64 { return ratio(float64(cpu), float64(wall)) }
	fmt.Fprintf(w, "  machine CPU per tenant, provision+verify (every process, p50, %d cores):\n", cores)
	fmt.Fprintf(w, "    %-26s %7s of CPU in %7s (%.1f cores busy)\n", "slowest store alone ("+string(a.slowest)+")", ms(slow), ms(a.slowestWork), busy(slow, a.slowestWork))
	fmt.Fprintf(w, "    %-26s %7s of CPU in %7s (%.1f cores busy)\n", "the four stores at once", ms(a.fanOutCPU), ms(a.fanOutWork), busy(a.fanOutCPU, a.fanOutWork))
	fmt.Fprintf(w, "    %-26s %7s of CPU in %7s (%.1f cores busy)\n", "the system", ms(r.serialCPU), ms(r.serial), busy(r.serialCPU, r.serial))
	fmt.Fprintf(w, "    the system's, by process, per tenant: %s\n", r.serialProcs.top(10, r.cfg.Serial))
	floor, sysFloor := a.fanOutCPU/time.Duration(cores), r.serialCPU/time.Duration(cores)
	fmt.Fprintf(w, "    CPU over %d cores, the least wall time it can take: the four stores %s (%.2f × the slowest store alone), the system %s (%.2f ×)\n",
		cores, ms(floor), ratio(float64(floor), float64(a.slowestWork)), ms(sysFloor), ratio(float64(sysFloor), float64(a.slowestWork)))
}

// fmtCallGrowth lists the n calls whose time per tenant grew most from
// first (a burst of firstN tenants) to last (lastN tenants).
func fmtCallGrowth(first, last callTimes, firstN, lastN, n int) string {
	perTenant := func(c callTimes, call string, tenants int) (calls, mean, total float64) {
		t := c[call]
		if t[1] == 0 || tenants == 0 {
			return 0, 0, 0
		}
		return t[1] / float64(tenants), 1000 * t[0] / t[1], 1000 * t[0] / float64(tenants)
	}
	growth := func(call string) float64 {
		_, _, a := perTenant(first, call, firstN)
		_, _, b := perTenant(last, call, lastN)
		return b - a
	}
	calls := slices.Collect(maps.Keys(last))
	slices.SortFunc(calls, func(a, b string) int { return cmp.Compare(growth(b), growth(a)) })
	var sb strings.Builder
	for _, call := range calls[:min(n, len(calls))] {
		c0, m0, t0 := perTenant(first, call, firstN)
		c1, m1, t1 := perTenant(last, call, lastN)
		fmt.Fprintf(&sb, "  %-24s %4.2f × %6.1f = %6.1f ms  →  %4.2f × %6.1f = %6.1f ms\n", call, c0, m0, t0, c1, m1, t1)
	}
	return sb.String()
}
