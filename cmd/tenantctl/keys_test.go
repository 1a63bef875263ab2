package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestKeysInitTightensModes: keys init makes an existing, too open key
// directory 0700, never inherits the mode of a leftover (or planted)
// .tmp file or follows a link put in its place, and tightens an existing
// key file to 0600.
func TestKeysInitTightensModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // whatever the umask
		t.Fatal(err)
	}
	// A world-readable leftover where the control-plane key is written.
	cpTmp := filepath.Join(dir, "control-plane.agekey.tmp")
	if err := os.WriteFile(cpTmp, []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(cpTmp, 0o644); err != nil {
		t.Fatal(err)
	}
	// A link in place of the operator key's temporary file, pointing at a
	// file the attacker can read.
	bait := filepath.Join(t.TempDir(), "bait")
	if err := os.WriteFile(bait, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(bait, filepath.Join(dir, "operator.agekey.tmp")); err != nil {
		t.Fatal(err)
	}

	if code, _, errOut := tenantctl(t, "keys", "init", "--dir", dir); code != exitOK {
		t.Fatalf("keys init: exit %d: %s", code, errOut)
	}
	mode := func(p string) os.FileMode {
		t.Helper()
		st, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		return st.Mode()
	}
	if m := mode(dir).Perm(); m != 0o700 {
		t.Errorf("key directory mode %o, want 700", m)
	}
	for _, name := range []string{"control-plane.agekey", "operator.agekey"} {
		p := filepath.Join(dir, name)
		if m := mode(p); !m.IsRegular() || m.Perm() != 0o600 {
			t.Errorf("%s: mode %v, want a regular file with 0600", name, m)
		}
		if _, err := os.Lstat(p + ".tmp"); err == nil {
			t.Errorf("%s.tmp left behind", name)
		}
	}
	if b, _ := os.ReadFile(bait); len(b) != 0 {
		t.Errorf("the key was written through a link planted as its temporary file")
	}

	// An existing key file that became readable by others is tightened,
	// and kept.
	op := filepath.Join(dir, "operator.agekey")
	before, _ := os.ReadFile(op)
	if err := os.Chmod(op, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := tenantctl(t, "keys", "init", "--dir", dir); code != exitOK {
		t.Fatalf("second keys init: exit %d: %s", code, errOut)
	}
	if m := mode(op).Perm(); m != 0o600 {
		t.Errorf("existing key file mode %o, want 600", m)
	}
	if m := mode(dir).Perm(); m != 0o700 {
		t.Errorf("existing key directory mode %o, want 700", m)
	}
	if after, _ := os.ReadFile(op); string(after) != string(before) {
		t.Error("keys init replaced an existing key")
	}
}
