package main

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// target is something the fault loop can kill and bring back.
type target interface {
	Name() string
	// Kill SIGKILLs it; ok is false when it was not running. respawn, when
	// not nil, starts it again exactly as it ran (argv, environment,
	// directory, log); nil means only scripts/dev-up.sh can.
	Kill() (ok bool, respawn func() error, err error)
}

// process is a process `make up` started, found by its pid file.
type process struct {
	name string
	dir  string // .dev/pids
}

func (p process) Name() string { return p.name }

func (p process) pid() (int, bool) {
	b, err := os.ReadFile(filepath.Join(p.dir, p.name+".pid"))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, false
	}
	if syscall.Kill(pid, 0) != nil {
		return 0, false
	}
	return pid, true
}

func (p process) Kill() (bool, func() error, error) {
	pid, ok := p.pid()
	if !ok {
		return false, nil, nil
	}
	respawn := p.capture(pid)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return false, nil, fmt.Errorf("kill %s (pid %d): %w", p.name, pid, err)
	}
	return true, respawn, nil
}

// capture reads how pid runs (argv, environment, working directory) from
// /proc and returns a function that starts it again the way dev-up.sh's
// start_bg does: in its own session, output appended to its log, its pid in
// its pid file. The environment holds the service's secrets; it stays in
// this process's memory and goes nowhere else. nil if /proc is unreadable.
func (p process) capture(pid int) func() error {
	proc := fmt.Sprintf("/proc/%d/", pid)
	rawArgs, err1 := os.ReadFile(proc + "cmdline")
	rawEnv, err2 := os.ReadFile(proc + "environ")
	cwd, err3 := os.Readlink(proc + "cwd")
	if err1 != nil || err2 != nil || err3 != nil || len(rawArgs) == 0 {
		return nil
	}
	argv := strings.Split(strings.TrimRight(string(rawArgs), "\x00"), "\x00")
	env := strings.Split(strings.TrimRight(string(rawEnv), "\x00"), "\x00")
	logPath := filepath.Join(filepath.Dir(p.dir), "logs", p.name+".log")
	return func() error {
		if _, running := p.pid(); running {
			return nil // someone (dev-up.sh) brought it back already
		}
		logf, err := os.OpenFile(logPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		defer logf.Close()
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env, cmd.Dir = env, cwd
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("restart %s: %w", p.name, err)
		}
		// Reap it when it dies, so that a killed child is not a zombie that
		// `kill -0` (dev-up.sh's running check, and ours) takes for alive.
		go func() { _ = cmd.Wait() }()
		return os.WriteFile(filepath.Join(p.dir, p.name+".pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
	}
}

// restarter brings killed targets back by running scripts/dev-up.sh, which
// starts only what is not running. Restarts are serialised: one dev-up.sh
// at a time, and a request made while one runs is served by the next run.
type restarter struct {
	cfg     config
	log     *os.File
	mu      sync.Mutex
	pending atomic.Bool
	runs    atomic.Int64
	fails   atomic.Int64
}

func (r *restarter) restart(ctx context.Context) {
	r.pending.Store(true)
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.pending.Swap(false) {
		return // an earlier run already covered this request
	}
	cmd := exec.CommandContext(ctx, filepath.Join(r.cfg.Root, "scripts", "dev-up.sh"))
	cmd.Dir = r.cfg.Root
	cmd.Env = r.cfg.environ()
	cmd.Stdout, cmd.Stderr = r.log, r.log
	r.runs.Add(1)
	if err := cmd.Run(); err != nil && ctx.Err() == nil {
		r.fails.Add(1)
		fmt.Fprintf(r.log, "chaos: dev-up.sh: %v\n", err)
	}
}

// faults kills a random target every cfg.KillEvery and asks for a restart
// cfg.RestartAfter later, until ctx is done. It returns the kills per target.
type faults struct {
	cfg     config
	targets []target
	rs      *restarter
	rng     *mrand.Rand

	mu        sync.Mutex
	kills     map[string]int
	errs      []error
	respawned atomic.Int64
	wg        sync.WaitGroup
}

func (f *faults) run(ctx context.Context) {
	if len(f.targets) == 0 {
		return
	}
	tick := time.NewTicker(f.cfg.KillEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			f.wg.Wait()
			return
		case <-tick.C:
		}
		t := f.targets[f.rng.IntN(len(f.targets))]
		ok, respawn, err := t.Kill()
		f.mu.Lock()
		if err != nil {
			f.errs = append(f.errs, err)
		}
		if ok {
			f.kills[t.Name()]++
		}
		f.mu.Unlock()
		if !ok {
			continue
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			select {
			case <-ctx.Done():
				return
			case <-time.After(f.cfg.RestartAfter):
			}
			if respawn != nil && !f.cfg.RestartWithDevUp {
				if err := respawn(); err == nil {
					f.respawned.Add(1)
					return
				} else {
					f.mu.Lock()
					f.errs = append(f.errs, err)
					f.mu.Unlock()
				}
			}
			f.rs.restart(ctx)
		}()
	}
}

func (f *faults) total() (n int, per map[string]int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	per = map[string]int{}
	for k, v := range f.kills {
		per[k] = v
		n += v
	}
	return n, per
}
