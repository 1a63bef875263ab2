package pgstore

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/config"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

const testAdminURL = "postgres://admin:s3cr3t-admin-pw@db.internal:6543/postgres?sslmode=require"

// TestDefaultsMatchEnvTags keeps Defaults and the envDefault tags in step.
func TestDefaultsMatchEnvTags(t *testing.T) {
	got, err := config.LoadFrom(Config{}, map[string]string{"PG_ADMIN_URL": testAdminURL})
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	want.AdminURL = testAdminURL
	if !reflect.DeepEqual(got, want) {
		t.Errorf("from the environment: %+v\nDefaults(): %+v", got, want)
	}
}

func TestConfigValidate(t *testing.T) {
	valid := Defaults()
	valid.AdminURL = testAdminURL
	if err := valid.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}

	bad := Config{
		AdminURL:        "postgres://admin:s3cr3t-admin-pw@host:notaport/x",
		PublicHost:      "a host",
		PublicPort:      70000,
		ConnectionLimit: 0,
		TenantCIDR:      "everywhere",
		SSLMode:         "sometimes",
		AdminMaxConns:   0,
	}
	err := bad.Validate()
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, v := range []string{"PG_ADMIN_URL", "PG_PUBLIC_HOST", "PG_PUBLIC_PORT", "PG_CONNECTION_LIMIT", "PG_TENANT_CIDR", "PG_SSLMODE", "PG_ADMIN_MAX_CONNS", "PG_TIMEOUT", "PG_CONNECT_TIMEOUT"} {
		if !strings.Contains(err.Error(), v) {
			t.Errorf("error does not name %s:\n%v", v, err)
		}
	}
	if strings.Contains(err.Error(), "s3cr3t-admin-pw") {
		t.Errorf("error contains the admin password:\n%v", err)
	}

	missing := Defaults()
	if err := missing.Validate(); err == nil || !strings.Contains(err.Error(), "PG_ADMIN_URL: required") {
		t.Errorf("missing admin URL: %v", err)
	}
	socket := Defaults()
	socket.AdminURL = "host=/var/run/postgresql user=admin dbname=postgres"
	if err := socket.Validate(); err == nil || !strings.Contains(err.Error(), "PG_PUBLIC_HOST") {
		t.Errorf("socket admin URL without public host: %v", err)
	}
	socket.PublicHost = "db.example.com"
	if err := socket.Validate(); err != nil {
		t.Errorf("socket admin URL with public host: %v", err)
	}
}

func TestNewRefusesInvalidConfigPermanently(t *testing.T) {
	_, err := New(Config{AdminURL: "postgres://admin:s3cr3t-admin-pw@"})
	if perm, reason := agent.Classify(err); err == nil || !perm || reason != events.ReasonInvalid {
		t.Fatalf("New: %v (permanent=%t reason=%s)", err, perm, reason)
	}
	var pe *agent.PermanentError
	if !errors.As(err, &pe) || strings.Contains(err.Error(), "s3cr3t-admin-pw") {
		t.Errorf("error: %v", err)
	}
}

func TestNewDerivesPublicEndpoint(t *testing.T) {
	cfg := Defaults()
	cfg.AdminURL = secret.String(testAdminURL)
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.publicHost != "db.internal" || s.publicPort != 6543 {
		t.Errorf("public endpoint %s:%d, want db.internal:6543 from the admin URL", s.publicHost, s.publicPort)
	}
	cfg.PublicHost, cfg.PublicPort = "pg.example.com", 5432
	s2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.publicHost != "pg.example.com" || s2.publicPort != 5432 {
		t.Errorf("public endpoint %s:%d, want the configured one", s2.publicHost, s2.publicPort)
	}
	u := s2.tenantURL("tenant_acme-eu", "pw_with-chars", "tenant_acme-eu").Reveal()
	if want := "postgres://tenant_acme-eu:pw_with-chars@pg.example.com:5432/tenant_acme-eu?sslmode=require"; u != want {
		t.Errorf("tenant URL %s, want %s", u, want)
	}
	if u := s2.tenantURL("u", "p@ss/w:rd?#", "d").Reveal(); !strings.Contains(u, "u:p%40ss%2Fw%3Ard%3F%23@") {
		t.Errorf("password not escaped in %s", u)
	}
}
