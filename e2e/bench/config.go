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

// config is one bench run; every size is an environment variable so that a
// run fits the machine (the defaults are the sizes).
type config struct {
	Root string // the worktree `make up` ran in (BENCH_ROOT)
	Env  map[string]string

	Serial           int   // BENCH_SERIAL: tenants one after another (p50)
	StoreSerial      int   // BENCH_STORE_SERIAL: store-alone tenants one after another
	StoreTenants     int   // BENCH_STORE_TENANTS: store-alone tenants for the concurrent throughput
	StoreConcurrency int   // BENCH_STORE_CONCURRENCY: store-alone tenants at once
	Bursts           []int // BENCH_BURSTS: burst sizes
	FlatBursts       int   // BENCH_FLAT_BURSTS: bursts kept live for flatness
	FlatSize         int   // BENCH_FLAT_SIZE: tenants per flatness burst
	Records          int   // BENCH_RECORDS: registry records for the RSS and periodic-work check
	Idle             time.Duration
	Quiet            time.Duration // BENCH_QUIET: the longest wait for an idle system before a stores-alone sample
	Timeout          time.Duration // BENCH_TIMEOUT: one tenant's wait
	Prefix           string        // BENCH_PREFIX: tenant ID prefix (unique per run by default)
	KeepRecords      bool          // BENCH_KEEP_RECORDS: leave the seeded records in the registry
}

func loadConfig() (config, error) {
	vars := &envconf.Reader{}
	intVar, durVar := vars.Int, vars.Duration
	c := config{Root: os.Getenv("BENCH_ROOT")}
	if c.Root == "" {
		c.Root, _ = os.Getwd()
	}
	c.Serial = intVar("BENCH_SERIAL", 7)
	c.StoreSerial = intVar("BENCH_STORE_SERIAL", 7)
	c.StoreTenants = intVar("BENCH_STORE_TENANTS", 64)
	c.StoreConcurrency = max(intVar("BENCH_STORE_CONCURRENCY", 16), 1)
	c.FlatBursts = intVar("BENCH_FLAT_BURSTS", 10)
	c.FlatSize = intVar("BENCH_FLAT_SIZE", 100)
	c.Records = intVar("BENCH_RECORDS", 10000)
	c.Idle = durVar("BENCH_IDLE", 10*time.Second)
	c.Quiet = durVar("BENCH_QUIET", 2*time.Minute)
	c.Timeout = durVar("BENCH_TIMEOUT", 5*time.Minute)
	c.KeepRecords = os.Getenv("BENCH_KEEP_RECORDS") != ""
	bursts := os.Getenv("BENCH_BURSTS")
	if bursts == "" {
		bursts = "50,500"
	}
	for _, f := range strings.Split(bursts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			vars.Errs = append(vars.Errs, fmt.Errorf("BENCH_BURSTS=%q: want sizes like 50,500", bursts))
			break
		}
		c.Bursts = append(c.Bursts, n)
	}
	c.Prefix = os.Getenv("BENCH_PREFIX")
	if c.Prefix == "" {
		c.Prefix = "b" + strconv.FormatInt(time.Now().Unix()%100000, 36)
	}
	if len(c.Prefix) > 12 {
		vars.Errs = append(vars.Errs, fmt.Errorf("BENCH_PREFIX=%q: at most 12 characters", c.Prefix))
	}
	envFile := filepath.Join(c.Root, ".dev", "env")
	env, err := readEnv(envFile)
	if err != nil {
		vars.Errs = append(vars.Errs, fmt.Errorf("%w (run `make up` first)", err))
	}
	c.Env = env
	return c, errors.Join(vars.Errs...)
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
