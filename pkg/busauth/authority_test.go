package busauth_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tenantprov/tenantprov/pkg/busauth"
	"github.com/tenantprov/tenantprov/pkg/events"
)

func TestInitWritesPrivateFilesAndKeepsKeys(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "bus")
	a, err := busauth.Init(dir)
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		want := os.FileMode(0o600)
		if info.IsDir() {
			want = 0o700
		}
		if info.Mode().Perm() != want {
			t.Errorf("%s: mode %o, want %o", path, info.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile(filepath.Join(dir, busauth.ServerConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := filepath.Glob(filepath.Join(dir, "keys", "*.nk"))
	if len(keys) != 8 {
		t.Fatalf("keys: %v", keys)
	}
	for _, k := range keys {
		seed, _ := os.ReadFile(k)
		if strings.Contains(string(conf), strings.TrimSpace(string(seed))) {
			t.Errorf("the server configuration holds the seed of %s", k)
		}
	}
	again, err := busauth.Init(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.AccountPublicKey() != a.AccountPublicKey() {
		t.Error("a second Init replaced the account key")
	}
	for _, r := range busauth.Roles() {
		id, err := busauth.ReadCreds(busauth.CredsPath(dir, r))
		if err != nil || id.Role != r || id.Name != string(r) {
			t.Errorf("%s creds: %+v, %v", r, id, err)
		}
	}
}

func TestReadCredsRefusesExpiredAndMismatched(t *testing.T) {
	dir := t.TempDir()
	a, err := busauth.NewAuthority()
	if err != nil {
		t.Fatal(err)
	}
	expired, err := a.Issue(busauth.RoleRequester, "old", time.Nanosecond)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "old.creds")
	if err := os.WriteFile(p, expired, 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // JWT expiry has one-second resolution
	if _, err := busauth.ReadCreds(p); !errors.Is(err, busauth.ErrBadCredentials) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired creds: %v", err)
	}
	one, _ := a.Issue(busauth.RoleOperator, "", 0)
	two, _ := a.Issue(busauth.RoleObserver, "", 0)
	// JWT of one, seed of two.
	mixed := string(one[:strings.Index(string(one), "************************* IMPORTANT")]) + string(two[strings.Index(string(two), "************************* IMPORTANT"):])
	p = filepath.Join(dir, "mixed.creds")
	if err := os.WriteFile(p, []byte(mixed), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := busauth.ReadCreds(p); !errors.Is(err, busauth.ErrBadCredentials) || !strings.Contains(err.Error(), "does not belong") {
		t.Errorf("mixed creds: %v", err)
	}
}

// TestNewIdentityWithoutRestart: a requester issued after the server
// started (tenantctl bus issue) is accepted at once, with requester rights
// only.
func TestNewIdentityWithoutRestart(t *testing.T) {
	b := startBus(t)
	_, orch := b, b.as(busauth.RoleOrchestrator)
	ctx := ctxT(t, time.Minute)
	must(t, "topology", (events.Topology{}).Ensure(ctx, orch.js))
	a, err := busauth.LoadAuthority(b.dir)
	must(t, "load authority", err)
	creds, err := a.Issue(busauth.RoleRequester, "requester-billing", time.Hour)
	must(t, "issue", err)
	p := filepath.Join(t.TempDir(), "billing.creds")
	must(t, "write", os.WriteFile(p, creds, 0o600))
	nc := b.srv.Connect(t, nats.UserCredentials(p), nats.CustomInboxPrefix(busauth.RoleRequester.InboxPrefix()))
	must(t, "publish", nc.Publish(events.SubjectTenantRequested, []byte(`{"tenant_id":"acme"}`)))
	must(t, "flush", nc.FlushTimeout(5*time.Second))
	if err := nc.LastError(); err != nil {
		t.Fatalf("new requester refused: %v", err)
	}
	st, err := orch.js.Stream(ctx, events.StreamTenants)
	must(t, "bind TENANTS", err)
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := st.Info(ctx)
		must(t, "info", err)
		if info.State.Msgs == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new requester's request is not in TENANTS (%d messages)", info.State.Msgs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
