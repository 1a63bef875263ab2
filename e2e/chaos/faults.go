package main

import (
	"context"
	"errors"
	"fmt"
	"io"
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

// target is something the fault loop can kill and bring back. Services
// are processes; NATS nodes of a 3-node cluster (make up NATS_CLUSTER=3)
// are processes too, and a target that picks the meta leader can be added
// beside them.
type target interface {
	Name() string
	// Alive reports whether it runs.
	Alive() bool
	// Kill SIGKILLs it; ok is false when it was not running.
	Kill() (ok bool, err error)
	// Restart starts it again if it is not running. ErrCannotRestart means
	// only scripts/dev-up.sh can.
	Restart() error
}

// ErrCannotRestart: the target does not know how it was started.
var ErrCannotRestart = errors.New("no captured command line to restart from")

// process is a process `make up` started, found by its pid file. It
// remembers how it ran (argv, environment, directory) from /proc, so that
// it can be started again exactly so, the way dev-up.sh's start_bg does:
// in its own session, output appended to .dev/logs/<name>.log, its pid in
// .dev/pids/<name>.pid. The environment holds the service's secrets; it
// stays in this process's memory and goes nowhere else.
type process struct {
	name string
	dir  string // .dev/pids

	mu   sync.Mutex
	argv []string
	env  []string
	cwd  string
}

func (p *process) Name() string { return p.name }

func (p *process) pid() (int, bool) {
	b, err := os.ReadFile(filepath.Join(p.dir, p.name+".pid"))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, false
	}
	return pid, alive(pid)
}

// alive: pid exists and is not a zombie (a killed process whose parent —
// here often a PID 1 that reaps slowly — has not collected it yet; kill -0
// succeeds on it).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // no /proc: trust kill -0
	}
	// pid (comm) S ...: the state follows the last ')'.
	if i := strings.LastIndexByte(string(stat), ')'); i > 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z' && stat[i+2] != 'X'
	}
	return true
}

func (p *process) Alive() bool { _, ok := p.pid(); return ok }

// capture records how pid runs.
func (p *process) capture(pid int) {
	proc := fmt.Sprintf("/proc/%d/", pid)
	rawArgs, err1 := os.ReadFile(proc + "cmdline")
	rawEnv, err2 := os.ReadFile(proc + "environ")
	cwd, err3 := os.Readlink(proc + "cwd")
	if err1 != nil || err2 != nil || err3 != nil || len(rawArgs) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.argv = strings.Split(strings.TrimRight(string(rawArgs), "\x00"), "\x00")
	p.env = strings.Split(strings.TrimRight(string(rawEnv), "\x00"), "\x00")
	p.cwd = cwd
}

// Capture records how the running process runs (call it while it runs).
func (p *process) Capture() {
	if pid, ok := p.pid(); ok {
		p.capture(pid)
	}
}

func (p *process) Kill() (bool, error) {
	pid, ok := p.pid()
	if !ok {
		return false, nil
	}
	p.capture(pid)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return false, fmt.Errorf("kill %s (pid %d): %w", p.name, pid, err)
	}
	return true, nil
}

func (p *process) Restart() error {
	if p.Alive() {
		return nil
	}
	p.mu.Lock()
	argv, env, cwd := p.argv, p.env, p.cwd
	p.mu.Unlock()
	if len(argv) == 0 {
		return ErrCannotRestart
	}
	logf, err := os.OpenFile(filepath.Join(filepath.Dir(p.dir), "logs", p.name+".log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
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
	// Reap it when it dies, so that it does not linger as a zombie.
	go func() { _ = cmd.Wait() }()
	return os.WriteFile(filepath.Join(p.dir, p.name+".pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
}

// restarter runs scripts/dev-up.sh, which starts only what is not
// running. Runs are serialised; a request made while one runs is served by
// the next.
type restarter struct {
	cfg     config
	log     io.Writer
	mu      sync.Mutex
	pending atomic.Bool
	runs    atomic.Int64
}

func (r *restarter) restart(ctx context.Context) error {
	r.pending.Store(true)
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.pending.Swap(false) {
		return nil // an earlier run already covered this request
	}
	cmd := exec.CommandContext(ctx, filepath.Join(r.cfg.Root, "scripts", "dev-up.sh"))
	cmd.Dir = r.cfg.Root
	// The environment chaos was started with (the same port settings as
	// `make up`), not .dev/env: that holds operator settings (the audit
	// reader's AUDIT_PG_URL) that must not reach the services.
	cmd.Env = os.Environ()
	cmd.Stdout, cmd.Stderr = r.log, r.log
	r.runs.Add(1)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("scripts/dev-up.sh: %w", err)
	}
	return nil
}

// faults kills a random running target every cfg.KillEvery and restarts
// it cfg.RestartAfter later (its captured command line, or dev-up.sh with
// CHAOS_RESTART=devup or when that is unknown). Every tick it also
// restarts any target found dead for another reason.
type faults struct {
	cfg     config
	targets []target
	rs      *restarter
	rng     *mrand.Rand
	log     io.Writer // one line per kill and restart

	mu        sync.Mutex
	kills     map[string]int
	errs      []error
	restarted atomic.Int64
	wg        sync.WaitGroup
}

func (f *faults) run(ctx context.Context) {
	if len(f.targets) == 0 {
		return
	}
	tick := time.NewTicker(f.cfg.KillEvery)
	defer tick.Stop()
	pending := map[string]bool{} // a restart is scheduled
	var pmu sync.Mutex
	for {
		select {
		case <-ctx.Done():
			f.wg.Wait()
			return
		case <-tick.C:
		}
		var running []target
		for _, t := range f.targets {
			pmu.Lock()
			scheduled := pending[t.Name()]
			pmu.Unlock()
			switch {
			case t.Alive():
				running = append(running, t)
			case !scheduled:
				f.logf("%s found dead; restarting it", t.Name())
				f.restart(ctx, t)
			}
		}
		if len(running) == 0 {
			continue
		}
		t := running[f.rng.IntN(len(running))]
		ok, err := t.Kill()
		f.logf("kill %s: killed=%v err=%v", t.Name(), ok, err)
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
		pmu.Lock()
		pending[t.Name()] = true
		pmu.Unlock()
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer func() { pmu.Lock(); delete(pending, t.Name()); pmu.Unlock() }()
			select {
			case <-ctx.Done():
				return // the convergence phase restarts what is still down
			case <-time.After(f.cfg.RestartAfter):
			}
			f.restart(ctx, t)
		}()
	}
}

// restart brings t back, by its own Restart or by dev-up.sh.
func (f *faults) restart(ctx context.Context, t target) {
	var err error
	if !f.cfg.RestartWithDevUp {
		err = t.Restart()
	}
	if f.cfg.RestartWithDevUp || errors.Is(err, ErrCannotRestart) {
		err = f.rs.restart(ctx)
	}
	if err != nil && ctx.Err() == nil {
		f.mu.Lock()
		f.errs = append(f.errs, err)
		f.mu.Unlock()
		f.logf("restart %s: %v", t.Name(), err)
		return
	}
	f.restarted.Add(1)
	f.logf("restarted %s", t.Name())
}

// restoreAll restarts every target that is not running (after the fault
// phase), and waits until all run.
func (f *faults) restoreAll(ctx context.Context, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		var down []string
		for _, t := range f.targets {
			if !t.Alive() {
				down = append(down, t.Name())
				f.restart(ctx, t)
			}
		}
		if len(down) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("still down after %s: %v", within, down)
		case <-time.After(time.Second):
		}
	}
}

func (f *faults) logf(format string, args ...any) {
	if f.log != nil {
		fmt.Fprintf(f.log, time.Now().UTC().Format("15:04:05.000 ")+format+"\n", args...)
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
