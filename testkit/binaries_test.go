package testkit

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBinaryEnvVar(t *testing.T) {
	for name, want := range map[string]string{
		"minio":        "TENANTPROV_MINIO_BIN",
		"redis-server": "TENANTPROV_REDIS_SERVER_BIN",
		"nats":         "TENANTPROV_NATS_BIN",
	} {
		if got := BinaryEnvVar(name); got != want {
			t.Errorf("BinaryEnvVar(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestWorkspaceRootHasGoWork(t *testing.T) {
	root := WorkspaceRoot()
	if root == "" {
		t.Fatal("no go.work found above the test's working directory")
	}
	if _, err := os.Stat(filepath.Join(root, "go.work")); err != nil {
		t.Fatal(err)
	}
}

func writeExecutable(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestFindBinaryOrder(t *testing.T) {
	const name = "tenantprov-kit-fake-tool"
	dir := t.TempDir()
	t.Setenv("PATH", filepath.Join(dir, "path"))
	t.Setenv(BinaryEnvVar(name), "")

	if p, looked, err := findBinary(name, nil); p != "" || err != nil || len(looked) == 0 {
		t.Fatalf("nothing installed: got %q, %v, looked %v", p, err, looked)
	}

	onPath := filepath.Join(dir, "path", name)
	writeExecutable(t, onPath)
	if p, _, _ := findBinary(name, nil); p != onPath {
		t.Fatalf("PATH: got %q, want %q", p, onPath)
	}

	// Candidates (globs, highest match first) win over PATH.
	writeExecutable(t, filepath.Join(dir, "v14", name))
	v15 := filepath.Join(dir, "v15", name)
	writeExecutable(t, v15)
	if p, _, _ := findBinary(name, []string{filepath.Join(dir, "v*", name)}); p != v15 {
		t.Fatalf("candidate glob: got %q, want %q", p, v15)
	}

	// The environment override wins over everything.
	override := filepath.Join(dir, "override", name)
	writeExecutable(t, override)
	t.Setenv(BinaryEnvVar(name), override)
	if p, _, _ := findBinary(name, []string{filepath.Join(dir, "v*", name)}); p != override {
		t.Fatalf("override: got %q, want %q", p, override)
	}

	// A wrong override is an error, not a fallback.
	t.Setenv(BinaryEnvVar(name), filepath.Join(dir, "missing"))
	if _, _, err := findBinary(name, nil); err == nil {
		t.Fatal("override naming a missing file: no error")
	}
}

// recordingTB records Skip and Fatal instead of ending the test.
type recordingTB struct {
	testing.TB
	skipped, failed string
}

func (r *recordingTB) Skip(args ...any)                  { r.skipped = fmt.Sprint(args...) }
func (r *recordingTB) Fatal(args ...any)                 { r.failed = fmt.Sprint(args...) }
func (r *recordingTB) Fatalf(format string, args ...any) { r.failed = fmt.Sprintf(format, args...) }

func TestRequireBinaryMissingSkipsOrFailsInCI(t *testing.T) {
	const name = "tenantprov-kit-missing-tool"
	t.Setenv("PATH", t.TempDir())
	t.Setenv(BinaryEnvVar(name), "")

	t.Setenv("CI", "")
	rec := &recordingTB{TB: t}
	RequireBinary(rec, name, "make tools")
	if rec.failed != "" || !strings.Contains(rec.skipped, "install it with: make tools") {
		t.Fatalf("outside CI: skipped=%q failed=%q; want a skip naming `make tools`", rec.skipped, rec.failed)
	}

	t.Setenv("CI", "true")
	rec = &recordingTB{TB: t}
	RequireBinary(rec, name, "make tools")
	if rec.skipped != "" || !strings.Contains(rec.failed, "install it with: make tools") {
		t.Fatalf("CI=true: skipped=%q failed=%q; want a failure naming `make tools`", rec.skipped, rec.failed)
	}
}

func TestStartupFailureReportsLogTail(t *testing.T) {
	fake := filepath.Join(t.TempDir(), "redis-server")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho 'fake redis: cannot start' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(BinaryEnvVar("redis-server"), fake)
	rec := &recordingTB{TB: t}
	StartRedis(rec)
	for _, want := range []string{"exited during startup", "exit status 3", "fake redis: cannot start"} {
		if !strings.Contains(rec.failed, want) {
			t.Errorf("failure message lacks %q:\n%s", want, rec.failed)
		}
	}
}
