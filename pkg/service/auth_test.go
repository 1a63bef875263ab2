package service_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/busauth"
	"github.com/tenantprov/tenantprov/pkg/service"
	"github.com/tenantprov/tenantprov/testkit"
)

// authBus is a nats-server running the configuration busauth.Init writes.
func authBus(t *testing.T) (dir string, n *testkit.NATS) {
	t.Helper()
	dir = t.TempDir()
	if _, err := busauth.Init(dir); err != nil {
		t.Fatal(err)
	}
	return dir, testkit.StartNATS(t, testkit.NATSConfigFile(filepath.Join(dir, busauth.ServerConfigFile)))
}

// runUntilStarted runs service name with creds; it returns nil once the
// work function is called (and stops the service), or the error Run
// returned on its own. A service that neither starts nor fails (a silent
// retry loop) fails the test.
func runUntilStarted(t *testing.T, name, url, creds string) error {
	t.Helper()
	cfg := service.Defaults("test")
	cfg.NATSURL, cfg.NATSCredsFile, cfg.ShutdownTimeout = url, creds, 5*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- service.RunWithLogger(ctx, name, cfg, zap.NewNop(), func(context.Context, *service.Service) error { return nil })
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		t.Fatalf("%s neither started nor failed: a silent retry loop", name)
		return nil
	}
}

func TestCredentialProblemsFailAtStartWithOneClearLine(t *testing.T) {
	dir, n := authBus(t)
	if err := runUntilStarted(t, service.TopologyOwner, n.URL, busauth.CredsPath(dir, busauth.RoleOrchestrator)); err != nil {
		t.Fatalf("orchestrator with its own creds: %v", err)
	}
	other := t.TempDir() // another deployment's authority
	if _, err := busauth.Init(other); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(t.TempDir(), "garbage.creds")
	if err := os.WriteFile(garbage, []byte("not a creds file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, service, creds string
		want                 []string
	}{
		{"missing file", "pg-agent", filepath.Join(dir, "creds", "nope.creds"), []string{"NATS_CREDS", "nope.creds", "no such file"}},
		{"not a creds file", "pg-agent", garbage, []string{"NATS_CREDS", "garbage.creds", "not a NATS creds file"}},
		{"another role's creds", "pg-agent", busauth.CredsPath(dir, busauth.RoleMinIOAgent), []string{`identity "minio-agent"`, "for role minio-agent, not pg-agent"}},
		{"another deployment's creds", "pg-agent", busauth.CredsPath(other, busauth.RolePGAgent), []string{`identity "pg-agent"`, "refused by NATS", "uthorization"}},
		{"no creds on an authenticated bus", "pg-agent", "", []string{"no NATS identity (NATS_CREDS is not set)", "refused by NATS"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := runUntilStarted(t, tc.service, n.URL, tc.creds)
			if err == nil {
				t.Fatal("started; want a failure at start")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans several lines: %q", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not say %q", msg, w)
				}
			}
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				t.Errorf("failed only when the context ended: %v", err)
			}
		})
	}
}

func TestOnlyTheOrchestratorCreatesTheTopology(t *testing.T) {
	dir, n := authBus(t)
	err := runUntilStarted(t, "pg-agent", n.URL, busauth.CredsPath(dir, busauth.RolePGAgent))
	if err == nil || !strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), "start orchestrator first") {
		t.Fatalf("pg-agent before the topology exists: %v, want a clear error naming the orchestrator", err)
	}
	if err := runUntilStarted(t, "orchestrator", n.URL, busauth.CredsPath(dir, busauth.RoleOrchestrator)); err != nil {
		t.Fatalf("orchestrator: %v", err)
	}
	for _, r := range []busauth.Role{busauth.RolePGAgent, busauth.RoleMinIOAgent, busauth.RoleQdrantAgent, busauth.RoleRedisAgent, busauth.RoleAuditSink} {
		if err := runUntilStarted(t, string(r), n.URL, busauth.CredsPath(dir, r)); err != nil {
			t.Fatalf("%s after the orchestrator: %v", r, err)
		}
	}
}
