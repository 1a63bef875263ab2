package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestProcessKillAndRestart: a killed process that its parent has not
// reaped yet (a zombie, which kill -0 still finds) counts as dead, and
// Restart starts it again from its captured command line, environment and
// directory, with a new pid in its pid file.
func TestProcessKillAndRestart(t *testing.T) {
	dev := filepath.Join(t.TempDir(), ".dev")
	for _, d := range []string{"pids", "logs"} {
		if err := os.MkdirAll(filepath.Join(dev, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("sleep", "300")
	cmd.Env = []string{"CHAOS_TEST_MARK=1", "PATH=" + os.Getenv("PATH")}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Not reaped until the end: after the kill it is a zombie.
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pidFile := filepath.Join(dev, "pids", "sleeper.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &process{name: "sleeper", dir: filepath.Join(dev, "pids")}
	if !p.Alive() {
		t.Fatal("a running process is not Alive")
	}
	ok, err := p.Kill()
	if !ok || err != nil {
		t.Fatalf("Kill = %v, %v", ok, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.Alive() {
		if time.Now().After(deadline) {
			t.Fatal("a killed (zombie) process still counts as alive")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if syscall.Kill(cmd.Process.Pid, 0) != nil {
		t.Log("the killed process was reaped already; the zombie case was not exercised")
	}
	if err := p.Restart(); err != nil {
		t.Fatal(err)
	}
	newPid, alive := p.pid()
	if !alive || newPid == cmd.Process.Pid {
		t.Fatalf("after Restart: pid %d alive %v (old pid %d)", newPid, alive, cmd.Process.Pid)
	}
	t.Cleanup(func() { _ = syscall.Kill(newPid, syscall.SIGKILL) })
	env, err := os.ReadFile("/proc/" + strconv.Itoa(newPid) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(env), "CHAOS_TEST_MARK=1") {
		t.Error("the restarted process lacks the environment it was killed with")
	}
	if err := p.Restart(); err != nil {
		t.Fatal(err)
	}
	if again, _ := p.pid(); again != newPid {
		t.Error("Restart of a running process started another one")
	}
}

// TestReadEnv reads .dev/env as bash does, quoting included.
func TestReadEnv(t *testing.T) {
	path := filepath.Join(t.TempDir(), "env")
	body := "# comment\nexport NATS_URL=nats://127.0.0.1:4222\nexport PG_ADMIN_URL='postgres://a:b c@h/db' # trailing\nexport PATH=\"/x/bin:$PATH\"\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	env, err := readEnv(path)
	if err != nil {
		t.Fatal(err)
	}
	if env["NATS_URL"] != "nats://127.0.0.1:4222" || env["PG_ADMIN_URL"] != "postgres://a:b c@h/db" {
		t.Errorf("env = NATS_URL %q, PG_ADMIN_URL %q", env["NATS_URL"], env["PG_ADMIN_URL"])
	}
	if p := env["PATH"]; len(p) < 7 || p[:7] != "/x/bin:" {
		t.Errorf("PATH = %q, want /x/bin: prepended", p)
	}
	if _, err := readEnv(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing .dev/env is not an error")
	}
}
