package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tenantprov/tenantprov/pkg/busauth"
)

func TestBusInitAndIssue(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "bus")
	if code, _, stderr := tenantctl(t, "bus", "init", "--dir", dir); code != 0 {
		t.Fatalf("bus init: exit %d: %s", code, stderr)
	}
	if _, err := busauth.ReadCreds(busauth.CredsPath(dir, busauth.RolePGAgent)); err != nil {
		t.Fatalf("pg-agent creds: %v", err)
	}
	out := filepath.Join(t.TempDir(), "billing.creds")
	if code, _, stderr := tenantctl(t, "bus", "issue", "requester", "--dir", dir, "--name", "requester-billing", "--out", out); code != 0 {
		t.Fatalf("bus issue: exit %d: %s", code, stderr)
	}
	st, err := os.Stat(out)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v, mode %v; want 0600", out, err, st)
	}
	id, err := busauth.ReadCreds(out)
	if err != nil || id.Name != "requester-billing" || id.Role != busauth.RoleRequester {
		t.Fatalf("issued identity %+v, %v", id, err)
	}
	if code, _, stderr := tenantctl(t, "bus", "issue", "requester", "--dir", dir, "--out", out); code == 0 || !strings.Contains(stderr, "exists") {
		t.Fatalf("issue over an existing file: exit %d: %s", code, stderr)
	}
	if code, _, _ := tenantctl(t, "bus", "issue", "superuser", "--dir", dir, "--out", out+"2"); code != exitUsage {
		t.Fatalf("unknown role: exit %d, want %d", code, exitUsage)
	}
}
