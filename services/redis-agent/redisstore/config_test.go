package redisstore

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tenantprov/tenantprov/pkg/config"
)

func TestConfig(t *testing.T) {
	cfg, err := config.LoadFrom(Config{}, map[string]string{
		"REDIS_ADDR": "10.0.0.5:6379", "REDIS_ADMIN_USER": "tpadmin", "REDIS_ADMIN_PASSWORD": "pw-from-env",
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != "10.0.0.5:6379" || cfg.AdminUser != "tpadmin" || cfg.AdminPassword.Reveal() != "pw-from-env" {
		t.Errorf("cfg = %#v", cfg)
	}
	if cfg.TenantAddr() != "10.0.0.5:6379" {
		t.Errorf("TenantAddr without REDIS_PUBLIC_ADDR = %q", cfg.TenantAddr())
	}
	cfg.PublicAddr = "redis.example:6379"
	if cfg.TenantAddr() != "redis.example:6379" {
		t.Errorf("TenantAddr = %q", cfg.TenantAddr())
	}
	if s := fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg); strings.Contains(s, "pw-from-env") {
		t.Errorf("config prints its password: %s", s)
	}

	_, err = config.LoadFrom(Config{}, map[string]string{
		"REDIS_PUBLIC_ADDR": "no-port", "REDIS_TLS_CA_FILE": "/nonexistent/ca.pem",
	})
	if !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{"REDIS_ADDR: required", "REDIS_PUBLIC_ADDR", "REDIS_ADMIN_PASSWORD: required", "REDIS_TLS_CA_FILE"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if _, err := New(Config{Addr: "x"}); err == nil {
		t.Error("New accepted an invalid config")
	}
}
