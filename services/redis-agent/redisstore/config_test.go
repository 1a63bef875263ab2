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

func TestConfigScripting(t *testing.T) {
	base := map[string]string{"REDIS_ADDR": "10.0.0.5:6379", "REDIS_ADMIN_PASSWORD": "pw"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	cfg, err := config.LoadFrom(Config{}, with())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TenantScripting.scriptsAllowed() || ScriptingRules(cfg.TenantScripting) != ScriptingRules(ScriptingDeny) {
		t.Errorf("default stance %q is not deny", cfg.TenantScripting)
	}
	cfg, err = config.LoadFrom(Config{}, with("REDIS_TENANT_SCRIPTING", "readonly", "REDIS_SCRIPT_KILL_AFTER", "2s",
		"REDIS_SCRIPT_WATCHDOG_INTERVAL", "100ms", "REDIS_TRUSTED_USERS", "backup,ops"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TenantScripting != ScriptingReadOnly || cfg.ScriptKillAfter.String() != "2s" ||
		cfg.ScriptWatchdogInterval.String() != "100ms" || strings.Join(cfg.TrustedUsers, "|") != "backup|ops" {
		t.Errorf("cfg = %+v", cfg)
	}
	_, err = config.LoadFrom(Config{}, with("REDIS_TENANT_SCRIPTING", "yes", "REDIS_SCRIPT_KILL_AFTER", "-1s"))
	for _, want := range []string{"REDIS_TENANT_SCRIPTING", "REDIS_SCRIPT_KILL_AFTER"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	for _, stance := range []Scripting{ScriptingDeny, ScriptingReadOnly, ScriptingAllow} {
		rules := ScriptingRules(stance)
		for _, always := range []string{"-script ", "-function", "-fcall"} {
			if !strings.Contains(rules, always) {
				t.Errorf("%s rules %q lack %q", stance, rules, always)
			}
		}
		if strings.Contains(rules, "+script|debug") || strings.Contains(rules, "+script|exists") {
			t.Errorf("%s rules %q allow SCRIPT DEBUG or EXISTS", stance, rules)
		}
	}
}
