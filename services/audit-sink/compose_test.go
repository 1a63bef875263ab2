package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/tenantprov/tenantprov/testkit/composetest"
)

// The compose deployment gives the sink exactly what its binary reads, and
// the owner's URL only to the one-shot audit-migrate.
func TestComposeMatchesConfig(t *testing.T) {
	f := composetest.Load(t, composetest.Path(t))
	composetest.CheckService(t, f, name, "services/"+name, Config{}, "NATS_URL", "AUDIT_PG_URL")
	for k := range f.Services[name].Environment {
		if strings.HasPrefix(k, "AUDIT_PG_ADMIN_URL") {
			t.Errorf("%s is given %s: the long-running sink must never hold the owner's URL", name, k)
		}
	}
	for _, s := range f.Services[name].Secrets {
		if s == "audit_pg_admin_url" {
			t.Errorf("%s is given the audit_pg_admin_url secret", name)
		}
	}

	m, ok := f.Services["audit-migrate"]
	if !ok {
		t.Fatal("compose has no audit-migrate service")
	}
	if got := m.Build.Args["TARGET"]; got != "services/"+name {
		t.Errorf("audit-migrate: build target %q", got)
	}
	reads := composetest.EnvNames(MigrateConfig{})
	given := map[string]bool{}
	for k, v := range m.Environment {
		base, isFile := strings.CutSuffix(k, "_FILE")
		if isFile && reads[base] {
			if !strings.HasPrefix(v, "/run/secrets/") || !contains(m.Secrets, strings.TrimPrefix(v, "/run/secrets/")) {
				t.Errorf("audit-migrate: %s=%q is not a secret it is given", k, v)
			}
			given[base] = true
			continue
		}
		if !reads[k] {
			t.Errorf("audit-migrate: sets %s, which `audit-sink migrate` does not read", k)
		}
		given[k] = true
	}
	if !given["AUDIT_PG_ADMIN_URL"] || !given["AUDIT_PG_WRITER"] {
		t.Errorf("audit-migrate: needs AUDIT_PG_ADMIN_URL and AUDIT_PG_WRITER, has %v", given)
	}
	if c := m.Command; !reflect.DeepEqual(c, []string{"migrate"}) {
		t.Errorf("audit-migrate: command %q, want [migrate]", c)
	}
	if d := f.Services[name].DependsOn["audit-migrate"].Condition; d != "service_completed_successfully" {
		t.Errorf("%s: starts before audit-migrate completes (depends_on condition %q)", name, d)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
