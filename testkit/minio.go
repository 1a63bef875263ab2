package testkit

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// MinIOInstallHint is the command that installs the pinned minio binary
// into <workspace root>/bin.
const MinIOInstallHint = "make tools"

// MinIO is a single-drive `minio server` for one test, with its S3 API and
// console both bound to 127.0.0.1 (the web console is disabled).
type MinIO struct {
	// Endpoint is the S3 API address, host:port (no scheme; plain HTTP). It
	// stays the same across Stop and Start.
	Endpoint string
	// RootUser is the root access key.
	RootUser string
	// RootPassword is the root secret key.
	RootPassword string
	// DataDir is the drive directory; objects survive Stop and Start.
	DataDir string

	proc *childProcess
}

// StartMinIO starts `minio server` on random ports and returns once
// /minio/health/ready and /minio/health/cluster answer 200, that is once S3
// requests with the root credentials are served. The server is stopped when
// the test ends.
func StartMinIO(t testing.TB) *MinIO {
	t.Helper()
	begin := time.Now()
	bin := RequireBinary(t, "minio", MinIOInstallHint, minioCandidates()...)
	dir := t.TempDir()
	m := &MinIO{
		Endpoint:     net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t))),
		RootUser:     "tpadmin",
		RootPassword: randomHex(t, 16),
		DataDir:      filepath.Join(dir, "data"),
	}
	console := net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
	if err := os.Mkdir(m.DataDir, 0o700); err != nil {
		t.Fatalf("testkit: create minio data dir: %v", err)
	}
	m.proc = &childProcess{
		name: "minio",
		path: bin,
		args: []string{"server", m.DataDir,
			"--address", m.Endpoint,
			"--console-address", console,
			"--certs-dir", filepath.Join(dir, "certs"),
		},
		env: []string{
			"PATH=/usr/bin:/bin",
			"HOME=" + dir, // keep ~/.minio out of the real home
			"MINIO_ROOT_USER=" + m.RootUser,
			"MINIO_ROOT_PASSWORD=" + m.RootPassword,
			"MINIO_BROWSER=off",
			"MINIO_UPDATE=off",
		},
		dir:     dir,
		logPath: filepath.Join(dir, "minio.log"),
	}
	t.Cleanup(func() {
		if err := m.proc.stop(syscall.SIGKILL, 5*time.Second); err != nil {
			t.Errorf("testkit: stop minio: %v", err)
		}
	})
	if err := m.start(); err != nil {
		t.Fatalf("testkit: %v", err)
	}
	t.Logf("testkit: minio (%s) at %s started in %s", bin, m.Endpoint, time.Since(begin).Round(time.Millisecond))
	return m
}

// minioCandidates is the tools cache `make tools` builds into before it
// copies the pinned binary to <workspace root>/bin.
func minioCandidates() []string {
	if cache, err := os.UserCacheDir(); err == nil {
		return []string{filepath.Join(cache, "tenantprov", "tools", "minio-*", "minio")}
	}
	return nil
}

func (m *MinIO) start() error {
	if m.proc.running() {
		return fmt.Errorf("minio at %s is already running", m.Endpoint)
	}
	if err := m.proc.start(); err != nil {
		return err
	}
	client := &http.Client{Timeout: 2 * time.Second}
	// /minio/health/ready answers 200 as soon as the HTTP server is up, even
	// before the object layer exists (it then only sets
	// x-minio-server-status: offline); /minio/health/cluster answers 200
	// only once objects, bucket metadata and IAM are initialised and the
	// drive has write quorum, which is what S3 calls need.
	return m.proc.waitReady(func() error {
		for _, probe := range []string{"/minio/health/ready", "/minio/health/cluster"} {
			resp, err := client.Get("http://" + m.Endpoint + probe)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %s (x-minio-server-status %q)", probe, resp.Status, resp.Header.Get("x-minio-server-status"))
			}
			if st := resp.Header.Get("x-minio-server-status"); st != "" {
				return fmt.Errorf("%s: x-minio-server-status %q", probe, st)
			}
		}
		return nil
	})
}

// Stop shuts minio down (SIGTERM) and returns once it has exited; requests
// fail until Start. Stopping a stopped server does nothing.
func (m *MinIO) Stop(t testing.TB) {
	t.Helper()
	if err := m.proc.stop(syscall.SIGTERM, 15*time.Second); err != nil {
		t.Fatalf("testkit: stop minio: %v", err)
	}
}

// Start starts minio again on the same address with the same data and
// credentials, and returns once it serves S3 requests (see StartMinIO).
func (m *MinIO) Start(t testing.TB) {
	t.Helper()
	begin := time.Now()
	if err := m.start(); err != nil {
		t.Fatalf("testkit: restart minio: %v", err)
	}
	t.Logf("testkit: minio at %s restarted in %s", m.Endpoint, time.Since(begin).Round(time.Millisecond))
}
