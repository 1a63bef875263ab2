package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tenantprov/tenantprov/e2e/internal/envconf"
)

// defaultTargets are the six services `make up` runs.
var defaultTargets = []string{"orchestrator", "minio-agent", "pg-agent", "qdrant-agent", "redis-agent", "audit-sink"}

type config struct {
	Root         string
	Tenants      int
	Deprovision  int
	Duration     time.Duration
	Converge     time.Duration
	KillEvery    time.Duration
	RestartAfter time.Duration
	Targets      []string
	Seed         uint64
	Prefix       string
	// RestartWithDevUp restarts a killed service with scripts/dev-up.sh
	// (CHAOS_RESTART=devup) instead of starting its captured command line
	// again; dev-up.sh also rebuilds and re-checks everything, which takes
	// far longer than CHAOS_RESTART_AFTER on a loaded machine.
	RestartWithDevUp bool
	// Baseline runs the same load without faults first (CHAOS_BASELINE,
	// default on; 0 turns it off), and MaxP99Ratio bounds the p99 under
	// faults over the fault-free p99 (CHAOS_MAX_P99_RATIO, default 3).
	Baseline    bool
	MaxP99Ratio float64
	Env         map[string]string // .dev/env
}

func loadConfig() (config, error) {
	vars := &envconf.Reader{}
	intVar, durVar := vars.Int, vars.Duration
	c := config{Root: os.Getenv("CHAOS_ROOT")}
	if c.Root == "" {
		c.Root, _ = os.Getwd()
	}
	c.Tenants = intVar("CHAOS_TENANTS", 200)
	c.Deprovision = intVar("CHAOS_DEPROVISION", c.Tenants/2)
	c.Duration = durVar("CHAOS_DURATION", 10*time.Minute)
	c.Converge = durVar("CHAOS_CONVERGE", 5*time.Minute)
	c.KillEvery = durVar("CHAOS_KILL_EVERY", 2*time.Second)
	c.RestartAfter = durVar("CHAOS_RESTART_AFTER", time.Second)
	c.Seed = uint64(intVar("CHAOS_SEED", int(time.Now().UnixNano()%1_000_000)))
	c.Targets = defaultTargets
	if v := os.Getenv("CHAOS_TARGETS"); v != "" {
		c.Targets = strings.Split(v, ",")
	}
	if v := os.Getenv("CHAOS_TARGETS"); v == "none" {
		c.Targets = nil
	}
	c.RestartWithDevUp = os.Getenv("CHAOS_RESTART") == "devup"
	c.Baseline = os.Getenv("CHAOS_BASELINE") != "0"
	c.MaxP99Ratio = 3
	if v := os.Getenv("CHAOS_MAX_P99_RATIO"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 {
			vars.Errs = append(vars.Errs, fmt.Errorf("CHAOS_MAX_P99_RATIO=%q: want a positive number", v))
		}
		c.MaxP99Ratio = f
	}
	if c.Deprovision > c.Tenants {
		vars.Errs = append(vars.Errs, fmt.Errorf("CHAOS_DEPROVISION=%d exceeds CHAOS_TENANTS=%d", c.Deprovision, c.Tenants))
	}
	c.Prefix = fmt.Sprintf("chaos%d-", c.Seed)
	if err := errors.Join(vars.Errs...); err != nil {
		return c, err
	}
	env, err := readEnv(filepath.Join(c.Root, ".dev", "env"))
	if err != nil {
		return c, fmt.Errorf("%w (run `make up` first)", err)
	}
	c.Env = env
	for _, k := range []string{"NATS_URL", "AUDIT_PG_URL", "SOPS_AGE_KEY_FILE"} {
		if env[k] == "" {
			return c, fmt.Errorf(".dev/env does not set %s", k)
		}
	}
	return c, nil
}

// readEnv sources the shell file in a clean bash and returns the
// environment it exports, so that its quoting is bash's, not a re-parse.
func readEnv(path string) (map[string]string, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	cmd := exec.Command("bash", "-c", `set -a; . "$1" >/dev/null; env -0`, "bash", path)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", path, err)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(out), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env, nil
}

// environ is the process environment with .dev/env on top, for the
// commands chaos runs (tenantctl, dev-up.sh).
func (c config) environ() []string {
	merged := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			merged[k] = v
		}
	}
	for k, v := range c.Env {
		merged[k] = v
	}
	out := make([]string, 0, len(merged))
	for k, v := range merged {
		out = append(out, k+"="+v)
	}
	return out
}
