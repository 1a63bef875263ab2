package saga

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// PLANS_FILE is loaded and validated at start: an invalid or missing file
// stops the orchestrator with a clear error; none gives the built-in
// default plan.
func TestConfigPlansFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	base := Config{SagaTimeout: time.Minute, ReconcileInterval: time.Second, RetryMin: time.Second, RetryMax: time.Minute,
		StuckAfter: time.Second, IdentityFile: "x", Workers: 1, AckWait: time.Second}
	for _, c := range []struct {
		name, file, want string
	}{
		{"none", "", ""},
		{"valid", write("ok.yaml", "plans:\n  default: {}\n  small: {postgres: {connection_limit: 5}}\n"), ""},
		{"missing", filepath.Join(dir, "nope.yaml"), "no such file"},
		{"no default", write("nodef.yaml", "plans:\n  small: {}\n"), `no "default" plan`},
		{"unknown field", write("field.yaml", "plans:\n  default: {postgres: {conn_limit: 5}}\n"), "conn_limit"},
		{"bad limit", write("bad.yaml", "plans:\n  default: {minio: {bucket_quota_bytes: 10}}\n"), "at least 1 MiB"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := base
			cfg.PlansFile = c.file
			err := cfg.Validate()
			if c.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "PLANS_FILE") || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate = %v, want PLANS_FILE and %q", err, c.want)
			}
			if c.name != "missing" && !errors.Is(err, events.ErrInvalidPlan) {
				t.Errorf("error does not match ErrInvalidPlan: %v", err)
			}
		})
	}
}
