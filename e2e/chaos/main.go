// Command chaos is tenantprov's fault suite (`make chaos`, issue 12). On the
// local stack of `make up` it provisions CHAOS_TENANTS tenants and
// deprovisions CHAOS_DEPROVISION of them while it SIGKILLs a random service
// every CHAOS_KILL_EVERY (restarting it CHAOS_RESTART_AFTER later with
// scripts/dev-up.sh, which starts only what is not running). Then it waits
// for every tenant to settle and checks, with package inventory and the
// audit trail:
//
//   - no tenant failed (a crash must be survived, not rolled back);
//   - nothing leaked, nothing missing, nothing stuck, no generation
//     mismatch, every store answered (tenantctl doctor's comparison);
//   - exactly one TENANT_PROVISIONED per generation that became active;
//   - every active tenant's sealed file opens (tenantctl secrets get) and
//     its credentials connect to all four stores.
//
// It prints the figures and exits 1 on any violation, 2 when it cannot run.
//
// Configuration (environment): CHAOS_TENANTS (200), CHAOS_DEPROVISION
// (half of CHAOS_TENANTS), CHAOS_DURATION (longest the load with faults may
// run, 10m), CHAOS_CONVERGE (longest wait for convergence afterwards, 5m),
// CHAOS_KILL_EVERY (2s), CHAOS_RESTART_AFTER (1s), CHAOS_TARGETS (the
// services to kill, comma-separated; default the six services; any name
// with a pid file in .dev/pids works, so NATS nodes can be added, and
// "nats-meta-leader" kills whichever node of a 3-node cluster (make up
// NATS_CLUSTER=3) is the JetStream meta leader at that moment, found from
// the monitoring ports NATS_MONITOR_PORT..+2 or CHAOS_NATS_MONITORS),
// CHAOS_SEED, CHAOS_ROOT (the repository, default the working directory),
// CHAOS_BASELINE (1: first run the same load without faults and compare
// the p99 requested->active; 0 skips it), CHAOS_MAX_P99_RATIO (3: the
// p99 under faults over the fault-free p99 above it is a violation).
// Connection settings come from .dev/env (NATS_URL, NATS_CREDS if set,
// AUDIT_PG_URL, SOPS_AGE_KEY_FILE, PATH for tenantctl).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx)
	stop()
	os.Exit(code)
}

func run(ctx context.Context) int {
	cfg, err := loadConfig()
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos: %v\n", err)
		return 2
	}
	h, err := newHarness(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos: %v\n", err)
		return 2
	}
	defer h.close()
	res, err := h.run(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos: %v\n", err)
		return 2
	}
	res.print(os.Stdout)
	if len(res.Violations) > 0 {
		return 1
	}
	return 0
}
