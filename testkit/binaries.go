package testkit

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// InCI reports whether the tests run in CI (environment variable CI parses as
// true). In CI a missing server binary fails the test instead of skipping it,
// so a misconfigured pipeline cannot pass by skipping everything.
func InCI() bool {
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	return ci
}

// BinaryEnvVar returns the environment variable that overrides where the
// binary name is found: TENANTPROV_<NAME>_BIN, with name upper-cased and every
// character outside [A-Z0-9] replaced by '_' (redis-server ->
// TENANTPROV_REDIS_SERVER_BIN).
func BinaryEnvVar(name string) string {
	var b strings.Builder
	for _, r := range strings.ToUpper(name) {
		if (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return "TENANTPROV_" + b.String() + "_BIN"
}

// WorkspaceRoot returns the directory holding go.work: $GOWORK's directory
// when set, otherwise the first directory at or above the working directory
// that contains go.work. It returns "" when there is none.
func WorkspaceRoot() string {
	if gw := os.Getenv("GOWORK"); gw != "" && gw != "off" {
		return filepath.Dir(gw)
	}
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if st, err := os.Stat(filepath.Join(dir, "go.work")); err == nil && !st.IsDir() {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// RequireBinary returns the absolute path of an executable called name, or
// ends the test when there is none.
//
// It looks, in order, at: the file named by BinaryEnvVar(name) (if that
// variable is set and does not name an executable file the test always
// fails: an explicit setting that is wrong is never skipped); <workspace
// root>/bin/<name> (where `make tools` puts pinned tools); each candidate,
// which is a path or a filepath.Glob pattern (glob matches are tried in
// reverse lexical order, so the highest version directory wins); and
// finally $PATH.
//
// When nothing is found the test is skipped, or fails when InCI() is true;
// either way the message names every place looked at and the command
// installHint that installs the binary.
func RequireBinary(t testing.TB, name, installHint string, candidates ...string) string {
	t.Helper()
	path, looked, err := findBinary(name, candidates)
	if err != nil {
		t.Fatalf("testkit: %v", err)
	}
	if path != "" {
		return path
	}
	msg := fmt.Sprintf("testkit: %s not found (looked in: %s); install it with: %s",
		name, strings.Join(looked, ", "), installHint)
	if InCI() {
		t.Fatal(msg + " (CI=true: missing server binaries fail the run)")
	} else {
		t.Skip(msg)
	}
	return ""
}

// findBinary implements the search order of RequireBinary. It returns the
// path found (or ""), the places it looked at, and an error only when the
// environment override is set but unusable.
func findBinary(name string, candidates []string) (string, []string, error) {
	var looked []string
	envVar := BinaryEnvVar(name)
	if p := os.Getenv(envVar); p != "" {
		if isExecutable(p) {
			abs, _ := filepath.Abs(p)
			return abs, nil, nil
		}
		return "", nil, fmt.Errorf("%s=%q is not an executable file", envVar, p)
	}
	looked = append(looked, "$"+envVar)

	if root := WorkspaceRoot(); root != "" {
		p := filepath.Join(root, "bin", name)
		looked = append(looked, p)
		if isExecutable(p) {
			return p, looked, nil
		}
	}

	for _, c := range candidates {
		if c == "" {
			continue
		}
		looked = append(looked, c)
		matches, err := filepath.Glob(c)
		if err != nil {
			matches = []string{c}
		}
		sort.Sort(sort.Reverse(sort.StringSlice(matches)))
		for _, m := range matches {
			if isExecutable(m) {
				abs, _ := filepath.Abs(m)
				return abs, looked, nil
			}
		}
	}

	looked = append(looked, "$PATH")
	if p, err := exec.LookPath(name); err == nil {
		abs, _ := filepath.Abs(p)
		return abs, looked, nil
	}
	return "", looked, nil
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// startupTimeout bounds how long any helper waits for its server to become
// ready before failing the test.
const startupTimeout = 30 * time.Second

// childProcess is one run of an external server binary. It lives in its own
// process group (so cleanup reaches its children too) and receives SIGKILL
// if the test binary dies without cleaning up (Pdeathsig; see start).
type childProcess struct {
	name    string // for messages: "postgres", "redis-server", ...
	path    string
	args    []string
	env     []string
	dir     string
	logPath string              // stdout and stderr of every run, appended
	cred    *syscall.Credential // run as another user when non-nil

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and been reaped
	err  error         // Wait's result, valid after done is closed
}

// start launches the process. The launching goroutine locks its OS thread
// and keeps it until the process has exited: Linux delivers Pdeathsig when
// the *thread* that forked the child exits, and the Go runtime only ends a
// thread when a goroutine exits while locked to it. So the child is killed
// exactly when it is no longer waited for — normally after it has exited
// already, or when the whole test binary dies (panic, timeout, os.Exit).
func (p *childProcess) start() error {
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log %s: %w", p.logPath, err)
	}
	cmd := exec.Command(p.path, p.args...)
	cmd.Env = p.env
	cmd.Dir = p.dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
		Credential: p.cred,
	}
	started := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if err := cmd.Start(); err != nil {
			logf.Close()
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		logf.Close()
		close(done)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	p.cmd = cmd
	p.done = done
	return nil
}

// running reports whether the process of the last start is still alive.
func (p *childProcess) running() bool {
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends sig to the process, waits up to grace for it to exit, then
// kills its whole process group with SIGKILL. It is a no-op when the process
// is not running.
func (p *childProcess) stop(sig syscall.Signal, grace time.Duration) error {
	if !p.running() {
		return nil
	}
	pid := p.cmd.Process.Pid
	_ = syscall.Kill(pid, sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, pid)
		}
	}
	// Reap stragglers left in the group (e.g. backends of a killed postmaster).
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	return nil
}

// exitStatus describes how the process ended, for failure messages.
func (p *childProcess) exitStatus() string {
	if p.running() {
		return "still running"
	}
	if p.err == nil {
		return "exited with status 0"
	}
	return p.err.Error()
}

// logTail returns the last lines of the process log, for failure messages.
func (p *childProcess) logTail() string {
	return fileTail(p.logPath, 40)
}

// fileTail returns at most the last n lines (and last 8 KiB) of the file.
func fileTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	const max = 8 << 10
	if st, err := f.Stat(); err == nil && st.Size() > max {
		_, _ = f.Seek(st.Size()-max, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// waitReady polls ready every 50ms until it returns nil, the process exits,
// or the startup timeout passes. The error names what went wrong and carries
// the tail of the process log.
func (p *childProcess) waitReady(ready func() error) error {
	deadline := time.Now().Add(startupTimeout)
	var last error
	for {
		if last = ready(); last == nil {
			return nil
		}
		if !p.running() {
			return fmt.Errorf("%s exited during startup (%s); last readiness error: %v\n--- %s (tail) ---\n%s",
				p.name, p.exitStatus(), last, p.logPath, p.logTail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %v\n--- %s (tail) ---\n%s",
				p.name, startupTimeout, last, p.logPath, p.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
